"""Gradient ascent (GA) and NegGrad+ (gradient difference).

GA maximises the loss on the forget set; NegGrad+ adds descent on the retain set so that the
model keeps its utility.

References:
  Thudi et al., "Unrolling SGD: Understanding Factors Influencing Machine Unlearning", EuroS&P
  2022 (gradient ascent); Jia et al., NeurIPS 2023 (GA baseline: lr 1e-4, 5 epochs).
  Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023 (NegGrad+:
  ``beta * L_retain - (1 - beta) * L_forget``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import optax

from jaxunlearn.core import optim
from jaxunlearn.core.checks import concrete
from jaxunlearn.core.rule import rule_from_loss
from jaxunlearn.core.types import UnlearningRule
from jaxunlearn.rules import registry
from jaxunlearn.rules.common import part_loss


@registry.rule(
    "gradient_ascent",
    parts=("forget",),
    paper="Thudi et al., Unrolling SGD, EuroS&P 2022; Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023",
    task="any",
    sweepable=("learning_rate",),
)
def gradient_ascent(
    apply: Callable,
    *,
    learning_rate: float = 1e-4,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """GA: minimise ``-loss`` on the forget set.

    Args:
      apply: the model's functional ``apply``.
      learning_rate: SGD step size (Jia et al. defaults; the maintainers
        note 5e-4 to 1e-3 is often needed).
      optimizer: an optax optimizer, or settings over the reference SGD (momentum 0.9,
        weight decay 5e-4); see :func:`~jaxunlearn.core.optim.resolve`.
    """
    opt = optim.resolve(optimizer, learning_rate=learning_rate)

    def loss_fn(variables, batch, *, reference, step, key):
        del reference, step, key
        loss, metrics = part_loss(apply, variables, batch, "forget")
        return -loss, {**metrics, "forget_loss": loss}

    return rule_from_loss(loss_fn, opt, keep_reference=False)


@registry.rule(
    "neggrad_plus",
    parts=("forget", "retain"),
    paper="Kurmanji et al., Towards Unbounded Machine Unlearning (SCRUB), NeurIPS 2023",
    task="any",
    sweepable=("beta", "learning_rate"),
)
def neggrad_plus(
    apply: Callable,
    *,
    beta: float = 0.999,
    learning_rate: float = 0.01,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """NegGrad+: ``beta * loss(retain) - (1 - beta) * loss(forget)``.

    Args:
      apply: the model's functional ``apply``.
      beta: weight of the retain loss, in [0, 1] (Kurmanji et al. tune it per setting).
      learning_rate: SGD step size.
      optimizer: an optax optimizer, or settings over the reference SGD (momentum 0.9,
        weight decay 5e-4); see :func:`~jaxunlearn.core.optim.resolve`.
    """
    if concrete(beta) and not 0.0 <= beta <= 1.0:
        raise ValueError(f"neggrad_plus `beta` must lie in [0, 1]; got {beta}")
    opt = optim.resolve(optimizer, learning_rate=learning_rate)

    def loss_fn(variables, batch, *, reference, step, key):
        del reference, step, key
        retain_loss, _ = part_loss(apply, variables, batch, "retain")
        forget_loss, _ = part_loss(apply, variables, batch, "forget")
        loss = beta * retain_loss - (1.0 - beta) * forget_loss
        return loss, {"retain_loss": retain_loss, "forget_loss": forget_loss}

    return rule_from_loss(loss_fn, opt, keep_reference=False)
