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
gives a consistent model.

**Choosing lambda.** The references pick the scale ``lambda`` of the edit on validation data:
for each candidate (``numpy.linspace(0, 1, 21)`` in the task-arithmetic code that NegMerge
reuses) they evaluate the edited model and keep the one with the lowest accuracy on the forget
task's validation split among those whose accuracy on a control task stays at or above 0.95 x the
original's (``find_optimal_coef(..., minimize=True, control_metric_threshold=0.95 * ...)`` in
mgradyn/negmerge ``CLIP_MU/src/eval_task_negation.py`` and ``utils.py``). The same criterion is
:func:`choose_scaling_coef`, over accuracies that :func:`candidate_accuracies` computes for all
candidates at once (vmapped). With ``scaling_coef=None`` (the default) every rule applies it at
each update to validation batches carried in the batch as ``batch["val_forget"]`` (held-out
examples of what is forgotten) and ``batch["val_control"]`` (held-out examples the model must
keep), and reports the chosen ``scaling_coef``; a batch without them uses ``lambda = 1``, the
fixed value of this library's earlier versions. A float ``scaling_coef`` fixes ``lambda``. The
rules declare these parts (``validation_parts``), and the experiment runner and the sweep draw
them from the forget set and the retain set (:func:`jaxunlearn.scenarios.plan.rule_index`).

The merge arithmetic is exposed as small pure functions
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
from jaxunlearn.core.types import Array, Batch, Metrics, PyTree, UnlearningRule, Variables
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
# Choosing lambda on validation data (pure; vmapped over the candidates)
# ---------------------------------------------------------------------------------------------

# The task-arithmetic / NegMerge candidates: numpy.linspace(0.0, 1.0, 21).
DEFAULT_SCALING_COEFS = tuple(round(0.05 * i, 2) for i in range(21))
# The parts of a batch that carry validation data for the choice of lambda.
VALIDATION_PARTS = ("val_forget", "val_control")


def candidate_accuracies(
    apply: Callable,
    variables: Variables,
    direction: PyTree,
    coefs: Array,
    forget: Mapping[str, Array],
    control: Mapping[str, Array],
) -> tuple[Array, Array]:
    """Accuracies of the edited models ``theta_0 + lambda * direction`` for every candidate.

    Args:
      apply: the model's functional ``apply``.
      variables: the original variables ``theta_0`` (and their ``batch_stats``).
      direction: the edit per unit of ``lambda``, shaped like ``variables["params"]`` (``-tau``
        for a negation, the merged task vector for TIES).
      coefs: ``[C]`` candidate values of ``lambda``.
      forget: ``{"x", "y"}``: validation examples of what is forgotten.
      control: ``{"x", "y"}``: validation examples of what must be kept.

    Returns:
      ``(forget_accuracy [C], control_accuracy [C])``, one model per candidate, evaluated in one
      vmapped program.
    """
    base = variables["params"]

    def accuracies(coef):
        params = jax.tree.map(lambda b, d: b + coef.astype(b.dtype) * d, base, direction)
        edited = {**variables, "params": params}
        x = jnp.concatenate([forget["x"], control["x"]])
        logits = apply(edited, x).logits
        nf = forget["x"].shape[0]
        return (
            losses.accuracy(logits[:nf], forget["y"]),
            losses.accuracy(logits[nf:], control["y"]),
        )

    return jax.vmap(accuracies)(jnp.asarray(coefs, jnp.float32))


def choose_scaling_coef(
    forget_accuracy: Array, control_accuracy: Array, control_threshold: Array | float
) -> Array:
    """Index of the reference's choice among candidates (in the order given).

    The candidate with the lowest forget accuracy among those whose control accuracy is at least
    ``control_threshold`` (the first such on ties, as the reference's strict ``<`` scan keeps);
    when no candidate qualifies, the one with the highest control accuracy (the reference
    returns ``None`` there).

    Args:
      forget_accuracy: ``[C]``, to minimise.
      control_accuracy: ``[C]``, constrained.
      control_threshold: e.g. ``0.95 *`` the original model's control accuracy.

    Returns:
      An int32 scalar index into the candidates.
    """
    ok = control_accuracy >= control_threshold
    best = jnp.argmin(jnp.where(ok, forget_accuracy, jnp.inf))
    return jnp.where(jnp.any(ok), best, jnp.argmax(control_accuracy)).astype(jnp.int32)


def _check_selection(name: str, scaling_coefs: Sequence[float], min_control_ratio: float):
    coefs = tuple(float(c) for c in scaling_coefs)
    if not coefs or not all(math.isfinite(c) for c in coefs):
        raise ValueError(
            f"{name} `scaling_coefs` must be finite numbers (at least one); got {coefs}"
        )
    if concrete(min_control_ratio) and not 0.0 <= min_control_ratio <= 1.0:
        raise ValueError(f"{name} `min_control_ratio` must lie in [0, 1]; got {min_control_ratio}")
    return jnp.asarray(coefs, jnp.float32)


