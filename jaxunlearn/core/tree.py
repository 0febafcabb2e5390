"""Small pytree utilities used across layers."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxunlearn.core.types import Array, PyTree


def all_finite(tree: PyTree) -> Array:
    """True when every leaf of ``tree`` is free of NaN and inf (a scalar bool array)."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(x.dtype, jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def where(mask: PyTree, on_true: PyTree, on_false: PyTree) -> PyTree:
    """Leaf-wise ``jnp.where`` over three pytrees of the same structure."""
    return jax.tree.map(jnp.where, mask, on_true, on_false)


def global_norm(tree: PyTree) -> Array:
    """Euclidean norm of all leaves taken together."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def num_params(tree: PyTree) -> int:
    """Number of scalars in ``tree``."""
    return sum(int(x.size) for x in jax.tree.leaves(tree))
