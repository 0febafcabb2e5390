"""Epochs made of whole passes: a pass over the forget set, then a pass over the retain set.

Several reference implementations do not pair forget and retain batches: an epoch runs one full
pass of updates over the forget set and then one over the retain set (SCRUB's max then min
epochs, for its first ``msteps`` epochs only; random labelling's sequential epoch on CIFAR-10 and
SVHN). On the loop's stream of ``{"forget", "retain"}`` batches such a rule reads only
``batch["forget"]`` during a forget pass and only ``batch["retain"]`` during a retain pass, and
its epoch is ``forget_steps_per_epoch + steps_per_epoch`` updates long. This module says where an
update falls in that schedule, and how many updates a run of whole epochs has, so that a rule and
the runner that sizes its run agree.

References:
  Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023 (the epoch loop of the
  SCRUB notebooks in meghdadk/SCRUB: ``if epoch <= msteps: train_distill(..., "maximize")`` on
  the forget loader, then ``train_distill(..., "minimize")`` on the retain loader).
  Fan et al., "SalUn", ICLR 2024 (``unlearn/RL.py`` of OPTML-Group/Unlearn-Saliency: on CIFAR-10
  and SVHN a pass over the forget loader with random labels, then a pass over the retain loader).
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxunlearn.core.checks import check_count
from jaxunlearn.core.types import Array


def sequential_num_steps(
    epochs: int,
    steps_per_epoch: int,
    forget_steps_per_epoch: int,
    forget_epochs: int | None = None,
) -> int:
    """Updates in ``epochs`` epochs whose first ``forget_epochs`` start with a forget pass.

    Args:
      epochs: whole epochs of the run.
      steps_per_epoch: updates in one pass over the retain set.
      forget_steps_per_epoch: updates in one pass over the forget set.
      forget_epochs: leading epochs with a forget pass; ``None`` for every epoch.

    Returns:
      ``epochs * steps_per_epoch + min(forget_epochs, epochs) * forget_steps_per_epoch``.
    """
    epochs = check_count(epochs, "epochs", 0)
    with_forget = epochs if forget_epochs is None else min(int(forget_epochs), epochs)
    return epochs * int(steps_per_epoch) + with_forget * int(forget_steps_per_epoch)


def whole_epochs(
    num_steps: int,
    steps_per_epoch: int,
    forget_steps_per_epoch: int,
    forget_epochs: int | None = None,
) -> int | None:
    """The number of epochs that take exactly ``num_steps`` updates, or ``None`` if none does."""
    num_steps = int(num_steps)
    epochs = 0
    while True:
        total = sequential_num_steps(epochs, steps_per_epoch, forget_steps_per_epoch, forget_epochs)
        if total == num_steps:
            return epochs
        if total > num_steps:
            return None
        epochs += 1


def check_num_steps(
    owner: str,
    helper: str,
    num_steps: int | None,
    steps_per_epoch: int,
    forget_steps_per_epoch: int,
    forget_epochs: int | None = None,
) -> None:
    """Rejects a run length that is not a whole number of epochs, naming the right values.

    Args:
      owner: the rule's name, for the message.
      helper: the public function that computes the run length, for the message.
      num_steps: the run's updates (``None``: not checked).
      steps_per_epoch, forget_steps_per_epoch, forget_epochs: see
        :func:`sequential_num_steps`.

    Raises:
      ValueError: if no whole number of epochs takes ``num_steps`` updates.
    """
    if num_steps is None:
        return
    try:
        num_steps = check_count(num_steps, "num_steps", 1)
    except ValueError as error:
        raise ValueError(f"{owner}: {error}") from None
    if whole_epochs(num_steps, steps_per_epoch, forget_steps_per_epoch, forget_epochs) is not None:
        return
    below = 0
    while (
        sequential_num_steps(below + 1, steps_per_epoch, forget_steps_per_epoch, forget_epochs)
        < num_steps
    ):
        below += 1
    low = sequential_num_steps(below, steps_per_epoch, forget_steps_per_epoch, forget_epochs)
    high = sequential_num_steps(below + 1, steps_per_epoch, forget_steps_per_epoch, forget_epochs)
    raise ValueError(
        f"{owner} runs epochs of a forget pass ({forget_steps_per_epoch} updates) then a retain "
        f"pass ({steps_per_epoch} updates); {num_steps} updates is no whole number of epochs "
        f"({below} epochs take {low}, {below + 1} take {high}). Size the run with {helper}("
        f"epochs, steps_per_epoch, forget_steps_per_epoch"
        + ("" if forget_epochs is None else ", msteps")
        + ")."
    )


def position(
    step: Array,
    *,
    steps_per_epoch: int,
    forget_steps_per_epoch: int,
    forget_epochs: int | None = None,
) -> tuple[Array, Array]:
    """Where update ``step`` falls: ``(epoch, on_forget)``.

    Epochs ``0 .. forget_epochs - 1`` (every epoch when ``forget_epochs`` is ``None``) are
    ``forget_steps_per_epoch`` forget updates followed by ``steps_per_epoch`` retain updates; the
    later ones are retain updates only. A run past its planned epochs continues the pattern.

    Args:
      step: the update count, an int32 scalar (traced).
      steps_per_epoch: updates in a retain pass.
      forget_steps_per_epoch: updates in a forget pass.
      forget_epochs: leading epochs with a forget pass (``None``: all).

    Returns:
      ``(epoch, on_forget)``: the 0-based epoch (int32) and whether the update is in a forget
      pass (bool).
    """
    retain, forget = int(steps_per_epoch), int(forget_steps_per_epoch)
    period = retain + forget
    if forget_epochs is None:
        return step // period, (step % period) < forget
    head = int(forget_epochs) * period
    in_head = step < head
    epoch = jnp.where(in_head, step // period, int(forget_epochs) + (step - head) // retain)
    return epoch, in_head & ((step % period) < forget)
