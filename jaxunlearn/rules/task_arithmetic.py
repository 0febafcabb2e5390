"""Unlearning in weight space: task-vector negation, NegMerge and TIES-merging of unlearned models.

All three fine-tune copies of the model inside the rule's state and edit the weights with
*task vectors* ``tau = theta_copy - theta_0``:

- :func:`task_vector_negation` fine-tunes one copy on the forget set and returns
  ``theta_0 - lambda * tau``.
- :func:`negmerge` fine-tunes ``K`` copies on the forget set with different hyperparameters
  (vmapped: the state has a leading member axis), keeps only the coordinates on which every
  ``tau_k`` has the same sign, and returns ``theta_0 - lambda * mask * mean_k tau_k``.
- :func:`ties_merge` trains two differently tuned *unlearned* models (one that over-forgets, one
  that under-forgets) and merges their task vectors with TIES (trim, elect sign, disjoint mean):
  ``theta_0 + lambda * merged``.

The rule's variables after every update are the edited model as of the data seen so far: the
copies take one step per update and the edit is recomputed from them, so stopping at any step
gives a consistent model. The merge arithmetic is exposed as small pure functions
(:func:`sign_consensus_merge`, :func:`ties_trim`, :func:`ties_elect_sign`,
:func:`ties_disjoint_mean`) over task vectors stacked along a leading member axis.

References:
  Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023.
  Kim et al., "NegMerge: Consensual Weight Negation for Strong Machine Unlearning", 2024
  (code: naver-ai/negmerge, mirrored in mgradyn/negmerge ``CLIP_MU/src/negmerge.py``).
  Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", NeurIPS 2023.
  Xu et al., "ZJUKLAB at SemEval-2025 Task 4: Unlearning via Model Merging", arXiv 2503.21088
  (TIES-merging of an over-forgetting and an under-forgetting unlearned model; code:
  zjunlp/unlearn ``semeval25/unlearn-merging.py``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import losses, optim
from jaxunlearn.core.checks import concrete
from jaxunlearn.core.rule import StepCounter, grads_of_loss, optimizer_step
from jaxunlearn.core.types import Array, Batch, PyTree, UnlearningRule, Variables
from jaxunlearn.rules import registry

# ---------------------------------------------------------------------------------------------
# Merge arithmetic (pure, over task vectors stacked along a leading member axis)
# ---------------------------------------------------------------------------------------------


def task_vectors(finetuned: PyTree, base: PyTree) -> PyTree:
    """``finetuned - base`` leaf-wise; ``finetuned`` may carry a leading member axis."""
    return jax.tree.map(lambda f, b: f - b, finetuned, base)


def sign_consensus_merge(stacked: PyTree) -> PyTree:
    """NegMerge's consensual task vector: the mean where all members agree in sign, else 0.

    Args:
      stacked: task vectors with a leading member axis ``K`` on every leaf.

    Returns:
      ``mask * mean_k tau_k`` with ``mask = |sum_k sign(tau_k)| == K`` (a coordinate that any
      member leaves at exactly zero is dropped too, as in the reference code).
    """

    def merge(t):
        k = t.shape[0]
        mask = jnp.abs(jnp.sum(jnp.sign(t), axis=0)) == k
        return jnp.where(mask, jnp.mean(t, axis=0), jnp.zeros_like(t[0]))

    return jax.tree.map(merge, stacked)


def _flat_members(stacked: PyTree) -> Array:
    """``[K, P]``: every member's task vector flattened over all leaves."""
    leaves = jax.tree.leaves(stacked)
    k = leaves[0].shape[0]
    return jnp.concatenate([x.reshape(k, -1) for x in leaves], axis=1)


