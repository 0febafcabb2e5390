"""CIFAR-style ResNet-18, the standard model of image-classification unlearning benchmarks.

The architecture of He et al., 2016, "Deep Residual Learning for Image Recognition", in the
CIFAR variant of kuangliu/pytorch-cifar that the unlearning literature trains (Jia et al., 2023,
"Model Sparsity Can Simplify Machine Unlearning"; Fan et al., 2024, "SalUn: Empowering Machine
Unlearning via Gradient-based Weight Saliency in Both Image Classification and Generation"): a 3x3
stride-1 stem without max pooling, four stages of two BasicBlocks (64/128/256/512 channels, strides
1/2/2/2), BatchNorm after every convolution, global average pooling (the features) and a linear
head. Convolutions carry no bias and are padded by 1 as in PyTorch (not ``SAME``, which pads
stride-2 convolutions asymmetrically). Weights start from PyTorch's default initialisation, as in
the reference code, and BatchNorm uses PyTorch's defaults: momentum 0.1 (0.9 in Flax's convention)
and epsilon 1e-5.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jaxunlearn.models.batch_norm import BatchNorm
from jaxunlearn.models.conv import conv_general_dilated

_PAD1 = ((1, 1), (1, 1))


def _uniform(key: jax.Array, shape, dtype, bound: float) -> jax.Array:
    # Drawn as a flat vector and reshaped: with partitionable threefry (JAX's default) XLA:CPU
    # takes seconds to compile the bits of each small 4-D kernel shape, and a flat draw does not.
    flat = jax.random.uniform(key, (math.prod(shape),), dtype, -bound, bound)
    return flat.reshape(shape)


def pytorch_kernel_init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
    """PyTorch's default Conv/Linear weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    That is ``kaiming_uniform_(a=sqrt(5))``; ``fan_in`` is the product of all but the last
    (output) axis of a Flax kernel.
    """
    return _uniform(key, shape, dtype, 1.0 / math.sqrt(math.prod(shape[:-1])))


def pytorch_bias_init(fan_in: int) -> Callable[..., jax.Array]:
    """PyTorch's default bias init for a layer with ``fan_in`` inputs: U(+-1/sqrt(fan_in))."""

    def init(key: jax.Array, shape, dtype=jnp.float32) -> jax.Array:
        return _uniform(key, shape, dtype, 1.0 / math.sqrt(fan_in))

    return init


def _conv(
    in_channels: int, out_channels: int, kernel: int, stride: int, padding, rngs: nnx.Rngs
) -> nnx.Conv:
    return nnx.Conv(
        in_channels,
        out_channels,
        (kernel, kernel),
        strides=stride,
        padding=padding,
        use_bias=False,
        kernel_init=pytorch_kernel_init,
        conv_general_dilated=conv_general_dilated,
        rngs=rngs,
    )


def _batch_norm(features: int, rngs: nnx.Rngs) -> BatchNorm:
    return BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=rngs)


class Shortcut(nnx.Module):
    """Projection shortcut: 1x1 convolution with stride, then BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, rngs: nnx.Rngs):
        self.conv = _conv(in_channels, out_channels, 1, stride, "VALID", rngs)
        self.bn = _batch_norm(out_channels, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.bn(self.conv(x))


class BasicBlock(nnx.Module):
    """Two 3x3 conv-BN layers with a residual connection (projected when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, rngs: nnx.Rngs):
        self.conv1 = _conv(in_channels, out_channels, 3, stride, _PAD1, rngs)
        self.bn1 = _batch_norm(out_channels, rngs)
        self.conv2 = _conv(out_channels, out_channels, 3, 1, _PAD1, rngs)
        self.bn2 = _batch_norm(out_channels, rngs)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = Shortcut(in_channels, out_channels, stride, rngs=rngs)
        else:
            self.shortcut = None

    def __call__(self, x: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return jax.nn.relu(h + (x if self.shortcut is None else self.shortcut(x)))


class ResNet18(nnx.Module):
    """CIFAR ResNet-18; the globally average-pooled last stage (``8 * width`` dims) is the features.

    Args:
      in_channels: channels of the input images (3 for CIFAR/SVHN, 1 for MNIST/digits).
      num_outputs: number of logits.
      width: channels of the first stage (64 in the paper); stages have ``width * (1, 2, 4, 8)``.
      rngs: NNX random streams.
    """

    def __init__(self, in_channels: int, num_outputs: int, *, width: int = 64, rngs: nnx.Rngs):
        c1, c2, c3, c4 = width, 2 * width, 4 * width, 8 * width
        self.conv1 = _conv(in_channels, c1, 3, 1, _PAD1, rngs)
        self.bn1 = _batch_norm(c1, rngs)
        self.layer1_0 = BasicBlock(c1, c1, 1, rngs=rngs)
        self.layer1_1 = BasicBlock(c1, c1, 1, rngs=rngs)
        self.layer2_0 = BasicBlock(c1, c2, 2, rngs=rngs)
        self.layer2_1 = BasicBlock(c2, c2, 1, rngs=rngs)
        self.layer3_0 = BasicBlock(c2, c3, 2, rngs=rngs)
        self.layer3_1 = BasicBlock(c3, c3, 1, rngs=rngs)
        self.layer4_0 = BasicBlock(c3, c4, 2, rngs=rngs)
        self.layer4_1 = BasicBlock(c4, c4, 1, rngs=rngs)
        self.linear = nnx.Linear(
            c4,
            num_outputs,
            kernel_init=pytorch_kernel_init,
            bias_init=pytorch_bias_init(c4),
            rngs=rngs,
        )

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = jax.nn.relu(self.bn1(self.conv1(x.astype(jnp.float32))))
        for block in (
            self.layer1_0,
            self.layer1_1,
            self.layer2_0,
            self.layer2_1,
            self.layer3_0,
            self.layer3_1,
            self.layer4_0,
            self.layer4_1,
        ):
            h = block(h)
        features = jnp.mean(h, axis=(1, 2))
        return self.linear(features), features
