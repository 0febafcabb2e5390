"""2-D convolution whose gradients stay fast inside ``lax.scan`` on XLA:CPU.

On XLA:CPU the gradient convolutions that JAX derives for ``lax.conv_general_dilated`` run 15-100x
slower in the body of a while loop (``lax.scan``, as :func:`jaxunlearn.train.fit` runs its steps)
than in a plain jitted step; the forward convolution does not. :func:`conv2d` keeps the forward
``lax.conv_general_dilated`` and gives it a ``jax.custom_vjp`` whose backward pass avoids those
convolutions:

* kernel gradient, stride 1: a forward convolution of the input with batch and channel axes
  swapped by explicit transposes, the transposed cotangent as its kernel; stride > 1: im2col
  (``lax.conv_general_dilated_patches`` of the input and one matmul with the cotangent);
* input gradient: the cotangent dilated by the stride and padded with ``lax.pad`` (interior
  padding), then a stride-1 forward convolution with the spatially flipped kernel.

Both are exact reformulations (the same sums, in another order: results agree to float rounding).
:func:`conv_general_dilated` has ``lax.conv_general_dilated``'s signature, for ``nnx.Conv``'s
``conv_general_dilated=`` argument; it uses :func:`conv2d` on the CPU backend for the plain NHWC
case (no dilation, no feature groups) and XLA's own convolution otherwise, so accelerators keep
their native convolution gradients. Parameters are unchanged: the module is a plain ``nnx.Conv``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

_DIMS = ("NHWC", "HWIO", "NHWC")

# ``"auto"``: the custom gradient on the CPU backend only; ``"on"``: always; ``"off"``: never.
# Read when a convolution is traced: ``jax.jit`` keeps the trace of a function it has already seen,
# so a change applies to functions traced afterwards.
USE_CUSTOM_GRAD = "auto"


def _pads(padding, in_hw, kernel_hw, strides) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        return tuple(lax.padtype_to_pads(in_hw, kernel_hw, strides, padding))
    return tuple((int(lo), int(hi)) for lo, hi in padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int], padding) -> jax.Array:
    """NHWC x HWIO convolution: ``lax.conv_general_dilated`` forward, a scan-friendly backward.

    Args:
      x: input ``[N, H, W, C]``.
      kernel: ``[kh, kw, C, O]``.
      strides: ``(sh, sw)``.
      padding: ``"SAME"``, ``"VALID"`` or ``((lo, hi), (lo, hi))``.
    """
    return _forward(x, kernel, strides, padding)


def _forward(x, kernel, strides, padding):
    dn = lax.conv_dimension_numbers(x.shape, kernel.shape, _DIMS)
    return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=dn)


def _conv2d_fwd(x, kernel, strides, padding):
    return _forward(x, kernel, strides, padding), (x, kernel)


def _conv2d_bwd(strides, padding, res, g):
    x, kernel = res
    kh, kw, c, o = kernel.shape
    strides = tuple(int(s) for s in strides)
    pads = _pads(padding, x.shape[1:3], (kh, kw), strides)
    if strides == (1, 1):
        # Kernel gradient as a forward convolution of the transposed input (C as the batch, N as
        # the features) with the transposed cotangent as its kernel: [C, kh, kw, O].
        xt = jnp.transpose(x, (3, 1, 2, 0))
        gt = jnp.transpose(g, (1, 2, 0, 3))
        dw = jnp.transpose(_forward(xt, gt, (1, 1), pads), (1, 2, 0, 3))
    else:
        # im2col: dW[(c, i, j), o] = sum_{n, y, x} patches(x)[n, y, x, (c, i, j)] g[n, y, x, o].
        p = lax.conv_general_dilated_patches(
            x, (kh, kw), strides, pads, dimension_numbers=_DIMS, precision=lax.Precision.HIGHEST
        )
        dw = jnp.einsum("nhwp,nhwo->po", p, g, precision=lax.Precision.HIGHEST)
        dw = jnp.transpose(dw.reshape(c, kh, kw, o), (1, 2, 0, 3))
    # Input gradient: dilate g by the stride and pad it (lax.pad, interior padding) so that a
    # stride-1 VALID forward convolution with the flipped kernel (I and O swapped) lands on every
    # input position.
    cfg = [(0, 0, 0)]
    for size, k, s, (lo, _), out in zip(
        x.shape[1:3], (kh, kw), strides, pads, g.shape[1:3], strict=True
    ):
        cfg.append((k - 1 - lo, size + lo - (out - 1) * s - 1, s - 1))
    cfg.append((0, 0, 0))
    gd = lax.pad(g, jnp.zeros((), g.dtype), cfg)
    flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))  # [kh, kw, O, C]
    dx = _forward(gd, flipped, (1, 1), "VALID")
    return dx.astype(x.dtype), dw.astype(kernel.dtype)


conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def _use_custom() -> bool:
    if USE_CUSTOM_GRAD == "auto":
        return jax.default_backend() == "cpu"
    return USE_CUSTOM_GRAD == "on"


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
    **kwargs,
):
    """``lax.conv_general_dilated``, with :func:`conv2d`'s gradients where they apply (CPU)."""
    plain = (
        _use_custom()
        and lhs.ndim == 4
        and isinstance(padding, str | Sequence)
        and all(d in (None, 1) for d in (lhs_dilation or (1,)))
        and all(d in (None, 1) for d in (rhs_dilation or (1,)))
        and feature_group_count == 1
        and batch_group_count == 1
        and precision is None
        and preferred_element_type is None
        and all(v is None for v in kwargs.values())
        and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
        == lax.conv_dimension_numbers(lhs.shape, rhs.shape, _DIMS)
    )
    if plain:
        return conv2d(lhs, rhs, tuple(int(s) for s in window_strides), _hashable(padding))
    return lax.conv_general_dilated(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
        precision=precision,
        preferred_element_type=preferred_element_type,
        **kwargs,
    )


def _hashable(padding):
    if isinstance(padding, str):
        return padding
    return tuple((int(lo), int(hi)) for lo, hi in padding)
