"""Hyperparameter checks that a vmapped sweep can trace through.

A rule factory rejects impossible settings at once, before any compute. A sweep
(:mod:`jaxunlearn.scenarios.sweep`) builds the same factory *inside* a ``vmap`` over a grid of
values, where a hyperparameter is a tracer that has no truth value; it has already built the rule
once per concrete grid value, so every value was checked. A factory therefore tests a value only
when it is concrete: ``if concrete(beta) and not 0 <= beta <= 1: raise ValueError(...)``.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable

import jax


def concrete(*values) -> bool:
    """True when none of ``values`` (or of their pytree leaves) is a JAX tracer."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(values))


def is_count(value, minimum: int) -> bool:
    """Whether ``value`` is an integer (a Python or NumPy int, not a bool or a float such as
    ``3.0``) >= ``minimum``: the test :func:`check_count` applies, for checks that report many
    values in one message."""
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and bool(value >= minimum)
    )


def check_count(value, name: str, minimum: int) -> int:
    """``value`` as an int, or ``ValueError`` unless it is an integer >= ``minimum`` (a count of
    steps, models, classes, ... in a config or a factory)."""
    if not is_count(value, minimum):
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value!r}")
    return int(value)


def keyword_names(fn: Callable, *, exclude=(), keyword_only: bool = False) -> list[str] | None:
    """The sorted names of the arguments ``fn`` takes by keyword, minus ``exclude`` (those only
    keyword-only with ``keyword_only``): the settings a config may give a factory or generator.
    ``None`` when ``fn`` takes ``**kwargs`` (any name is accepted)."""
    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    kinds = (
        (inspect.Parameter.KEYWORD_ONLY,)
        if keyword_only
        else (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    )
    return sorted(k for k, p in params.items() if p.kind in kinds and k not in exclude)
