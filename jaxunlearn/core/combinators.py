"""The rule algebra: phases, parameter masks and one-shot edits over rule *objects*.

A method is rarely one loss. It is phases (UNSIR: impair, then repair), a one-shot edit then a
repair, a loss under a parameter mask (SalUn, WAGLE). These combinators build such methods from
rule objects, in the spirit of ``optax.chain``: the inner rule keeps whatever context it was
built with, and nothing is looked up by name.

- :func:`phases` runs rules one after another for set numbers of updates. It owns one
  :class:`~jaxunlearn.core.rule.StepCounter` and switches with a real ``lax.switch``; a phase's
  state starts afresh from the variables the phase starts with, and may read the state its
  predecessor ended with (an adapted copy, a trained proxy, a saliency statistic).
- :func:`masked` holds masked-out weights exactly at their starting values, whatever the inner
  optimizer does; :func:`saliency_masked` first scores the weights from data for a few updates
  (a :class:`MaskScore`) and then runs the rule under the top-scoring fraction.
- :func:`one_shot` turns an edit of the variables into a rule, to run as a phase of one update.

>>> rule = phases((n_impair, impair_rule), (None, repair_rule))  # doctest: +SKIP
>>> rule = saliency_masked(random_label(apply, num_classes=10), score=forget_saliency(apply),
...                        fraction=0.5, score_steps=8)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.core.checks import check_count, is_count
from jaxunlearn.core.rule import StepCounter
from jaxunlearn.core.types import Array, Batch, Metrics, PyTree, UnlearningRule, Variables


def _takes_previous(rule: UnlearningRule) -> bool:
    try:
        return "previous" in inspect.signature(rule.init).parameters
    except (TypeError, ValueError):
        return False


def _init(rule: UnlearningRule, variables: Variables, key: Array, previous: PyTree | None):
    if previous is not None and _takes_previous(rule):
        return rule.init(variables, key=key, previous=previous)
    return rule.init(variables, key=key)


def _restart_key(key: Array, phase: int) -> Array:
    """The key a phase is re-initialised with when it starts (apart from the update's own use)."""
    return jax.random.fold_in(jax.random.fold_in(key, 0x5048), phase)


class PhasesState(NamedTuple):
    """State of :func:`phases`.

    Attributes:
      step: updates taken so far (the one counter the phase switch reads).
      phases: one state per phase.
    """

    step: StepCounter
    phases: tuple


def phases(*schedule: tuple[int | None, UnlearningRule], restart: bool = True) -> UnlearningRule:
    """Runs rules one after another: the first for ``n_1`` updates, the next for ``n_2``, ...

    Args:
      *schedule: ``(num_updates, rule)`` pairs. Every length but the last must be a positive
        integer (:func:`~jaxunlearn.core.checks.is_count`); the last may be ``None`` (the last
        phase runs until the run ends), and a run longer than the schedule keeps running its last
        phase.
      restart: initialise each later phase's state when the phase starts, from the variables it
        starts with (its optimizer state starts fresh and its reference is the model as the
        previous phase left it). A rule whose ``init`` takes a ``previous`` keyword also
        receives the state the previous phase ended with. With ``restart=False`` every phase's
        state is initialised once, from the starting variables.

    Returns:
      An :class:`UnlearningRule` whose state is a :class:`PhasesState`. Its metrics are the union
      of the phases' metrics (zero where a phase does not report one) and ``"phase"``.

    Raises:
      ValueError: for an empty schedule or a non-positive or non-integer phase length.
    """
    if not schedule:
        raise ValueError("phases needs at least one (num_updates, rule) pair")
    lengths = []
    for i, entry in enumerate(schedule):
        if not (isinstance(entry, tuple) and len(entry) == 2):
            raise ValueError(f"phases: entry {i} must be a (num_updates, rule) pair; got {entry!r}")
        n, rule = entry
        if not isinstance(rule, UnlearningRule):
            raise ValueError(f"phases: entry {i} holds {type(rule).__name__}, not a rule")
        last = i == len(schedule) - 1
        if n is None and last:
            lengths.append(None)
            continue
        if not is_count(n, 1):
            raise ValueError(f"phases: phase {i} must run a positive int of updates; got {n!r}")
        lengths.append(int(n))
    rules = [rule for _, rule in schedule]
    starts = [0]
    for n in lengths[:-1]:
        starts.append(starts[-1] + n)

    def init(variables: Variables, *, key: Array) -> PhasesState:
        states, previous = [], None
        for i, rule in enumerate(rules):
            # The first phase starts as the rule alone would; later ones get keys of their own.
            previous = _init(
                rule, variables, key if i == 0 else jax.random.fold_in(key, i), previous
            )
            states.append(previous)
        return PhasesState(StepCounter.zero(), tuple(states))

    def update(variables: Variables, state: PhasesState, batch: Batch, *, key: Array):
        step = state.step.count
        index = sum((step >= s).astype(jnp.int32) for s in starts[1:]) if len(rules) > 1 else 0

        def run_phase(i: int):
            rule = rules[i]

            def branch(variables, states):
                own = states[i]
                if restart and i > 0:
                    own = jax.lax.cond(
                        step == starts[i],
                        lambda: _init(rule, variables, _restart_key(key, i), states[i - 1]),
                        lambda: own,
                    )
                new_vars, own, metrics = rule.update(variables, own, batch, key=key)
                states = states[:i] + (own,) + states[i + 1 :]
                return new_vars, states, dict(metrics)

            return branch

        branches = [run_phase(i) for i in range(len(rules))]
        if len(rules) == 1:
            variables, states, metrics = branches[0](variables, state.phases)
        else:
            shapes = [
                jax.eval_shape(b, variables, state.phases)[2] for b in branches
            ]  # every branch must return the same metric dict
            names = {}
            for s in shapes:
                for k, v in s.items():
                    names.setdefault(k, v)

            def padded(branch):
                def run(variables, states):
                    new_vars, states, metrics = branch(variables, states)
                    full = {
                        k: metrics[k] if k in metrics else jnp.zeros(v.shape, v.dtype)
                        for k, v in names.items()
                    }
                    return new_vars, states, full

                return run

            variables, states, metrics = jax.lax.switch(
                index, [padded(b) for b in branches], variables, state.phases
            )
        metrics["phase"] = jnp.asarray(index, jnp.float32)
        return variables, PhasesState(state.step.next(), states), metrics

    return UnlearningRule(init, update)


def one_shot(edit: Callable[..., tuple[Variables, Metrics]]) -> UnlearningRule:
    """A stateless rule whose every update is ``edit(variables, batch, *, key)``.

    Run it as a phase of one update before a repair rule:
    ``phases((1, one_shot(edit)), (None, repair))``.

    Args:
      edit: ``(variables, batch, *, key) -> (variables, metrics)``.
    """

    def init(variables: Variables, *, key: Array | None = None):
        del variables, key
        return ()

    def update(variables: Variables, state, batch: Batch, *, key: Array):
        variables, metrics = edit(variables, batch, key=key)
        return variables, state, dict(metrics)

    return UnlearningRule(init, update)


# ----------------------------------------------------------------------------------- masks


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
    the float bit patterns (32 counting passes) rather than by sorting, which under ``vmap`` costs
    far more than an update.

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


class MaskedState(NamedTuple):
    """State of :func:`masked`.

    Attributes:
      inner: the wrapped rule's state.
      anchor: the starting ``variables["params"]``: the values masked weights are held at.
      mask: booleans shaped like the params, ``True`` where weights may change.
    """

    inner: PyTree
    anchor: PyTree
    mask: PyTree


def _hold(rule: UnlearningRule, mask_of: Callable[[Variables, PyTree | None], PyTree]):
    """``rule`` with the mask ``mask_of(variables, previous)`` computed at init."""

    def init(variables: Variables, *, key: Array, previous: PyTree | None = None) -> MaskedState:
        mask = mask_of(variables, previous)
        if jax.tree.structure(mask) != jax.tree.structure(variables["params"]):
            raise ValueError("a mask must have the structure of variables['params']")
        return MaskedState(rule.init(variables, key=key), variables["params"], mask)

    def update(variables: Variables, state: MaskedState, batch: Batch, *, key: Array):
        new_vars, inner, metrics = rule.update(variables, state.inner, batch, key=key)
        params = jax.tree.map(jnp.where, state.mask, new_vars["params"], state.anchor)
        return {**new_vars, "params": params}, state._replace(inner=inner), dict(metrics)

    return UnlearningRule(init, update)


def _key_name(entry) -> str:
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def leaf_paths(tree: PyTree) -> PyTree:
    """The dotted path of every leaf, as a pytree of strings shaped like ``tree``.

    ``{"layers": {"5": {"mlp": {"down_proj": {"kernel": w}}}}}`` gives
    ``"layers.5.mlp.down_proj.kernel"`` for ``w``: Hugging Face's parameter names with our
    ``kernel`` for its ``weight`` (see ``docs/language_models.md``).
    """
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return jax.tree.unflatten(treedef, [".".join(_key_name(k) for k in path) for path, _ in flat])


def compile_patterns(pattern: str | Sequence[str], name: str = "pattern") -> list[re.Pattern]:
    """The compiled regular expression(s) of a path selection, or a ``ValueError`` naming
    ``name`` for anything but valid regex strings."""
    if isinstance(pattern, str):
        patterns = [pattern]
    elif isinstance(pattern, Sequence):
        patterns = list(pattern)
    else:
        patterns = []
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"`{name}` must be a regex string or a list of them; got {pattern!r}")
    try:
        return [re.compile(p) for p in patterns]
    except re.error as err:
        raise ValueError(f"`{name}` {pattern!r} is not a valid regular expression: {err}") from None


