"""SCRUB: a student that moves away from its teacher on the forget set and stays close on the rest.

The teacher is the frozen original model; the student starts as a copy. A *max step* on a forget
batch maximises ``KL_T(teacher || student)`` (minimises its negative); a *min step* on a retain
batch minimises ``gamma * CE + alpha * KL_T``, with ``KL_T = T^2 * KL(softmax(t/T) ||
softmax(s/T))``. Both steps share one optimizer (one optimizer state), whose learning rate drops
by ``lr_decay_rate`` at each epoch in ``lr_decay_epochs``.

Schedules:

- ``schedule="reference"`` (default), as the reference's epoch loop: each of the first ``msteps``
  epochs is a full pass of max steps over the forget set (``forget_steps_per_epoch`` updates
  reading ``batch["forget"]``) followed by a full pass of min steps over the retain set
  (``steps_per_epoch`` updates reading ``batch["retain"]``); later epochs are min passes only.
  A run of ``E`` epochs has :func:`scrub_num_steps` ``(E, steps_per_epoch,
  forget_steps_per_epoch, msteps)`` updates.
- ``schedule="interleaved"``, this library's earlier schedule: an epoch is a pass over the retain
  set and, during the first ``msteps`` epochs, every update (or the first
  ``max_steps_per_epoch`` of each epoch) takes a max step on its forget batch and then a min step
  on its retain batch. With a 10% forget set and equal batch sizes it takes about 9 times more
  max steps than the reference.

The student runs in training mode by default (``train_mode=True``: BatchNorm normalises with batch
statistics and refreshes its running averages), as the reference's ``train_distill`` sets
``model.train()`` on the student; the teacher always runs in inference mode
(``module_list[-1].eval()``).

References:
  Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023 (``train_distill`` in
  ``thirdparty/repdistiller/helper/loops.py`` and the epoch loop of the notebooks in
  meghdadk/SCRUB; small-scale settings: Adam lr 5e-4, weight decay 0.1, alpha 0.5, gamma 1, T 2,
  msteps 3, 10 epochs, lr x0.1 after epochs 5, 8 and 9).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import losses, optim
from jaxunlearn.core.checks import check_count, concrete
from jaxunlearn.core.rule import StepCounter, optimizer_step
from jaxunlearn.core.types import Array, Batch, PyTree, UnlearningRule, Variables
from jaxunlearn.rules import passes, registry

# The small-scale reference optimizer: Adam with coupled L2 weight decay 0.1 (torch.optim.Adam).
SCRUB_ADAM = {"name": "adam", "weight_decay": 0.1}

SCHEDULES = ("reference", "interleaved")


def scrub_num_steps(
    epochs: int, steps_per_epoch: int, forget_steps_per_epoch: int, msteps: int = 3
) -> int:
    """Updates in ``epochs`` epochs of SCRUB's reference schedule.

    The first ``min(msteps, epochs)`` epochs have a max pass over the forget set and a min pass
    over the retain set, the others a min pass only:
    ``epochs * steps_per_epoch + min(msteps, epochs) * forget_steps_per_epoch``. A runner passes
    this as ``num_steps`` for a SCRUB run of ``epochs`` epochs.

    Args:
      epochs: epochs of the run (the reference's ``sgda_epochs``).
      steps_per_epoch: updates in a pass over the retain set.
      forget_steps_per_epoch: updates in a pass over the forget set.
      msteps: leading epochs with a max pass (the rule's ``msteps``).
    """
    return passes.sequential_num_steps(epochs, steps_per_epoch, forget_steps_per_epoch, msteps)


def _run_length(epochs, *, steps_per_epoch, forget_steps_per_epoch, hparams) -> int:
    """The registry's run length of a SCRUB entry (see :func:`scrub_num_steps`)."""
    if registry.default("scrub", "schedule", hparams) == "interleaved":
        return max(1, math.ceil(float(epochs) * steps_per_epoch))
    return scrub_num_steps(
        registry.whole_epochs("scrub", epochs),
        steps_per_epoch,
        forget_steps_per_epoch,
        registry.default("scrub", "msteps", hparams),
    )


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
    run_length=_run_length,
)
def scrub(
    apply: Callable,
    *,
    steps_per_epoch: int,
    forget_steps_per_epoch: int | None = None,
    num_steps: int | None = None,
    schedule: str = "reference",
    alpha: float = 0.5,
    gamma: float = 1.0,
    temperature: float = 2.0,
    msteps: int = 3,
    max_steps_per_epoch: int | None = None,
    learning_rate: float = 5e-4,
    lr_decay_epochs: Sequence[int] = (5, 8, 9),
    lr_decay_rate: float = 0.1,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """SCRUB: max steps on the forget set and min steps on the retain set, one optimizer.

    Reference schedule (default): update ``t`` falls in an epoch of ``forget_steps_per_epoch +
    steps_per_epoch`` updates while the epoch is below ``msteps``, else of ``steps_per_epoch``
    updates (see :mod:`jaxunlearn.rules.passes`); in a forget pass it takes one max step on
    ``batch["forget"]``, in a retain pass one min step on ``batch["retain"]``. Interleaved
    schedule: update ``t`` is in epoch ``e = t // steps_per_epoch``; while ``e < msteps`` (and,
    with ``max_steps_per_epoch``, for the first ``max_steps_per_epoch`` updates of the epoch) it
    takes a max step on its forget batch and then a min step on its retain batch, afterwards only
    the min step. Either way both steps go through the one optimizer (one state), its updates
    are scaled by ``lr_decay_rate ** #{m in lr_decay_epochs : e >= m}``, and the max/min switch
    is a ``lax.cond`` on the rule's :class:`~jaxunlearn.core.rule.StepCounter`, so it stays a
    real branch in a vmapped ensemble.

    Args:
      apply: the model's functional ``apply``.
      steps_per_epoch: updates in a pass over the retain set (supplied by the registry).
      forget_steps_per_epoch: updates in a pass over the forget set,
        ``ceil(|D_f| / forget_batch_size)`` (supplied by the registry); the reference schedule
        needs it. Without it the rule falls back to the interleaved schedule with a warning.
      num_steps: the run's updates (supplied by the registry). With the reference schedule it
        must be a whole number of epochs, :func:`scrub_num_steps`; anything else is rejected
        before any compute, with the nearest right values.
      schedule: ``"reference"`` or ``"interleaved"`` (see the module docstring).
      alpha: weight of the KL term of the min step.
      gamma: weight of the cross-entropy term of the min step.
      temperature: distillation temperature ``T``.
      msteps: number of leading epochs that take max steps.
      max_steps_per_epoch: interleaved schedule only: max steps per epoch (at the start of the
        epoch); ``None`` = every update of the first ``msteps`` epochs.
      learning_rate: the step size (reference 5e-4).
      lr_decay_epochs: 0-based epochs from which the step size is multiplied by another
        ``lr_decay_rate`` (the reference decays after its 1-based epochs 5, 8 and 9).
      lr_decay_rate: the decay factor.
      train_mode: run the student in training mode (BatchNorm batch statistics, refreshed
        running averages), as the reference does; ``False`` keeps the statistics frozen.
      optimizer: an optax optimizer, or settings over the reference Adam with coupled L2 weight
        decay 0.1 (``torch.optim.Adam``), e.g. ``{"weight_decay": 0.0}``; see
        :func:`~jaxunlearn.core.optim.resolve`. The epoch decay scales its updates.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and ``batch["retain"]``, whose state
      is a :class:`ScrubState`.

    Raises:
      ValueError: for an unknown schedule, invalid hyperparameters, ``max_steps_per_epoch`` with
        the reference schedule, or a ``num_steps`` that is no whole number of epochs.

    References:
      Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"scrub `schedule` must be one of {SCHEDULES}; got {schedule!r}")
    if concrete(alpha, gamma) and (alpha < 0 or gamma < 0):
        raise ValueError(f"scrub `alpha` and `gamma` must be non-negative; got {alpha}, {gamma}")
    if concrete(temperature) and not temperature > 0:
        raise ValueError(f"scrub `temperature` must be positive; got {temperature}")
    try:
        msteps = check_count(msteps, "msteps", 0)
        if max_steps_per_epoch is not None:
            max_steps_per_epoch = check_count(max_steps_per_epoch, "max_steps_per_epoch", 1)
        steps_per_epoch = check_count(steps_per_epoch, "steps_per_epoch", 1)
    except ValueError as error:
        raise ValueError(f"scrub: {error}") from None
    if concrete(lr_decay_rate) and not 0 < lr_decay_rate <= 1:
        raise ValueError(f"scrub `lr_decay_rate` must lie in (0, 1]; got {lr_decay_rate}")
    if schedule == "reference":
        if max_steps_per_epoch is not None:
            raise ValueError(
                "scrub `max_steps_per_epoch` belongs to schedule='interleaved'; the reference "
                "schedule takes one full pass of max steps over the forget set"
            )
        if forget_steps_per_epoch is None:
            warnings.warn(
                "scrub: no `forget_steps_per_epoch` (updates in a pass over the forget set) was "
                "given, so the reference schedule cannot be built; falling back to "
                "schedule='interleaved'. Pass forget_steps_per_epoch to rules.make.",
                stacklevel=2,
            )
            schedule = "interleaved"
        else:
            try:
                forget_steps_per_epoch = check_count(
                    forget_steps_per_epoch, "forget_steps_per_epoch", 1
                )
            except ValueError as error:
                raise ValueError(f"scrub: {error}") from None
            passes.check_num_steps(
                "scrub",
                "jaxunlearn.rules.scrub.scrub_num_steps",
                num_steps,
                int(steps_per_epoch),
                int(forget_steps_per_epoch),
                int(msteps),
            )
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=SCRUB_ADAM)
    milestones = sorted(int(e) for e in lr_decay_epochs)
    if any(m < 0 for m in milestones):
        raise ValueError(f"scrub `lr_decay_epochs` must be non-negative; got {lr_decay_epochs}")
    spe = int(steps_per_epoch)

    def init(variables: Variables, *, key: Array | None = None) -> ScrubState:
        del key
        return ScrubState(opt.init(variables["params"]), variables, StepCounter.zero())

    def lr_scale(epoch):
        decays = sum((epoch >= m).astype(jnp.int32) for m in milestones)
        return jnp.asarray(lr_decay_rate, jnp.float32) ** decays

    def student(variables, params, x):
        out = apply({**variables, "params": params}, x, train=train_mode)
        return out.logits, out.batch_stats

    def max_step(variables, opt_state, teacher, x, scale):
        """Ascent on ``KL_T`` over forget inputs ``x``: ``(variables, opt_state, kl)``."""
        t_logits = jax.lax.stop_gradient(apply(teacher, x).logits)

        def max_loss(params):
            logits, stats = student(variables, params, x)
            kl = losses.distillation_kl(logits, t_logits, temperature)
            return -kl, (kl, stats)

        (_, (kl, stats)), grads = jax.value_and_grad(max_loss, has_aux=True)(variables["params"])
        variables, opt_state = optimizer_step(
            opt, grads, opt_state, variables, batch_stats=stats, scale=scale
        )
        return variables, opt_state, kl

    def min_step(variables, opt_state, teacher, x, y, scale):
        """Descent on ``gamma CE + alpha KL_T`` over retain ``(x, y)``."""
        t_logits = jax.lax.stop_gradient(apply(teacher, x).logits)

        def min_loss(params):
            logits, stats = student(variables, params, x)
            ce = losses.cross_entropy(logits, y)
            kl = losses.distillation_kl(logits, t_logits, temperature)
            return gamma * ce + alpha * kl, (ce, kl, stats)

        (loss, (ce, kl, stats)), grads = jax.value_and_grad(min_loss, has_aux=True)(
            variables["params"]
        )
        variables, opt_state = optimizer_step(
            opt, grads, opt_state, variables, batch_stats=stats, scale=scale
        )
        return variables, opt_state, loss, ce, kl

    zero = lambda: jnp.zeros((), jnp.float32)

    def update_interleaved(variables: Variables, state: ScrubState, batch: Batch):
        teacher = state.reference
        step = state.step.count
        epoch = step // spe
        scale = lr_scale(epoch)
        do_max = epoch < msteps
        if max_steps_per_epoch is not None:
            do_max &= (step % spe) < max_steps_per_epoch

        def no_max_step(variables, opt_state):
            return variables, opt_state, zero()

        variables, opt_state, forget_kl = jax.lax.cond(
            do_max,
            lambda v, o: max_step(v, o, teacher, batch["forget"]["x"], scale),
            no_max_step,
            variables,
            state.opt_state,
        )
        xr, yr = batch["retain"]["x"], batch["retain"]["y"]
        variables, opt_state, loss, retain_ce, retain_kl = min_step(
            variables, opt_state, teacher, xr, yr, scale
        )
        metrics = {
            "loss": loss,
            "forget_kl": forget_kl,
            "retain_ce": retain_ce,
            "retain_kl": retain_kl,
            "max_step": do_max.astype(jnp.float32),
        }
        return variables, opt_state, metrics

    def update_reference(variables: Variables, state: ScrubState, batch: Batch):
        teacher = state.reference
        epoch, do_max = passes.position(
            state.step.count,
            steps_per_epoch=spe,
            forget_steps_per_epoch=int(forget_steps_per_epoch),
            forget_epochs=int(msteps),
        )
        scale = lr_scale(epoch)

        def max_branch(variables, opt_state):
            variables, opt_state, kl = max_step(
                variables, opt_state, teacher, batch["forget"]["x"], scale
            )
            return (
                variables,
                opt_state,
                {
                    "loss": -kl,
                    "forget_kl": kl,
                    "retain_ce": zero(),
                    "retain_kl": zero(),
                },
            )

        def min_branch(variables, opt_state):
            xr, yr = batch["retain"]["x"], batch["retain"]["y"]
            variables, opt_state, loss, ce, kl = min_step(
                variables, opt_state, teacher, xr, yr, scale
            )
            return (
                variables,
                opt_state,
                {
                    "loss": loss,
                    "forget_kl": zero(),
                    "retain_ce": ce,
                    "retain_kl": kl,
                },
            )

        variables, opt_state, metrics = jax.lax.cond(
            do_max, max_branch, min_branch, variables, state.opt_state
        )
        return variables, opt_state, {**metrics, "max_step": do_max.astype(jnp.float32)}

    run = update_reference if schedule == "reference" else update_interleaved

    def update(variables: Variables, state: ScrubState, batch: Batch, *, key: Array):
        del key
        variables, opt_state, metrics = run(variables, state, batch)
        return variables, state._replace(opt_state=opt_state, step=state.step.next()), metrics

    return UnlearningRule(init, update)
