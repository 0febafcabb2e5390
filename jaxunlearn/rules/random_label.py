"""Random labelling (RL): train on the forget set with random labels and on the retain set.

References:
  Golatkar et al., "Eternal Sunshine of the Spotless Net", CVPR 2020 (random-label baseline);
  Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency", ICLR 2024
  (RL as the base of SalUn: lr 0.01, 10 epochs, labels drawn uniformly over all classes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import losses, optim
from jaxunlearn.core.rule import rule_from_loss
from jaxunlearn.core.types import UnlearningRule
from jaxunlearn.rules import registry


def random_label_loss(apply: Callable, num_classes: int, *, exclude_true: bool = False):
    """The RL objective as a loss function for :func:`~jaxunlearn.core.rule.rule_from_loss`.

    Cross-entropy over the union of the forget batch, relabelled at random, and the retain batch
    with true labels: the reference code's "shuffled concatenation" form of RL. Reused by SalUn.
    """

    def loss_fn(variables, batch, *, reference, step, key):
        del reference, step
        xf, yf = batch["forget"]["x"], batch["forget"]["y"]
        if exclude_true:
            shift = jax.random.randint(key, yf.shape, 1, num_classes)
            rand = (yf + shift) % num_classes
        else:
            rand = jax.random.randint(key, yf.shape, 0, num_classes)
        x = jnp.concatenate([xf, batch["retain"]["x"]])
        y = jnp.concatenate([rand.astype(yf.dtype), batch["retain"]["y"]])
        logits = apply(variables, x).logits
        nf = xf.shape[0]
        return losses.cross_entropy(logits, y), {"forget_acc": losses.accuracy(logits[:nf], yf)}

    return loss_fn


@registry.rule(
    "random_label",
    parts=("forget", "retain"),
    paper="Golatkar et al., Eternal Sunshine of the Spotless Net, CVPR 2020",
    sweepable=("learning_rate",),
)
def random_label(
    apply: Callable,
    *,
    num_classes: int,
    learning_rate: float = 0.01,
    exclude_true: bool = False,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """RL: cross-entropy on forget examples with random labels plus retain examples.

    Args:
      apply: the model's functional ``apply``.
      num_classes: number of classes to draw labels from.
      learning_rate: SGD step size (SalUn code defaults).
      exclude_true: draw only wrong labels (the reference draws uniformly, true label included).
      optimizer: an optax optimizer, or settings over the reference SGD (momentum 0.9,
        weight decay 5e-4); see :func:`~jaxunlearn.core.optim.resolve`.
    """
    opt = optim.resolve(optimizer, learning_rate=learning_rate)
    return rule_from_loss(
        random_label_loss(apply, num_classes, exclude_true=exclude_true), opt, keep_reference=False
    )
