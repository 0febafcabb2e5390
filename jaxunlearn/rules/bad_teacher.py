"""Bad teaching: distil from an incompetent teacher on the forget set, a competent one elsewhere.

The student (the original model) is trained on a mix of forget and retain examples to match
``u * softmax(T_rand / tau) + (1 - u) * softmax(T_orig / tau)``, with ``u = 1`` on forget examples:
a randomly initialised model of the same architecture teaches it the forget set, the frozen
original teaches it the retain set. The loss is ``KL(target || softmax(student / tau))`` averaged
over every element of the ``[batch, classes]`` array, PyTorch's ``kl_div`` default "mean"
reduction (the batch-mean KL divided by the number of classes).

Each update reads one forget batch and one retain batch and averages the loss over their union;
the reference shuffles D_f with a random 30% of D_r, so the forget share of a batch is
``forget_batch_size / (forget_batch_size + retain_batch_size)`` here, and 0.3 epochs of the retain
set give the reference's one pass.

References:
  Chundawat et al., "Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks Using an
  Incompetent Teacher", AAAI 2023 (``blindspot_unlearner`` in vikram2000b/bad-teaching-unlearning;
  settings of Foster et al.'s SSD comparison: tau 1, Adam lr 1e-4, one epoch over D_f and 30% of
  D_r).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import losses, optim
from jaxunlearn.core.checks import concrete
from jaxunlearn.core.rule import LossRuleState, rule_from_loss
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


@registry.rule(
    "bad_teacher",
    parts=("forget", "retain"),
    paper="Chundawat et al., Can Bad Teaching Induce Forgetting?, AAAI 2023",
    needs_labels=False,
    sweepable=("temperature", "learning_rate"),
)
def bad_teacher(
    apply: Callable,
    *,
    init_fn: Callable,
    temperature: float = 1.0,
    learning_rate: float = 1e-4,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """Bad teaching: match a random teacher on forget examples and the original on retain ones.

    Args:
      apply: the model's functional ``apply``.
      init_fn: ``key -> variables`` of a fresh model: the incompetent teacher is drawn from it
        with the rule's ``init`` key.
      temperature: ``tau``, applied to teachers and student alike.
      learning_rate: Adam step size (SSD's comparison: lr 1e-4, no weight decay).
      optimizer: an optax optimizer, or settings over the reference Adam; see
        :func:`~jaxunlearn.core.optim.resolve`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and ``batch["retain"]``.
    """
    if concrete(temperature) and not temperature > 0:
        raise ValueError(f"bad_teacher `temperature` must be positive; got {temperature}")
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
            student = apply(variables, x).logits
            kl = losses.kl_to_target_probs(student / temperature, target)
            num_classes = student.shape[-1]
            # Forget labels are never read: the rule works on unlabelled forget data.
            return kl / num_classes, {
                "kl": kl,
                "forget_kl": losses.kl_to_target_probs(student[:nf] / temperature, target[:nf]),
            }

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
