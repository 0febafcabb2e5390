"""Bad teaching: distil from an incompetent teacher on the forget set, a competent one elsewhere.

The student (the original model) is trained on a mix of forget and retain examples to match
``u * softmax(T_rand / tau) + (1 - u) * softmax(T_orig / tau)``, with ``u = 1`` on forget examples:
a randomly initialised model of the same architecture teaches it the forget set, the frozen
original teaches it the retain set. The loss is ``KL(target || softmax(student / tau))`` averaged
over every element of the ``[batch, classes]`` array, PyTorch's ``kl_div`` default "mean"
reduction (the batch-mean KL divided by the number of classes).

Each update reads one forget batch and one retain batch. The reference trains on one shuffled
loader over D_f and a random 30% of D_r (``random.sample`` once, then one epoch, batches of 256),
so the expected forget share of its batches is ``s = |D_f| / (|D_f| + 0.3 |D_r|)``. The rule
weighs the two parts the same way whatever the batch sizes: the loss is ``s * KL_f + (1 - s) *
KL_r`` (each the per-element mean over its part), with ``s`` from the forget scenario's
``forget_fraction`` (supplied by the registry) and ``retain_fraction = 0.3``. The amount of retain
data is the schedule's (:func:`bad_teacher_num_steps`, the registry's run length): an epoch is
``ceil(retain_fraction * steps_per_epoch)`` updates, so it reads ``retain_fraction`` of D_r in
retain batches, and ``fit``'s per-pass permutation of the retain set makes each epoch's share a
fresh random one (consecutive epochs read consecutive, disjoint slices of one random permutation
of D_r, and a new permutation starts after every full pass). The forget batches cycle through D_f
meanwhile: with ``forget_batch_size`` about ``|D_f| / ceil(retain_fraction * steps_per_epoch)``
an epoch also reads D_f once, as the reference's loader does. ``retain_fraction=None`` weighs the
parts by their batch sizes instead (the loss over the concatenated batch, this library's
behaviour before) and an epoch is a pass over D_r.

The reference never calls ``model.train()`` on the student (a ``deepcopy`` of the evaluated
original), so BatchNorm runs in inference mode by default (``train_mode=False``).

References:
  Chundawat et al., "Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks Using an
  Incompetent Teacher", AAAI 2023 (``blindspot_unlearner`` in vikram2000b/bad-teaching-unlearning;
  settings of Foster et al.'s SSD comparison: tau 1, Adam lr 1e-4, one epoch over D_f and 30% of
  D_r).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import losses, optim
from jaxunlearn.core.checks import concrete
from jaxunlearn.core.rule import BATCH_STATS_KEY, LossRuleState, rule_from_loss
from jaxunlearn.core.types import Array, Batch, UnlearningRule, Variables
from jaxunlearn.rules import registry


class BadTeacherState(NamedTuple):
    """State of :func:`bad_teacher`.

    Attributes:
      inner: the loss rule's state (its ``reference`` is the competent teacher).
      incompetent: the randomly initialised teacher's variables.
    """

    inner: LossRuleState
    incompetent: Variables


def bad_teacher_num_steps(epochs: float, steps_per_epoch: int, retain_fraction: float | None):
    """Updates in ``epochs`` epochs of bad teaching: ``epochs * ceil(retain_fraction *
    steps_per_epoch)`` (each epoch reads a fresh ``retain_fraction`` of the retain set), or
    ``epochs * steps_per_epoch`` passes over it when ``retain_fraction`` is ``None``.

    Args:
      epochs: the run's epochs.
      steps_per_epoch: updates in one pass over the retain set.
      retain_fraction: the rule's ``retain_fraction``.
    """
    per_epoch = (
        steps_per_epoch
        if retain_fraction is None
        else math.ceil(float(retain_fraction) * steps_per_epoch)
    )
    return max(1, math.ceil(float(epochs) * per_epoch))


def _run_length(epochs, *, steps_per_epoch, forget_steps_per_epoch, hparams) -> int:
    """The registry's run length of a bad-teaching entry (:func:`bad_teacher_num_steps`)."""
    del forget_steps_per_epoch
    fraction = registry.default("bad_teacher", "retain_fraction", hparams)
    if fraction is not None and not float(fraction) > 0:
        raise ValueError(f"bad_teacher `retain_fraction` must be positive; got {fraction}")
    return bad_teacher_num_steps(epochs, steps_per_epoch, fraction)


