"""Label-free measures of an embedding: effective rank (RankMe), uniformity and alignment.

They judge an encoder without labels, complementing the labelled k-NN and linear-probe accuracy
and the CKA between encoders of :mod:`jaxunlearn.audit.representation` (``linear_cka`` compares
two encoders' features of the same inputs):

* :func:`effective_rank` (RankMe): ``exp`` of the entropy of the normalised singular values of
  the feature matrix; a collapsed embedding has rank about 1, a well-spread one close to its
  dimension. "On the rankability of visual embeddings" asks whether embeddings can be ranked
  without labels; RankMe is the label-free score of that kind reported here.
* :func:`uniformity`: ``log E exp(-t ||f(x) - f(y)||^2)`` over pairs of distinct examples of
  L2-normalised features (lower = more uniform on the sphere).
* :func:`alignment`: ``E ||f(x) - f(x+)||^alpha`` over positive pairs (two views of the same
  example) of L2-normalised features (lower = views closer).

Each has a jittable core (``*_core``) on arrays and a checked wrapper returning a Python float.

References:
  Garrido, Balestriero, Najman, LeCun, "RankMe: Assessing the Downstream Performance of
  Pretrained Self-Supervised Representations by Their Rank", ICML 2023 (p_k = sigma_k /
  ||sigma||_1 + eps, eps = 1e-7).
  Wang and Isola, "Understanding Contrastive Representation Learning through Alignment and
  Uniformity on the Hypersphere", ICML 2020 (t = 2, alpha = 2; ``align_loss``/``uniform_loss``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.core.types import Array

RANKME_EPS = 1e-7


def _l2_normalise(x: Array) -> Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _features(x, name: str, min_rows: int = 1) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim < 2:
        raise ValueError(f"{name} must have shape [n, d] (or [n, ...]); got {a.shape}")
    a = a.reshape(a.shape[0], -1).astype(np.float32)
    if a.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows; got {a.shape[0]}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite (found NaN or inf)")
    return a


@jax.jit
def effective_rank_core(features: Array, eps: float = RANKME_EPS) -> Array:
    """Jittable RankMe of ``[n, d]`` features: ``exp(-sum_k p_k log p_k)``,
    ``p_k = sigma_k / ||sigma||_1 + eps``; 0 for an all-zero matrix."""
    sigma = jnp.linalg.svd(features.astype(jnp.float32), compute_uv=False)
    total = jnp.sum(sigma)
    p = sigma / jnp.where(total > 0, total, 1.0) + eps
    rank = jnp.exp(-jnp.sum(p * jnp.log(p)))
    return jnp.where(total > 0, rank, 0.0)


def effective_rank(features, *, eps: float = RANKME_EPS) -> float:
    """RankMe effective rank of a feature matrix (between about 1 and ``min(n, d)``).

    Args:
      features: ``[n, d]`` embeddings (trailing dimensions are flattened); not centred, as in
        RankMe.
      eps: the smoothing added to each normalised singular value (1e-7).

    Raises:
      ValueError: for fewer than 2 dimensions, no rows, non-finite values or ``eps < 0``.
    """
    a = _features(features, "features")
    if not eps >= 0:
        raise ValueError(f"`eps` must be >= 0; got {eps}")
    return float(effective_rank_core(jnp.asarray(a), eps))


@jax.jit
def uniformity_core(features: Array, t: float = 2.0) -> Array:
    """Jittable ``log mean_{i<j} exp(-t ||f_i - f_j||^2)`` on L2-normalised rows."""
    f = _l2_normalise(features.astype(jnp.float32))
    n = f.shape[0]
    sq = jnp.maximum(2.0 - 2.0 * f @ f.T, 0.0)  # ||a - b||^2 of unit vectors
    upper = jnp.triu(jnp.ones((n, n), bool), k=1)
    terms = jnp.where(upper, jnp.exp(-t * sq), 0.0)
    return jnp.log(jnp.sum(terms) / (n * (n - 1) / 2))


def uniformity(features, *, t: float = 2.0) -> float:
    """Wang and Isola's uniformity of L2-normalised features (``<= 0``; lower is more uniform).

    Args:
      features: ``[n, d]`` embeddings, ``n >= 2``.
      t: the Gaussian potential's scale (2).

    Raises:
      ValueError: for fewer than 2 rows, non-finite values or ``t <= 0``.
    """
    a = _features(features, "features", min_rows=2)
    if not t > 0:
        raise ValueError(f"`t` must be > 0; got {t}")
    return float(uniformity_core(jnp.asarray(a), t))


@jax.jit
def alignment_core(features_a: Array, features_b: Array, alpha: float = 2.0) -> Array:
    """Jittable ``mean_i ||f(a_i) - f(b_i)||_2^alpha`` on L2-normalised rows."""
    diff = _l2_normalise(features_a.astype(jnp.float32)) - _l2_normalise(
        features_b.astype(jnp.float32)
    )
    return jnp.mean(jnp.linalg.norm(diff, axis=-1) ** alpha)


def alignment(features_a, features_b, *, alpha: float = 2.0) -> float:
    """Wang and Isola's alignment of positive pairs (row ``i`` of both: two views of example
    ``i``), in ``[0, 2^alpha]``; lower means the views embed closer.

    Raises:
      ValueError: for mismatched shapes, no rows, non-finite values or ``alpha <= 0``.
    """
    a = _features(features_a, "features_a")
    b = _features(features_b, "features_b")
    if a.shape != b.shape:
        raise ValueError(f"features_a and features_b must have one shape; got {a.shape}, {b.shape}")
    if not alpha > 0:
        raise ValueError(f"`alpha` must be > 0; got {alpha}")
    return float(alignment_core(jnp.asarray(a), jnp.asarray(b), alpha))
