"""Gradient ascent (GA), NegGrad+ and gradient difference (GradDiff).

GA maximises the loss on the forget set; NegGrad+ and GradDiff add descent on the retain set so
that the model keeps its utility. NegGrad+ mixes the two losses convexly
(``beta * L_retain - (1 - beta) * L_forget``); GradDiff adds them unnormalised
(``-L_forget + retain_weight * L_retain``, equal weights by default), as WAGLE's configs do.

Every rule runs the model in training mode by default (``train_mode=True``: BatchNorm normalises
with batch statistics and refreshes its running averages), as the reference loops call
``model.train()``; ``train_mode=False`` keeps the statistics frozen.

References:
  Thudi et al., "Unrolling SGD: Understanding Factors Influencing Machine Unlearning", EuroS&P
  2022 (gradient ascent); Jia et al., NeurIPS 2023 (GA baseline: lr 1e-4, 5 epochs).
  Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023 (NegGrad+:
  ``beta * L_retain - (1 - beta) * L_forget``).
  Jia et al., "WAGLE: Strategic Weight Attribution for Effective and Modular Unlearning in Large
  Language Models", NeurIPS 2024 (GradDiff, ``unlearn_method: "GA+FT"`` with ``gamma: 1.0`` in
  ``configs/unlearn/*/GradDiff+WAGLE.json`` of OPTML-Group/WAGLE).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import optax

from jaxunlearn.core import optim
from jaxunlearn.core.checks import concrete
from jaxunlearn.core.rule import BATCH_STATS_KEY, rule_from_loss
from jaxunlearn.core.types import Array, Batch, UnlearningRule, Variables
from jaxunlearn.rules import registry
from jaxunlearn.rules.common import check_retain_loss, part_loss, retain_term


def retain_and_forget_losses(
    apply: Callable, variables: Variables, batch: Batch, *, train: bool
) -> tuple[Array, Array, dict]:
    """Supervised losses on ``batch["retain"]`` then ``batch["forget"]``.

    In training mode the forget pass starts from the statistics the retain pass refreshed, so
    the running averages see both batches in turn, as two forward passes of a PyTorch model in
    ``train()`` mode do; the metrics then carry them under ``"batch_stats"``.
    """
    retain_loss, stats = part_loss(apply, variables, batch, "retain", train=train)
    if BATCH_STATS_KEY in stats:
        variables = {**variables, BATCH_STATS_KEY: stats[BATCH_STATS_KEY]}
    forget_loss, stats = part_loss(apply, variables, batch, "forget", train=train)
    return retain_loss, forget_loss, stats


@registry.rule(
    "gradient_ascent",
    parts=("forget",),
    paper=(
        "Thudi et al., Unrolling SGD, EuroS&P 2022; "
        "Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023"
    ),
    task="any",
    sweepable=("learning_rate",),
)
def gradient_ascent(
    apply: Callable,
    *,
    learning_rate: float = 1e-4,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """GA: minimise ``-loss`` on the forget set.

    Args:
      apply: the model's functional ``apply``.
      learning_rate: SGD step size (Jia et al. defaults; the maintainers
        note 5e-4 to 1e-3 is often needed).
      train_mode: run BatchNorm in training mode, as the reference (``unlearn/GA.py``:
        ``model.train()``); ``False`` keeps its statistics frozen.
      optimizer: an optax optimizer, or settings over the reference SGD (momentum 0.9,
        weight decay 5e-4); see :func:`~jaxunlearn.core.optim.resolve`.
    """
    opt = optim.resolve(optimizer, learning_rate=learning_rate)

    def loss_fn(variables, batch, *, reference, step, key):
        del reference, step, key
        loss, metrics = part_loss(apply, variables, batch, "forget", train=train_mode)
        return -loss, {**metrics, "forget_loss": loss}

    return rule_from_loss(loss_fn, opt, keep_reference=False)


def _loss_difference(
    apply: Callable,
    retain_weight,
    forget_weight,
    *,
    train_mode: bool,
    optimizer: optax.GradientTransformation,
    retain_loss: str = "nll",
) -> UnlearningRule:
    """``retain_weight * retain term - forget_weight * loss(forget)``: NegGrad+ and GradDiff.

    The retain term is the supervised loss on the retain batch (``"nll"``) or the KL from the
    starting model (``"kl"``, see :func:`~jaxunlearn.rules.common.retain_term`).
    """

    def loss_fn(variables, batch, *, reference, step, key):
        del step, key
        if retain_loss == "nll":
            retain_value, forget_loss, stats = retain_and_forget_losses(
                apply, variables, batch, train=train_mode
            )
        else:
            retain_value, stats = retain_term(
                apply, variables, batch, retain_loss, reference=reference, train=train_mode
            )
            if BATCH_STATS_KEY in stats:
                variables = {**variables, BATCH_STATS_KEY: stats[BATCH_STATS_KEY]}
            forget_loss, stats = part_loss(apply, variables, batch, "forget", train=train_mode)
        loss = retain_weight * retain_value - forget_weight * forget_loss
        return loss, {**stats, "retain_loss": retain_value, "forget_loss": forget_loss}

    return rule_from_loss(loss_fn, optimizer, keep_reference=retain_loss != "nll")


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
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """NegGrad+: ``beta * loss(retain) - (1 - beta) * loss(forget)``.

    Args:
      apply: the model's functional ``apply``.
      beta: weight of the retain loss, in [0, 1] (Kurmanji et al. tune it per setting).
      learning_rate: SGD step size.
      train_mode: run BatchNorm in training mode (retain batch, then forget batch), as the
        SCRUB repository's NegGrad+ loop does; ``False`` keeps its statistics frozen.
      optimizer: an optax optimizer, or settings over the reference SGD (momentum 0.9,
        weight decay 5e-4); see :func:`~jaxunlearn.core.optim.resolve`.
    """
    if concrete(beta) and not 0.0 <= beta <= 1.0:
        raise ValueError(f"neggrad_plus `beta` must lie in [0, 1]; got {beta}")
    opt = optim.resolve(optimizer, learning_rate=learning_rate)
    return _loss_difference(apply, beta, 1.0 - beta, train_mode=train_mode, optimizer=opt)


@registry.rule(
    "grad_diff",
    parts=("forget", "retain"),
    paper=(
        "Liu et al., Continual Learning and Private Unlearning, CoLLAs 2022; "
        "Jia et al., WAGLE, NeurIPS 2024"
    ),
    task="any",
    sweepable=("retain_weight", "learning_rate"),
)
def grad_diff(
    apply: Callable,
    *,
    retain_weight: float = 1.0,
    retain_loss: str = "nll",
    learning_rate: float = 0.01,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """GradDiff: ``-loss(forget) + retain_weight * loss(retain)``, unnormalised.

    With ``retain_weight = 1`` (WAGLE's ``gamma: 1.0``) the two losses weigh the same and the
    step is twice that of :func:`neggrad_plus` at ``beta = 0.5``. On a language model the losses
    are the mean NLL over answer tokens (OpenUnlearning's ``GradDiff``, ``gamma = alpha = 1``;
    its LM runs use AdamW at lr 1e-5: ``optimizer={"name": "adamw"}``).

    Args:
      apply: the model's functional ``apply``.
      retain_weight: weight of the retain loss (``gamma``), non-negative.
      retain_loss: the retain term: ``"nll"`` (the supervised loss on the retain batch) or
        ``"kl"``, ``KL(p_start || p_theta)`` to the starting model averaged over every output
        position (OpenUnlearning's ``retain_loss_type: KL``; see
        :func:`~jaxunlearn.rules.common.retain_term`).
      learning_rate: SGD step size.
      train_mode: run BatchNorm in training mode (retain batch, then forget batch); ``False``
        keeps its statistics frozen.
      optimizer: an optax optimizer, or settings over the reference SGD (momentum 0.9,
        weight decay 5e-4); see :func:`~jaxunlearn.core.optim.resolve`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and ``batch["retain"]``.
    """
    if concrete(retain_weight) and not retain_weight >= 0.0:
        raise ValueError(f"grad_diff `retain_weight` must be non-negative; got {retain_weight}")
    check_retain_loss("grad_diff", retain_loss)
    opt = optim.resolve(optimizer, learning_rate=learning_rate)
    return _loss_difference(
        apply, retain_weight, 1.0, train_mode=train_mode, optimizer=opt, retain_loss=retain_loss
    )