@registry.rule(
    "bad_teacher",
    parts=("forget", "retain"),
    paper="Chundawat et al., Can Bad Teaching Induce Forgetting?, AAAI 2023",
    needs_labels=False,
    retain_labels=False,
    sweepable=("temperature", "learning_rate", "retain_fraction"),
    run_length=_run_length,
)
def bad_teacher(
    apply: Callable,
    *,
    init_fn: Callable,
    temperature: float = 1.0,
    learning_rate: float = 1e-4,
    retain_fraction: float | None = 0.3,
    forget_fraction: float | None = None,
    train_mode: bool = False,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """Bad teaching: match a random teacher on forget examples and the original on retain ones.

    Args:
      apply: the model's functional ``apply``.
      init_fn: ``key -> variables`` of a fresh model: the incompetent teacher is drawn from it
        with the rule's ``init`` key.
      temperature: ``tau``, applied to teachers and student alike.
      learning_rate: Adam step size (SSD's comparison: lr 1e-4, no weight decay).
      retain_fraction: the share of D_r the reference mixes with D_f (0.3); it sets the forget
        weight ``s`` above and, through the registry's run length, the updates of an epoch
        (:func:`bad_teacher_num_steps`). ``None``: weigh forget and retain examples by their
        batch sizes, an epoch being a pass over D_r.
      forget_fraction: ``|D_f| / (|D_f| + |D_r|)`` of the forget scenario (supplied by the
        registry); without it the parts are weighed by their batch sizes.
      train_mode: run the student's BatchNorm in training mode on the pooled batch; the reference
        leaves the student in the mode of the evaluated original (inference).
      optimizer: an optax optimizer, or settings over the reference Adam; see
        :func:`~jaxunlearn.core.optim.resolve`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and ``batch["retain"]``.
    """
    if concrete(temperature) and not temperature > 0:
        raise ValueError(f"bad_teacher `temperature` must be positive; got {temperature}")
    if retain_fraction is not None and concrete(retain_fraction) and not retain_fraction > 0:
        raise ValueError(f"bad_teacher `retain_fraction` must be positive; got {retain_fraction}")
    if forget_fraction is not None and not 0.0 < forget_fraction <= 1.0:
        raise ValueError(f"bad_teacher `forget_fraction` must lie in (0, 1]; got {forget_fraction}")
    if retain_fraction is None or forget_fraction is None:
        forget_share = None  # the share of the forget batch in the pooled batch
    else:
        forget_share = forget_fraction / (
            forget_fraction + retain_fraction * (1.0 - forget_fraction)
        )
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=optim.REFERENCE_ADAM)

    def loss_with(incompetent: Variables):
        def loss_fn(variables, batch, *, reference, step, key):
            del step, key
            xf, xr = batch["forget"]["x"], batch["retain"]["x"]
            nf = xf.shape[0]
            x = jnp.concatenate([xf, xr])
            bad = apply(incompetent, xf).logits
            good = apply(reference, xr).logits
            target = jax.lax.stop_gradient(
                jax.nn.softmax(jnp.concatenate([bad, good]) / temperature, -1)
            )
            out = apply(variables, x, train=train_mode)
            student = out.logits
            num_classes = student.shape[-1]
            forget_kl = losses.kl_to_target_probs(student[:nf] / temperature, target[:nf])
            if forget_share is None:
                kl = losses.kl_to_target_probs(student / temperature, target)
            else:
                retain_kl = losses.kl_to_target_probs(student[nf:] / temperature, target[nf:])
                kl = forget_share * forget_kl + (1.0 - forget_share) * retain_kl
            metrics = {"kl": kl, "forget_kl": forget_kl}
            if train_mode and out.batch_stats is not None:
                metrics[BATCH_STATS_KEY] = out.batch_stats
            # Forget labels are never read: the rule works on unlabelled forget data.
            return kl / num_classes, metrics

        return loss_fn

    def init(variables: Variables, *, key: Array) -> BadTeacherState:
        inner = rule_from_loss(loss_with(variables), opt).init(variables, key=key)
        return BadTeacherState(inner, init_fn(key))

    def update(variables: Variables, state: BadTeacherState, batch: Batch, *, key: Array):
        # The loss closes over the incompetent teacher held in the state.
        inner = rule_from_loss(loss_with(state.incompetent), opt)
        variables, inner_state, metrics = inner.update(variables, state.inner, batch, key=key)
        return variables, state._replace(inner=inner_state), metrics

    return UnlearningRule(init, update)
