"""Self-supervised and continual-learning losses: pure, jittable functions of embeddings.

Each function takes the embeddings of two (or more) views of the same batch and returns a scalar,
following the reference implementation named in its docstring, including the way it sums or
averages (noted where papers and code differ). The rules of :mod:`jaxunlearn.repr` put these
losses on a network's projection head; the formulas are in
``shared/reference/unlearnable_and_representation.md`` (Part B1, B3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core.losses import linear_cka_core
from jaxunlearn.core.types import Array

# The masking constant of SimCLR's ``tf2/objective.py`` (LARGE_NUM): self-similarities are pushed
# out of the softmax by subtracting it.
LARGE_NUM = 1e9


def l2_normalize(x: Array, eps: float = 1e-12) -> Array:
    """Rows of ``x`` scaled to unit L2 norm (PyTorch ``F.normalize``: norms below ``eps`` are
    clamped)."""
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def cosine_similarity(a: Array, b: Array) -> Array:
    """``[B]`` cosine similarity of matching rows."""
    return jnp.sum(l2_normalize(a) * l2_normalize(b), axis=-1)


def nt_xent(z1: Array, z2: Array, temperature: float = 0.1) -> Array:
    """SimCLR's normalised temperature-scaled cross-entropy over a batch of positive pairs.

    With ``a = normalize(z1)``, ``b = normalize(z2)`` and ``s = cos / temperature``, row ``i`` of
    view ``a`` is classified among ``[s(a_i, b_.), s(a_i, a_.)]`` (self-similarity masked out)
    with ``b_i`` the positive, and symmetrically for view ``b``. As in ``tf2/objective.py`` the
    two directions are **summed** (``mean(loss_a + loss_b)``), not averaged.

    Args:
      z1, z2: ``[B, D]`` projections of the two views (rows are positive pairs).
      temperature: the softmax temperature ``tau`` (0.1).

    References:
      Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
      ICML 2020; google-research/simclr ``tf2/objective.py``.
    """
    a, b = l2_normalize(z1), l2_normalize(z2)
    n = a.shape[0]
    mask = LARGE_NUM * jnp.eye(n, dtype=a.dtype)
    logits_aa = a @ a.T / temperature - mask
    logits_bb = b @ b.T / temperature - mask
    logits_ab = a @ b.T / temperature
    logits_ba = b @ a.T / temperature
    labels = jnp.arange(n)
    loss_a = optax.softmax_cross_entropy_with_integer_labels(
        jnp.concatenate([logits_ab, logits_aa], 1), labels
    )
    loss_b = optax.softmax_cross_entropy_with_integer_labels(
        jnp.concatenate([logits_ba, logits_bb], 1), labels
    )
    return jnp.mean(loss_a + loss_b)


def regression_loss(prediction: Array, target: Array) -> Array:
    """``[B]``: BYOL's ``||normalize(p) - normalize(z)||^2 = 2 - 2 cos(p, z)``."""
    return 2.0 - 2.0 * cosine_similarity(prediction, target)


def byol_loss(p1: Array, p2: Array, z1_target: Array, z2_target: Array) -> Array:
    """BYOL's symmetrised loss: ``mean(reg(p1, sg z2') + reg(p2, sg z1'))``.

    ``p_v`` is the online prediction of view ``v``, ``z_v'`` the target projection of view ``v``
    (gradients stopped here). The two directions are summed per example, then averaged over the
    batch, as ``byol_experiment.py`` does.

    References:
      Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020; google-deepmind/deepmind-research
      ``byol/utils/helpers.py`` (``regression_loss``), ``byol/byol_experiment.py``.
    """
    z1_target = jax.lax.stop_gradient(z1_target)
    z2_target = jax.lax.stop_gradient(z2_target)
    return jnp.mean(regression_loss(p1, z2_target) + regression_loss(p2, z1_target))


