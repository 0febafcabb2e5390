"""The NeurIPS 2023 Machine Unlearning Competition forgetting score, as pure functions over arrays.

The competition (google-deepmind/unlearning_evaluation, ``metric.py``) runs an unlearning algorithm
``N`` times from one original model and retrains ``N`` models on the retain set. For every forget
example it asks how well *any* threshold rule on the logit-scaled confidence separates the ``N``
unlearned models from the ``N`` retrained ones, turns the best rule's error rates into an
(epsilon, delta) privacy-style number, and buckets those numbers into a score in ``[0, 1]``.

This module computes exactly that per-example epsilon (:func:`epsilon_per_example`), but counts
error rates by sorting each sample once and binary-searching every threshold instead of comparing
every model with every threshold; :func:`_epsilon_direct` is the literal, slow transcription it is
tested against. Both agree bit for bit.

Decisions where the public definition is silent or crashes (documented once here, tested):

* **Constant ensembles.** The "peaky" rule compares ``min(range) / max(range)`` of the two samples.
  When both ranges are 0 the ratio is defined as 1 (equally peaky, so the rule does not fire); this
  is also what the public code does, whose ``0 / 0`` gives NaN and ``NaN < 0.01`` is false.
* **No usable threshold.** A threshold with exactly one of FPR/FNR equal to 0 is discarded (the
  public code treats it as too few samples). When every threshold is discarded, for instance when
  both samples are the same constant, no rule tells the two apart and epsilon is **0**. The public
  code's final ``assert`` fails in that case.
* **Rates are float64.** The public code averages float32 indicators on the GPU; here counts are
  exact integers and rates are ``count / N`` in float64, so epsilons can differ from the public
  code's in roughly the 7th significant digit.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy.special import logsumexp

from jaxunlearn.core.checks import check_count

EPSILON_CAP = 50.0
DELTA = 1e-5
THRESHOLDS_PER_UNIT = 100
PEAKY_RATIO = 0.01
INTERVAL_BUFFER = 2.0
# The single-threshold sweep has ceil(100 * range) thresholds; over very wide ranges (confidences in
# the thousands) it is generated and evaluated in blocks so that memory stays bounded.
_THRESHOLD_BLOCK = 1 << 18
# Above this many models the (n + 1)^2 epsilon lookup table would be large; epsilons are then
# computed from the counts on the fly (same arithmetic, same results).
_MAX_TABLE_MODELS = 2048


# --------------------------------------------------------------------------------------------------
# Confidences.


def logit_scaled_confidence(logits, labels) -> np.ndarray:
    """Logit-scaled confidence ``log p_y - log sum_{j != y} p_j`` of the true class.

    The softmax normaliser cancels, so this equals ``z_y - logsumexp_{j != y} z_j`` and is computed
    that way in float64. It agrees with the reference definition
    ``log(p_y + 1e-45) - log(sum_{j != y} p_j + 1e-45)`` wherever neither probability underflows,
    and stays finite (no NaN, no 1e-45 plateau) for extremely confident logits.

    Args:
      logits: ``[..., n, C]`` pre-softmax scores with ``C >= 2`` (e.g. ``[n, C]`` for one model or
        ``[n_models, n, C]`` for an ensemble). Must be finite.
      labels: ``[n]`` (or broadcastable to ``logits.shape[:-1]``) integer labels in ``[0, C)``.

    Returns:
      float64 array of shape ``logits.shape[:-1]``.

    Raises:
      ValueError: if ``logits`` has fewer than 2 classes, is not finite, or ``labels`` are out of
        range.

    References:
      Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022 (LiRA).
      Triantafillou et al., "Are we making progress in unlearning? Findings from the first NeurIPS
      unlearning competition", arXiv 2406.09073 (2024).
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim < 1 or z.shape[-1] < 2:
        raise ValueError(f"logits must have shape [..., n, C] with C >= 2, got {z.shape}.")
    if not np.all(np.isfinite(z)):
        raise ValueError("logits must be finite (found NaN or inf).")
    y = np.asarray(labels)
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {y.dtype}.")
    if y.size and (y.min() < 0 or y.max() >= z.shape[-1]):
        raise ValueError(f"labels must lie in [0, {z.shape[-1]}).")
    y = np.broadcast_to(y, z.shape[:-1])
    onehot = np.arange(z.shape[-1]) == y[..., None]
    z_true = np.take_along_axis(z, y[..., None], axis=-1)[..., 0]
    z_other = logsumexp(np.where(onehot, -np.inf, z), axis=-1)
    return z_true - z_other


