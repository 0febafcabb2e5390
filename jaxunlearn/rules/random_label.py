"""Random labelling (RL): train on the forget set with random labels and on the retain set.

Two modes, both from the reference code (``unlearn/RL.py`` of OPTML-Group/Unlearn-Saliency):

- ``mode="concatenated"`` (default): each update takes one step on the union of a forget batch,
  relabelled at random, and a retain batch with true labels (one forward pass over the
  concatenation, so BatchNorm normalises them together). The loss is
  ``forget_weight * CE(forget) + (1 - forget_weight) * CE(retain)``, each term the mean over its
  batch, so the weighting is a stated hyperparameter, not a by-product of the two batch sizes.
  ``forget_weight=0.5`` weighs the two batches alike (what the earlier plain concatenation gave
  with equal batch sizes). The reference's CIFAR-100 / TinyImageNet form, a shuffled
  concatenation of the two sets, weighs every example alike, i.e. ``forget_weight =
  |D_f| / (|D_f| + |D_r|)`` in expectation: pass ``forget_weight=None`` for the forget fraction
  of the scenario.
- ``mode="sequential"``: the reference's CIFAR-10 / SVHN epoch, a full pass over the forget set
  with random labels (``forget_steps_per_epoch`` updates reading ``batch["forget"]``) and then a
  full pass over the retain set (``steps_per_epoch`` updates reading ``batch["retain"]``), one
  optimizer state throughout. A run of ``E`` epochs has :func:`random_label_num_steps` updates.

Labels are drawn uniformly over all classes (they can equal the true label), as the reference's
``torch.randint`` does; ``exclude_true=True`` draws only wrong labels. The model runs in training
mode by default (``model.train()`` in the reference).

References:
  Golatkar et al., "Eternal Sunshine of the Spotless Net", CVPR 2020 (random-label baseline);
  Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency", ICLR 2024
  (RL as the base of SalUn: lr 0.01, 10 epochs; the sequential update confirmed by the
  maintainers in Unlearn-Saliency issue #21).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import losses, optim
from jaxunlearn.core.checks import check_count, concrete
from jaxunlearn.core.rule import BATCH_STATS_KEY, rule_from_loss
from jaxunlearn.core.types import UnlearningRule
from jaxunlearn.rules import passes, registry

MODES = ("concatenated", "sequential")


def random_label_num_steps(epochs: int, steps_per_epoch: int, forget_steps_per_epoch: int) -> int:
    """Updates in ``epochs`` sequential RL epochs: ``epochs * (forget + retain steps)``."""
    return passes.sequential_num_steps(epochs, steps_per_epoch, forget_steps_per_epoch)


def _run_length(epochs, *, steps_per_epoch, forget_steps_per_epoch, hparams) -> int:
    """The registry's run length of a random-label entry: sequential epochs are two passes."""
    if registry.default("random_label", "mode", hparams) != "sequential":
        return max(1, math.ceil(float(epochs) * steps_per_epoch))
    epochs = registry.whole_epochs("random_label", epochs)
    return random_label_num_steps(epochs, steps_per_epoch, forget_steps_per_epoch)


def _random_labels(key, y, num_classes: int, exclude_true: bool):
    if exclude_true:
        shift = jax.random.randint(key, y.shape, 1, num_classes)
        return ((y + shift) % num_classes).astype(y.dtype)
    return jax.random.randint(key, y.shape, 0, num_classes).astype(y.dtype)


def _with_stats(metrics: dict, out) -> dict:
    if out.batch_stats is not None:
        metrics[BATCH_STATS_KEY] = out.batch_stats
    return metrics


def random_label_loss(
    apply: Callable,
    num_classes: int,
    *,
    exclude_true: bool = False,
    forget_weight: float = 0.5,
    train_mode: bool = False,
):
    """The concatenated RL objective as a loss for :func:`~jaxunlearn.core.rule.rule_from_loss`.

    ``forget_weight * CE(forget, random labels) + (1 - forget_weight) * CE(retain)``, the model
    run once over the concatenated batch. Reused by SalUn.
    """

    def loss_fn(variables, batch, *, reference, step, key):
        del reference, step
        xf, yf = batch["forget"]["x"], batch["forget"]["y"]
        rand = _random_labels(key, yf, num_classes, exclude_true)
        x = jnp.concatenate([xf, batch["retain"]["x"]])
        out = apply(variables, x, train=train_mode)
        nf = xf.shape[0]
        forget_ce = losses.cross_entropy(out.logits[:nf], rand)
        retain_ce = losses.cross_entropy(out.logits[nf:], batch["retain"]["y"])
        loss = forget_weight * forget_ce + (1.0 - forget_weight) * retain_ce
        metrics = {
            "forget_acc": losses.accuracy(out.logits[:nf], yf),
            "forget_ce": forget_ce,
            "retain_ce": retain_ce,
        }
        return loss, _with_stats(metrics, out)

    return loss_fn


