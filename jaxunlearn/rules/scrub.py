"""SCRUB: a student that moves away from its teacher on the forget set and stays close on the rest.

The teacher is the frozen original model; the student starts as a copy. A *max step* on a forget
batch maximises ``KL_T(teacher || student)`` (minimises its negative); a *min step* on a retain
batch minimises ``gamma * CE + alpha * KL_T``, with ``KL_T = T^2 * KL(softmax(t/T) ||
softmax(s/T))``. Both steps share one optimizer, whose learning rate drops by ``lr_decay_rate`` at
each epoch in ``lr_decay_epochs``.

How the reference schedule maps onto the paired-batch stream: the reference runs, for each epoch
``e < msteps``, a full pass of max steps over D_f and then a full pass of min steps over D_r, and
only min passes afterwards. Here an epoch is a pass over the retain set (the loop's epoch part),
and each update takes one forget batch and one retain batch: during the first ``msteps`` epochs an
update does a max step on its forget batch and then a min step on its retain batch, so max and
min steps interleave instead of running as two blocks. By default every update of those epochs
takes a max step; ``max_steps_per_epoch`` limits them to the first updates of each epoch (set it
to ``ceil(|D_f| / forget_batch_size)`` for one pass over D_f per epoch, as in the reference).

References:
  Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023 (``train_distill`` in
  meghdadk/SCRUB; small-scale settings: Adam lr 5e-4, weight decay 0.1, alpha 0.5, gamma 1, T 2,
  msteps 3, 10 epochs, lr x0.1 after epochs 5, 8 and 9).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import losses, optim
from jaxunlearn.core.checks import concrete
from jaxunlearn.core.rule import StepCounter, optimizer_step
from jaxunlearn.core.types import Array, Batch, PyTree, UnlearningRule, Variables
from jaxunlearn.rules import registry

# The small-scale reference optimizer: Adam with coupled L2 weight decay 0.1 (torch.optim.Adam).
SCRUB_ADAM = {"name": "adam", "weight_decay": 0.1}


class ScrubState(NamedTuple):
    """State of :func:`scrub`.

    Attributes:
      opt_state: the optax state shared by max and min steps.
      reference: the frozen teacher (the starting variables).
      step: updates taken so far.
    """

    opt_state: PyTree
    reference: Variables
    step: StepCounter


@registry.rule(
    "scrub",
    parts=("forget", "retain"),
    paper="Kurmanji et al., Towards Unbounded Machine Unlearning (SCRUB), NeurIPS 2023",
    needs_labels=False,
    cost="medium",
    sweepable=("alpha", "gamma", "temperature", "learning_rate", "lr_decay_rate"),
)
def scrub(
    apply: Callable,
    *,
    steps_per_epoch: int,
    alpha: float = 0.5,
    gamma: float = 1.0,
    temperature: float = 2.0,
    msteps: int = 3,
    max_steps_per_epoch: int | None = None,
    learning_rate: float = 5e-4,
    lr_decay_epochs: Sequence[int] = (5, 8, 9),
    lr_decay_rate: float = 0.1,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """SCRUB: alternate max steps on forget batches and min steps on retain batches.

    Schedule: update ``t`` is in epoch ``e = t // steps_per_epoch``. While ``e < msteps`` (and,
    with ``max_steps_per_epoch``, for the first ``max_steps_per_epoch`` updates of the epoch) it
    takes a max step on its forget batch and then a min step on its retain batch; afterwards only
    the min step. Both steps go through the one optimizer (one state), and its updates are scaled
    by ``lr_decay_rate ** #{m in lr_decay_epochs : e >= m}``. The max/min switch is a
    ``lax.cond`` on the rule's :class:`~jaxunlearn.core.rule.StepCounter`, so it stays a real
    branch in a vmapped ensemble. (Not a :func:`~jaxunlearn.core.combinators.phases` split: the
    two steps share one update and one Adam state.)

    Args:
      apply: the model's functional ``apply``.
      steps_per_epoch: updates per epoch (an epoch is a pass over the retain set).
      alpha: weight of the KL term of the min step.
      gamma: weight of the cross-entropy term of the min step.
      temperature: distillation temperature ``T``.
      msteps: number of leading epochs that take max steps.
      max_steps_per_epoch: max steps per epoch (at the start of the epoch); ``None`` = every
        update of the first ``msteps`` epochs.
      learning_rate: the step size (reference 5e-4).
      lr_decay_epochs: 0-based epochs from which the step size is multiplied by another
        ``lr_decay_rate`` (the reference decays after its 1-based epochs 5, 8 and 9).
      lr_decay_rate: the decay factor.
      optimizer: an optax optimizer, or settings over the reference Adam with coupled L2 weight
        decay 0.1 (``torch.optim.Adam``), e.g. ``{"weight_decay": 0.0}``; see
        :func:`~jaxunlearn.core.optim.resolve`. The epoch decay scales its updates.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and ``batch["retain"]``, whose state
      is a :class:`ScrubState`.

    References:
      Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023.
    """
    if concrete(alpha, gamma) and (alpha < 0 or gamma < 0):
        raise ValueError(f"scrub `alpha` and `gamma` must be non-negative; got {alpha}, {gamma}")
    if concrete(temperature) and not temperature > 0:
        raise ValueError(f"scrub `temperature` must be positive; got {temperature}")
    if msteps < 0:
        raise ValueError(f"scrub `msteps` must be non-negative; got {msteps}")
    if max_steps_per_epoch is not None and max_steps_per_epoch < 1:
        raise ValueError(f"scrub `max_steps_per_epoch` must be positive; got {max_steps_per_epoch}")
    if int(steps_per_epoch) < 1:
        raise ValueError(f"scrub `steps_per_epoch` must be positive; got {steps_per_epoch}")
    if concrete(lr_decay_rate) and not 0 < lr_decay_rate <= 1:
        raise ValueError(f"scrub `lr_decay_rate` must lie in (0, 1]; got {lr_decay_rate}")
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=SCRUB_ADAM)
    milestones = sorted(int(e) for e in lr_decay_epochs)
    if any(m < 0 for m in milestones):
        raise ValueError(f"scrub `lr_decay_epochs` must be non-negative; got {lr_decay_epochs}")
    spe = int(steps_per_epoch)

    def init(variables: Variables, *, key: Array | None = None) -> ScrubState:
        del key
        return ScrubState(opt.init(variables["params"]), variables, StepCounter.zero())

    def update(variables: Variables, state: ScrubState, batch: Batch, *, key: Array):
        del key
        teacher = state.reference
        step = state.step.count
        epoch = step // spe
        decays = sum((epoch >= m).astype(jnp.int32) for m in milestones)
        scale = jnp.asarray(lr_decay_rate, jnp.float32) ** decays
        do_max = epoch < msteps
        if max_steps_per_epoch is not None:
            do_max &= (step % spe) < max_steps_per_epoch

        xf = batch["forget"]["x"]
        t_forget = jax.lax.stop_gradient(apply(teacher, xf).logits)

        def max_loss(params):
            student = apply({**variables, "params": params}, xf).logits
            kl = losses.distillation_kl(student, t_forget, temperature)
            return -kl, kl

        def max_step(variables, opt_state):
            (_, kl), grads = jax.value_and_grad(max_loss, has_aux=True)(variables["params"])
            variables, opt_state = optimizer_step(opt, grads, opt_state, variables, scale=scale)
            return variables, opt_state, kl

        def no_max_step(variables, opt_state):
            return variables, opt_state, jnp.zeros((), jnp.float32)

        variables, opt_state, forget_kl = jax.lax.cond(
            do_max, max_step, no_max_step, variables, state.opt_state
        )

        xr, yr = batch["retain"]["x"], batch["retain"]["y"]
        t_retain = jax.lax.stop_gradient(apply(teacher, xr).logits)

        def min_loss(params):
            student = apply({**variables, "params": params}, xr).logits
            ce = losses.cross_entropy(student, yr)
            kl = losses.distillation_kl(student, t_retain, temperature)
            return gamma * ce + alpha * kl, (ce, kl)

        (loss, (retain_ce, retain_kl)), grads = jax.value_and_grad(min_loss, has_aux=True)(
            variables["params"]
        )
        variables, opt_state = optimizer_step(opt, grads, opt_state, variables, scale=scale)
        metrics = {
            "loss": loss,
            "forget_kl": forget_kl,
            "retain_ce": retain_ce,
            "retain_kl": retain_kl,
            "max_step": do_max.astype(jnp.float32),
        }
        return variables, state._replace(opt_state=opt_state, step=state.step.next()), metrics

    return UnlearningRule(init, update)