def ties_trim(stacked: PyTree, density: float) -> PyTree:
    """TIES step 1: keep each member's top ``density`` fraction of entries by magnitude.

    The threshold is taken per member over all of its parameters together (the TIES reference
    flattens the whole model), keeping the ``max(int(density * P), 1)`` largest entries (and any
    tied with the smallest of them). The reference's ``kthvalue(P - int(density * P))`` keeps
    one entry more; the difference vanishes for real models.

    Args:
      stacked: task vectors with a leading member axis.
      density: fraction of entries kept, in (0, 1].

    Returns:
      The trimmed task vectors (same structure).
    """
    flat = jnp.abs(_flat_members(stacked))
    p = flat.shape[1]
    keep = max(int(density * p), 1)
    threshold = jnp.sort(flat, axis=1)[:, p - keep]

    def trim(t):
        thr = threshold.reshape((-1,) + (1,) * (t.ndim - 1))
        return jnp.where(jnp.abs(t) >= thr, t, jnp.zeros_like(t))

    return jax.tree.map(trim, stacked)


def ties_elect_sign(trimmed: PyTree) -> PyTree:
    """TIES step 2: the sign of the total mass ``sum_k tau_k`` per entry.

    Entries whose total is exactly zero take the majority sign, ``sign(sum of elected signs)``
    over the whole model, as in the reference implementation.
    """
    signs = jax.tree.map(lambda t: jnp.sign(jnp.sum(t, axis=0)), trimmed)
    majority = jnp.sign(sum(jnp.sum(s) for s in jax.tree.leaves(signs)))
    return jax.tree.map(lambda s: jnp.where(s == 0, majority, s), signs)


def ties_disjoint_mean(trimmed: PyTree, sign: PyTree) -> PyTree:
    """TIES step 3: per entry, the mean of the members whose non-zero value has the elected sign."""

    def merge(t, s):
        agree = jnp.where(s > 0, t > 0, t < 0)
        selected = jnp.where(agree, t, jnp.zeros_like(t))
        count = jnp.sum(agree, axis=0)
        return jnp.sum(selected, axis=0) / jnp.maximum(count, 1).astype(t.dtype)

    return jax.tree.map(merge, trimmed, sign)


def ties_merge_vectors(stacked: PyTree, density: float) -> PyTree:
    """TIES-merging of stacked task vectors: trim, elect sign, disjoint mean."""
    trimmed = ties_trim(stacked, density)
    return ties_disjoint_mean(trimmed, ties_elect_sign(trimmed))


# ---------------------------------------------------------------------------------------------
# Copies trained inside the rule state
# ---------------------------------------------------------------------------------------------


class TaskVectorState(NamedTuple):
    """State of the weight-space editors.

    Attributes:
      reference: the frozen starting variables ``theta_0`` (and their ``batch_stats``).
      members: parameters of the fine-tuned copies, with a leading member axis.
      opt_state: optimizer state of every copy (leading member axis).
      step: updates taken so far.
    """

    reference: Variables
    members: PyTree
    opt_state: PyTree
    step: StepCounter


# The copies' reference optimizer: SGD with momentum 0.9 and no weight decay, so that a task
# vector carries only the task it was trained on, not shrinkage.
COPY_SGD = {"name": "sgd", "momentum": 0.9, "weight_decay": 0.0}


def _unit_optimizer(optimizer: optax.GradientTransformation | Mapping | None):
    # Members differ in learning rate under one vmapped optimizer, so the optimizer runs at unit
    # rate and each member's updates are scaled by its own rate (exact for SGD and Adam).
    return optim.resolve(optimizer, learning_rate=1.0, default=COPY_SGD)


def _init_members(variables: Variables, optimizer, num_members: int) -> TaskVectorState:
    members = jax.tree.map(lambda x: jnp.repeat(x[None], num_members, axis=0), variables["params"])
    return TaskVectorState(
        reference=variables,
        members=members,
        opt_state=jax.vmap(optimizer.init)(members),
        step=StepCounter.zero(),
    )