# --------------------------------------------------------------------------------------------------
# Shared pieces of the epsilon definition (used identically by the fast and the direct method).


def _validate_ensembles(unlearned, retrained) -> tuple[np.ndarray, np.ndarray]:
    u = np.asarray(unlearned, dtype=np.float64)
    r = np.asarray(retrained, dtype=np.float64)
    for name, a in (("unlearned", u), ("retrained", r)):
        if a.ndim != 2:
            raise ValueError(f"{name} must have shape [n_models, n_examples], got {a.shape}.")
        if a.shape[0] < 2:
            raise ValueError(f"{name} must hold at least 2 models, got {a.shape[0]}.")
        if np.isnan(a).any():
            raise ValueError(f"{name} contains NaN confidences.")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains infinite confidences.")
    if u.shape != r.shape:
        raise ValueError(
            f"unlearned and retrained must have the same shape, got {u.shape} and {r.shape}."
        )
    return u, r


def _split_positive(u: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positive = the sample with the larger median (ties: unlearned), per example."""
    retrain_is_positive = np.median(r, axis=0) > np.median(u, axis=0)
    pos = np.where(retrain_is_positive, r, u)
    neg = np.where(retrain_is_positive, u, r)
    return pos, neg


def _is_peaky(pos_range: float, neg_range: float) -> bool:
    largest = max(pos_range, neg_range)
    if largest == 0.0:
        # Both samples are constant: equally peaky, so the relative-peakiness rule does not apply.
        return False
    return min(pos_range, neg_range) / largest < PEAKY_RATIO


def _single_thresholds(lo: float, hi: float):
    """Yield ``np.linspace(lo, hi, ceil((hi - lo) * 100))`` in blocks of at most
    _THRESHOLD_BLOCK."""
    num = max(int(math.ceil((hi - lo) * THRESHOLDS_PER_UNIT)), 0)
    if num == 0:  # Equal extremes: the sweep is empty (np.linspace with 0 points).
        return
    if num <= _THRESHOLD_BLOCK:
        yield np.linspace(lo, hi, num)
        return
    # Same arithmetic as np.linspace (k * step + lo, last point exactly hi), one block at a time.
    delta = hi - lo
    step = delta / (num - 1)
    for start in range(0, num, _THRESHOLD_BLOCK):
        k = np.arange(start, min(start + _THRESHOLD_BLOCK, num), dtype=np.float64)
        block = k * step + lo if step != 0 else (k / (num - 1)) * delta + lo
        if start + block.shape[0] == num:
            block[-1] = hi
        yield block


def _interval_setup(pos_range, neg_range, pos_min, pos_max, neg_min, neg_max):
    """Right-threshold grid and width of the interval rule; the peakier sample plays positive.

    Returns ``(right_thresholds, width, swapped)`` where ``swapped`` means the original negative
    sample is the interval rule's positive.
    """
    width = neg_range if pos_range > neg_range else pos_range
    swapped = pos_range >= neg_range
    p_min, p_max = (neg_min, neg_max) if swapped else (pos_min, pos_max)
    lo = p_min + width - INTERVAL_BUFFER
    hi = p_max + INTERVAL_BUFFER
    num = int(math.ceil((hi - lo) * THRESHOLDS_PER_UNIT))
    return np.linspace(lo, hi, max(num, 0)), width, swapped


def _num_left_thresholds() -> int:
    return int(math.ceil(2 * INTERVAL_BUFFER * THRESHOLDS_PER_UNIT))


def _threshold_epsilons(tpr, fnr, fpr, tnr, delta: float) -> np.ndarray:
    """Per-threshold epsilon of the appendix, step 4; NaN marks a discarded threshold."""
    tpr, fnr, fpr, tnr = (np.asarray(a, dtype=np.float64) for a in (tpr, fnr, fpr, tnr))
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(1 - delta - fpr) - np.log(fnr)
        b = np.log(1 - delta - fnr) - np.log(fpr)
        # nanmax of the two candidates; NaN only when both are NaN (e.g. FPR = FNR = 1).
        best = np.where(np.isnan(a), b, np.where(np.isnan(b), a, np.maximum(a, b)))
        eps = np.maximum(best, 0.0)  # NaN propagates, so such thresholds are discarded below.
    perfect = (fpr + fnr == 0) & (tpr + tnr == 2)
    one_zero = (fpr * fnr == 0) & ~perfect
    eps = np.where(perfect, np.inf, eps)
    return np.where(one_zero, np.nan, eps)


def _finalise(kept_max: float) -> float:
    """Clip the max over kept thresholds to [0, cap]; no kept threshold means indistinguishable."""
    if np.isnan(kept_max):
        return 0.0
    return float(np.clip(kept_max, 0.0, EPSILON_CAP))


# --------------------------------------------------------------------------------------------------
# Fast epsilon: sort once, count with binary search, look the epsilon up by integer counts.


class _CountEpsilon:
    """Per-threshold epsilon as a function of packed counts ``tp * (n + 1) + fp``.

    Every threshold's rates are ``count / n`` with ``n`` models per sample, so epsilon depends on
    the two integer counts only. For moderate ``n`` all ``(n + 1)^2`` values are tabulated once per
    call with the same arithmetic as the direct method; discarded thresholds map to ``-inf`` so
    that a plain ``max`` skips them.
    """

    def __init__(self, n: int, delta: float):
        self.n = n
        self.delta = delta
        self.table = None
        if n <= _MAX_TABLE_MODELS:
            self.table = self._compute(np.arange((n + 1) * (n + 1)))

    def _compute(self, packed: np.ndarray) -> np.ndarray:
        n = self.n
        tp, fp = np.divmod(packed, n + 1)
        eps = _threshold_epsilons(tp / n, (n - tp) / n, fp / n, (n - fp) / n, self.delta)
        return np.where(np.isnan(eps), -np.inf, eps)

    def max(self, packed: np.ndarray) -> float:
        if self.table is not None:
            return float(self.table[packed].max())
        return float(self._compute(np.unique(packed)).max())


def _epsilon_one_fast(pos: np.ndarray, neg: np.ndarray, lookup: _CountEpsilon) -> float:
    """Epsilon of one example from the sorted positive and negative samples."""
    n = pos.shape[0]
    stride = n + 1
    code_dtype = np.int32 if stride * stride < 2**31 else np.int64
    pos_min, pos_max, neg_min, neg_max = pos[0], pos[-1], neg[0], neg[-1]
    pos_range, neg_range = pos_max - pos_min, neg_max - neg_min
    if _is_peaky(pos_range, neg_range):
        return EPSILON_CAP
    best = -np.inf

    # Both rule families only need, for a threshold x, how many positive and how many negative
    # values lie below x. One binary search over the pooled sorted sample gives the number m of
    # pooled values below x; ``code[m] = (#positive among them) * stride + (#negative among them)``
    # packs both counts into one integer whose differences are again packed counts (table indices).
    def packed_prefix(first: np.ndarray, second: np.ndarray):
        pooled = np.concatenate([first, second])
        order = np.argsort(pooled, kind="stable")
        first_count = np.concatenate([[0], np.cumsum(order < n)])
        code = first_count * stride + (np.arange(2 * n + 1) - first_count)
        return pooled[order], code.astype(code_dtype)

    # Single threshold: positive when conf >= t; tp = n - #pos below t, fp = n - #neg below t.
    pooled, code = packed_prefix(pos, neg)
    for thresholds in _single_thresholds(min(pos_min, neg_min), max(pos_max, neg_max)):
        below = code[np.searchsorted(pooled, thresholds, side="left")]
        best = max(best, lookup.max((n * stride + n) - below))

    # Interval rule: positive when l <= conf <= r, the peakier sample playing positive.
    right, width, swapped = _interval_setup(
        pos_range, neg_range, pos_min, pos_max, neg_min, neg_max
    )
    if right.shape[0]:
        if swapped:
            pooled, code = packed_prefix(neg, pos)
        # [num_left, num_right], contiguous so that ravel() is free.
        left = np.linspace(
            right - width - INTERVAL_BUFFER, right - width + INTERVAL_BUFFER, _num_left_thresholds()
        )
        at_most_r = code[np.searchsorted(pooled, right, side="right")]
        below_l = code[np.searchsorted(pooled, left.ravel(), side="left")].reshape(left.shape)
        # For l <= r both packed components of the difference are >= 0 (counts inside [l, r]); for
        # l > r (an empty interval) both are <= 0, and clamping the packed difference at 0 gives the
        # empty interval's counts (0, 0). Skipping such rules up front costs more than it saves.
        inside = np.maximum(at_most_r[None, :] - below_l, 0)
        best = max(best, lookup.max(inside))

    return _finalise(np.nan if best == -np.inf else best)


def epsilon_per_example(
    unlearned, retrained, *, delta: float = DELTA, num_threads: int | None = None
) -> np.ndarray:
    """Per-example epsilon of the NeurIPS 2023 unlearning competition.

    For every forget example ``i`` the two samples ``unlearned[:, i]`` and ``retrained[:, i]`` (one
    logit-scaled confidence per model) are compared:

    1. Positive = the sample with the larger median (ties: unlearned); negative = the other.
    2. Peaky rule: if ``min(range) / max(range) < 0.01`` the example gets the cap, 50. Two constant
       samples (both ranges 0) are *not* peaky relative to each other (ratio defined as 1).
    3. Two families of decision rules are swept: a single threshold ``t`` over
       ``linspace(min, max, ceil((max - min) * 100))`` of the pooled samples (positive when
       ``conf >= t``), and intervals ``[l, r]`` (positive when ``l <= conf <= r``) where the peakier
       sample plays positive, ``width`` = its range, ``r`` over
       ``linspace(pos.min + width - 2, pos.max + 2, ceil((max - min) * 100))`` and for each ``r``,
       ``l`` over ``linspace(r - width - 2, r - width + 2, 400)``.
    4. Per threshold: ``inf`` when FPR = FNR = 0; discarded when exactly one of them is 0; else
       ``max(0, log(1 - delta - FPR) - log FNR, log(1 - delta - FNR) - log FPR)`` (a NaN candidate,
       from ``log`` of a negative number, is ignored; if both are NaN the threshold is discarded).
    5. ``eps_i`` = max over kept thresholds clipped to ``[0, 50]``; **0** if none is kept (the
       samples cannot be told apart by any usable rule, e.g. identical constant samples).

    Rates are counted exactly: each sample is sorted once and every threshold is located by binary
    search (``np.searchsorted``), so the cost per example is ``O((N + T) log N)`` instead of the
    reference's ``O(N T)`` for ``T`` (about 160,000) thresholds. Examples are spread over threads
    (NumPy releases the GIL in these kernels).

    Args:
      unlearned: ``[n_models, n_examples]`` logit-scaled confidences under the unlearned models.
      retrained: ``[n_models, n_examples]`` logit-scaled confidences under the retrained models.
      delta: the delta of the (epsilon, delta) bound; the competition uses ``1e-5``.
      num_threads: worker threads; ``None`` uses every CPU the process may run on.

    Returns:
      float64 array ``[n_examples]`` with values in ``[0, 50]``.

    Raises:
      ValueError: if either input is not 2-D, holds fewer than 2 models, contains NaN or inf, or the
        two shapes differ; or if ``delta`` is not in ``[0, 1)``.

    References:
      Triantafillou et al., "Are we making progress in unlearning? Findings from the first NeurIPS
      unlearning competition", arXiv 2406.09073 (2024); google-deepmind/unlearning_evaluation,
      ``metric.py`` (``_get_epsilons``).
    """
    u, r = _validate_ensembles(unlearned, retrained)
    if not 0.0 <= delta < 1.0:
        raise ValueError(f"delta must lie in [0, 1), got {delta}.")
    pos, neg = _split_positive(u, r)
    pos = np.sort(pos, axis=0)
    neg = np.sort(neg, axis=0)
    n_models, n_examples = pos.shape
    lookup = _CountEpsilon(n_models, delta)
    out = np.zeros(n_examples, dtype=np.float64)

    def work(indices: range) -> None:
        for i in indices:
            out[i] = _epsilon_one_fast(
                np.ascontiguousarray(pos[:, i]), np.ascontiguousarray(neg[:, i]), lookup
            )

    if num_threads is None:
        num_threads = (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else (os.cpu_count() or 1)
        )
    num_threads = max(1, min(int(num_threads), n_examples))
    if num_threads == 1:
        work(range(n_examples))
    else:
        # Strided split: neighbouring examples often have similar cost.
        with ThreadPoolExecutor(max_workers=num_threads) as pool:
            list(pool.map(work, [range(k, n_examples, num_threads) for k in range(num_threads)]))
    return out


# --------------------------------------------------------------------------------------------------
# Direct epsilon: the literal definition, every model against every threshold. For tests only.


def _rates(pos_pred: np.ndarray, neg_pred: np.ndarray):
    """Rates over the models axis from ``[n_models, n_thresholds]`` predicted-positive
    indicators."""
    tpr = np.mean(pos_pred, axis=0)
    fnr = np.mean(~pos_pred, axis=0)
    fpr = np.mean(neg_pred, axis=0)
    tnr = np.mean(~neg_pred, axis=0)
    return tpr, fnr, fpr, tnr


def _epsilon_direct(unlearned, retrained, *, delta: float = DELTA) -> np.ndarray:
    """Literal, slow transcription of the per-example epsilon (compares every model with every
    rule).

    Used to test :func:`epsilon_per_example`; same inputs, same output, ``O(N T)`` per example.
    """
    u, r = _validate_ensembles(unlearned, retrained)
    pos_all, neg_all = _split_positive(u, r)
    epsilons = []
    for i in range(pos_all.shape[1]):
        pos = pos_all[:, i][:, None]
        neg = neg_all[:, i][:, None]
        pos_range = np.max(pos) - np.min(pos)
        neg_range = np.max(neg) - np.min(neg)
        if _is_peaky(pos_range, neg_range):
            epsilons.append(EPSILON_CAP)
            continue
        per_threshold = []

        # Single threshold.
        lo = min(np.min(pos), np.min(neg))
        hi = max(np.max(pos), np.max(neg))
        for t in _single_thresholds(lo, hi):
            t = t[None, :]
            per_threshold.append(_threshold_epsilons(*_rates(pos >= t, neg >= t), delta))

        # Interval rule: a left grid per right threshold, as in the definition; the comparisons are
        # done for a block of right thresholds at a time to bound memory.
        right, width, swapped = _interval_setup(
            pos_range, neg_range, np.min(pos), np.max(pos), np.min(neg), np.max(neg)
        )
        ipos, ineg = (neg, pos) if swapped else (pos, neg)
        lefts = [
            np.linspace(
                tr - width - INTERVAL_BUFFER, tr - width + INTERVAL_BUFFER, _num_left_thresholds()
            )
            for tr in right
        ]
        block = 32
        for start in range(0, len(lefts), block):
            left = np.concatenate(lefts[start : start + block])[None, :]
            r = np.repeat(right[start : start + block], _num_left_thresholds())[None, :]
            pos_pred = (left <= ipos) & (ipos <= r)
            neg_pred = (left <= ineg) & (ineg <= r)
            per_threshold.append(_threshold_epsilons(*_rates(pos_pred, neg_pred), delta))

        eps = np.concatenate(per_threshold)
        kept = eps[~np.isnan(eps)]
        epsilons.append(_finalise(np.max(kept) if kept.size else np.nan))
    return np.asarray(epsilons, dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# Scores.


def forgetting_score(epsilons, *, num_models: int) -> float:
    """Bucketed forgetting quality ``F`` of the competition, in ``[0, 1]``.

    Buckets of width 0.5 start at 0 and are worth ``1, 1/2, 1/4, ...``; only buckets whose upper
    edge is ``<= ceil(ln(num_models - 1))`` exist (14 buckets for 512 models, so ``eps >= 7`` earns
    0). An example earns the points of the bucket containing its epsilon (``[0.5 k, 0.5 k +
    0.5)``), and ``F`` is the mean over examples. With ``num_models = 2`` there are no buckets and
    ``F = 0``.

    Args:
      epsilons: ``[n_examples]`` per-example epsilons (e.g. from :func:`epsilon_per_example`);
        ``inf`` is allowed and earns 0.
      num_models: ``N``, the number of unlearned (= retrained) models the epsilons came from.

    Returns:
      The mean points per example, a Python float in ``[0, 1]``.

    Raises:
      ValueError: if ``num_models < 2``, ``epsilons`` is empty, or contains NaN or negative values.

    References:
      Triantafillou et al., arXiv 2406.09073 (2024); google-deepmind/unlearning_evaluation,
      ``metric.py`` (``compute_forget_score_from_confs``).
    """
    num_models = check_count(num_models, "num_models", 2)
    eps = np.asarray(epsilons, dtype=np.float64).reshape(-1)
    if eps.size == 0:
        raise ValueError("epsilons must not be empty.")
    if np.isnan(eps).any():
        raise ValueError("epsilons contains NaN.")
    if (eps < 0).any():
        raise ValueError("epsilons must be non-negative.")
    max_epsilon = math.ceil(math.log(num_models - 1))
    num_buckets = 2 * max_epsilon  # Upper edges 0.5, 1.0, ..., max_epsilon.
    with np.errstate(invalid="ignore"):
        bucket = np.floor(np.where(np.isfinite(eps), eps, np.inf) * 2.0)
    points = np.where(bucket < num_buckets, np.exp2(-np.minimum(bucket, num_buckets)), 0.0)
    return float(points.mean())


def _mean_accuracy(value, name: str, *, positive: bool = False) -> float:
    arr = np.asarray(value, dtype=np.float64)
    if arr.size == 0 or np.isnan(arr).any():
        raise ValueError(f"{name} must be a non-empty, NaN-free accuracy (or array of accuracies).")
    mean = float(arr.mean())
    if positive and mean <= 0:
        raise ValueError(f"{name} must be positive (it is a denominator), got {mean}.")
    return mean


def competition_score(
    unlearned_logits,
    retrained_logits,
    labels,
    *,
    ra_unlearned,
    ra_retrained,
    ta_unlearned,
    ta_retrained,
) -> float:
    """Final competition score ``F * (RA_U / RA_R) * (TA_U / TA_R)``.

    Args:
      unlearned_logits: ``[n_models, n_examples, n_classes]`` forget-set logits of the unlearned
        models.
      retrained_logits: same shape, logits of the models retrained on the retain set.
      labels: ``[n_examples]`` integer labels of the forget examples.
      ra_unlearned: retain accuracy of the unlearned models; a float or one value per model
        (averaged).
      ra_retrained: retain accuracy of the retrained models (float or per model; must be > 0).
      ta_unlearned: test accuracy of the unlearned models (float or per model).
      ta_retrained: test accuracy of the retrained models (float or per model; must be > 0).

    Returns:
      The score as a Python float (``F`` in ``[0, 1]`` times the two accuracy ratios).

    Raises:
      ValueError: on mismatched or malformed logits, fewer than 2 models, or non-positive retrained
        accuracies.

    References:
      Triantafillou et al., arXiv 2406.09073 (2024); google-deepmind/unlearning_evaluation,
      ``main.py`` and ``metric.py``.
    """
    ul = np.asarray(unlearned_logits)
    rl = np.asarray(retrained_logits)
    if ul.ndim != 3:
        raise ValueError(
            f"unlearned_logits must have shape [n_models, n_examples, n_classes], got {ul.shape}."
        )
    if rl.shape != ul.shape:
        raise ValueError(
            "unlearned_logits and retrained_logits must have the same shape, got "
            f"{ul.shape} and {rl.shape}."
        )
    labels = np.asarray(labels)
    if labels.shape != ul.shape[1:2]:
        raise ValueError(f"labels must have shape [{ul.shape[1]}], got {labels.shape}.")
    ra_u = _mean_accuracy(ra_unlearned, "ra_unlearned")
    ra_r = _mean_accuracy(ra_retrained, "ra_retrained", positive=True)
    ta_u = _mean_accuracy(ta_unlearned, "ta_unlearned")
    ta_r = _mean_accuracy(ta_retrained, "ta_retrained", positive=True)
    eps = epsilon_per_example(
        logit_scaled_confidence(ul, labels), logit_scaled_confidence(rl, labels)
    )
    score = forgetting_score(eps, num_models=ul.shape[0])
    return float(score * (ra_u / ra_r) * (ta_u / ta_r))
