"""Pieces shared by rule modules: supervised losses on a batch part and optimizer defaults."""

from __future__ import annotations

from collections.abc import Callable

import optax

from jaxunlearn.core import losses, optim
from jaxunlearn.core.rule import BATCH_STATS_KEY
from jaxunlearn.core.types import Array, Batch, Variables


def resolve_optimizer(
    optimizer: optax.GradientTransformation | None,
    *,
    name: str = "sgd",
    learning_rate: float,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
) -> optax.GradientTransformation:
    """``optimizer`` if given, else the reference code's SGD (or Adam) with these settings."""
    if optimizer is not None:
        return optimizer
    if name == "sgd":
        return optim.sgd(learning_rate, momentum=momentum, weight_decay=weight_decay)
    return optim.make(name, learning_rate, weight_decay=weight_decay)


def part_loss(
    apply: Callable,
    variables: Variables,
    batch: Batch,
    part: str,
    *,
    train: bool = False,
    targets: Array | None = None,
) -> tuple[Array, dict]:
    """Supervised loss (CE or MSE) of the model on ``batch[part]``.

    Returns ``(loss, metrics)``; with ``train=True`` on a BatchNorm model, ``metrics`` carries the
    refreshed statistics under ``"batch_stats"`` for :func:`~jaxunlearn.core.rule.rule_from_loss`.
    """
    out = apply(variables, batch[part]["x"], train=train)
    y = batch[part]["y"] if targets is None else targets
    loss = losses.supervised(out.logits, y)
    metrics = {}
    if train and out.batch_stats is not None:
        metrics[BATCH_STATS_KEY] = out.batch_stats
    return loss, metrics
