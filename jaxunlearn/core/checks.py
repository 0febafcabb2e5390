"""Hyperparameter checks that a vmapped sweep can trace through.

A rule factory rejects impossible settings at once, before any compute. A sweep
(:mod:`jaxunlearn.scenarios.sweep`) builds the same factory *inside* a ``vmap`` over a grid of
values, where a hyperparameter is a tracer that has no truth value; it has already built the rule
once per concrete grid value, so every value was checked. A factory therefore tests a value only
when it is concrete: ``if concrete(beta) and not 0 <= beta <= 1: raise ValueError(...)``.
"""

from __future__ import annotations

import jax


def concrete(*values) -> bool:
    """True when none of ``values`` (or of their pytree leaves) is a JAX tracer."""
    return not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(values))
