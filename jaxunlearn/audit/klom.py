"""KLoM: KL divergence of margins between unlearned models and oracle (retrained) models.

For every forget example, the margins of an ensemble of unlearned models and of an ensemble of
oracle models (retrained without the forget set) are binned on a shared equal-width grid and
compared with ``KL(unlearned || oracle)``. Zero means the unlearned models' margin distribution
matches the oracles' on that grid.

Direction. :func:`klom` computes ``KL(unlearned || oracle)`` by default (``direction=
"unlearned_vs_oracle"``), the order of the reference's documented signature
``kl_from_margins(all_unlearned_margins, all_oracle_margins)``. The *published* values of
data-unlearning-bench are the other direction: its ``run.py`` (``load_klom``) calls
``kl_from_margins(oracle_margins, margins)``, swapping the arguments, so its numbers are
``KL(oracle || unlearned)`` with the ``1e-5`` floor on the unlearned histogram. Pass
``direction="oracle_vs_unlearned"`` to compare with them (the ``klom_published`` ensemble audit
does). The two differ: KL is not symmetric, and the floor lands on the second distribution.

One deliberate difference from the reference code (data-unlearning-bench ``eval.py``): binning
follows ``np.histogram`` (the largest value falls in the last bin); the reference's
``np.digitize`` binning silently drops every sample equal to the maximum.
"""

from __future__ import annotations

import numpy as np

from jaxunlearn.audit.competition import logit_scaled_confidence
from jaxunlearn.core.checks import check_count

# KL(unlearned || oracle), and data-unlearning-bench's published KL(oracle || unlearned).
DIRECTIONS = ("unlearned_vs_oracle", "oracle_vs_unlearned")


def margins(logits, labels) -> np.ndarray:
    """Classification margin ``z_y - logsumexp_{j != y} z_j`` (float64).

    This is the same quantity as the logit-scaled confidence of LiRA and the NeurIPS 2023
    competition (:func:`jaxunlearn.audit.competition.logit_scaled_confidence`), computed stably.

    Args:
      logits: ``[n, C]`` (one model) or ``[m, n, C]`` (an ensemble) pre-softmax scores, ``C >= 2``;
        must be finite.
      labels: ``[n]`` integer labels in ``[0, C)``.

    Returns:
      float64 array of shape ``logits.shape[:-1]`` (``[n]`` or ``[m, n]``).

    Raises:
      ValueError: on fewer than 2 classes, non-finite logits or out-of-range labels.

    References:
      Georgiev et al., "Attribute-to-Delete: Machine Unlearning via Datamodel Matching",
      arXiv 2410.23232 (ICLR 2025); RoyRin/data-unlearning-bench ``unlearning_bench/eval.py``.
    """
    return logit_scaled_confidence(logits, labels)


def _histogram_counts(
    values: np.ndarray, lo: np.ndarray, hi: np.ndarray, edges: np.ndarray, bins: int
) -> np.ndarray:
    """``np.histogram`` counts of each column of ``values`` [m, n] on its edges [n, bins + 1]."""
    m, n = values.shape
    width = hi - lo
    # First guess by arithmetic, then an exact fix against the edges so that bin k is exactly
    # [edges[k], edges[k + 1]) and the last bin also holds its right edge.
    guess = np.floor((values - lo) / width * bins)
    idx = np.clip(guess, 0, bins - 1).astype(np.int64)
    cols = np.broadcast_to(np.arange(n), (m, n))
    for _ in range(2):  # Rounding puts the guess at most one bin off; a second pass is a safeguard.
        down = (values < edges[cols, idx]) & (idx > 0)
        idx = idx - down
        up = (values >= edges[cols, idx + 1]) & (idx < bins - 1)
        idx = idx + up
    flat = (cols * bins + idx).ravel()
    return np.bincount(flat, minlength=n * bins).reshape(n, bins)


def _edges(lo: np.ndarray, hi: np.ndarray, bins: int) -> np.ndarray:
    """Per-example ``np.linspace(lo, hi, bins + 1)``, [n, bins + 1], rounded as ``linspace``."""
    delta = hi - lo
    step = delta / bins
    k = np.arange(bins + 1, dtype=np.float64)[None, :]
    # np.linspace multiplies by the step, except when the step underflows to 0 (denormal ranges).
    regular = k * step[:, None] + lo[:, None]
    underflow = (k / bins) * delta[:, None] + lo[:, None]
    edges = np.where((step == 0)[:, None], underflow, regular)
    edges[:, -1] = hi
    return edges