def sequential_random_label_loss(
    apply: Callable,
    num_classes: int,
    *,
    steps_per_epoch: int,
    forget_steps_per_epoch: int,
    exclude_true: bool = False,
    train_mode: bool = False,
):
    """The sequential RL objective: CE on random labels in a forget pass, CE on retain after.

    Update ``step`` reads ``batch["forget"]`` in the first ``forget_steps_per_epoch`` updates of
    each epoch and ``batch["retain"]`` in the ``steps_per_epoch`` after (a ``lax.cond`` on the
    step, a real branch in a vmapped ensemble).
    """

    def loss_fn(variables, batch, *, reference, step, key):
        del reference
        _, on_forget = passes.position(
            step, steps_per_epoch=steps_per_epoch, forget_steps_per_epoch=forget_steps_per_epoch
        )

        def forget_loss(variables):
            xf, yf = batch["forget"]["x"], batch["forget"]["y"]
            out = apply(variables, xf, train=train_mode)
            rand = _random_labels(key, yf, num_classes, exclude_true)
            ce = losses.cross_entropy(out.logits, rand)
            metrics = {
                "forget_acc": losses.accuracy(out.logits, yf),
                "forget_ce": ce,
                "retain_ce": jnp.zeros_like(ce),
            }
            return ce, _with_stats(metrics, out)

        def retain_loss(variables):
            out = apply(variables, batch["retain"]["x"], train=train_mode)
            ce = losses.cross_entropy(out.logits, batch["retain"]["y"])
            metrics = {
                "forget_acc": jnp.zeros_like(ce),
                "forget_ce": jnp.zeros_like(ce),
                "retain_ce": ce,
            }
            return ce, _with_stats(metrics, out)

        loss, metrics = jax.lax.cond(on_forget, forget_loss, retain_loss, variables)
        return loss, {**metrics, "forget_pass": on_forget.astype(jnp.float32)}

    return loss_fn


@registry.rule(
    "random_label",
    parts=("forget", "retain"),
    paper="Golatkar et al., Eternal Sunshine of the Spotless Net, CVPR 2020",
    sweepable=("learning_rate", "forget_weight"),
    run_length=_run_length,
)
def random_label(
    apply: Callable,
    *,
    num_classes: int,
    steps_per_epoch: int | None = None,
    forget_steps_per_epoch: int | None = None,
    num_steps: int | None = None,
    forget_fraction: float | None = None,
    learning_rate: float = 0.01,
    mode: str = "concatenated",
    forget_weight: float | None = 0.5,
    exclude_true: bool = False,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """RL: cross-entropy on forget examples with random labels and on retain examples.

    Args:
      apply: the model's functional ``apply``.
      num_classes: number of classes to draw labels from (supplied by the registry).
      steps_per_epoch: updates in a pass over the retain set (supplied by the registry; the
        sequential mode needs it).
      forget_steps_per_epoch: updates in a pass over the forget set (supplied by the registry;
        the sequential mode needs it).
      num_steps: the run's updates (supplied by the registry); in the sequential mode it must be
        a whole number of epochs, :func:`random_label_num_steps`.
      forget_fraction: ``|D_f| / (|D_f| + |D_r|)`` (supplied by the registry), used when
        ``forget_weight`` is ``None``.
      learning_rate: SGD step size (SalUn code defaults).
      mode: ``"concatenated"`` or ``"sequential"`` (see the module docstring; the reference
        uses the sequential epoch on CIFAR-10 and SVHN).
      forget_weight: concatenated mode: the weight of the forget batch's mean cross-entropy, the
        retain batch's getting ``1 - forget_weight``; ``None`` = ``forget_fraction`` (every
        example weighs the same, as the reference's shuffled concatenation). The sequential
        mode takes whole steps on each set and does not read it.
      exclude_true: draw only wrong labels (the reference draws uniformly, true label included).
      train_mode: run BatchNorm in training mode (batch statistics, refreshed running
        averages), as the reference's ``model.train()``; ``False`` keeps them frozen.
      optimizer: an optax optimizer, or settings over the reference SGD (momentum 0.9,
        weight decay 5e-4); see :func:`~jaxunlearn.core.optim.resolve`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and ``batch["retain"]``.

    Raises:
      ValueError: for an unknown mode, a forget weight outside [0, 1] (or ``None`` without a
        forget fraction), or a sequential mode without its schedule or with a ``num_steps``
        that is no whole number of epochs.
    """
    if mode not in MODES:
        raise ValueError(f"random_label `mode` must be one of {MODES}; got {mode!r}")
    opt = optim.resolve(optimizer, learning_rate=learning_rate)
    if mode == "sequential":
        if steps_per_epoch is None or forget_steps_per_epoch is None:
            raise ValueError(
                "random_label mode='sequential' needs `steps_per_epoch` and "
                "`forget_steps_per_epoch` (passes over the retain and forget sets); pass them "
                "to rules.make"
            )
        try:
            steps_per_epoch = check_count(steps_per_epoch, "steps_per_epoch", 1)
            forget_steps_per_epoch = check_count(
                forget_steps_per_epoch, "forget_steps_per_epoch", 1
            )
        except ValueError as error:
            raise ValueError(f"random_label: {error}") from None
        passes.check_num_steps(
            "random_label (mode='sequential')",
            "jaxunlearn.rules.random_label.random_label_num_steps",
            num_steps,
            int(steps_per_epoch),
            int(forget_steps_per_epoch),
        )
        loss = sequential_random_label_loss(
            apply,
            num_classes,
            steps_per_epoch=int(steps_per_epoch),
            forget_steps_per_epoch=int(forget_steps_per_epoch),
            exclude_true=exclude_true,
            train_mode=train_mode,
        )
        return rule_from_loss(loss, opt, keep_reference=False)
    if forget_weight is None:
        if forget_fraction is None:
            raise ValueError(
                "random_label `forget_weight=None` weighs by the forget fraction, which was not "
                "given; pass forget_fraction to rules.make or set forget_weight"
            )
        forget_weight = float(forget_fraction)
    if concrete(forget_weight) and not 0.0 <= forget_weight <= 1.0:
        raise ValueError(f"random_label `forget_weight` must lie in [0, 1]; got {forget_weight}")
    loss = random_label_loss(
        apply,
        num_classes,
        exclude_true=exclude_true,
        forget_weight=forget_weight,
        train_mode=train_mode,
    )
    return rule_from_loss(loss, opt, keep_reference=False)