def _step_members(
    member_loss: Callable,
    optimizer,
    state: TaskVectorState,
    batch: Batch,
    key: Array,
    scales: Array,
    coefs: PyTree,
):
    """One vmapped optimizer step of every copy on ``member_loss``.

    ``member_loss(variables, batch, key, coef) -> (loss, metrics)`` with ``coef`` one member's
    slice of ``coefs``; each copy's updates are multiplied by its entry of ``scales``. Returns
    the new members, their optimizer states and mean metrics (``member_loss`` is the loss).
    """
    template = state.reference

    def one(params, opt_state, member_key, scale, coef):
        def loss_fn(variables, batch):
            return member_loss(variables, batch, member_key, coef)

        member = {**template, "params": params}
        grads, metrics = grads_of_loss(loss_fn)(member, batch)
        member, opt_state = optimizer_step(optimizer, grads, opt_state, member, scale=scale)
        metrics = dict(metrics)
        metrics["member_loss"] = metrics.pop("loss")
        return member["params"], opt_state, metrics

    keys = jax.random.split(key, scales.shape[0])
    members, opt_state, metrics = jax.vmap(one)(state.members, state.opt_state, keys, scales, coefs)
    return members, opt_state, jax.tree.map(jnp.mean, metrics)


def _weighted_supervised(logits: Array, targets: Array, weights: Array) -> Array:
    """Supervised loss (CE or MSE) averaged with per-example weights."""
    per_example = losses.per_example_supervised(logits, targets)
    return jnp.sum(weights * per_example) / jnp.maximum(jnp.sum(weights), 1.0)


def _forget_finetune_loss(apply: Callable, subsample: float):
    """Supervised loss on the forget batch, each copy on its own random subset of it."""

    def loss_fn(variables, batch, key, coef):
        del coef
        x, y = batch["forget"]["x"], batch["forget"]["y"]
        if not concrete(subsample) or subsample < 1.0:
            weights = jax.random.bernoulli(key, subsample, (x.shape[0],)).astype(jnp.float32)
        else:
            weights = jnp.ones((x.shape[0],), jnp.float32)
        logits = apply(variables, x).logits
        return _weighted_supervised(logits, y, weights), {}

    return loss_fn


def _check_common(name: str, scaling_coef: float, learning_rates: Sequence[float]) -> None:
    if concrete(scaling_coef) and not math.isfinite(scaling_coef):
        raise ValueError(f"{name} `scaling_coef` must be finite; got {scaling_coef}")
    if not learning_rates or (
        concrete(learning_rates) and any(not lr > 0 for lr in learning_rates)
    ):
        raise ValueError(
            f"{name} learning rates must be positive (at least one); got {learning_rates}"
        )


# ---------------------------------------------------------------------------------------------
# Task-vector negation
# ---------------------------------------------------------------------------------------------


