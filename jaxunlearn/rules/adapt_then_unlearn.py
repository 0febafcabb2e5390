"""Adapt-then-Unlearn: move away, in parameter space, from a copy adapted to the forget set.

Phase 1 (adapt) fine-tunes a copy of the model on the forget set (descent on its loss), giving
``theta_N``: the difference ``theta_N - theta_0`` is a direction in parameter space that encodes
the undesired content. Phase 2 (unlearn) trains the original model on the retain set with a
repulsion regulariser that pushes its parameters away from ``theta_N``:

    L = L_retain(theta) + gamma * R(d),    d = mean_i (theta_i - theta_N,i)^2

with the paper's three repulsion forms: ``"exp"`` (EL2, ``exp(-alpha d)``, the main choice: it is
bounded, so the push fades once the model is far from ``theta_N``), ``"inverse"`` (IL2,
``1 / (alpha d)``) and ``"negative"`` (NL2, ``-alpha d``). The distance is the mean squared
difference over all parameters, as the reference code's MSE between parameter tensors, so that
``alpha`` does not depend on the model's size.

The rule switches phase on its step counter: the first ``adapt_fraction`` of the ``num_steps``
updates adapt the copy held in the state and return the variables unchanged (the original);
the remaining updates train the variables. Phase 1 reads only ``batch["forget"]``, phase 2 only
``batch["retain"]``.

The paper unlearns features from pre-trained GANs (StyleGAN2) with negative samples found by a
classifier, adapting with an EWC-regularised adversarial loss and unlearning with the adversarial
loss on positive samples; this version adapts it to classifiers with the supervised loss in
both phases (no EWC term in phase 1, which the GAN needs only because it adapts on a handful of
samples).

References:
  Tiwary, Guha, Panda & Prathosh, "Adapt then Unlearn: Exploiting Parameter Space Semantics for
  Unlearning in Generative Adversarial Networks", TMLR 2025 (code: atriguha/Adapt_Unlearn).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core.checks import concrete
from jaxunlearn.core.types import Array, Batch, PyTree, UnlearningRule, Variables
from jaxunlearn.rules.common import part_loss, resolve_optimizer
from jaxunlearn.rules import registry

REPULSIONS = ("exp", "inverse", "negative")


def mean_squared_distance(params: PyTree, other: PyTree) -> Array:
    """Mean over all parameters of ``(params - other)^2``."""
    diff = optax.tree.sub(params, other)
    return optax.tree.vdot(diff, diff) / optax.tree.size(diff)


def repulsion(distance: Array, kind: str, alpha: float) -> Array:
    """The paper's repulsion losses of a squared distance: decreasing as the distance grows."""
    if kind == "exp":
        return jnp.exp(-alpha * distance)
    if kind == "inverse":
        return 1.0 / jnp.maximum(alpha * distance, 1e-12)
    if kind == "negative":
        return -alpha * distance
    raise ValueError(f"Unknown repulsion {kind!r}; valid: {REPULSIONS}")


class AdaptThenUnlearnState(NamedTuple):
    """State of :func:`adapt_then_unlearn`.

    Attributes:
      adapted: parameters of the copy adapted to the forget set (``theta_N``).
      adapt_opt_state: optimizer state of the adaptation (phase 1).
      opt_state: optimizer state of the unlearning (phase 2).
      step: number of updates taken so far (int32 scalar).
    """

    adapted: PyTree
    adapt_opt_state: PyTree
    opt_state: PyTree
    step: Array