def simsiam_loss(p1: Array, p2: Array, z1: Array, z2: Array) -> Array:
    """SimSiam: ``D(p1, sg z2) / 2 + D(p2, sg z1) / 2`` with ``D = -cos`` averaged over the batch.

    References:
      Chen and He, "Exploring Simple Siamese Representation Learning", CVPR 2021 (Algorithm 1).
    """
    z1, z2 = jax.lax.stop_gradient(z1), jax.lax.stop_gradient(z2)
    return -0.5 * (jnp.mean(cosine_similarity(p1, z2)) + jnp.mean(cosine_similarity(p2, z1)))


def _off_diagonal(c: Array) -> Array:
    return c - jnp.diag(jnp.diag(c))


def vicreg_terms(z1: Array, z2: Array) -> tuple[Array, Array, Array]:
    """VICReg's invariance, variance and covariance terms (unweighted).

    * invariance: ``MSE(z1, z2)`` averaged over every element;
    * variance: ``[mean(relu(1 - std(z1))) + mean(relu(1 - std(z2)))] / 2`` with
      ``std = sqrt(Var + 1e-4)`` (unbiased variance, as ``torch.var``);
    * covariance: ``[sum_{i != j} C(z1)_ij^2 + sum_{i != j} C(z2)_ij^2] / D`` with
      ``C = (z - mean)^T (z - mean) / (N - 1)``.

    References:
      Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
      Self-Supervised Learning", ICLR 2022; facebookresearch/vicreg ``main_vicreg.py``.
    """
    n, d = z1.shape
    invariance = jnp.mean(jnp.square(z1 - z2))
    z1c = z1 - z1.mean(0)
    z2c = z2 - z2.mean(0)
    std1 = jnp.sqrt(jnp.var(z1c, axis=0, ddof=1) + 1e-4)
    std2 = jnp.sqrt(jnp.var(z2c, axis=0, ddof=1) + 1e-4)
    variance = 0.5 * (jnp.mean(jax.nn.relu(1.0 - std1)) + jnp.mean(jax.nn.relu(1.0 - std2)))
    cov1 = z1c.T @ z1c / (n - 1)
    cov2 = z2c.T @ z2c / (n - 1)
    covariance = (
        jnp.sum(jnp.square(_off_diagonal(cov1))) + jnp.sum(jnp.square(_off_diagonal(cov2)))
    ) / d
    return invariance, variance, covariance


def vicreg_loss(
    z1: Array,
    z2: Array,
    *,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
) -> Array:
    """VICReg: ``sim_weight * invariance + var_weight * variance + cov_weight * covariance``
    (25 / 25 / 1); the terms are those of :func:`vicreg_terms`."""
    invariance, variance, covariance = vicreg_terms(z1, z2)
    return sim_weight * invariance + var_weight * variance + cov_weight * covariance


def batch_standardize(z: Array, eps: float = 1e-5) -> Array:
    """Affine-free batch normalisation of ``[N, D]`` (biased variance, like ``BatchNorm1d`` in
    training mode)."""
    mean = z.mean(0)
    var = jnp.mean(jnp.square(z - mean), 0)
    return (z - mean) / jnp.sqrt(var + eps)


def barlow_twins_loss(z1: Array, z2: Array, *, redundancy_weight: float = 5e-3) -> Array:
    """Barlow Twins: ``sum_i (1 - C_ii)^2 + lambda * sum_{i != j} C_ij^2``.

    ``C = BN(z1)^T BN(z2) / N`` is the cross-correlation of the affine-free batch-normalised
    projections. solo-learn multiplies the loss by a further ``scale_loss`` (0.025), which only
    rescales the learning rate and is left out here.

    References:
      Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction", ICML 2021;
      solo-learn ``solo/losses/barlow.py`` (lambda = 5e-3).
    """
    n = z1.shape[0]
    c = batch_standardize(z1).T @ batch_standardize(z2) / n
    on_diag = jnp.sum(jnp.square(jnp.diag(c) - 1.0))
    off_diag = jnp.sum(jnp.square(_off_diagonal(c)))
    return on_diag + redundancy_weight * off_diag


