"""Builders that turn gradients or a loss into an unlearning rule, and the one step counter.

Most unlearning methods are "a loss + an optimizer": gradient ascent, fine-tuning, NegGrad+,
random labels, SCRUB's min step, bad teaching, ... :func:`rule_from_loss` turns such a loss into
the ``(init, update)`` pair of :class:`~jaxunlearn.core.types.UnlearningRule`, so a new method is
a few lines. Methods whose update direction is not the gradient of one loss (projected or
orthogonalised gradients, hand-derived updates) give :func:`rule_from_grads` a function that
returns the direction; :func:`optimizer_step` is the one place where a direction goes through an
optax optimizer into the parameters.

A rule that counts its updates keeps a :class:`StepCounter` in its state. The counter is a
declaration as much as a value: every model of a vmapped ensemble takes its steps together, so
:func:`jaxunlearn.train.fit` keeps ``StepCounter`` leaves unbatched inside the compiled program,
and a rule's ``lax.cond`` or ``lax.switch`` on its counter (phases, schedules, one-shot edits)
stays a real branch instead of a ``select`` that runs every branch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core.types import Array, Batch, Metrics, PyTree, UnlearningRule, Variables

# loss_fn(variables, batch, *, reference, step, key) -> (scalar loss, metrics dict)
LossFn = Callable[..., tuple[Array, Metrics]]
# grad_fn(variables, batch, *, reference, step, key) -> (grads shaped like params, metrics dict)
GradFn = Callable[..., tuple[PyTree, Metrics]]

BATCH_STATS_KEY = "batch_stats"


class StepCounter(NamedTuple):
    """The number of updates a rule has taken, shared by every model of an ensemble.

    Attributes:
      count: int32 scalar.
    """

    count: Array

    @classmethod
    def zero(cls) -> StepCounter:
        """A counter at 0."""
        return cls(jnp.zeros((), jnp.int32))

    def next(self) -> StepCounter:
        """The counter one update later."""
        return StepCounter(self.count + 1)


def is_step_counter(node) -> bool:
    """Whether ``node`` is a :class:`StepCounter` (for ``is_leaf`` in tree maps)."""
    return isinstance(node, StepCounter)


def optimizer_step(
    optimizer: optax.GradientTransformation,
    grads: PyTree,
    opt_state: PyTree,
    variables: Variables,
    *,
    batch_stats: PyTree | None = None,
    scale: Array | float | None = None,
) -> tuple[Variables, PyTree]:
    """One optimizer step on ``variables["params"]``.

    Args:
      optimizer: the optax transformation.
      grads: the direction, shaped like ``variables["params"]`` (a descent direction: optax
        subtracts the learning rate times it).
      opt_state: the optimizer's state.
      variables: the model variables; only ``"params"`` is changed.
      batch_stats: refreshed BatchNorm statistics that replace the variables' own, if any.
      scale: a multiplier on the optimizer's updates (an epoch learning-rate decay applied
        outside the optimizer), or ``None``.

    Returns:
      ``(new_variables, new_opt_state)``.
    """
    updates, opt_state = optimizer.update(grads, opt_state, variables["params"])
    if scale is not None:
        updates = jax.tree.map(lambda u: scale * u, updates)
    new_variables = {**variables, "params": optax.apply_updates(variables["params"], updates)}
    if batch_stats is not None:
        new_variables[BATCH_STATS_KEY] = batch_stats
    return new_variables, opt_state


class LossRuleState(NamedTuple):
    """State of a rule built by :func:`rule_from_grads` or :func:`rule_from_loss`.

    Attributes:
      opt_state: the optax state over ``variables["params"]``.
      reference: the frozen variables the rule started from (teacher / anchor), or ``None``.
      step: updates taken so far.
    """

    opt_state: PyTree
    reference: Variables | None
    step: StepCounter


def rule_from_grads(
    grad_fn: GradFn, optimizer: optax.GradientTransformation, *, keep_reference: bool = True
) -> UnlearningRule:
    """Builds a rule that takes one optimizer step along ``grad_fn``'s direction per update.

    Args:
      grad_fn: ``(variables, batch, *, reference, step, key) -> (grads, metrics)``. ``grads`` has
        the structure of ``variables["params"]``; ``reference`` is the variables the rule was
        initialised with (``None`` when ``keep_reference=False``), and ``step`` the update count
        (an int32 scalar), for schedules. If ``metrics`` holds ``"batch_stats"`` (a model run
        with ``train=True``), those refreshed BatchNorm statistics replace the variables' own.
      optimizer: optax transformation applied to ``variables["params"]`` only.
      keep_reference: whether to store a frozen copy of the starting variables in the state.

    Returns:
      An :class:`UnlearningRule` whose state is a :class:`LossRuleState`.
    """

    def init(variables: Variables, *, key: Array | None = None) -> LossRuleState:
        del key  # gradient rules start deterministically
        return LossRuleState(
            opt_state=optimizer.init(variables["params"]),
            reference=variables if keep_reference else None,
            step=StepCounter.zero(),
        )

    def update(variables: Variables, state: LossRuleState, batch: Batch, *, key: Array):
        grads, metrics = grad_fn(
            variables, batch, reference=state.reference, step=state.step.count, key=key
        )
        metrics = dict(metrics)
        new_variables, opt_state = optimizer_step(
            optimizer,
            grads,
            state.opt_state,
            variables,
            batch_stats=metrics.pop(BATCH_STATS_KEY, None),
        )
        return new_variables, state._replace(opt_state=opt_state, step=state.step.next()), metrics

    # Wrappers that train something other than the parameters themselves (LoRA adapters,
    # :mod:`jaxunlearn.core.lora`) reuse the rule's direction and optimizer.
    update.grad_parts = GradParts(grad_fn, optimizer, keep_reference)
    return UnlearningRule(init, update)


class GradParts(NamedTuple):
    """What a rule built by :func:`rule_from_grads` (or :func:`rule_from_loss`) is made of.

    Attributes:
      grad_fn: its :data:`GradFn`.
      optimizer: its optax optimizer.
      keep_reference: whether it reads the starting variables as ``reference``.
    """

    grad_fn: GradFn
    optimizer: optax.GradientTransformation
    keep_reference: bool


def grad_parts(rule: UnlearningRule) -> GradParts | None:
    """The :class:`GradParts` of a rule built by :func:`rule_from_grads`, else ``None``."""
    return getattr(rule.update, "grad_parts", None)


def grads_of_loss(loss_fn: LossFn) -> GradFn:
    """The :data:`GradFn` of ``loss_fn``: its gradient, with the loss added to the metrics."""

    def grad_fn(variables: Variables, batch: Batch, **kwargs):
        def objective(params):
            return loss_fn({**variables, "params": params}, batch, **kwargs)

        (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(variables["params"])
        return grads, {**metrics, "loss": loss}

    return grad_fn


def rule_from_loss(
    loss_fn: LossFn, optimizer: optax.GradientTransformation, *, keep_reference: bool = True
) -> UnlearningRule:
    """Builds a rule that takes one optimizer step on ``loss_fn`` per update.

    Args:
      loss_fn: ``(variables, batch, *, reference, step, key) -> (loss, metrics)``. ``reference`` is
        the variables the rule was initialised with (``None`` when ``keep_reference=False``), and
        ``step`` the update count, for schedules. If ``metrics`` holds ``"batch_stats"`` (a model
        run with ``train=True``), those refreshed BatchNorm statistics replace the variables' own.
      optimizer: optax transformation applied to ``variables["params"]`` only.
      keep_reference: whether to store a frozen copy of the starting variables in the state.

    Returns:
      An :class:`UnlearningRule`; its metrics hold ``"loss"`` and the loss function's metrics.

    >>> rule = rule_from_loss(my_loss, optax.sgd(1e-2))  # doctest: +SKIP
    >>> state = rule.init(variables, key=key)  # doctest: +SKIP
    >>> update = jax.jit(rule.update)  # doctest: +SKIP
    >>> variables, state, metrics = update(variables, state, batch, key=key)  # doctest: +SKIP
    """
    return rule_from_grads(grads_of_loss(loss_fn), optimizer, keep_reference=keep_reference)
