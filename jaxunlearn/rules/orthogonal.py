"""Gradient orthogonalisation: forget by ascent along directions that leave the retain loss flat.

Each update takes the gradient of the forget objective (ascent on the forget loss, i.e. descent
on ``-loss_forget``), ``g_f``, and the gradient of the retain loss, ``g_r``, over the whole
parameter vector, and removes from ``g_f`` its component along ``g_r``:

    g_f_perp = g_f - (<g_f, g_r> / ||g_r||^2) g_r

so that, to first order, the forget step does not change the retain loss. The optimizer then
steps along ``forget_weight * g_f_perp + retain_weight * g_r`` (optional descent on the retain
loss), plus, if ``orthogonality_weight > 0``, the gradient of UNO's orthogonality penalty
``cos^2(g_f, g_r)`` (a second-order term that makes the two gradients orthogonal at the new
parameters as well).

UNO (Mandal & Gottwald) is written for generative models (VAEs, diffusion transformers): its
main algorithm minimises the retain loss plus ``cos^2`` of the forget and retain gradients (plus
a classifier-based uniformity term on generated samples), and its "surgery" variant steps on the
forget gradient with the retain-gradient component projected out, exactly the projection above
(reference code: ``g_f - g_r <g_f, g_r> / <g_r, g_r>`` on the flattened gradients). This rule
adapts that projection to classifiers, with gradient ascent on the forget cross-entropy as the
forget objective; it is the default (``retain_weight = 0``, ``orthogonality_weight = 0``).

Plain ascent on a cross-entropy is unbounded: once the forget examples are misclassified it keeps
growing weights until the model collapses, and on class forgetting the step at which that happens
varies from seed to seed. ``forget_loss_cap`` (off by default; not part of UNO) ascends on
``min(loss_i, cap)`` per example instead, so an example stops pushing once its loss passes the cap.

References:
  Mandal & Gottwald, "UNO: Unlearning via Orthogonalization in Generative Models",
  arXiv 2506.04712, 2025.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import losses, optim
from jaxunlearn.core.checks import concrete
from jaxunlearn.core.rule import BATCH_STATS_KEY, rule_from_grads
from jaxunlearn.core.types import Array, Batch, PyTree, UnlearningRule, Variables
from jaxunlearn.rules import registry
from jaxunlearn.rules.common import part_loss


def project_orthogonal(g: PyTree, direction: PyTree) -> PyTree:
    """``g - (<g, d> / ||d||^2) d`` over the flattened pytrees (``g`` itself when ``d = 0``)."""
    dot = optax.tree.vdot(g, direction)
    sq = optax.tree.vdot(direction, direction)
    coef = jnp.where(sq > 0, dot / jnp.where(sq > 0, sq, 1.0), 0.0)
    return optax.tree.add_scale(g, -coef, direction)


def squared_cosine(a: PyTree, b: PyTree) -> Array:
    """``<a, b>^2 / (||a||^2 ||b||^2)`` over flattened pytrees (0 when either is zero)."""
    denom = optax.tree.vdot(a, a) * optax.tree.vdot(b, b)
    return jnp.where(denom > 0, optax.tree.vdot(a, b) ** 2 / jnp.where(denom > 0, denom, 1.0), 0.0)


@registry.rule(
    "gradient_orthogonalization",
    parts=("forget", "retain"),
    paper="Mandal & Gottwald, UNO: Unlearning via Orthogonalization, arXiv 2506.04712",
    task="any",
    sweepable=("forget_weight", "retain_weight", "orthogonality_weight", "learning_rate"),
)
def gradient_orthogonalization(
    apply: Callable,
    *,
    forget_weight: float = 1.0,
    retain_weight: float = 0.0,
    orthogonality_weight: float = 0.0,
    forget_loss_cap: float | None = None,
    learning_rate: float = 0.01,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """Ascent on the forget loss, projected orthogonal to the retain gradient (UNO surgery).

    Every update takes one optimizer step along the direction above (no phases).

    Args:
      apply: the model's functional ``apply``.
      forget_weight: weight of the projected forget (ascent) direction.
      retain_weight: weight of plain descent on the retain loss added to the step (0: the pure
        projected step of UNO's surgery variant).
      orthogonality_weight: weight of UNO's ``cos^2(g_f, g_r)`` penalty (0 disables its
        second-order gradient).
      forget_loss_cap: if set, ascend on ``mean(min(loss_i, cap))`` over the forget batch, which
        stops the ascent on examples already past ``cap`` (``None``: plain ascent).
      learning_rate: the step size.
      train_mode: run BatchNorm in training mode (batch statistics), as UNO's training loop does
        (``model.train()``); the model keeps the statistics refreshed by the retain pass.
        ``False``: inference mode, statistics fixed.
      optimizer: an optax optimizer, or settings over the library's reference SGD (momentum 0.9,
        weight decay 5e-4; UNO's own settings are for generative models); see
        :func:`~jaxunlearn.core.optim.resolve`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and ``batch["retain"]``, whose state
      is a :class:`~jaxunlearn.core.rule.LossRuleState`. With plain SGD (``optimizer=
      {"momentum": 0.0, "weight_decay": 0.0}``), ``retain_weight = 0`` and
      ``orthogonality_weight = 0``, every parameter change is orthogonal to the retain gradient
      at the current parameters.

    References:
      Mandal & Gottwald, "UNO: Unlearning via Orthogonalization in Generative Models",
      arXiv 2506.04712, 2025.
    """
    for name, value in (
        ("forget_weight", forget_weight),
        ("retain_weight", retain_weight),
        ("orthogonality_weight", orthogonality_weight),
    ):
        if concrete(value) and value < 0:
            raise ValueError(
                f"gradient_orthogonalization `{name}` must be non-negative; got {value}"
            )
    if forget_loss_cap is not None and concrete(forget_loss_cap) and not forget_loss_cap > 0:
        raise ValueError(
            f"gradient_orthogonalization `forget_loss_cap` must be positive or None; "
            f"got {forget_loss_cap}"
        )
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=optim.REFERENCE_SGD)

    def gradients(params, variables, batch):
        def forget_objective(p):
            if forget_loss_cap is None:
                loss, _ = part_loss(
                    apply, {**variables, "params": p}, batch, "forget", train=train_mode
                )
                return -loss, loss
            out = apply({**variables, "params": p}, batch["forget"]["x"], train=train_mode)
            per_example = losses.per_example_supervised(out.logits, batch["forget"]["y"])
            return -jnp.mean(jnp.minimum(per_example, forget_loss_cap)), jnp.mean(per_example)

        def retain_objective(p):
            loss, metrics = part_loss(
                apply, {**variables, "params": p}, batch, "retain", train=train_mode
            )
            return loss, (loss, metrics.get(BATCH_STATS_KEY))

        g_f, forget_loss = jax.grad(forget_objective, has_aux=True)(params)
        g_r, (retain_loss, stats) = jax.grad(retain_objective, has_aux=True)(params)
        return g_f, g_r, forget_loss, retain_loss, stats

    def direction(variables: Variables, batch: Batch, *, reference, step, key):
        del reference, step, key
        params = variables["params"]
        g_f, g_r, forget_loss, retain_loss, stats = gradients(params, variables, batch)
        cos2 = squared_cosine(g_f, g_r)
        d = optax.tree.scale(forget_weight, project_orthogonal(g_f, g_r))
        if not concrete(retain_weight) or retain_weight:
            d = optax.tree.add_scale(d, retain_weight, g_r)
        if not concrete(orthogonality_weight) or orthogonality_weight:

            def penalty(p):
                gf, gr, *_ = gradients(p, variables, batch)
                return squared_cosine(gf, gr)

            d = optax.tree.add_scale(d, orthogonality_weight, jax.grad(penalty)(params))
        metrics = {"forget_loss": forget_loss, "retain_loss": retain_loss, "grad_cos2": cos2}
        if stats is not None:
            metrics[BATCH_STATS_KEY] = stats
        return d, metrics

    return rule_from_grads(direction, opt, keep_reference=False)