def path_matches(tree: PyTree, pattern: str | Sequence[str]) -> PyTree:
    """Python bools shaped like ``tree``: whether each leaf's dotted path matches ``pattern``.

    See :func:`path_mask`; this is its static (trace-free) form.
    """
    compiled = compile_patterns(pattern)
    paths = leaf_paths(tree)
    hits = jax.tree.map(lambda path: any(c.fullmatch(path) for c in compiled), paths)
    if not any(jax.tree.leaves(hits)):
        names = jax.tree.leaves(paths)
        raise ValueError(
            f"`pattern` {pattern!r} matches no parameter; the paths look like {names[:6]}"
            + (" ..." if len(names) > 6 else "")
        )
    return hits


def path_mask(variables: Variables | PyTree, pattern: str | Sequence[str]) -> PyTree:
    """Booleans shaped like the params: ``True`` where a leaf's dotted path matches ``pattern``.

    A path (:func:`leaf_paths`) matches when ``re.fullmatch`` of any of the patterns accepts it,
    as OpenUnlearning selects trainable parameters (``trainable_params_regex`` of its RMU). With
    :func:`masked` this is the parameter-subset mask of the language-model rules, e.g. WMDP's RMU
    updates only ``layers\\.(5|6|7)\\.mlp\\.down_proj\\.kernel``.

    Args:
      variables: model variables (their ``"params"`` are masked) or a params tree.
      pattern: a regular expression, or several (a leaf matching any is selected).

    Returns:
      A pytree of boolean NumPy arrays with the structure and shapes of the params.

    Raises:
      ValueError: for an invalid regular expression, or one that matches no parameter (the
        message lists some of the paths).
    """
    is_variables = isinstance(variables, dict) and "params" in variables
    params = variables["params"] if is_variables else variables
    hits = path_matches(params, pattern)
    return jax.tree.map(lambda hit, leaf: np.full(np.shape(leaf), hit, bool), hits, params)


