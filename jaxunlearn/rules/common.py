"""Pieces shared by rule modules: the supervised loss on a batch part."""

from __future__ import annotations

from collections.abc import Callable

from jaxunlearn.core import losses
from jaxunlearn.core.rule import BATCH_STATS_KEY
from jaxunlearn.core.types import Array, Batch, Variables


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