@registry.rule(
    'adapt_then_unlearn',
    parts=('forget', 'retain'),
    paper='Tiwary et al., Adapt then Unlearn: Exploiting Parameter Space Semantics, TMLR 2025',
    task='any',
    sweepable=('gamma', 'alpha', 'adapt_learning_rate', 'learning_rate', 'momentum', 'weight_decay'),
)
def adapt_then_unlearn(
    apply: Callable,
    *,
    num_steps: int,
    adapt_fraction: float = 0.2,
    gamma: float = 1.0,
    alpha: float = 1.0,
    repulsion_kind: str = "exp",
    adapt_learning_rate: float = 0.01,
    learning_rate: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    adapt_optimizer: optax.GradientTransformation | None = None,
    optimizer: optax.GradientTransformation | None = None,
) -> UnlearningRule:
    """Adapt a copy to the forget set, then fine-tune on the retain set away from it.

    Args:
      apply: the model's functional ``apply``.
      num_steps: total number of updates (given by the registry); the phase switch depends on it.
      adapt_fraction: fraction of the updates spent adapting the copy, in (0, 1).
      gamma: weight of the repulsion term (the reference code's default is 1).
      alpha: scale of the squared distance inside the repulsion (1 in the reference code). The
        defaults suit a GAN's large adaptation; a small classifier adapted for a few steps moves
        its parameters by ~1e-5 in mean square, so it needs ``alpha`` ~1e4 (the `digits` catalog
        entry uses ``alpha = 1e4, gamma = 3``).
      repulsion_kind: ``"exp"`` (EL2, default), ``"inverse"`` (IL2) or ``"negative"`` (NL2).
      adapt_learning_rate: SGD learning rate of the adaptation.
      learning_rate, momentum, weight_decay: SGD settings of both phases (the paper trains GANs
        with Adam; SGD is the library's reference classifier optimizer).
      adapt_optimizer: an optax optimizer for phase 1, replacing its SGD settings.
      optimizer: an optax optimizer for phase 2, replacing its SGD settings.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` (phase 1) and ``batch["retain"]``
      (phase 2).

    References:
      Tiwary et al., "Adapt then Unlearn: Exploiting Parameter Space Semantics for Unlearning in
      Generative Adversarial Networks", TMLR 2025.
    """
    if repulsion_kind not in REPULSIONS:
        raise ValueError(
            f"adapt_then_unlearn `repulsion_kind` must be one of {REPULSIONS}; "
            f"got {repulsion_kind!r}"
        )
    if not 0.0 < adapt_fraction < 1.0:
        raise ValueError(
            f"adapt_then_unlearn `adapt_fraction` must lie in (0, 1); got {adapt_fraction}"
        )
    if concrete(gamma, alpha) and (gamma < 0 or alpha <= 0):
        raise ValueError(
            f"adapt_then_unlearn needs `gamma` >= 0 and `alpha` > 0; got {gamma}, {alpha}"
        )
    if num_steps < 1:
        raise ValueError(f"adapt_then_unlearn `num_steps` must be positive; got {num_steps}")
    adapt_steps = min(max(int(round(adapt_fraction * num_steps)), 1), max(num_steps - 1, 1))
    adapt_opt = resolve_optimizer(
        adapt_optimizer,
        learning_rate=adapt_learning_rate,
        momentum=momentum,
        weight_decay=weight_decay,
    )
    opt = resolve_optimizer(
        optimizer, learning_rate=learning_rate, momentum=momentum, weight_decay=weight_decay
    )

    def init(variables: Variables, *, key: Array | None = None) -> AdaptThenUnlearnState:
        del key
        params = variables["params"]
        return AdaptThenUnlearnState(
            adapted=params,
            adapt_opt_state=adapt_opt.init(params),
            opt_state=opt.init(params),
            step=jnp.zeros((), jnp.int32),
        )

    def adapt(variables, state, batch):
        def objective(p):
            return part_loss(apply, {**variables, "params": p}, batch, "forget")[0]

        loss, grads = jax.value_and_grad(objective)(state.adapted)
        updates, adapt_opt_state = adapt_opt.update(grads, state.adapt_opt_state, state.adapted)
        adapted = optax.apply_updates(state.adapted, updates)
        state = state._replace(adapted=adapted, adapt_opt_state=adapt_opt_state)
        distance = mean_squared_distance(variables["params"], adapted)
        zero = jnp.zeros((), loss.dtype)
        return (
            variables,
            state,
            {"adapt_loss": loss, "retain_loss": zero, "repulsion": zero, "distance": distance},
        )

    def unlearn(variables, state, batch):
        def objective(p):
            retain_loss, _ = part_loss(apply, {**variables, "params": p}, batch, "retain")
            distance = mean_squared_distance(p, state.adapted)
            repel = repulsion(distance, repulsion_kind, alpha)
            return retain_loss + gamma * repel, (retain_loss, repel, distance)

        params = variables["params"]
        (_, (retain_loss, repel, distance)), grads = jax.value_and_grad(objective, has_aux=True)(
            params
        )
        updates, opt_state = opt.update(grads, state.opt_state, params)
        variables = {**variables, "params": optax.apply_updates(params, updates)}
        state = state._replace(opt_state=opt_state)
        return (
            variables,
            state,
            {
                "adapt_loss": jnp.zeros_like(retain_loss),
                "retain_loss": retain_loss,
                "repulsion": repel,
                "distance": distance,
            },
        )

    def update(variables: Variables, state: AdaptThenUnlearnState, batch: Batch, *, key: Array):
        del key
        variables, state, metrics = jax.lax.cond(
            state.step < adapt_steps, adapt, unlearn, variables, state, batch
        )
        return variables, state._replace(step=state.step + 1), metrics

    return UnlearningRule(init, update)