@registry.rule(
    "task_vector_negation",
    parts=("forget",),
    paper="Ilharco et al., Editing Models with Task Arithmetic, ICLR 2023",
    task="any",
    sweepable=("scaling_coef", "learning_rate"),
)
def task_vector_negation(
    apply: Callable,
    *,
    scaling_coef: float = 1.0,
    learning_rate: float = 0.01,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """Task-vector negation: ``theta_0 - lambda * (theta_ft - theta_0)``.

    A copy of the model is fine-tuned (supervised loss, descent) on the forget set inside the
    rule state; every update returns the original minus ``scaling_coef`` times the copy's task
    vector so far.

    Ilharco et al. pick ``lambda`` on held-out validation data from ``{0, 0.05, ..., 1}`` as the
    largest value keeping control-task accuracy at or above 95% of the original's. No validation
    data reaches a rule, so the default is the top of that grid, ``1.0``; tune it per problem
    (the paper fine-tunes CLIP for thousands of steps with AdamW, so its task vectors are far
    larger than a few epochs on a forget set that the model already fits).

    Args:
      apply: the model's functional ``apply``.
      scaling_coef: ``lambda``, the negation strength.
      learning_rate: step size of the fine-tuned copy.
      optimizer: the copy's optimizer: an optax optimizer, or settings over SGD with momentum 0.9
        and no weight decay (so that the task vector carries only the forget task, not
        shrinkage); see :func:`~jaxunlearn.core.optim.resolve`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]``.

    References:
      Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023.
    """
    _check_common("task_vector_negation", scaling_coef, (learning_rate,))
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=COPY_SGD)
    finetune_loss = _forget_finetune_loss(apply, 1.0)

    def init(variables: Variables, *, key: Array | None = None) -> TaskVectorState:
        del key
        return _init_members(variables, opt, 1)

    def update(variables: Variables, state: TaskVectorState, batch: Batch, *, key: Array):
        members, opt_state, metrics = _step_members(
            finetune_loss, opt, state, batch, key, jnp.ones((1,)), jnp.zeros((1,))
        )
        base = state.reference["params"]
        tau = jax.tree.map(lambda m: m[0], task_vectors(members, base))
        params = jax.tree.map(lambda b, t: b - scaling_coef * t, base, tau)
        state = state._replace(members=members, opt_state=opt_state, step=state.step.next())
        return (
            {**variables, "params": params},
            state,
            {"finetune_loss": metrics["member_loss"], "task_vector_norm": optax.tree.norm(tau)},
        )

    return UnlearningRule(init, update)


# ---------------------------------------------------------------------------------------------
# NegMerge
# ---------------------------------------------------------------------------------------------