def masked(rule: UnlearningRule, mask: PyTree | Callable[[Variables], PyTree]) -> UnlearningRule:
    """``rule`` restricted to the weights where ``mask`` is ``True``.

    After every inner update the masked-out coordinates of ``variables["params"]`` are set back
    to their values at ``init``, so they stay bit-identical to the start whatever the optimizer
    does (weight decay, momentum and Adam's moments move them under mere gradient masking: the bug
    of Unlearn-Saliency issue #32). With a per-coordinate optimizer (SGD, momentum, weight decay,
    Adam) the kept weights then follow exactly the trajectory of gradient masking; the optimizer's
    statistics at held coordinates never reach the parameters.

    Args:
      rule: the rule to restrict.
      mask: booleans (or 0/1) shaped like ``variables["params"]``; ``True`` = may change. Or a
        function ``variables -> mask`` evaluated at ``init``, for a mask that depends on the
        model, e.g. ``lambda v: path_mask(v, r"layers\\.(5|6|7)\\.mlp\\.down_proj\\.kernel")``.

    Returns:
      An :class:`UnlearningRule` whose state is a :class:`MaskedState`.
    """
    if callable(mask):
        mask_fn = mask
        return _hold(
            rule,
            lambda variables, previous: jax.tree.map(
                lambda m: jnp.asarray(m).astype(bool), mask_fn(variables)
            ),
        )
    mask = jax.tree.map(lambda m: jnp.asarray(m).astype(bool), mask)
    return _hold(rule, lambda variables, previous: mask)


class ScoringState(NamedTuple):
    """State of the scoring phase of :func:`saliency_masked`.

    Attributes:
      accumulator: the mask statistic summed over the batches seen.
    """

    accumulator: PyTree


def saliency_masked(
    rule: UnlearningRule, *, score: MaskScore, fraction: float, score_steps: int
) -> UnlearningRule:
    """Scores weights on the first ``score_steps`` batches, then runs ``rule`` on the top ones.

    The first ``score_steps`` updates leave the model untouched and sum ``score.accumulate`` over
    their batches; the mask then keeps the global top ``fraction`` of ``score.finalize`` trainable
    and :func:`masked` runs ``rule`` under it. The inner rule starts at the first update after
    scoring. The scoring updates count towards a run's length.

    Args:
      rule: the rule run under the mask (built with whatever context it needs).
      score: how weights are scored (e.g. SalUn's forget-gradient saliency).
      fraction: the fraction of weights kept trainable, in (0, 1].
      score_steps: updates spent scoring, at least 1.

    Returns:
      An :class:`UnlearningRule` (a :func:`phases` of scoring then masked unlearning).
    """
    fraction = check_mask_fraction(fraction)
    score_steps = check_count(score_steps, "score_steps", 1)

    def init(variables: Variables, *, key: Array | None = None) -> ScoringState:
        del key
        return ScoringState(score.init(variables["params"]))

    def update(variables: Variables, state: ScoringState, batch: Batch, *, key: Array):
        total = jax.tree.map(
            jnp.add, state.accumulator, score.accumulate(variables, batch, key=key)
        )
        return variables, ScoringState(total), {}

    def mask_of(variables, previous):
        return top_fraction_mask(
            score.finalize(previous.accumulator, variables["params"]), fraction
        )

    return phases((score_steps, UnlearningRule(init, update)), (None, _hold(rule, mask_of)))
