"""2-D convolution whose gradients stay fast inside ``lax.scan`` on XLA:CPU.

On XLA:CPU the gradient convolutions that JAX derives for ``lax.conv_general_dilated`` run 15-100x
slower in the body of a while loop (``lax.scan``, as :func:`jaxunlearn.train.fit` runs its steps)
than in a plain jitted step; the forward convolution does not. :func:`conv2d` keeps the forward
``lax.conv_general_dilated`` and gives it a ``jax.custom_vjp`` whose backward pass avoids those
convolutions:

* kernel gradient, stride 1: a forward convolution of the input with batch and channel axes
  swapped by explicit transposes, the transposed cotangent as its kernel; stride > 1: one matmul
  per kernel tap (the tap's strided slice of the padded input against the cotangent);
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


def _unfused_transpose(a: jax.Array, perm, like: jax.Array) -> jax.Array:
    """``jnp.transpose(a, perm)`` computed from ``a`` as stored, not fused with ``a``'s producers.

    XLA:CPU fuses the element-wise ops that produce an activation (BatchNorm, ReLU, residual adds)
    into a transpose of it and recomputes them in the transposed order, reading every input with a
    large stride: in ResNet-18's first stage such a fusion took 10-55 ms against 4 ms for the
    transpose of the stored array (about 150 ms per step in all). A conditional is a fusion
    boundary, so the transpose runs inside one (both branches are the same transpose; the
    predicate, read from ``like``, only has to be unknown at compile time).
    """
    pred = like.reshape(-1)[0] == like.reshape(-1)[0]
    transpose = lambda v: jnp.transpose(v, perm)  # noqa: E731
    return lax.cond(pred, transpose, transpose, a)


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
        xt = _unfused_transpose(x, (3, 1, 2, 0), g)
        gt = jnp.transpose(g, (1, 2, 0, 3))
        dw = jnp.transpose(_forward(xt, gt, (1, 1), pads), (1, 2, 0, 3))
    else:
        # One matmul per kernel tap: dW[i, j] = sum_{n, y, x} xpad[n, i + s*y, j + s*x] g[n, y, x],
        # the strided slice of the padded input that tap (i, j) reads, against the cotangent.
        # 1.6-6x faster than an im2col matrix of all taps on XLA:CPU (ResNet-18's stride-2 layers).
        xp = jnp.pad(x, ((0, 0), *pads, (0, 0)))
        ho, wo = g.shape[1:3]
        g2 = g.reshape(-1, o)
        taps = []
        for i in range(kh):
            for j in range(kw):
                limit = (
                    xp.shape[0],
                    i + (ho - 1) * strides[0] + 1,
                    j + (wo - 1) * strides[1] + 1,
                    c,
                )
                xs = lax.slice(xp, (0, i, j, 0), limit, (1, *strides, 1)).reshape(-1, c)
                taps.append(jnp.matmul(xs.T, g2, precision=lax.Precision.HIGHEST))
        dw = jnp.stack(taps).reshape(kh, kw, c, o)
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
