"""Fine-tuning (FT) on the retain set, and supervised training from scratch (``retrain``).

FT continues training the original model on the retained data only, relying on catastrophic
forgetting of the forget set. Retrain is the gold standard that every audit compares against:
training a fresh model on the retain set alone.

References:
  Warnecke et al., "Machine Unlearning of Features and Labels", NDSS 2023 (fine-tuning baseline).
  Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023 (FT and Retrain
  baselines; defaults: SGD lr 0.01, momentum 0.9, weight decay 5e-4, 10 epochs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import optim
from jaxunlearn.core.rule import rule_from_loss
from jaxunlearn.core.types import UnlearningRule
from jaxunlearn.rules import registry
from jaxunlearn.rules.common import part_loss


@registry.rule(
    "finetune",
    parts=("retain",),
    paper=(
        "Warnecke et al., NDSS 2023; "
        "Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023"
    ),
    task="any",
    sweepable=("learning_rate",),
)
def finetune(
    apply: Callable,
    *,
    learning_rate: float = 0.01,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """FT: minimise the supervised loss on the retain set.

    Args:
      apply: the model's functional ``apply``.
      learning_rate: SGD step size (Jia et al. defaults).
      train_mode: run BatchNorm in training mode (batch statistics, refreshed running
        averages), as the reference does (``unlearn/FT.py``: ``model.train()``); ``False``
        keeps them fixed.
      optimizer: an optax optimizer, or settings over the reference SGD (momentum 0.9,
        weight decay 5e-4); see :func:`~jaxunlearn.core.optim.resolve`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["retain"]``.
    """
    opt = optim.resolve(optimizer, learning_rate=learning_rate)

    def loss_fn(variables, batch, *, reference, step, key):
        del reference, step, key
        return part_loss(apply, variables, batch, "retain", train=train_mode)

    return rule_from_loss(loss_fn, opt, keep_reference=False)


@registry.rule(
    "retrain",
    parts=("retain",),
    paper="Gold standard: train from scratch on D_r",
    cost="high",
    task="any",
    sweepable=("learning_rate",),
)
def retrain(
    apply: Callable,
    *,
    init_fn: Callable,
    learning_rate: float = 0.1,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """Retrain: discard the given variables and train a fresh model on the retain set.

    ``init`` draws fresh variables from ``init_fn(key)``; the first update swaps them in, so the
    rule fits the common interface and runs in the same loop as every other rule.

    Args:
      apply: the model's functional ``apply``.
      init_fn: ``key -> variables`` of a new model (``Network.init``).
      learning_rate: SGD step size of the base training.
      train_mode: BatchNorm in training mode (the usual way to train from scratch).
      optimizer: an optax optimizer, or settings over the reference SGD (momentum 0.9,
        weight decay 5e-4); see :func:`~jaxunlearn.core.optim.resolve`.
    """
    opt = optim.resolve(optimizer, learning_rate=learning_rate)

    def loss_fn(variables, batch, *, reference, step, key):
        del reference, step, key
        return part_loss(apply, variables, batch, "retain", train=train_mode)

    inner = rule_from_loss(loss_fn, opt, keep_reference=False)

    def init(variables, *, key):
        fresh = init_fn(key)
        return (inner.init(fresh, key=key), fresh)

    def update(variables, state, batch, *, key):
        inner_state, fresh = state
        first = inner_state.step.count == 0
        variables = jax.tree.map(lambda f, v: jnp.where(first, f, v), fresh, variables)
        variables, inner_state, metrics = inner.update(variables, inner_state, batch, key=key)
        return variables, (inner_state, fresh), metrics

    return UnlearningRule(init, update)
