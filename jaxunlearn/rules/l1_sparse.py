"""l1-sparse unlearning: fine-tuning on the retain set with a decaying l1 penalty on the weights.

Sparser models unlearn more easily; l1-sparse gets the benefit without pruning by fine-tuning on
the retain set with ``CE(retain) + alpha_t * ||theta||_1``, where ``alpha_t`` decays linearly per
epoch, ``alpha_t = alpha * (1 - e / (E - no_l1_epochs))`` for epoch ``e`` of ``E`` (0 for the last
``no_l1_epochs`` epochs), as in the reference code.

References:
  Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023 (``FT_l1`` in
  ``unlearn/FT.py`` of OPTML-Group/Unlearn-Sparse; SGD lr 0.01, momentum 0.9, weight decay 5e-4,
  10 epochs; ``--alpha 1e-4`` in the maintainers' run scripts).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import optim
from jaxunlearn.core.checks import check_count, concrete
from jaxunlearn.core.rule import rule_from_loss
from jaxunlearn.core.types import Array, PyTree, UnlearningRule
from jaxunlearn.rules import registry
from jaxunlearn.rules.common import part_loss


def l1_norm(tree: PyTree) -> Array:
    """``sum |x|`` over every leaf of ``tree`` (the reference penalises all parameters)."""
    return sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree))


@registry.rule(
    "l1_sparse",
    parts=("retain",),
    paper="Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023",
    needs_labels=False,
    task="any",
    sweepable=("alpha", "learning_rate"),
)
def l1_sparse(
    apply: Callable,
    *,
    num_steps: int,
    steps_per_epoch: int,
    alpha: float = 1e-4,
    no_l1_epochs: int = 0,
    learning_rate: float = 0.01,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """l1-sparse: ``CE(retain) + alpha_t * ||theta||_1``, ``alpha_t`` decaying linearly per epoch.

    Args:
      apply: the model's functional ``apply``.
      num_steps: total updates; the run has ``E = ceil(num_steps / steps_per_epoch)`` epochs.
      steps_per_epoch: updates per epoch (``alpha_t`` is constant within an epoch).
      alpha: the starting l1 weight on the summed absolute parameters. The reference argparse
        default 0.2 is shared with other methods; its run scripts use 1e-4.
      no_l1_epochs: trailing epochs without the penalty.
      learning_rate: SGD step size (reference defaults).
      train_mode: run BatchNorm in training mode (batch statistics, refreshed running
        averages), as the reference's ``FT_l1`` (``model.train()``); ``False`` keeps them fixed.
      optimizer: an optax optimizer, or settings over the reference SGD (momentum 0.9,
        weight decay 5e-4); see :func:`~jaxunlearn.core.optim.resolve`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["retain"]``.
    """
    if concrete(alpha) and alpha < 0:
        raise ValueError(f"l1_sparse `alpha` must be non-negative; got {alpha}")
    try:
        num_steps = check_count(num_steps, "num_steps", 1)
        steps_per_epoch = check_count(steps_per_epoch, "steps_per_epoch", 1)
    except ValueError as error:
        raise ValueError(f"l1_sparse: {error}") from None
    epochs = math.ceil(num_steps / steps_per_epoch)
    if not 0 <= no_l1_epochs <= epochs:
        raise ValueError(
            f"l1_sparse `no_l1_epochs` must lie in [0, {epochs}] (the run's epochs); "
            f"got {no_l1_epochs}"
        )
    decay_epochs = epochs - int(no_l1_epochs)
    opt = optim.resolve(optimizer, learning_rate=learning_rate)

    def alpha_at(step):
        epoch = (step // int(steps_per_epoch)).astype(jnp.float32)
        if decay_epochs == 0:  # the reference keeps alpha constant in this corner case
            return jnp.asarray(alpha, jnp.float32)
        return jnp.where(epoch < decay_epochs, alpha * (1.0 - epoch / decay_epochs), 0.0)

    def loss_fn(variables, batch, *, reference, step, key):
        del reference, key
        ce, metrics = part_loss(apply, variables, batch, "retain", train=train_mode)
        current = alpha_at(step)
        penalty = l1_norm(variables["params"])
        return ce + current * penalty, {
            **metrics,
            "retain_loss": ce,
            "l1": penalty,
            "alpha": current,
        }

    return rule_from_loss(loss_fn, opt, keep_reference=False)