def dino_loss(
    student: Array,
    teacher: Array,
    center: Array,
    *,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
) -> Array:
    """DINO's cross-entropy between the centred, sharpened teacher and the student, over views.

    ``q_t = softmax((teacher_t - center) / teacher_temperature)`` (gradient stopped) and
    ``log p_s = log_softmax(student_s / student_temperature)``; the loss is
    ``sum_k -q_t[k] log p_s[k]`` averaged over the batch, then averaged over every pair of a
    teacher view ``t`` and a different student view ``s`` (``DINOLoss.forward``).

    Args:
      student: ``[V_s, B, K]`` student head outputs.
      teacher: ``[V_t, B, K]`` teacher head outputs (the first ``V_t`` student views are the
        same crops, so pairs with ``s == t`` are skipped).
      center: ``[K]`` running mean of the teacher outputs.
      student_temperature, teacher_temperature: 0.1 and 0.04 (DINO's defaults).

    References:
      Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021;
      facebookresearch/dino ``main_dino.py`` (``DINOLoss``).
    """
    q = jax.lax.stop_gradient(jax.nn.softmax((teacher - center) / teacher_temperature, -1))
    log_p = jax.nn.log_softmax(student / student_temperature, -1)
    total, terms = 0.0, 0
    for t in range(teacher.shape[0]):
        for s in range(student.shape[0]):
            if s == t:
                continue
            total = total + jnp.mean(jnp.sum(-q[t] * log_p[s], -1))
            terms += 1
    return total / terms


def dino_center(center: Array, teacher: Array, momentum: float = 0.9) -> Array:
    """DINO's centre update ``c <- m c + (1 - m) mean(teacher)`` over every view and example."""
    batch_center = jnp.mean(teacher.reshape(-1, teacher.shape[-1]), 0)
    return momentum * center + (1.0 - momentum) * jax.lax.stop_gradient(batch_center)


def lwf_distillation(new_logits: Array, recorded_logits: Array, temperature: float = 2.0) -> Array:
    """Learning without Forgetting's old-task loss, ``-sum_i y'_o^(i) log yhat'_o^(i)``.

    ``y'`` is the recorded output probabilities raised to ``1 / T`` and renormalised, which is
    ``softmax(recorded_logits / T)``; likewise for the current outputs. Averaged over the batch;
    no ``T^2`` factor (Li and Hoiem's Eq. 2).

    References:
      Li and Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI 2017 (T = 2).
    """
    target = jax.lax.stop_gradient(jax.nn.softmax(recorded_logits / temperature, -1))
    return jnp.mean(jnp.sum(-target * jax.nn.log_softmax(new_logits / temperature, -1), -1))


def cka_alignment(activations, guide_activations) -> Array:
    """``mean_l (1 - CKA(h_l, g_l))`` over pairs of layers: a differentiable alignment loss.

    Linear CKA is :func:`jaxunlearn.core.losses.linear_cka_core` (centred, the
    Kornblith et al. form); the guide's activations are held fixed.

    References:
      Subramaniam et al., "Training the Untrainable: Introducing Inductive Bias via
      Representational Alignment", arXiv 2410.20035 (2024). Kornblith et al., "Similarity of
      Neural Network Representations Revisited", ICML 2019.
    """
    if len(activations) != len(guide_activations) or not activations:
        raise ValueError(
            "cka_alignment needs as many guide layers as layers (at least one); got "
            f"{len(activations)} and {len(guide_activations)}"
        )
    terms = [
        1.0
        - linear_cka_core(
            h.reshape(h.shape[0], -1).astype(jnp.float32),
            jax.lax.stop_gradient(g.reshape(g.shape[0], -1).astype(jnp.float32)),
        )
        for h, g in zip(activations, guide_activations, strict=True)
    ]
    return sum(terms) / len(terms)
