"""Perturbation budgets shared by every unlearnable-example generator.

A generator returns a :class:`Protection`: the protected images, always clipped to the dataset's
value range (for ``digits`` and every TFDS image dataset here, ``[0, 1]``), and the perturbation
that was actually applied, ``protected - x``, which lies inside the L-infinity (or L2) ball of
radius ``epsilon``. Clipping to the value range is part of every generator (a pixel pushed
outside it would be undone by any image pipeline, and a victim would see a different image).

Budgets on ``digits``: its 8x8 pixels are the 17 grey levels 0/16 ... 16/16 scaled to [0, 1],
the same range as CIFAR-10's pixels after ``/255``, so Huang et al.'s ``epsilon = 8/255`` means
the same share of the range here: about half of one digits grey level (1/16 = 15.9/255).

References:
  Huang et al., "Unlearnable Examples: Making Personal Data Unexploitable", ICLR 2021
  (``../shared/reference/unlearnable_and_representation.md``, Part A1).
"""

from __future__ import annotations

import collections
import math
import numbers
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.core.types import Array

NORMS = ("linf", "l2")
VALUE_RANGE = (0.0, 1.0)


class Protection(NamedTuple):
    """What a generator returns.

    Attributes:
      x: the protected images, ``[n, ...]`` like the inputs, inside ``value_range``.
      delta: the perturbation applied, ``x_protected - x`` (inside the budget).
      metrics: scalars about the generation (rounds run, the surrogate's final accuracy, ...).
    """

    x: Array
    delta: Array
    metrics: dict


def check_epsilon(epsilon, name: str = "epsilon") -> float:
    """``epsilon`` as a float, or a ``ValueError`` naming ``name`` if it is not a finite number
    above 0."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real):
        raise ValueError(f"`{name}` must be a positive finite number; got {epsilon!r}")
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"`{name}` must be a positive finite number; got {epsilon!r}")
    return float(epsilon)


def check_fraction(fraction, name: str = "fraction") -> float:
    """A protected fraction (mix ratio) in [0, 1], or a ``ValueError`` naming ``name``."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
        raise ValueError(f"`{name}` must be a number in [0, 1]; got {fraction!r}")
    if not (0.0 <= float(fraction) <= 1.0):
        raise ValueError(
            f"`{name}` must be in [0, 1] (a share of the training set); got {fraction}"
        )
    return float(fraction)


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"Unknown budget `norm` {norm!r}; valid: {list(NORMS)}")
    return norm


def check_value_range(value_range) -> tuple[float, float]:
    """``(low, high)`` with finite ``low < high``, or a ``ValueError`` naming ``value_range``."""
    try:
        low, high = (float(v) for v in value_range)
    except (TypeError, ValueError):
        raise ValueError(f"`value_range` must be (low, high); got {value_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"`value_range` must be finite with low < high; got {value_range!r}")
    return low, high


def check_images(x, y=None, value_range=VALUE_RANGE) -> tuple[np.ndarray, np.ndarray | None]:
    """Images ``[n, ...]`` inside ``value_range`` (and integer labels of the same length)."""
    x = np.asarray(x, np.float32)
    low, high = check_value_range(value_range)
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(f"`x` must hold at least one example, shaped [n, ...]; got {x.shape}")
    if not np.all(np.isfinite(x)) or x.min() < low or x.max() > high:
        raise ValueError(
            f"`x` must lie in the dataset's value range {value_range} before protection; "
            f"got values in [{x.min()}, {x.max()}]"
        )
    if y is not None:
        y = np.asarray(y)
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"`y` must be integer labels shaped [{len(x)}]; got {y.dtype} {y.shape}"
            )
        y = y.astype(np.int32)
    return x, y


def project(delta: Array, epsilon: float, norm: str = "linf") -> Array:
    """``delta`` projected onto the ball of radius ``epsilon`` around 0, per example (the first
    axis): clipping for L-infinity, rescaling the examples with a larger L2 norm for L2."""
    if norm == "linf":
        return jnp.clip(delta, -epsilon, epsilon)
    flat = delta.reshape(delta.shape[0], -1)
    norms = jnp.linalg.norm(flat, axis=1)
    scale = jnp.minimum(1.0, epsilon / jnp.maximum(norms, 1e-12))
    return delta * scale.reshape((-1,) + (1,) * (delta.ndim - 1))


def apply_perturbation(
    x: Array, delta: Array, epsilon: float, *, norm: str = "linf", value_range=VALUE_RANGE
) -> Protection:
    """Projects ``delta`` onto the budget, adds it and clips to the value range.

    Clipping only moves a pixel toward ``x`` (which lies inside the range), so the applied
    perturbation ``protected - x`` stays inside the budget, up to float32 rounding of ``x +
    delta`` (one unit in the last place of the pixel value).
    """
    low, high = value_range
    protected = jnp.clip(x + project(delta, epsilon, norm), low, high)
    return Protection(protected, protected - x, {})


def dual_step(grad: Array, step_size: float, norm: str) -> Array:
    """The steepest-ascent step of length ``step_size`` for the norm: ``sign(g)`` (L-infinity)
    or ``g / ||g||_2`` per example (L2)."""
    if norm == "linf":
        return step_size * jnp.sign(grad)
    flat = grad.reshape(grad.shape[0], -1)
    norms = jnp.maximum(jnp.linalg.norm(flat, axis=1), 1e-12)
    return step_size * grad / norms.reshape((-1,) + (1,) * (grad.ndim - 1))


def padded_batches(n: int, batch_size: int) -> np.ndarray:
    """``[num_batches, batch_size]`` indices covering ``0..n-1`` in order; the last batch is
    completed with the first indices again (no index repeats inside one batch)."""
    batch_size = min(int(batch_size), n)
    count = -(-n // batch_size)
    return (np.arange(count * batch_size) % n).reshape(count, batch_size).astype(np.int32)


def batched_accuracy(apply, variables, x: Array, y: Array, batches: np.ndarray) -> Array:
    """Accuracy of ``apply`` on ``x`` read in ``batches`` (each example counted once)."""
    n = x.shape[0]
    first = jnp.asarray(np.arange(batches.size).reshape(batches.shape) < n)

    def one(args):
        idx, real = args
        hits = jnp.argmax(apply(variables, x[idx]).logits, -1) == y[idx]
        return jnp.sum(hits & real)

    return jnp.sum(jax.lax.map(one, (jnp.asarray(batches), first))) / n


# Compiled generator programs of recent calls, by their static settings (oldest first).
_PROGRAMS: collections.OrderedDict = collections.OrderedDict()
_CAPACITY = 16


def _freeze(value):
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_freeze(v) for v in value)
    try:
        hash(value)
    except TypeError:
        return ("id", id(value))
    return value


def cached_jit(settings: tuple, build: Callable[[], Callable]) -> Callable:
    """``jax.jit(build())``, reused by every later call with the same ``settings`` (the network
    and every static setting of a generator): protecting the same data again, at another mix
    ratio or for a benchmark, does not compile again."""
    key = _freeze(settings)
    if key not in _PROGRAMS:
        _PROGRAMS[key] = jax.jit(build())
        while len(_PROGRAMS) > _CAPACITY:
            _PROGRAMS.popitem(last=False)
    return _PROGRAMS[key]
