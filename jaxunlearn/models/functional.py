"""The functional view of a Flax NNX model: ``Network(init, apply)`` over plain dict variables.

An NNX module is split once, abstractly, into its graph definition and the templates of its
``Param`` and ``BatchStat`` collections. ``apply`` merges plain-dict variables back into a module
inside the trace, so rules and audits work on ordinary pytrees (``jit``, ``vmap``, ``grad``) and
never see NNX objects. The module's ``__call__(x)`` must return ``(logits, features)``, or
``(logits, features, hidden)`` with ``hidden`` a tuple of intermediate activations.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
from flax import nnx

from jaxunlearn.core.types import Array, Network, Outputs, Variables


def from_nnx(
    constructor: Callable[[nnx.Rngs], nnx.Module],
    *,
    name: str,
    num_outputs: int,
    input_shape: tuple[int, ...] | None = None,
    spec=None,
) -> Network:
    """Wraps an NNX module constructor into a pure :class:`Network`.

    Args:
      constructor: ``rngs -> module``; the module's ``__call__(x)`` returns ``(logits, features)``.
      name: registry name of the architecture.
      num_outputs: number of logits.
      input_shape: shape of one input example (recorded on the network).
      spec: architecture settings recorded on the network (see :class:`Network`).

    Returns:
      A :class:`Network` whose ``init(key)`` gives ``{"params": ..., "batch_stats": ...}``.
    """
    abstract = nnx.eval_shape(lambda: constructor(nnx.Rngs(0)))
    graphdef, param_template, stats_template = nnx.split(abstract, nnx.Param, nnx.BatchStat)

    def init(key: Array) -> Variables:
        module = constructor(nnx.Rngs(params=key))
        _, params, stats = nnx.split(module, nnx.Param, nnx.BatchStat)
        return {"params": _pure(params), "batch_stats": _pure(stats)}

    def apply(variables: Variables, x: Array, *, train: bool = False) -> Outputs:
        params = _filled(param_template, variables["params"])
        stats = _filled(stats_template, jax.lax.stop_gradient(variables["batch_stats"]))
        module = nnx.merge(graphdef, params, stats)
        if train:
            module.train()
        else:
            module.eval()
        logits, features, *rest = module(x)
        hidden = tuple(rest[0]) if rest else ()
        new_stats = None
        if train and jax.tree.leaves(variables["batch_stats"]):
            new_stats = _pure(nnx.state(module, nnx.BatchStat))
        return Outputs(logits=logits, features=features, batch_stats=new_stats, hidden=hidden)

    shape = None if input_shape is None else tuple(int(d) for d in input_shape)
    return Network(
        init=init, apply=apply, name=name, num_outputs=num_outputs, input_shape=shape, spec=spec
    )


def _pure(state: nnx.State) -> dict:
    """A plain nested dict with string keys (list indices become "0", "1", ...), so that variables
    survive a checkpoint round trip with the same tree structure."""

    def stringify(tree):
        if isinstance(tree, dict):
            return {str(k): stringify(v) for k, v in tree.items()}
        return tree

    return stringify(nnx.to_pure_dict(state))


def _filled(template: nnx.State, pure: dict) -> nnx.State:
    state = jax.tree.map(lambda v: v, template)  # a fresh copy; replace_by_pure_dict is in place
    nnx.replace_by_pure_dict(state, pure)
    return state
