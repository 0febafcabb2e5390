"""Losses shared by rules, training and audits (pure, batch-averaged)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core.types import Array

# Language-model targets: ``labels[:, t]`` is the token that ``logits[:, t]`` must predict (already
# shifted), or ``IGNORE_INDEX`` where no loss is taken (prompt, padding): Hugging Face's convention.
IGNORE_INDEX = -100


def is_token_task(logits: Array, targets: Array) -> bool:
    """Logits ``[B, T, V]`` with integer labels ``[B, T]``: a language model (static)."""
    return logits.ndim == 3 and targets.ndim == 2 and is_classification(targets)


def token_mask(labels: Array) -> Array:
    """``[B, T]`` float mask of the positions that carry a target (``labels != IGNORE_INDEX``)."""
    return (labels != IGNORE_INDEX).astype(jnp.float32)


def token_log_probs(logits: Array, labels: Array) -> Array:
    """``[B, T]`` log-probability of each target token, 0 where ``labels == IGNORE_INDEX``."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    safe = jnp.where(labels == IGNORE_INDEX, 0, labels)
    picked = jnp.take_along_axis(logp, safe[..., None], -1)[..., 0]
    return picked * token_mask(labels)


def sequence_log_prob(logits: Array, labels: Array) -> Array:
    """``[B]``: log pi(y | x), the sum of the target tokens' log-probabilities (``-NLL_sum``)."""
    return token_log_probs(logits, labels).sum(-1)


def answer_lengths(labels: Array) -> Array:
    """``[B]`` number of target tokens per sequence (at least 1, so averages stay finite)."""
    return jnp.maximum(token_mask(labels).sum(-1), 1.0)


def token_nll_mean(logits: Array, labels: Array) -> Array:
    """Mean NLL over every target token of the batch (Hugging Face's ``model(...).loss``)."""
    mask = token_mask(labels)
    return -token_log_probs(logits, labels).sum() / jnp.maximum(mask.sum(), 1.0)


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Mean softmax cross-entropy with integer labels."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def per_example_cross_entropy(logits: Array, labels: Array) -> Array:
    """Softmax cross-entropy per example, ``[batch]``."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)


def accuracy(logits: Array, labels: Array) -> Array:
    """Fraction of argmax predictions equal to ``labels`` (for a language model: over the target
    tokens only)."""
    hits = jnp.argmax(logits, -1) == labels
    if is_token_task(logits, labels):
        mask = token_mask(labels)
        return jnp.sum(hits * mask) / jnp.maximum(mask.sum(), 1.0)
    return jnp.mean(hits)


def distillation_kl(
    student_logits: Array, teacher_logits: Array, temperature: float = 1.0
) -> Array:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))`` averaged over the batch (Hinton et al., 2015)."""
    t = jax.nn.log_softmax(teacher_logits / temperature, -1)
    s = jax.nn.log_softmax(student_logits / temperature, -1)
    kl = jnp.sum(jnp.exp(t) * (t - s), -1)
    return temperature**2 * kl.mean()


def kl_to_target_probs(student_logits: Array, target_probs: Array) -> Array:
    """``KL(target || softmax(student))`` summed over classes, averaged over the batch."""
    s = jax.nn.log_softmax(student_logits, -1)
    safe = jnp.where(target_probs > 0, target_probs, 1.0)
    return jnp.sum(jnp.where(target_probs > 0, target_probs * (jnp.log(safe) - s), 0.0), -1).mean()


def mean_squared_error(predictions: Array, targets: Array) -> Array:
    """Mean squared error (regression), averaged over every element."""
    return jnp.mean((predictions.reshape(targets.shape) - targets) ** 2)


def mean_absolute_error(predictions: Array, targets: Array) -> Array:
    """Mean absolute error (regression), averaged over every element."""
    return jnp.mean(jnp.abs(predictions.reshape(targets.shape) - targets))


def is_classification(targets: Array) -> bool:
    """Integer targets are class labels; float targets are regression targets (static)."""
    return bool(jnp.issubdtype(targets.dtype, jnp.integer))


def supervised(outputs_logits: Array, targets: Array) -> Array:
    """Cross-entropy for integer labels, mean squared error for float targets; for a language
    model (logits ``[B, T, V]``, labels ``[B, T]``) the mean NLL over all target tokens."""
    if is_token_task(outputs_logits, targets):
        return token_nll_mean(outputs_logits, targets)
    if is_classification(targets):
        return cross_entropy(outputs_logits, targets)
    return mean_squared_error(outputs_logits, targets)


