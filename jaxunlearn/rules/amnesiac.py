"""Amnesiac unlearning: relabel the forget set with wrong labels and keep training on everything.

Every forget example gets a random label other than its own, and the model is trained on the
union of the relabelled forget set and the retain set: the forget examples' true labels are
overwritten while the retain data keeps the rest of the function in place.

This is the "amnesiac" baseline as run in the Selective Synaptic Dampening code (3 epochs over
``D_f ∪ D_r`` with Adam at lr 1e-4, shuffled batches of 128), not the gradient-bookkeeping
variant of Graves et al. that undoes stored updates. Two differences from that code: the wrong
labels are redrawn at every update rather than fixed once per example (batches carry no example
identity), and each update concatenates a forget batch with a retain batch, so the forget share of
an update is ``forget_batch_size / (forget_batch_size + retain_batch_size)``; choose the batch
sizes to match the forget set's share of the data (e.g. 16 + 112 = 128 for a 10% forget set) to
reproduce shuffled batches of the union.

References:
  Graves, Nagisetty and Ganesh, "Amnesiac Machine Learning", AAAI 2021.
  Foster et al., "Fast Machine Unlearning Without Retraining Through Selective Synaptic
  Dampening", AAAI 2024 (code: if-loops/selective-synaptic-dampening
  ``forget_random_strategies.py::amnesiac``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import optax

from jaxunlearn.core import optim
from jaxunlearn.core.rule import rule_from_loss
from jaxunlearn.core.types import UnlearningRule
from jaxunlearn.rules import registry
from jaxunlearn.rules.random_label import random_label_loss


@registry.rule(
    "amnesiac",
    parts=("forget", "retain"),
    paper="Graves et al., Amnesiac Machine Learning, AAAI 2021; Foster et al., AAAI 2024",
    sweepable=("learning_rate",),
)
def amnesiac(
    apply: Callable,
    *,
    num_classes: int,
    learning_rate: float = 1e-4,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """Amnesiac: cross-entropy on forget examples with random *wrong* labels plus retain examples.

    Args:
      apply: the model's functional ``apply``.
      num_classes: number of classes to draw labels from (supplied by the registry; at least 2).
      learning_rate: Adam learning rate (1e-4).
      optimizer: an optax optimizer, or settings over the reference Adam (no weight decay); see
        :func:`~jaxunlearn.core.optim.resolve`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and ``batch["retain"]``.

    References:
      Graves et al., "Amnesiac Machine Learning", AAAI 2021; Foster et al., AAAI 2024.
    """
    if int(num_classes) < 2:
        raise ValueError(
            f"amnesiac needs `num_classes` >= 2 to draw a wrong label; got {num_classes}"
        )
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=optim.REFERENCE_ADAM)
    return rule_from_loss(
        random_label_loss(apply, int(num_classes), exclude_true=True), opt, keep_reference=False
    )
