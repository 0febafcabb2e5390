"""Learning without Forgetting: learn a new task while keeping the old task's outputs.

The network's classifier head (``Outputs.logits``) is the *old* task's; the *new* task's head is
the projection head of ``repr.encoder("lwf", network)`` (a linear layer with ``num_outputs``
classes; build it with ``with_projection_head(network, (num_new_classes,), batch_norm=False)``
for another number of classes). ``batch["retain"]`` holds new-task examples with new-task labels
``y``. The old task's targets are the outputs of the network as the rule found it (the frozen
reference in the rule state), on the same new-task images: Li and Hoiem record them once before
training; with a frozen network, computing them on the fly is the same thing.

Two phases (:func:`jaxunlearn.core.combinators.phases`): a warm-up of ``warmup_steps`` updates
that trains only the new head on ``L_new`` (every other weight held exactly), then joint training
of everything on ``L_new + lambda_o L_old`` with a fresh optimizer state.

References:
  Li and Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI 2017, arXiv 1606.09282
  (``L = lambda_o L_old + L_new + R``, T = 2, lambda_o = 1, warm-up of the new head);
  ``shared/reference/unlearnable_and_representation.md`` (Part B3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import optax

from jaxunlearn.core import losses as core_losses
from jaxunlearn.core import optim
from jaxunlearn.core.combinators import phases
from jaxunlearn.core.rule import rule_from_loss
from jaxunlearn.core.types import UnlearningRule
from jaxunlearn.repr import losses
from jaxunlearn.repr.common import PART, check_count, check_nonnegative, check_positive
from jaxunlearn.repr.registry import rule

LWF_SGD = optim.REFERENCE_SGD


def _new_head_only(optimizer: optax.GradientTransformation) -> optax.GradientTransformation:
    """``optimizer`` on ``params["projector"]``; every other update exactly zero."""

    def is_head(params):
        return {k: jax.tree.map(lambda _, h=k == "projector": h, v) for k, v in params.items()}

    def is_not_head(params):
        return {k: jax.tree.map(lambda _, h=k != "projector": h, v) for k, v in params.items()}

    return optax.chain(
        optax.masked(optimizer, is_head), optax.masked(optax.set_to_zero(), is_not_head)
    )


@rule(
    "lwf",
    parts=(PART,),
    paper="Li and Hoiem, Learning without Forgetting, ECCV 2016",
    needs_labels=True,
    task="classification",
    sweepable=("learning_rate", "old_weight", "temperature"),
    head=lambda width, num_outputs: {"dims": (num_outputs,), "batch_norm": False},
    num_views=0,
    optimizer=LWF_SGD,
)
def lwf(
    apply: Callable,
    *,
    old_weight: float = 1.0,
    temperature: float = 2.0,
    warmup_steps: int = 0,
    learning_rate: float = 0.01,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """LwF: ``L_new(y, new head) + lambda_o * L_old(recorded old outputs, old head)``.

    Args:
      apply: ``apply`` of a network with a new-task head (``repr.encoder("lwf", network)``).
      old_weight: ``lambda_o`` (1).
      temperature: ``T`` of the old-task distillation (2); > 0.
      warmup_steps: updates training only the new head first (0: none).
      learning_rate: SGD step size.
      train_mode: BatchNorm in training mode.
      optimizer: an optax optimizer or settings over SGD (momentum 0.9, weight decay 5e-4).

    Metrics: ``loss``, ``new_loss``, ``old_loss``, ``new_accuracy``.
    """
    check_nonnegative(old_weight, "old_weight")
    check_positive(temperature, "temperature")
    warmup_steps = check_count(warmup_steps, "warmup_steps", 0)
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=LWF_SGD)

    def terms(variables, batch, reference):
        part = batch[PART]
        out = apply(variables, part["x"], train=train_mode)
        if out.projection is None:
            raise ValueError("lwf reads a new-task head: build the network with repr.encoder")
        new_loss = core_losses.cross_entropy(out.projection, part["y"])
        metrics = {"new_accuracy": core_losses.accuracy(out.projection, part["y"])}
        if train_mode and out.batch_stats is not None:
            metrics["batch_stats"] = out.batch_stats
        old = None
        if reference is not None:
            recorded = apply(reference, part["x"], train=False).logits
            old = losses.lwf_distillation(out.logits, recorded, temperature)
        return new_loss, old, metrics

    def joint_loss(variables, batch, *, reference, step, key):
        del step, key
        new_loss, old_loss, metrics = terms(variables, batch, reference)
        loss = new_loss + old_weight * old_loss
        return loss, {**metrics, "new_loss": new_loss, "old_loss": old_loss}

    def warmup_loss(variables, batch, *, reference, step, key):
        del step, key
        new_loss, old_loss, metrics = terms(variables, batch, reference)
        return new_loss, {**metrics, "new_loss": new_loss, "old_loss": old_loss}

    joint = rule_from_loss(joint_loss, opt, keep_reference=True)
    if warmup_steps == 0:
        return joint
    warmup = rule_from_loss(warmup_loss, _new_head_only(opt), keep_reference=True)
    return phases((warmup_steps, warmup), (None, joint))
