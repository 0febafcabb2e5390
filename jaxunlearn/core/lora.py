"""LoRA: any gradient rule trains low-rank adapters on chosen matrices instead of all weights.

``lora(rule, rank=8, alpha=16, targets=r"layers\\.\\d+\\.self_attn\\.(q|v)_proj\\.kernel")``
turns a rule built by :func:`~jaxunlearn.core.rule.rule_from_loss` or
:func:`~jaxunlearn.core.rule.rule_from_grads` (gradient ascent, GradDiff, NPO, SimNPO, DPO, ...)
into one that trains, for every chosen 2-D kernel ``W [in, out]``, two adapters ``A [in, r]``
(random) and ``B [r, out]`` (zeros), while ``W`` stays frozen. The inner rule's loss sees the
merged model ``W + (alpha / r) * A @ B``; its gradient ``G`` with respect to the merged weights is
pulled back to the adapters (``dA = s G B^T``, ``dB = s A^T G``) and the inner rule's own
optimizer steps on the adapters only, so its state (Adam's moments) is adapter-sized: the
memory a 7B model needs on one accelerator.

The variables an update returns are the frozen base variables, unchanged; the adapters live in
the rule state. :func:`merge` gives the plain variables of the unlearned model, to evaluate or
save (merge on save); they load into the same network as any other checkpoint.

>>> rule = lora(rules.npo(net.apply), rank=4, targets=r".*_proj\\.kernel")  # doctest: +SKIP
>>> res = fit(rule, variables, stream, ...)  # doctest: +SKIP
>>> unlearned = merge(res.variables, res.state)  # doctest: +SKIP

References:
  Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022 (``B = 0`` at
  init, scale ``alpha / r``); Hugging Face PEFT ``LoraLayer.reset_lora_parameters`` (``A`` from
  Kaiming-uniform with ``a = sqrt(5)``: ``U(-1/sqrt(in), 1/sqrt(in))``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxunlearn.core.checks import check_count
from jaxunlearn.core.combinators import compile_patterns, leaf_paths, path_matches
from jaxunlearn.core.rule import BATCH_STATS_KEY, StepCounter, grad_parts
from jaxunlearn.core.types import Array, Batch, PyTree, UnlearningRule, Variables

# Every 2-D projection of the Llama-layout transformer (attention and MLP), PEFT's usual choice.
ALL_PROJECTIONS = r"layers\.\d+\.(self_attn|mlp)\.\w+_proj\.kernel"


class LoraState(NamedTuple):
    """State of :func:`lora`.

    Attributes:
      adapters: ``{dotted path: {"a": [in, r], "b": [r, out]}}`` for every adapted kernel.
      opt_state: the inner rule's optimizer state over ``adapters``.
      scale: ``alpha / rank`` (a float32 scalar).
      step: updates taken so far.
    """

    adapters: dict
    opt_state: PyTree
    scale: Array
    step: StepCounter


def init_adapters(params: PyTree, targets: str | Sequence[str], rank: int, key: Array) -> dict:
    """``{path: {"a", "b"}}`` for the 2-D leaves of ``params`` whose path matches ``targets``.

    ``a`` ``[in, rank]`` is drawn from ``U(-1/sqrt(in), 1/sqrt(in))`` (PEFT's default), ``b``
    ``[rank, out]`` is zero, so the merged model starts as the base model.

    Raises:
      ValueError: when ``targets`` matches nothing or a leaf that is not a 2-D float matrix, or
        when ``rank`` is not a positive integer.
    """
    try:
        rank = check_count(rank, "rank", 1)
    except ValueError as error:
        raise ValueError(f"lora: {error}") from None
    hits = path_matches(params, targets)
    adapters = {}
    picked = [
        (path, leaf)
        for path, hit, leaf in zip(
            jax.tree.leaves(leaf_paths(params)),
            jax.tree.leaves(hits),
            jax.tree.leaves(params),
            strict=True,
        )
        if hit
    ]
    for i, (path, leaf) in enumerate(picked):
        if leaf.ndim != 2 or not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise ValueError(
                f"lora `targets` {targets!r} matches {path!r} of shape {leaf.shape}: only 2-D "
                "float kernels [in, out] take adapters"
            )
        fan_in, fan_out = leaf.shape
        bound = 1.0 / math.sqrt(fan_in)
        a = jax.random.uniform(
            jax.random.fold_in(key, i), (fan_in, rank), leaf.dtype, -bound, bound
        )
        adapters[path] = {"a": a, "b": jnp.zeros((rank, fan_out), leaf.dtype)}
    return adapters


def merge_params(params: PyTree, adapters: dict, scale: Array | float) -> PyTree:
    """``W + scale * A @ B`` on every adapted leaf of ``params``; other leaves as they are."""
    paths = leaf_paths(params)

    def one(path, w):
        if path not in adapters:
            return w
        ad = adapters[path]
        return w + (scale * (ad["a"] @ ad["b"])).astype(w.dtype)

    return jax.tree.map(one, paths, params)


def merge(variables: Variables, state: LoraState) -> Variables:
    """The plain variables of a :func:`lora` run: base weights plus the trained low-rank updates.

    Args:
      variables: the variables the LoRA rule returned (the frozen base model).
      state: its :class:`LoraState`.

    Returns:
      Variables with the structure of ``variables``, for the same network (evaluate or save).
    """
    if not isinstance(state, LoraState):
        raise ValueError(f"merge needs the LoraState of a lora rule; got {type(state).__name__}")
    return {**variables, "params": merge_params(variables["params"], state.adapters, state.scale)}


def lora(
    rule: UnlearningRule,
    *,
    rank: int = 8,
    alpha: float = 16.0,
    targets: str | Sequence[str] = ALL_PROJECTIONS,
) -> UnlearningRule:
    """``rule`` training low-rank adapters on the kernels matching ``targets``, base frozen.

    Args:
      rule: a rule built by :func:`~jaxunlearn.core.rule.rule_from_loss` or
        :func:`~jaxunlearn.core.rule.rule_from_grads` (every loss-based rule of the registry);
        its loss, reference model (the frozen base, which is the starting model) and optimizer
        are reused.
      rank: the adapters' rank ``r``.
      alpha: LoRA's ``alpha``; the update is scaled by ``alpha / rank`` (PEFT's ``lora_alpha``).
      targets: regular expression(s) over dotted parameter paths (``re.fullmatch``, as
        :func:`~jaxunlearn.core.combinators.path_mask`); every match must be a 2-D kernel.
        Default: every attention and MLP projection of the transformer.

    Returns:
      An :class:`UnlearningRule` whose state is a :class:`LoraState`; its updates return the
      base variables unchanged (use :func:`merge`) and the inner rule's metrics.

    Raises:
      ValueError: for a rule that is not gradient-based (its gradient and optimizer are not
        exposed: a combinator or a rule with state of its own), a bad ``rank`` or ``alpha``;
        at ``init``, for ``targets`` that match nothing or a non-2-D leaf.
    """
    parts = grad_parts(rule) if isinstance(rule, UnlearningRule) else None
    if parts is None:
        raise ValueError(
            "lora wraps a rule built by rule_from_loss or rule_from_grads (its loss gradient and "
            f"optimizer are reused); got {rule!r}"
        )
    try:
        rank = check_count(rank, "rank", 1)
    except ValueError as error:
        raise ValueError(f"lora: {error}") from None
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"lora `alpha` must be a finite positive number; got {alpha!r}")
    compile_patterns(targets, "targets")
    grad_fn, optimizer, keep_reference = parts
    scale = float(alpha) / rank

    def init(variables: Variables, *, key: Array) -> LoraState:
        adapters = init_adapters(variables["params"], targets, rank, key)
        return LoraState(
            adapters, optimizer.init(adapters), jnp.asarray(scale, jnp.float32), StepCounter.zero()
        )

    def update(variables: Variables, state: LoraState, batch: Batch, *, key: Array):
        params = variables["params"]
        merged, pull_back = jax.vjp(
            lambda adapters: merge_params(params, adapters, state.scale), state.adapters
        )
        grads, metrics = grad_fn(
            {**variables, "params": merged},
            batch,
            # The base variables are the starting model (B = 0 at init): the inner reference.
            reference=variables if keep_reference else None,
            step=state.step.count,
            key=key,
        )
        metrics = dict(metrics)
        stats = metrics.pop(BATCH_STATS_KEY, None)
        (adapter_grads,) = pull_back(grads)
        updates, opt_state = optimizer.update(adapter_grads, state.opt_state, state.adapters)
        adapters = jax.tree.map(jnp.add, state.adapters, updates)
        if stats is not None:
            variables = {**variables, BATCH_STATS_KEY: stats}
        new_state = state._replace(adapters=adapters, opt_state=opt_state, step=state.step.next())
        return variables, new_state, metrics

    return UnlearningRule(init, update)