def klom(
    unlearned_margins,
    oracle_margins,
    *,
    bins: int = 20,
    clip: float = 100.0,
    floor: float = 1e-5,
    direction: str = "unlearned_vs_oracle",
) -> np.ndarray:
    """Per-example KLoM, ``KL(p || q)`` of binned margin distributions.

    For each example: clip both samples to ``[-clip, clip]``; take ``bins`` equal-width bins over
    their combined range ``[lo, hi]`` (``[lo, lo + 1]`` when all values are equal) with
    ``np.histogram`` semantics (bins half-open ``[a, b)``, the last one closed); ``p`` and ``q``
    are the two samples' counts / totals, ``p`` the unlearned and ``q`` the oracle histogram by
    default (``direction="unlearned_vs_oracle"``), the other way round for
    ``"oracle_vs_unlearned"``; where ``p > 0`` floor ``q`` at ``floor``; renormalise ``q`` to sum
    to 1 (as ``scipy.stats.entropy`` does); return ``sum_{p > 0} p log(p / q)`` in nats. Computed
    for all examples at once.

    Args:
      unlearned_margins: ``[n_unlearned_models, n_examples]`` margins (see :func:`margins`) of the
        unlearned models. ``+-inf`` is clipped like any other value.
      oracle_margins: ``[n_oracle_models, n_examples]`` margins of the oracle (retrained) models;
        the number of models may differ from the unlearned ensemble's, the number of examples may
        not.
      bins: number of equal-width bins (20 in the reference).
      clip: margins are clipped to ``[-clip, clip]`` before binning (100 in the reference).
      floor: the smallest ``q`` probability used where the ``p`` histogram is non-zero.
      direction: ``"unlearned_vs_oracle"``, ``KL(unlearned || oracle)`` (the reference's
        documented argument order), or ``"oracle_vs_unlearned"``, ``KL(oracle || unlearned)``,
        what data-unlearning-bench's ``run.py`` computes and publishes (it swaps the arguments).

    Returns:
      float64 array ``[n_examples]`` of non-negative divergences (0 for identical samples).

    Raises:
      ValueError: if an input is not 2-D, holds fewer than 2 models or NaN, the numbers of examples
        differ, ``bins``, ``clip`` or ``floor`` is not positive, or ``direction`` is unknown.

    References:
      Georgiev et al., "Attribute-to-Delete: Machine Unlearning via Datamodel Matching",
      arXiv 2410.23232 (ICLR 2025); RoyRin/data-unlearning-bench ``unlearning_bench/eval.py``
      (``compute_binned_KL_div``; ``run.py``'s ``load_klom`` for the published direction).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {list(DIRECTIONS)}; got {direction!r}.")
    u = np.asarray(unlearned_margins, dtype=np.float64)
    o = np.asarray(oracle_margins, dtype=np.float64)
    for name, a in (("unlearned_margins", u), ("oracle_margins", o)):
        if a.ndim != 2:
            raise ValueError(f"{name} must have shape [n_models, n_examples], got {a.shape}.")
        if a.shape[0] < 2:
            raise ValueError(f"{name} must hold at least 2 models, got {a.shape[0]}.")
        if np.isnan(a).any():
            raise ValueError(f"{name} contains NaN margins.")
    if u.shape[1] != o.shape[1]:
        raise ValueError(
            "unlearned_margins and oracle_margins must have the same number of examples, got "
            f"{u.shape} and {o.shape}."
        )
    bins = check_count(bins, "bins", 1)
    if not clip > 0:
        raise ValueError(f"clip must be positive, got {clip}.")
    if not 0 < floor < 1:
        raise ValueError(f"floor must lie in (0, 1), got {floor}.")

    u = np.clip(u, -clip, clip)
    o = np.clip(o, -clip, clip)
    lo = np.minimum(u.min(axis=0), o.min(axis=0))
    hi = np.maximum(u.max(axis=0), o.max(axis=0))
    hi = np.where(hi > lo, hi, lo + 1.0)
    edges = _edges(lo, hi, bins)
    p = _histogram_counts(u, lo, hi, edges, bins) / u.shape[0]
    q = _histogram_counts(o, lo, hi, edges, bins) / o.shape[0]
    if direction == "oracle_vs_unlearned":
        p, q = q, p
    support = p > 0
    # Renormalise by 1 + (mass added by the floor) rather than by q.sum(): the same number, but
    # without rounding noise when nothing was floored, so identical samples give exactly 0.
    added = np.where(support, np.maximum(floor - q, 0.0), 0.0)
    q = (q + added) / (1.0 + added.sum(axis=1, keepdims=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(
            support, p * np.log(np.where(support, p, 1.0) / np.where(support, q, 1.0)), 0
        )
    return np.maximum(terms.sum(axis=1), 0.0)