def _scaled_edit(
    apply: Callable,
    reference: Variables,
    direction: PyTree,
    batch: Batch,
    scaling_coef: float | None,
    coefs: Array,
    min_control_ratio: float,
) -> tuple[PyTree, Metrics]:
    """``theta_0 + lambda * direction``, with ``lambda`` fixed or chosen on the validation parts."""
    base = reference["params"]
    metrics: Metrics = {}
    if scaling_coef is not None:
        coef = scaling_coef
    elif all(part in batch for part in VALIDATION_PARTS):
        forget, control = batch["val_forget"], batch["val_control"]
        zero = jnp.zeros((1,), jnp.float32)
        _, original_control = candidate_accuracies(
            apply, reference, direction, zero, forget, control
        )
        forget_acc, control_acc = candidate_accuracies(
            apply, reference, direction, coefs, forget, control
        )
        index = choose_scaling_coef(
            forget_acc, control_acc, min_control_ratio * original_control[0]
        )
        coef = coefs[index]
        metrics = {
            "scaling_coef": coef,
            "val_forget_acc": forget_acc[index],
            "val_control_acc": control_acc[index],
        }
    else:
        coef = 1.0  # no validation data: the earlier fixed default
        metrics = {"scaling_coef": jnp.asarray(coef, jnp.float32)}
    params = jax.tree.map(lambda b, d: b + coef * d, base, direction)
    return params, metrics


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


def _forget_finetune_loss(apply: Callable, subsample: float, train_mode: bool = False):
    """Supervised loss on the forget batch, each copy on its own random subset of it."""

    def loss_fn(variables, batch, key, coef):
        del coef
        x, y = batch["forget"]["x"], batch["forget"]["y"]
        if not concrete(subsample) or subsample < 1.0:
            weights = jax.random.bernoulli(key, subsample, (x.shape[0],)).astype(jnp.float32)
        else:
            weights = jnp.ones((x.shape[0],), jnp.float32)
        logits = apply(variables, x, train=train_mode).logits
        return _weighted_supervised(logits, y, weights), {}

    return loss_fn


def _check_common(name: str, scaling_coef: float | None, learning_rates: Sequence[float]) -> None:
    if scaling_coef is not None and concrete(scaling_coef) and not math.isfinite(scaling_coef):
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
    validation_parts=VALIDATION_PARTS,
    paper="Ilharco et al., Editing Models with Task Arithmetic, ICLR 2023",
    task="any",
    sweepable=("learning_rate", "min_control_ratio"),
)
def task_vector_negation(
    apply: Callable,
    *,
    scaling_coef: float | None = None,
    scaling_coefs: Sequence[float] = DEFAULT_SCALING_COEFS,
    min_control_ratio: float = 0.95,
    learning_rate: float = 0.01,
    copy_train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """Task-vector negation: ``theta_0 - lambda * (theta_ft - theta_0)``.

    A copy of the model is fine-tuned (supervised loss, descent) on the forget set inside the
    rule state; every update returns the original minus ``scaling_coef`` times the copy's task
    vector so far.

    ``lambda`` is chosen on validation data as the references do (see the module docstring and
    :func:`choose_scaling_coef`) when the batch carries ``"val_forget"`` and ``"val_control"``
    parts; otherwise it is 1. The paper fine-tunes CLIP for thousands of steps with AdamW, so its
    task vectors are far larger than a few epochs on a forget set that the model already fits:
    widen ``scaling_coefs`` beyond 1 for small models.

    Args:
      apply: the model's functional ``apply``.
      learning_rate: step size of the fine-tuned copy.
      scaling_coef: ``lambda``, fixed; ``None`` (default) chooses it from ``scaling_coefs`` on
        the batch's validation parts (``lambda = 1`` without them).
      scaling_coefs: the candidates (the references' ``linspace(0, 1, 21)``).
      min_control_ratio: the control accuracy a candidate must keep, as a fraction of the
        original model's on the same validation batch (0.95).
      copy_train_mode: run BatchNorm in training mode while the copies fine-tune (batch
        statistics, as the reference's ``model.train()``). The edited model itself keeps the
        original's ``batch_stats`` (the edit acts on ``params`` only, as task arithmetic does), so
        this is not the ``train_mode`` of the loss-based rules, whose model refreshes them.
      optimizer: the copy's optimizer: an optax optimizer, or settings over SGD with momentum 0.9
        and no weight decay (so that the task vector carries only the forget task, not
        shrinkage); see :func:`~jaxunlearn.core.optim.resolve`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]``.

    References:
      Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023.
    """
    _check_common("task_vector_negation", scaling_coef, (learning_rate,))
    coefs = _check_selection("task_vector_negation", scaling_coefs, min_control_ratio)
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=COPY_SGD)
    finetune_loss = _forget_finetune_loss(apply, 1.0, copy_train_mode)

    def init(variables: Variables, *, key: Array | None = None) -> TaskVectorState:
        del key
        return _init_members(variables, opt, 1)

    def update(variables: Variables, state: TaskVectorState, batch: Batch, *, key: Array):
        members, opt_state, metrics = _step_members(
            finetune_loss, opt, state, batch, key, jnp.ones((1,)), jnp.zeros((1,))
        )
        base = state.reference["params"]
        tau = jax.tree.map(lambda m: m[0], task_vectors(members, base))
        params, chosen = _scaled_edit(
            apply,
            state.reference,
            optax.tree.scale(-1.0, tau),
            batch,
            scaling_coef,
            coefs,
            min_control_ratio,
        )
        state = state._replace(members=members, opt_state=opt_state, step=state.step.next())
        return (
            {**variables, "params": params},
            state,
            {
                "finetune_loss": metrics["member_loss"],
                "task_vector_norm": optax.tree.norm(tau),
                **chosen,
            },
        )

    return UnlearningRule(init, update)


