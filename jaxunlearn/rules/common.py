"""Pieces shared by rule modules: the supervised loss on a batch part, the retain term."""

from __future__ import annotations

from collections.abc import Callable

import jax

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


# The retain terms of the gradient-difference family (OpenUnlearning's ``retain_loss_type``).
RETAIN_LOSSES = ("nll", "kl")


def check_retain_loss(owner: str, retain_loss: str) -> str:
    """``retain_loss`` if it is ``"nll"`` or ``"kl"``, else a ``ValueError`` naming ``owner``."""
    if retain_loss not in RETAIN_LOSSES:
        raise ValueError(
            f"{owner} `retain_loss` must be one of {RETAIN_LOSSES}; got {retain_loss!r}"
        )
    return retain_loss


def retain_term(
    apply: Callable,
    variables: Variables,
    batch: Batch,
    kind: str,
    *,
    reference: Variables | None = None,
    train: bool = False,
) -> tuple[Array, dict]:
    """The retain loss on ``batch["retain"]``: ``"nll"`` (the supervised loss, GradDiff's
    descent) or ``"kl"``, ``KL(p_ref || p_theta)`` to the frozen ``reference`` averaged over every
    output position (for a language model all ``B * T`` positions, padding included, as
    OpenUnlearning's ``compute_kl_divergence``: ``kl_div(..., reduction="batchmean",
    log_target=True)`` over the flattened logits).

    Returns ``(loss, metrics)`` as :func:`part_loss`.

    References:
      OpenUnlearning, ``src/trainer/unlearn/grad_diff.py`` and ``compute_kl_divergence`` in
      ``src/trainer/utils.py`` (locuslab/open-unlearning).
    """
    if kind == "nll":
        return part_loss(apply, variables, batch, "retain", train=train)
    if reference is None:
        raise ValueError("the KL retain term needs the reference (starting) variables")
    x = batch["retain"]["x"]
    out = apply(variables, x, train=train)
    ref_logits = jax.lax.stop_gradient(apply(reference, x).logits)
    metrics = {}
    if train and out.batch_stats is not None:
        metrics[BATCH_STATS_KEY] = out.batch_stats
    return losses.distillation_kl(out.logits, ref_logits), metrics