def negative_preference_loss(
    losses_now: Array, reference_losses: Array, beta: float = 0.1
) -> Array:
    """Negative preference optimisation (NPO) on per-example losses, averaged over the batch.

    ``-(2 / beta) * mean(log sigmoid(beta * (loss - reference_loss)))``: with negative
    log-likelihood losses this is ``-(2/beta) E log sigmoid(-beta log(p / p_ref))``, a bounded
    alternative to gradient ascent whose gradient fades once an example is forgotten.

    References:
      Zhang et al., "Negative Preference Optimization: From Catastrophic Collapse to Effective
      Unlearning", COLM 2024.
    """
    return -(2.0 / beta) * jax.nn.log_sigmoid(beta * (losses_now - reference_losses)).mean()


def attention_map(activations: Array) -> Array:
    """Spatial attention map of Zagoruyko and Komodakis: ``normalize(mean_c a^2)``, ``[batch, -1]``.

    Image activations ``[batch, ..., channels]`` (NHWC) are squared and averaged over channels; a
    dense layer's ``[batch, units]`` activations are treated as units with one channel each, so the
    map is ``a^2`` (averaging over the units would leave a constant). Each row is L2-normalised
    (with PyTorch's ``F.normalize`` epsilon, 1e-12).

    References:
      Zagoruyko and Komodakis, "Paying More Attention to Attention", ICLR 2017.
    """
    a = jnp.square(activations.astype(jnp.float32))
    if a.ndim > 2:
        a = jnp.mean(a, -1)
    a = a.reshape(a.shape[0], -1)
    return a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-12)


def attention_transfer(student: Array, teacher: Array) -> Array:
    """Mean squared difference of the two activations' :func:`attention_map` (a scalar)."""
    return jnp.mean(jnp.square(attention_map(student) - attention_map(teacher)))


def per_example_supervised(outputs_logits: Array, targets: Array) -> Array:
    """``[batch]`` losses: cross-entropy for integer labels, mean squared error per example for
    float targets (their batch mean is :func:`supervised`); for a language model the average NLL
    of each sequence's target tokens (``NLL_sum / |y|``)."""
    if is_token_task(outputs_logits, targets):
        return -sequence_log_prob(outputs_logits, targets) / answer_lengths(targets)
    if is_classification(targets):
        return per_example_cross_entropy(outputs_logits, targets)
    diff = outputs_logits.reshape(targets.shape) - targets
    return jnp.mean(jnp.square(diff).reshape(diff.shape[0], -1), axis=1)


@jax.jit
def linear_cka_core(x: Array, y: Array) -> Array:
    """Jittable, differentiable centred linear CKA (the core of ``audit.linear_cka``).

    Uses the Gram form ``<X X^T, Y Y^T>_F`` when there are fewer rows than features and the feature
    form ``||Y^T X||_F^2`` otherwise (chosen from the static shapes); both are equal.

    Args:
      x: ``[n, d1]`` float features.
      y: ``[n, d2]`` float features of the same ``n`` inputs.

    Returns:
      A scalar array in ``[0, 1]``; 0 when either centred matrix is identically zero (a constant
      representation shares no structure with anything). No input validation is done here.

    References:
      Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML 2019.
    """
    x = x - x.mean(axis=0, keepdims=True)
    y = y - y.mean(axis=0, keepdims=True)
    # CKA is scale invariant; normalising first keeps the fourth powers below from overflowing.
    nx = jnp.linalg.norm(x)
    ny = jnp.linalg.norm(y)
    x = x / jnp.where(nx > 0, nx, 1.0)
    y = y / jnp.where(ny > 0, ny, 1.0)
    n, d1 = x.shape
    d2 = y.shape[1]
    if n * n * (d1 + d2) < n * (d1 * d2 + d1 * d1 + d2 * d2):
        # Gram form, cheaper when there are fewer examples than features: <K, L>_F / (|K|_F |L|_F).
        k = x @ x.T
        l_ = y @ y.T
        cross, norm_x, norm_y = jnp.vdot(k, l_), jnp.linalg.norm(k), jnp.linalg.norm(l_)
    else:
        cross = jnp.sum(jnp.square(y.T @ x))
        norm_x = jnp.linalg.norm(x.T @ x)
        norm_y = jnp.linalg.norm(y.T @ y)
    denom = norm_x * norm_y
    value = jnp.where(denom > 0, cross / jnp.where(denom > 0, denom, 1.0), 0.0)
    return jnp.clip(value, 0.0, 1.0)  # Rounding can exceed 1 by an ulp or two for equal inputs.