# ---------------------------------------------------------------------------------------------
# NegMerge
# ---------------------------------------------------------------------------------------------


@registry.rule(
    "negmerge",
    parts=("forget",),
    validation_parts=VALIDATION_PARTS,
    paper="Kim et al., NegMerge: Consensual Weight Negation for Strong Machine Unlearning, 2024",
    cost="medium",
    task="any",
    sweepable=("subsample", "min_control_ratio"),
)
def negmerge(
    apply: Callable,
    *,
    learning_rates: Sequence[float] = (0.005, 0.01, 0.02),
    subsample: float = 1.0,
    scaling_coef: float | None = None,
    scaling_coefs: Sequence[float] = DEFAULT_SCALING_COEFS,
    min_control_ratio: float = 0.95,
    copy_train_mode: bool = True,
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
    of CLIP / ResNet fine-tuning) and ``lambda`` is chosen on validation data: the lowest
    forget accuracy with control accuracy at least 0.95 x the original's (see
    :func:`choose_scaling_coef`), from the batch's ``"val_forget"`` / ``"val_control"`` parts;
    without them ``lambda = 1``.

    Args:
      apply: the model's functional ``apply``.
      learning_rates: one learning rate per fine-tuned copy (at least 2 for a meaningful
        consensus).
      subsample: probability that a copy sees each forget example of a batch, in (0, 1] (on
        `digits`, 0.5 made the negation noisier without a better consensus).
      scaling_coef: ``lambda``, fixed; ``None`` (default) chooses it from ``scaling_coefs`` on
        the batch's validation parts (``lambda = 1`` without them).
      scaling_coefs: the candidates (the references' ``linspace(0, 1, 21)``).
      min_control_ratio: the control accuracy a candidate must keep, as a fraction of the
        original model's on the same validation batch (0.95).
      copy_train_mode: run BatchNorm in training mode while the copies fine-tune (batch
        statistics, as the reference's ``model.train()``). The edited model itself keeps the
        original's ``batch_stats`` (the edit acts on ``params`` only, as task arithmetic does), so
        this is not the ``train_mode`` of the loss-based rules, whose model refreshes them.
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
    coefs = _check_selection("negmerge", scaling_coefs, min_control_ratio)
    if concrete(subsample) and not 0.0 < subsample <= 1.0:
        raise ValueError(f"negmerge `subsample` must lie in (0, 1]; got {subsample}")
    opt = _unit_optimizer(optimizer)
    scales = jnp.asarray(learning_rates, jnp.float32)
    finetune_loss = _forget_finetune_loss(apply, subsample, copy_train_mode)

    def init(variables: Variables, *, key: Array | None = None) -> TaskVectorState:
        del key
        return _init_members(variables, opt, len(learning_rates))

    def update(variables: Variables, state: TaskVectorState, batch: Batch, *, key: Array):
        members, opt_state, metrics = _step_members(
            finetune_loss, opt, state, batch, key, scales, jnp.zeros_like(scales)
        )
        base = state.reference["params"]
        merged = sign_consensus_merge(task_vectors(members, base))
        params, chosen = _scaled_edit(
            apply,
            state.reference,
            optax.tree.scale(-1.0, merged),
            batch,
            scaling_coef,
            coefs,
            min_control_ratio,
        )
        kept = sum(jnp.sum(t != 0) for t in jax.tree.leaves(merged))
        total = sum(t.size for t in jax.tree.leaves(merged))
        state = state._replace(members=members, opt_state=opt_state, step=state.step.next())
        return (
            {**variables, "params": params},
            state,
            {
                "finetune_loss": metrics["member_loss"],
                "consensus_fraction": kept / total,
                **chosen,
            },
        )

    return UnlearningRule(init, update)


# ---------------------------------------------------------------------------------------------
# TIES-merging of two unlearned models
# ---------------------------------------------------------------------------------------------


def _unlearning_objective(
    apply: Callable,
    beta: float,
    retain_kl_weight: float,
    retain_ce_weight: float,
    train_mode: bool = False,
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
        logits = apply(variables, x, train=train_mode).logits
        ref_logits = jax.lax.stop_gradient(apply(reference, x).logits)
        nf = xf.shape[0]
        # Per-example supervised losses: cross-entropy, or a sequence's mean token NLL.
        forget_now = losses.per_example_supervised(logits[:nf], yf)
        forget_ref = losses.per_example_supervised(ref_logits[:nf], yf)
        npo = losses.negative_preference_loss(forget_now, forget_ref, beta)
        kl = losses.distillation_kl(logits[nf:], ref_logits[nf:])
        ce = losses.supervised(logits[nf:], yr)
        loss = forget_weight * npo + retain_kl_weight * kl + retain_ce_weight * ce
        return loss, {"npo_loss": npo, "retain_kl": kl, "retain_ce": ce}

    return loss_fn


@registry.rule(
    "ties_merge",
    parts=("forget", "retain"),
    validation_parts=VALIDATION_PARTS,
    paper=(
        "Yadav et al., TIES-Merging, NeurIPS 2023; Xu et al., ZJUKLAB at SemEval-2025 Task 4: "
        "Unlearning via Model Merging, arXiv 2503.21088"
    ),
    cost="medium",
    task="any",
    sweepable=("beta", "retain_kl_weight", "retain_ce_weight", "min_control_ratio"),
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
    scaling_coef: float | None = None,
    scaling_coefs: Sequence[float] = DEFAULT_SCALING_COEFS,
    min_control_ratio: float = 0.95,
    copy_train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """TIES-merging of an over-forgetting and an under-forgetting unlearned model.

    Following ZJUKLAB (SemEval-2025 Task 4), two specialised models are unlearned from
    ``theta_0`` with the *same* objective, ``w_k * NPO(forget) + retain_kl_weight *
    KL(theta_0 || theta)(retain) + retain_ce_weight * CE(retain)`` (on a language model NPO
    compares each forget sequence's mean token NLL, the KL averages over every position and CE is
    the answer tokens' mean NLL), but different hyperparameters: model 0 (by default the larger
    learning rate) over-forgets, model 1 under-forgets. Sharing the loss form, both train in one
    vmapped step per update. Their task vectors ``tau_k = theta_k - theta_0`` are merged with
    TIES (keep each one's top ``density`` entries by magnitude, elect each entry's sign by total
    mass, average the entries that agree with it) and the update returns
    ``theta_0 + lambda * merged``.

    ZJUKLAB tune OLMo-7B with LoRA and AdamW; their learning rates and loss weights do not carry
    over to small classifiers, so the learning rates and weights here are ours, chosen on the
    `digits` MLP so that model 0 over-forgets and model 1 under-forgets (the NPO ``beta = 0.1`` is
    their code's default). ``density = 0.2`` is the TIES paper's default, and ``lambda`` is chosen
    on the batch's validation parts by NegMerge's criterion (1 without them); on
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
      scaling_coef: ``lambda``, fixed; ``None`` (default) chooses it from ``scaling_coefs`` on
        the batch's validation parts (``lambda = 1`` without them).
      scaling_coefs: the candidates (the references' ``linspace(0, 1, 21)``).
      min_control_ratio: the control accuracy a candidate must keep, as a fraction of the
        original model's on the same validation batch (0.95).
      copy_train_mode: run BatchNorm in training mode while the copies fine-tune (batch
        statistics, as the reference's ``model.train()``). The edited model itself keeps the
        original's ``batch_stats`` (the edit acts on ``params`` only, as task arithmetic does), so
        this is not the ``train_mode`` of the loss-based rules, whose model refreshes them.
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
    coefs = _check_selection("ties_merge", scaling_coefs, min_control_ratio)
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
    objective = _unlearning_objective(
        apply, beta, retain_kl_weight, retain_ce_weight, copy_train_mode
    )

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
        params, chosen = _scaled_edit(
            apply, state.reference, merged, batch, scaling_coef, coefs, min_control_ratio
        )
        state = state._replace(members=members, opt_state=opt_state, step=state.step.next())
        return {**variables, "params": params}, state, {**metrics, **chosen}

    return UnlearningRule(init, update)