@registry.rule(
    "negmerge",
    parts=("forget",),
    paper="Kim et al., NegMerge: Consensual Weight Negation for Strong Machine Unlearning, 2024",
    cost="medium",
    task="any",
    sweepable=("subsample", "scaling_coef"),
)
def negmerge(
    apply: Callable,
    *,
    learning_rates: Sequence[float] = (0.005, 0.01, 0.02),
    subsample: float = 1.0,
    scaling_coef: float = 1.0,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """NegMerge: negate the sign-consensual part of several forget-set task vectors.

    ``K = len(learning_rates)`` copies are fine-tuned on the forget set in one vmapped step per
    update (the state carries a leading member axis). Copy ``k`` uses learning rate
    ``learning_rates[k]`` and, with ``subsample < 1``, standing in for a different data order,
    its own random subset of each forget batch (each example kept with probability
    ``subsample``). With ``tau_k = theta_k - theta_0``, the update returns
    ``theta_0 - lambda * mask * mean_k tau_k`` where ``mask`` keeps the coordinates on which all
    ``K`` task vectors agree in sign.

    The paper's models differ in fine-tuning hyperparameters (augmentation and similar settings
    of CLIP / ResNet fine-tuning) and ``lambda`` is chosen on validation data like task
    arithmetic's; without validation data the default is ``1.0``.

    Args:
      apply: the model's functional ``apply``.
      learning_rates: one learning rate per fine-tuned copy (at least 2 for a meaningful
        consensus).
      subsample: probability that a copy sees each forget example of a batch, in (0, 1] (on
        `digits`, 0.5 made the negation noisier without a better consensus).
      scaling_coef: ``lambda``, the negation strength.
      optimizer: the copies' optimizer: settings over SGD with momentum 0.9 and no weight decay
        (see :func:`~jaxunlearn.core.optim.resolve`), or an optax optimizer, which must run at
        learning rate 1 since each copy's updates are multiplied by its entry of
        ``learning_rates``.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]``.

    References:
      Kim et al., "NegMerge: Consensual Weight Negation for Strong Machine Unlearning", 2024.
    """
    learning_rates = tuple(float(lr) for lr in learning_rates)
    _check_common("negmerge", scaling_coef, learning_rates)
    if concrete(subsample) and not 0.0 < subsample <= 1.0:
        raise ValueError(f"negmerge `subsample` must lie in (0, 1]; got {subsample}")
    opt = _unit_optimizer(optimizer)
    scales = jnp.asarray(learning_rates, jnp.float32)
    finetune_loss = _forget_finetune_loss(apply, subsample)

    def init(variables: Variables, *, key: Array | None = None) -> TaskVectorState:
        del key
        return _init_members(variables, opt, len(learning_rates))

    def update(variables: Variables, state: TaskVectorState, batch: Batch, *, key: Array):
        members, opt_state, metrics = _step_members(
            finetune_loss, opt, state, batch, key, scales, jnp.zeros_like(scales)
        )
        base = state.reference["params"]
        merged = sign_consensus_merge(task_vectors(members, base))
        params = jax.tree.map(lambda b, t: b - scaling_coef * t, base, merged)
        kept = sum(jnp.sum(t != 0) for t in jax.tree.leaves(merged))
        total = sum(t.size for t in jax.tree.leaves(merged))
        state = state._replace(members=members, opt_state=opt_state, step=state.step.next())
        return (
            {**variables, "params": params},
            state,
            {"finetune_loss": metrics["member_loss"], "consensus_fraction": kept / total},
        )

    return UnlearningRule(init, update)


# ---------------------------------------------------------------------------------------------
# TIES-merging of two unlearned models
# ---------------------------------------------------------------------------------------------


def _unlearning_objective(
    apply: Callable, beta: float, retain_kl_weight: float, retain_ce_weight: float
):
    """ZJUKLAB's objective for each specialised model, with a per-model forget weight.

    ``w_forget * NPO(forget) + retain_kl_weight * KL(theta_0 || theta on retain)
    + retain_ce_weight * CE(retain)``.
    """

    def loss_fn(variables, batch, key, forget_weight, reference):
        del key
        xf, yf = batch["forget"]["x"], batch["forget"]["y"]
        xr, yr = batch["retain"]["x"], batch["retain"]["y"]
        x = jnp.concatenate([xf, xr])
        logits = apply(variables, x).logits
        ref_logits = jax.lax.stop_gradient(apply(reference, x).logits)
        nf = xf.shape[0]
        forget_now = losses.per_example_cross_entropy(logits[:nf], yf)
        forget_ref = losses.per_example_cross_entropy(ref_logits[:nf], yf)
        npo = losses.negative_preference_loss(forget_now, forget_ref, beta)
        kl = losses.distillation_kl(logits[nf:], ref_logits[nf:])
        ce = losses.cross_entropy(logits[nf:], yr)
        loss = forget_weight * npo + retain_kl_weight * kl + retain_ce_weight * ce
        return loss, {"npo_loss": npo, "retain_kl": kl, "retain_ce": ce}

    return loss_fn


@registry.rule(
    "ties_merge",
    parts=("forget", "retain"),
    paper=(
        "Yadav et al., TIES-Merging, NeurIPS 2023; Xu et al., ZJUKLAB at SemEval-2025 Task 4: "
        "Unlearning via Model Merging, arXiv 2503.21088"
    ),
    cost="medium",
    sweepable=("beta", "retain_kl_weight", "retain_ce_weight", "scaling_coef"),
)
def ties_merge(
    apply: Callable,
    *,
    learning_rates: Sequence[float] = (0.02, 0.005),
    forget_weights: Sequence[float] = (1.0, 1.0),
    beta: float = 0.1,
    retain_kl_weight: float = 1.0,
    retain_ce_weight: float = 1.0,
    density: float = 0.2,
    scaling_coef: float = 1.0,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """TIES-merging of an over-forgetting and an under-forgetting unlearned model.

    Following ZJUKLAB (SemEval-2025 Task 4), two specialised models are unlearned from
    ``theta_0`` with the *same* objective, ``w_k * NPO(forget) + retain_kl_weight *
    KL(theta_0 || theta)(retain) + retain_ce_weight * CE(retain)``, but different
    hyperparameters: model 0 (by default the larger learning rate) over-forgets, model 1
    under-forgets. Sharing the loss form, both train in one vmapped step per update. Their
    task vectors ``tau_k = theta_k - theta_0`` are merged with TIES (keep each one's top
    ``density`` entries by magnitude, elect each entry's sign by total mass, average the entries
    that agree with it) and the update returns ``theta_0 + lambda * merged``.

    ZJUKLAB tune OLMo-7B with LoRA and AdamW; their learning rates and loss weights do not carry
    over to small classifiers, so the learning rates and weights here are ours, chosen on the
    `digits` MLP so that model 0 over-forgets and model 1 under-forgets (the NPO ``beta = 0.1`` is
    their code's default). ``density = 0.2`` and ``lambda = 1`` are the TIES paper's defaults; on
    small models the trim can remove the small, retain-preserving part of each task vector, so a
    larger density may do better. More than two models may be given (one entry per model in
    ``learning_rates`` and ``forget_weights``).

    Args:
      apply: the model's functional ``apply``.
      learning_rates: learning rate of each specialised model.
      forget_weights: NPO weight of each specialised model.
      beta: NPO inverse temperature.
      retain_kl_weight: weight of the KL to the original model on the retain batch.
      retain_ce_weight: weight of the cross-entropy on the retain batch.
      density: fraction of each task vector kept by the TIES trim, in (0, 1].
      scaling_coef: ``lambda``, the scale of the merged task vector.
      optimizer: the models' optimizer: settings over SGD with momentum 0.9 and no weight decay
        (see :func:`~jaxunlearn.core.optim.resolve`), or an optax optimizer, which must run at
        learning rate 1 since each model's updates are multiplied by its entry of
        ``learning_rates``.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and ``batch["retain"]``.

    References:
      Yadav et al., "TIES-Merging: Resolving Interference When Merging Models", NeurIPS 2023.
      Xu et al., "ZJUKLAB at SemEval-2025 Task 4: Unlearning via Model Merging",
      arXiv 2503.21088.
    """
    learning_rates = tuple(float(lr) for lr in learning_rates)
    forget_weights = tuple(float(w) for w in forget_weights)
    _check_common("ties_merge", scaling_coef, learning_rates)
    if len(forget_weights) != len(learning_rates):
        raise ValueError(
            "ties_merge `forget_weights` needs one entry per model of "
            f"`learning_rates`; got {forget_weights} and {learning_rates}"
        )
    if not 0.0 < density <= 1.0:
        raise ValueError(f"ties_merge `density` must lie in (0, 1]; got {density}")
    if concrete(beta) and not beta > 0:
        raise ValueError(f"ties_merge `beta` must be positive; got {beta}")
    weights = (retain_kl_weight, retain_ce_weight, *forget_weights)
    if concrete(weights) and min(weights) < 0:
        raise ValueError("ties_merge loss weights must be non-negative")
    opt = _unit_optimizer(optimizer)
    scales = jnp.asarray(learning_rates, jnp.float32)
    weights = jnp.asarray(forget_weights, jnp.float32)
    objective = _unlearning_objective(apply, beta, retain_kl_weight, retain_ce_weight)

    def init(variables: Variables, *, key: Array | None = None) -> TaskVectorState:
        del key
        return _init_members(variables, opt, len(learning_rates))

    def update(variables: Variables, state: TaskVectorState, batch: Batch, *, key: Array):
        def member_loss(member_vars, member_batch, member_key, forget_weight):
            return objective(member_vars, member_batch, member_key, forget_weight, state.reference)

        members, opt_state, metrics = _step_members(
            member_loss, opt, state, batch, key, scales, weights
        )
        base = state.reference["params"]
        merged = ties_merge_vectors(task_vectors(members, base), density)
        params = jax.tree.map(lambda b, t: b + scaling_coef * t, base, merged)
        state = state._replace(members=members, opt_state=opt_state, step=state.step.next())
        return {**variables, "params": params}, state, metrics

    return UnlearningRule(init, update)
