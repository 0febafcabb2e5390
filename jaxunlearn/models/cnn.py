"""A small convolutional network for 8x8 digits, 28x28 MNIST-like and 32x32 CIFAR-like images.

Blocks of 3x3 convolution, ReLU and 2x2 max pooling, then one dense hidden layer whose activations
are the features, then a linear head: the classic small MNIST/CIFAR ConvNet (LeCun et al., 1998,
"Gradient-Based Learning Applied to Document Recognition"), of the size used as the cheap model in
unlearning benchmarks before a ResNet-18 run. Kernels start from PyTorch's default initialisation,
like :class:`~jaxunlearn.models.resnet.ResNet18`; biases start at zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxunlearn.models.conv import conv_general_dilated
from jaxunlearn.models.resnet import pytorch_kernel_init


class CNN(nnx.Module):
    """Conv(3x3)-ReLU-MaxPool(2x2) blocks, a ReLU dense layer (the features) and a linear head.

    Pooling uses ``SAME`` padding, so odd sizes round up (8 -> 4 -> 2, 28 -> 14 -> 7,
    32 -> 16 -> 8).

    Args:
      input_shape: shape of one image, ``(H, W, C)``.
      num_outputs: number of logits.
      channels: output channels of each conv block.
      hidden: width of the dense layer whose activations are the features.
      rngs: NNX random streams.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        *,
        channels: Sequence[int] = (32, 64),
        hidden: int = 128,
        rngs: nnx.Rngs,
    ):
        if len(input_shape) != 3:
            raise ValueError(f"CNN expects images shaped (H, W, C); got input_shape {input_shape}")
        height, width, in_channels = (int(d) for d in input_shape)
        sizes = [in_channels, *channels]
        self.convs = nnx.List(
            [
                nnx.Conv(
                    a,
                    b,
                    (3, 3),
                    padding="SAME",
                    kernel_init=pytorch_kernel_init,
                    conv_general_dilated=conv_general_dilated,
                    rngs=rngs,
                )
                for a, b in zip(sizes[:-1], sizes[1:], strict=True)
            ]
        )
        for _ in channels:
            height, width = math.ceil(height / 2), math.ceil(width / 2)
        self.dense = _linear(height * width * sizes[-1], hidden, rngs)
        self.head = _linear(hidden, num_outputs, rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = x.astype(jnp.float32)
        for conv in self.convs:
            h = max_pool_2x2(jax.nn.relu(conv(h)))
        features = jax.nn.relu(self.dense(h.reshape(h.shape[0], -1)))
        return self.head(features), features


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2x2 max pooling with stride 2 and ``SAME`` padding over the spatial axes of ``[N, H, W, C]``.

    The same values as ``nnx.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")`` (odd sizes are
    padded with -inf at the bottom and right), computed as a reshape and a max over the window
    axes. Its gradient is the reduction's: the cotangent goes to the window's maximum (split evenly
    between exact ties, which after a ReLU are zeros whose gradient the ReLU stops anyway). XLA:CPU
    runs the ``reduce_window`` gradient that ``nnx.max_pool`` derives (``select_and_gather_add``)
    as slow index-packing loops: this pooling made the CNN step on CIFAR-shaped batches about 2x
    faster (``benchmarks/step_speed.py``).
    """
    n, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-jnp.inf)
    return x.reshape(n, (h + 1) // 2, 2, (w + 1) // 2, 2, c).max(axis=(2, 4))


def _linear(in_features: int, out_features: int, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(in_features, out_features, kernel_init=pytorch_kernel_init, rngs=rngs)
