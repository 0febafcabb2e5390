"""Parameter masks: a rule wrapper that holds masked-out weights exactly at their starting values.

Mask-guided unlearning (SalUn's weight saliency, WAGLE's weight attribution, layer selection) lets
an unlearning rule change only a chosen subset of the weights. Masking the gradient is not
enough: weight decay, momentum and Adam's moments still move the masked weights (the bug of
Unlearn-Saliency issue #32, fixed in PR #33). :func:`hold_masked` wraps any rule and, after every
inner update, puts the masked-out coordinates of ``variables["params"]`` back to their starting
values, bit for bit, and zeroes the inner optimizer's per-coordinate state there.

Where the mask comes from. Either the caller passes a fixed ``mask`` (a pytree of booleans shaped
like ``variables["params"]``; :func:`mask_from_batches` computes one offline), or the wrapper
computes it from the data stream itself: its first ``mask_steps`` updates leave the model
untouched and only sum a :class:`MaskScore` statistic (e.g. forget-loss gradients) over the
batches they see; at the last of them the statistic is turned into per-weight scores and the
mask keeps the global top ``mask_fraction`` of them trainable. Later updates run the inner rule
under the mask; the inner rule's own step counter starts at the first unlearning update. The
variables returned during the scoring phase are the original ones. The scoring updates count
towards the run's ``num_steps``.

A mask is ``True`` (1) where a weight may change and ``False`` (0) where it is held, as in
SalUn's ``with_{fraction}.pt`` files: ``mask_fraction=0.5`` keeps the 50% most salient weights
trainable.

Only per-coordinate optimizers (SGD, momentum, weight decay, Adam, ...) give the unmasked
weights exactly the trajectory they would have under gradient masking; a transform that mixes
coordinates (global-norm clipping) sees the masked weights' gradients too. The restoration holds
the masked weights whatever the optimizer.

References:
  Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both
  Image Classification and Generation", ICLR 2024 (saliency mask, top-k of the forget gradient).
  Jia et al., "WAGLE: Strategic Weight Attribution for Effective and Modular Unlearning in Large
  Language Models", NeurIPS 2024 (weight-attribution mask).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxunlearn.core.checks import concrete
from jaxunlearn.core.types import Array, Batch, PyTree, UnlearningRule, Variables
from jaxunlearn.rules.common import part_loss


class MaskScore(NamedTuple):
    """How a mask is scored from data, as three pure functions.

    Attributes:
      init: ``params -> accumulator``: the zero statistic.
      accumulate: ``(variables, batch, *, key) -> increment``: one batch's statistic, added to the
        accumulator (same structure).
      finalize: ``(accumulator, params) -> scores``: non-negative per-weight scores shaped like
        ``params``; the largest are kept trainable.
    """

    init: Callable[[PyTree], PyTree]
    accumulate: Callable[..., PyTree]
    finalize: Callable[[PyTree, PyTree], PyTree]


def _part_grad(apply: Callable, variables: Variables, batch: Batch, part: str) -> PyTree:
    """Gradient of the supervised loss on ``batch[part]`` with respect to the params."""

    def objective(params):
        return part_loss(apply, {**variables, "params": params}, batch, part)[0]

    return jax.grad(objective)(variables["params"])


def _zeros_like(tree: PyTree) -> PyTree:
    return jax.tree.map(jnp.zeros_like, tree)


def forget_saliency(apply: Callable) -> MaskScore:
    """SalUn's weight saliency: ``|sum over forget batches of grad CE(forget)|``.

    SalUn differentiates the forgetting loss ``-CE``; the magnitude makes the sign irrelevant.

    Args:
      apply: the model's functional ``apply`` (run in inference mode).

    Returns:
      A :class:`MaskScore` reading ``batch["forget"]``.

    References:
      Fan et al., ICLR 2024, Eq. (5) and ``generate_mask.py`` of OPTML-Group/Unlearn-Saliency.
    """

    def accumulate(variables, batch, *, key):
        del key
        return _part_grad(apply, variables, batch, "forget")

    def finalize(total, params):
        del params
        return jax.tree.map(jnp.abs, total)

    return MaskScore(_zeros_like, accumulate, finalize)


def weight_attribution(apply: Callable, *, hessian_scale: float = 1e-6) -> MaskScore:
    """WAGLE's weight attribution: ``|(theta - g_retain / mu) * g_forget|``.

    WAGLE scores weight ``i`` by the first-order effect on the forget objective of the retain-
    optimal adjustment when ``i`` is switched off: with the retain Hessian approximated by
    ``mu * I``, the implicit gradient gives ``S_i = theta_i g_f,i - (1/mu) g_r,i g_f,i``. Gradients
    are summed over batches, as in the reference.

    Args:
      apply: the model's functional ``apply`` (run in inference mode).
      hessian_scale: ``mu``, the diagonal Hessian approximation (the reference configs' ``mu``).

    Returns:
      A :class:`MaskScore` reading ``batch["forget"]`` and ``batch["retain"]``.

    References:
      Jia et al., NeurIPS 2024, Eq. (8); ``snip_advanced`` in ``src/unlearn/generate_mask.py`` of
      OPTML-Group/WAGLE.
    """
    if concrete(hessian_scale) and not hessian_scale > 0:
        raise ValueError(f"`hessian_scale` must be positive; got {hessian_scale}")

    def init(params):
        return {"forget": _zeros_like(params), "retain": _zeros_like(params)}

    def accumulate(variables, batch, *, key):
        del key
        return {
            "forget": _part_grad(apply, variables, batch, "forget"),
            "retain": _part_grad(apply, variables, batch, "retain"),
        }

    def finalize(total, params):
        return jax.tree.map(
            lambda p, gf, gr: jnp.abs((p - gr / hessian_scale) * gf),
            params,
            total["forget"],
            total["retain"],
        )

    return MaskScore(init, accumulate, finalize)


def check_mask_fraction(fraction: float, name: str = "mask_fraction") -> float:
    """Returns ``fraction`` as a float, or raises ``ValueError`` unless it lies in (0, 1]."""
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(
            f"`{name}` (the fraction of weights kept trainable) must lie in (0, 1]; got {fraction}"
        )
    return fraction


def _sortable_keys(values: Array) -> Array:
    """uint32 keys whose unsigned order is the float32 order of ``values``.

    NaN is ranked as -inf and -0.0 as 0.0, so equal scores get equal keys.
    """
    values = values.astype(jnp.float32)
    values = jnp.where(jnp.isnan(values), -jnp.inf, jnp.where(values == 0, 0.0, values))
    bits = jax.lax.bitcast_convert_type(values, jnp.uint32)
    negative = (bits >> 31).astype(bool)
    return jnp.where(negative, ~bits, bits | jnp.uint32(0x80000000))


def top_fraction_mask(scores: PyTree, fraction: float) -> PyTree:
    """Boolean mask of the global top ``fraction`` of ``scores`` (at least one weight).

    Exactly ``k = max(1, int(n * fraction))`` of the ``n`` scores are marked: those above the
    ``k``-th largest value, then those equal to it in flattening order (what a stable descending
    sort would pick); NaN scores rank last. The ``k``-th largest value is found by bisection over
    the float bit patterns (32 counting passes) rather than by sorting: under ``vmap`` the mask is
    evaluated at every update, and a sort of all weights costs far more than the update.

    Args:
      scores: per-weight scores, any pytree of float arrays.
      fraction: the fraction kept, in (0, 1].

    Returns:
      A pytree of booleans with the structure and shapes of ``scores``.
    """
    fraction = check_mask_fraction(fraction)
    leaves, treedef = jax.tree.flatten(scores)
    if fraction == 1.0:
        return jax.tree.unflatten(treedef, [jnp.ones(x.shape, bool) for x in leaves])
    keys = jnp.concatenate([_sortable_keys(jnp.ravel(x)) for x in leaves])
    k = max(1, int(keys.size * fraction))

    def bisect(_, bounds):
        # Invariant: count(keys >= lo) >= k, and count(keys >= hi + 1) < k (or hi is the max).
        lo, hi = bounds
        gap = hi - lo  # rounding the midpoint up keeps every step shrinking the gap by half
        mid = lo + (gap >> 1) + (gap & 1)
        enough = jnp.sum(keys >= mid) >= k
        return jnp.where(enough, mid, lo), jnp.where(enough, hi, mid - 1)

    threshold, _ = jax.lax.fori_loop(0, 32, bisect, (jnp.uint32(0), jnp.uint32(0xFFFFFFFF)))
    above = keys > threshold
    at = keys == threshold
    keep = above | (at & (jnp.cumsum(at) <= k - jnp.sum(above)))
    out, start = [], 0
    for x in leaves:
        out.append(keep[start : start + x.size].reshape(x.shape))
        start += x.size
    return jax.tree.unflatten(treedef, out)


def mask_from_batches(
    score: MaskScore,
    variables: Variables,
    batches: Batch,
    *,
    fraction: float,
    key: Array | None = None,
) -> PyTree:
    """Computes a mask offline, from batches stacked along a leading axis.

    Args:
      score: how to score weights (e.g. :func:`forget_saliency`).
      variables: the model to score.
      batches: a batch pytree whose leaves carry a leading ``[num_batches]`` axis.
      fraction: the fraction of weights kept trainable, in (0, 1].
      key: PRNG key passed to ``score.accumulate`` (folded with the batch index).

    Returns:
      The boolean mask, to pass as ``hold_masked(rule, mask=...)``.
    """
    key = jax.random.key(0) if key is None else key
    num = jax.tree.leaves(batches)[0].shape[0]

    def body(total, i):
        batch = jax.tree.map(lambda x: x[i], batches)
        inc = score.accumulate(variables, batch, key=jax.random.fold_in(key, i))
        return jax.tree.map(jnp.add, total, inc), None

    total, _ = jax.lax.scan(body, score.init(variables["params"]), jnp.arange(num))
    return top_fraction_mask(score.finalize(total, variables["params"]), fraction)


class MaskedRuleState(NamedTuple):
    """State of :func:`hold_masked`.

    Attributes:
      inner: the wrapped rule's state.
      reference: the starting ``variables["params"]``: the values masked weights are held at.
      accumulator: the mask statistic summed so far (``()`` with a fixed mask).
      mask: booleans shaped like the params, ``True`` where weights may change (all ``True``
        until the scoring phase ends).
      step: number of updates taken so far (int32 scalar).
    """

    inner: PyTree
    reference: PyTree
    accumulator: PyTree
    mask: PyTree
    step: Array


def _same_shapes(node: Any, mask: PyTree, mask_def) -> bool:
    """Whether ``node`` is a tree with the structure and leaf shapes of ``mask``."""
    if jax.tree.structure(node) != mask_def:
        return False
    return all(
        getattr(a, "shape", None) == b.shape
        for a, b in zip(jax.tree.leaves(node), jax.tree.leaves(mask), strict=True)
    )


def zero_masked_optimizer_state(state: PyTree, mask: PyTree) -> PyTree:
    """Zeroes, at masked-out coordinates, every params-shaped tree inside an ``opt_state``.

    Momentum traces and Adam moments have the params' structure; counters and the frozen
    ``reference`` of a loss rule (stored outside ``opt_state``) are left alone. States are searched
    through NamedTuples, tuples and lists.
    """
    mask_def = jax.tree.structure(mask)

    def zero_tree(node):
        if _same_shapes(node, mask, mask_def):
            return jax.tree.map(lambda x, m: jnp.where(m, x, jnp.zeros_like(x)), node, mask)
        return node

    def visit(node):
        if hasattr(node, "_fields"):
            fields = {f: getattr(node, f) for f in node._fields}
            if "opt_state" in fields:
                fields["opt_state"] = jax.tree.map(
                    zero_tree,
                    fields["opt_state"],
                    is_leaf=lambda n: _same_shapes(n, mask, mask_def),
                )
            else:
                fields = {f: visit(v) for f, v in fields.items()}
            return type(node)(**fields)
        if isinstance(node, (tuple, list)):
            return type(node)(visit(v) for v in node)
        return node

    return visit(state)


def hold_masked(
    rule: UnlearningRule,
    *,
    mask: PyTree | None = None,
    score: MaskScore | None = None,
    mask_fraction: float | None = None,
    mask_steps: int = 0,
) -> UnlearningRule:
    """Wraps ``rule`` so that masked-out weights stay exactly at their starting values.

    After every inner update, coordinates of ``variables["params"]`` where the mask is ``False``
    are set back to the values the wrapper was initialised with, so they are bit-identical to
    the original whatever the inner optimizer does; the inner optimizer's per-coordinate state
    (momentum, Adam moments) is zeroed there too.

    Give either a fixed ``mask``, or ``score``, ``mask_fraction`` and ``mask_steps`` to compute it
    from the first ``mask_steps`` batches (see the module docstring).

    Args:
      rule: the rule to restrict.
      mask: booleans (or 0/1) shaped like ``variables["params"]``; ``True`` = may change.
      score: a :class:`MaskScore` (e.g. :func:`forget_saliency`).
      mask_fraction: the fraction of weights kept trainable, in (0, 1].
      mask_steps: number of leading updates that only accumulate ``score`` (at least 1 with
        ``score``).

    Returns:
      An :class:`UnlearningRule` whose state is a :class:`MaskedRuleState`.

    >>> rule = hold_masked(random_label(apply, num_classes=10), score=forget_saliency(apply),
    ...                    mask_fraction=0.5, mask_steps=8)  # doctest: +SKIP
    """
    if (mask is None) == (score is None):
        raise ValueError("hold_masked needs exactly one of a fixed `mask` or a `score`")
    if score is not None:
        if mask_fraction is None:
            raise ValueError("hold_masked with a `score` needs `mask_fraction`")
        mask_fraction = check_mask_fraction(mask_fraction)
        mask_steps = int(mask_steps)
        if mask_steps < 1:
            raise ValueError(f"`mask_steps` must be at least 1 to score a mask; got {mask_steps}")
    else:
        if mask_fraction is not None or mask_steps:
            raise ValueError("`mask_fraction` and `mask_steps` apply only with a `score`")
        mask = jax.tree.map(lambda m: jnp.asarray(m).astype(bool), mask)
        mask_steps = 0

    def init(variables: Variables, *, key: Array) -> MaskedRuleState:
        params = variables["params"]
        if mask is not None:
            if jax.tree.structure(mask) != jax.tree.structure(params):
                raise ValueError("`mask` must have the structure of variables['params']")
            start_mask, accumulator = mask, ()
        else:
            start_mask = jax.tree.map(lambda p: jnp.ones(p.shape, bool), params)
            accumulator = score.init(params)
        return MaskedRuleState(
            inner=rule.init(variables, key=key),
            reference=params,
            accumulator=accumulator,
            mask=start_mask,
            step=jnp.zeros((), jnp.int32),
        )

    def unlearn(variables, state, batch, key):
        new_vars, inner, metrics = rule.update(variables, state.inner, batch, key=key)
        params = jax.tree.map(jnp.where, state.mask, new_vars["params"], state.reference)
        inner = zero_masked_optimizer_state(inner, state.mask)
        return {**new_vars, "params": params}, inner, state.accumulator, state.mask, metrics

    def update(variables: Variables, state: MaskedRuleState, batch: Batch, *, key: Array):
        if mask_steps == 0:
            variables, inner, _, _, metrics = unlearn(variables, state, batch, key)
            return variables, state._replace(inner=inner, step=state.step + 1), dict(metrics)

        metric_shapes = jax.eval_shape(
            lambda: rule.update(variables, state.inner, batch, key=key)[2]
        )

        def scoring(_):
            total = jax.tree.map(
                jnp.add, state.accumulator, score.accumulate(variables, batch, key=key)
            )
            new_mask = jax.lax.cond(
                state.step == mask_steps - 1,
                lambda: top_fraction_mask(score.finalize(total, state.reference), mask_fraction),
                lambda: state.mask,
            )
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)
            return variables, state.inner, total, new_mask, zeros

        variables, inner, total, new_mask, metrics = jax.lax.cond(
            state.step < mask_steps, scoring, lambda _: unlearn(variables, state, batch, key), None
        )
        metrics = dict(metrics)
        metrics["scoring_mask"] = (state.step < mask_steps).astype(jnp.float32)
        return (
            variables,
            MaskedRuleState(inner, state.reference, total, new_mask, state.step + 1),
            metrics,
        )

    return UnlearningRule(init, update)
