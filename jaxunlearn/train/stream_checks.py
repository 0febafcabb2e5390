"""Checks of a training stream before any compute, with one-line errors naming the setting.

:func:`check_stream` is what :func:`~jaxunlearn.train.make_stream` runs on its arguments (index
sets are gathered on device, where an out-of-range index is silently clamped: the run would train
on the wrong examples without a word). :func:`naming_missing_parts` turns the ``KeyError`` of a
rule that reads a batch part ``fit`` was given no batch size for into a clear ``ValueError``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping
from typing import Any

import jax
import numpy as np

from jaxunlearn.train import multihost

# Batch parts the library's rules read; a KeyError for one of these while tracing a rule's update
# means it was not among the parts fit draws.
PART_NAMES = ("forget", "retain")


class MissingPartError(KeyError, ValueError):
    """A rule read a batch part that ``fit`` draws no batch for (no batch size given).

    A ``ValueError`` with a readable message; also a ``KeyError`` for code that caught the old one.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def check_stream(x, y, index: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> None:
    """Rejects a stream whose ``x``, ``y`` and ``extra`` fields differ in length or whose index
    sets are not integer indices in ``[0, len(x))``.

    Index values are only checked when they are concrete (not traced inside ``jit``/``vmap``).

    Raises:
      ValueError: naming the offending argument or index set.
    """
    x_shape, y_shape = np.shape(x), np.shape(y)
    if not x_shape or not y_shape:
        raise ValueError(
            f"make_stream needs x and y with a leading example axis; got x of shape {x_shape} "
            f"and y of shape {y_shape}."
        )
    n = int(x_shape[0])
    if int(y_shape[0]) != n:
        raise ValueError(
            f"make_stream: x has {n} examples but y has {y_shape[0]}; they must be equally long."
        )
    for field, values in (extra or {}).items():
        shape = np.shape(values)
        if field in ("x", "y", "index"):
            raise ValueError(
                f"make_stream: extra field {field!r} would hide the batch's own {field!r}; "
                "rename it."
            )
        if not shape or int(shape[0]) != n:
            raise ValueError(
                f"make_stream: extra[{field!r}] must hold one row per example of x ({n}); got "
                f"shape {shape}."
            )
    if not isinstance(index, Mapping):
        raise ValueError(
            "make_stream: `index` must map part names to index arrays, e.g. "
            f"{{'retain': np.arange(n)}}; got {type(index).__name__}."
        )
    for name, ix in index.items():
        dtype = getattr(ix, "dtype", None)
        if dtype is None:
            dtype = np.asarray(ix).dtype
        if not np.issubdtype(dtype, np.integer):
            hint = " (for a boolean mask use np.flatnonzero(mask))" if dtype == np.bool_ else ""
            raise ValueError(
                f"make_stream: index[{name!r}] must hold integer indices into x; got dtype "
                f"{dtype}{hint}."
            )
        if isinstance(ix, jax.core.Tracer) or np.size(ix) == 0:
            continue
        lo, hi = _min_max(ix)
        if lo < 0 or hi >= n:
            raise ValueError(
                f"make_stream: index[{name!r}] holds indices in [{lo}, {hi}] but x and y have "
                f"{n} examples; valid indices are 0..{n - 1}."
            )


def _min_max(ix) -> tuple[int, int]:
    # On the host: an index set is small, and a reduction on device would compile per shape.
    host = multihost.fetch(ix) if isinstance(ix, jax.Array) else np.asarray(ix)
    return int(host.min()), int(host.max())


def missing_parts_message(part: str, batch_sizes: Collection[str]) -> str:
    """The message for a rule reading batch part ``part`` that ``batch_sizes`` does not name."""
    return (
        f"The rule reads the batch part {part!r}, but fit was given no batch size for it "
        f"(batch_sizes has {sorted(batch_sizes)}); pass batch_sizes={{..., {part!r}: <size>}} "
        f"and an index set {part!r} in the stream."
    )


def naming_missing_parts(fn: Callable, batch_sizes: Collection[str], parts=PART_NAMES) -> Callable:
    """``fn`` (a function that builds a batch from ``batch_sizes`` and runs a rule's update on it)
    whose ``KeyError`` for a batch part in ``parts`` missing from ``batch_sizes`` becomes a
    :class:`MissingPartError` (a ``ValueError``) saying which batch size to add."""
    known = frozenset(batch_sizes)

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MissingPartError:
            raise
        except KeyError as e:
            part = e.args[0] if len(e.args) == 1 else None
            if isinstance(part, str) and part in parts and part not in known:
                raise MissingPartError(missing_parts_message(part, known)) from e
            raise

    return checked
