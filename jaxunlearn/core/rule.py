"""The shared builder that turns a loss on forget/retain batches into an unlearning rule.

Most unlearning methods are "a loss + an optimizer": gradient ascent, fine-tuning, NegGrad+,
random labels, SCRUB's min step, bad teaching, ... ``rule_from_loss`` turns such a loss into the
``(init, update)`` pair of :class:`~jaxunlearn.core.types.UnlearningRule`, so a new method is a
few lines.
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

BATCH_STATS_KEY = "batch_stats"


class LossRuleState(NamedTuple):
    """State of a loss-based rule.

    Attributes:
      opt_state: the optax state over ``variables["params"]``.
      reference: the frozen variables the rule started from (teacher / anchor), or ``None``.
      step: number of updates taken so far (int32 scalar).
    """

    opt_state: PyTree
    reference: Variables | None
    step: Array


def rule_from_loss(
    loss_fn: LossFn, optimizer: optax.GradientTransformation, *, keep_reference: bool = True
) -> UnlearningRule:
    """Builds a rule that takes one optimizer step on ``loss_fn`` per update.

    Args:
      loss_fn: ``(variables, batch, *, reference, step, key) -> (loss, metrics)``. ``reference`` is
        the variables the rule was initialised with (``None`` when ``keep_reference=False``), and
        ``step`` the update count, for schedules. If ``metrics`` holds ``"batch_stats"`` (a model run
        with ``train=True``), those refreshed BatchNorm statistics replace the variables' own.
      optimizer: optax transformation applied to ``variables["params"]`` only.
      keep_reference: whether to store a frozen copy of the starting variables in the state.

    Returns:
      An :class:`UnlearningRule`.

    >>> rule = rule_from_loss(my_loss, optax.sgd(1e-2))  # doctest: +SKIP
    >>> state = rule.init(variables, key=key)  # doctest: +SKIP
    >>> variables, state, metrics = jax.jit(rule.update)(variables, state, batch, key=key)  # doctest: +SKIP
    """

    def init(variables: Variables, *, key: Array | None = None) -> LossRuleState:
        del key  # loss rules start deterministically
        return LossRuleState(
            opt_state=optimizer.init(variables["params"]),
            reference=variables if keep_reference else None,
            step=jnp.zeros((), jnp.int32),
        )

    def update(variables: Variables, state: LossRuleState, batch: Batch, *, key: Array):
        def objective(params):
            return loss_fn(
                {**variables, "params": params},
                batch,
                reference=state.reference,
                step=state.step,
                key=key,
            )

        (loss, metrics), grads = jax.value_and_grad(objective, has_aux=True)(variables["params"])
        metrics = dict(metrics)
        new_stats = metrics.pop(BATCH_STATS_KEY, None)
        updates, opt_state = optimizer.update(grads, state.opt_state, variables["params"])
        new_variables = {**variables, "params": optax.apply_updates(variables["params"], updates)}
        if new_stats is not None:
            new_variables[BATCH_STATS_KEY] = new_stats
        metrics["loss"] = loss
        return new_variables, state._replace(opt_state=opt_state, step=state.step + 1), metrics

    return UnlearningRule(init, update)
