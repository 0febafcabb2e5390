"""Guidance by representational alignment: train a network toward a guide's representations.

The *target* network minimises its task loss plus a layer-wise representational distance to a
frozen *guide* network on the same inputs, ``L = task_weight * L_task + alignment_weight *
mean_l (1 - CKA(h_l, g_{m(l)}))`` with linear CKA (:func:`jaxunlearn.repr.losses.cka_alignment`).
The guide may have another architecture (a CNN guiding an MLP) and may be untrained: a randomly
initialised guide still transfers part of its architectural prior. Layers are the networks'
``Outputs.hidden`` activations (the features when a network reports none); target layer ``l`` of
``L`` is paired with guide layer ``m(l) = round(l (G - 1) / (L - 1))`` of ``G`` unless ``layers``
gives the pairs. The guide's variables live in the rule state; without a guide the rule guides the
network by a freshly initialised copy of its own architecture (``init_fn``).

References:
  Subramaniam, Mayo, Conwell, Poggio, Katz, Cheung, Barbu, "Training the Untrainable:
  Introducing Inductive Bias via Representational Alignment", NeurIPS 2025, arXiv 2410.20035
  ("guidance": task loss plus layer-wise CKA distance to a frozen guide).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import jax
import optax

from jaxunlearn.core import optim
from jaxunlearn.core.rule import rule_from_loss
from jaxunlearn.core.types import Outputs, UnlearningRule, Variables
from jaxunlearn.repr import losses
from jaxunlearn.repr.common import PART, check_nonnegative
from jaxunlearn.repr.registry import rule
from jaxunlearn.rules.common import part_loss

GUIDANCE_ADAM = {"name": "adam", "weight_decay": 0.0}
GUIDE_KEY = 0x4755


def layers_of(out: Outputs) -> tuple:
    """The activations a network exposes for alignment: ``hidden``, else ``(features,)``."""
    return tuple(out.hidden) if out.hidden else (out.features,)


def layer_pairs(num_layers: int, num_guide_layers: int) -> tuple[tuple[int, int], ...]:
    """``(l, m(l))`` for every target layer, guide layers spread evenly over the target's."""
    if num_layers == 1:
        return ((0, num_guide_layers - 1),)
    return tuple(
        (i, round(i * (num_guide_layers - 1) / (num_layers - 1))) for i in range(num_layers)
    )


@rule(
    "representational_alignment",
    parts=(PART,),
    paper="Subramaniam et al., Training the Untrainable: Introducing Inductive Bias via "
    "Representational Alignment, NeurIPS 2025",
    needs_labels=True,
    task="any",
    sweepable=("learning_rate", "alignment_weight", "task_weight"),
    num_views=0,
    optimizer=GUIDANCE_ADAM,
)
def representational_alignment(
    apply: Callable,
    *,
    init_fn: Callable | None = None,
    guide_apply: Callable | None = None,
    guide_variables: Variables | None = None,
    alignment_weight: float = 1.0,
    task_weight: float = 1.0,
    layers: Sequence[tuple[int, int]] | None = None,
    learning_rate: float = 1e-3,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """Guidance: task loss plus ``1 - CKA`` between paired layers of the network and a guide.

    Args:
      apply: the target network's ``apply``.
      init_fn: context; initialises the default guide (the same architecture, untrained).
      guide_apply: the guide's ``apply`` (default: ``apply``).
      guide_variables: the guide's variables (default: ``init_fn`` of a key folded from the
        rule's init key: an untrained guide).
      alignment_weight: weight of the CKA distance (1), >= 0.
      task_weight: weight of the supervised loss on ``batch["retain"]`` (1); 0 trains on the
        alignment alone, without labels.
      layers: ``(target layer, guide layer)`` index pairs into the two networks' layers (see the
        module docstring), or ``None`` for the even spread.
      learning_rate: step size.
      train_mode: BatchNorm in training mode (the target; the guide runs in inference mode).
      optimizer: an optax optimizer or settings over Adam.

    Metrics: ``loss``, ``task_loss``, ``alignment`` (the mean ``1 - CKA``).
    """
    check_nonnegative(alignment_weight, "alignment_weight")
    check_nonnegative(task_weight, "task_weight")
    if guide_variables is None and init_fn is None:
        raise ValueError(
            "representational_alignment needs `guide_variables` or `init_fn` (an untrained guide)"
        )
    guide = apply if guide_apply is None else guide_apply
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=GUIDANCE_ADAM)

    def loss_fn(variables, batch, *, reference, step, key):
        del step, key
        x = batch[PART]["x"]
        out = apply(variables, x, train=train_mode)
        target_layers = layers_of(out)
        guide_layers = layers_of(guide(jax.lax.stop_gradient(reference), x, train=False))
        pairs = layer_pairs(len(target_layers), len(guide_layers)) if layers is None else layers
        for i, j in pairs:
            if not (0 <= i < len(target_layers) and 0 <= j < len(guide_layers)):
                raise ValueError(
                    f"`layers` pair {(i, j)} is out of range: the network has "
                    f"{len(target_layers)} layers, the guide {len(guide_layers)}"
                )
        alignment = losses.cka_alignment(
            [target_layers[i] for i, _ in pairs], [guide_layers[j] for _, j in pairs]
        )
        task, metrics = part_loss(apply, variables, batch, PART, train=train_mode)
        loss = task_weight * task + alignment_weight * alignment
        return loss, {**metrics, "task_loss": task, "alignment": alignment}

    inner = rule_from_loss(loss_fn, opt, keep_reference=False)

    def init(variables: Variables, *, key):
        guide_vars = (
            init_fn(jax.random.fold_in(key, GUIDE_KEY))
            if guide_variables is None
            else guide_variables
        )
        return inner.init(variables, key=key)._replace(reference=guide_vars)

    return UnlearningRule(init, inner.update)
