"""Membership-style audits of unlearning: ZRF and the per-example U-LiRA attack, plus ROC helpers.

* :func:`zrf_score` (Zero Retrain Forgetting) needs no retrained model: it asks how close the
  unlearned model's forget-set predictions are to those of a randomly initialised network.
* :func:`ulira` is a per-example likelihood-ratio membership attack for unlearning: shadow models
  that were trained on an example and then unlearned it are compared with shadow models that never
  saw it.
* :func:`roc_auc` and :func:`tpr_at_fpr` summarise any membership score (higher = "member").
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import log_softmax
from scipy.stats import rankdata

# --------------------------------------------------------------------------------------------------
# ROC helpers.


def _scores_and_labels(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels)
    if y.size != s.size:
        raise ValueError(f"scores and labels must have the same size, got {s.size} and {y.size}.")
    y = y.reshape(-1)
    if y.dtype != bool:
        if not np.all((y == 0) | (y == 1)):
            raise ValueError("labels must be boolean or 0/1 (1 = member).")
        y = y.astype(bool)
    if np.isnan(s).any():
        raise ValueError("scores contains NaN.")
    if y.all() or not y.any():
        raise ValueError("labels must contain both members (True) and non-members (False).")
    return s, y


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for ``labels`` (rank statistic, ties count one half).

    Equals the probability that a random member scores higher than a random non-member, plus half
    the probability of a tie (the Mann-Whitney U statistic over ``n_pos * n_neg``).

    Args:
      scores: membership scores of any shape; higher means "more likely a member". ``+-inf`` is
        allowed.
      labels: same number of entries, boolean or 0/1 (1 / True = member).

    Returns:
      AUC in ``[0, 1]`` as a Python float.

    Raises:
      ValueError: on size mismatch, NaN scores, non-binary labels, or a single class.

    References:
      Hanley and McNeil, "The meaning and use of the area under a ROC curve", Radiology 1982.
    """
    s, y = _scores_and_labels(scores, labels)
    return float(rank_auc(s[None], y)[0])


def rank_auc(scores: np.ndarray, members: np.ndarray) -> np.ndarray:
    """:func:`roc_auc` of every row of ``scores`` ``[N, m]`` for one boolean ``members`` ``[m]``
    (both members and non-members present; not checked here): ``[N]`` AUCs in one pass."""
    ranks = rankdata(scores, method="average", axis=-1)
    n_pos = int(members.sum())
    n_neg = members.size - n_pos
    u = ranks[:, members].sum(axis=-1) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def tpr_at_fpr(scores, labels, fpr: float) -> float:
    """Largest true-positive rate of a rule ``score >= t`` whose false-positive rate is at most fpr.

    The ROC curve is evaluated at every distinct score (tied scores move together, as in
    ``sklearn.metrics.roc_curve``), plus the empty rule (TPR = FPR = 0).

    Args:
      scores: membership scores; higher means "more likely a member".
      labels: boolean or 0/1, True = member.
      fpr: the false-positive budget in ``[0, 1]`` (e.g. 0.01 or 0.001).

    Returns:
      TPR in ``[0, 1]`` as a Python float.

    Raises:
      ValueError: on bad scores/labels (see :func:`roc_auc`) or ``fpr`` outside ``[0, 1]``.

    References:
      Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022 (reporting
      TPR at low FPR).
    """
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must lie in [0, 1], got {fpr}.")
    s, y = _scores_and_labels(scores, labels)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # Last index of each run of equal scores: the rule "score >= t" admits whole runs.
    ends = np.r_[np.nonzero(s[1:] != s[:-1])[0], s.size - 1]
    tps = np.cumsum(y)[ends]
    fps = (ends + 1) - tps
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    ok = fps / n_neg <= fpr
    return float(max(0.0, (tps[ok] / n_pos).max(initial=0.0)))


# --------------------------------------------------------------------------------------------------
# ZRF.


def _log_probs(logits, name: str) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim < 2 or z.shape[-1] < 2:
        raise ValueError(
            f"{name} must have shape [n, C] (or [..., n, C]) with C >= 2, got {z.shape}."
        )
    if not np.all(np.isfinite(z)):
        raise ValueError(f"{name} must be finite (found NaN or inf).")
    return log_softmax(z.reshape(-1, z.shape[-1]), axis=-1)


def zrf_score(
    unlearned_logits, random_teacher_logits, *, match_reference_code: bool = False
) -> float:
    """Zero Retrain Forgetting score: 1 - mean Jensen-Shannon divergence to an incompetent teacher.

    ``ZRF = 1 - (1 / n) sum_i JS(p_i, q_i)`` where ``p_i`` and ``q_i`` are the softmax outputs of
    the unlearned model and of a randomly initialised (incompetent) teacher on forget example
    ``i``, and ``JS(p, q) = KL(p || m) / 2 + KL(q || m) / 2`` with ``m = (p + q) / 2``, in nats.
    Since ``0 <= JS <= ln 2``, ``ZRF`` lies in ``[1 - ln 2, 1]``, and 1 means the unlearned model
    answers like a random network on the forget set.

    ``match_reference_code=True`` instead reproduces the public ``JSDiv`` of the bad-teaching and
    SSD repositories, ``1 - [KL(m || p) / 2 + KL(m || q) / 2]`` averaged over examples *and classes*
    (``F.kl_div(log p, m)`` with its default element-wise mean). That is not the Jensen-Shannon
    divergence (the KL arguments are reversed) and it shrinks with the number of classes; use it
    only to compare with numbers reported by those papers. It is not bounded to ``[0, 1]``.

    Args:
      unlearned_logits: ``[n, C]`` (or ``[..., n, C]``, leading axes flattened) forget-set logits of
        the unlearned model.
      random_teacher_logits: same shape, logits of a randomly initialised model of the same
        architecture on the same inputs.
      match_reference_code: reproduce the reference implementation's reduction (see above).

    Returns:
      The score as a Python float.

    Raises:
      ValueError: on mismatched shapes, fewer than 2 classes or non-finite logits.

    References:
      Chundawat et al., "Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks Using an
      Incompetent Teacher", AAAI 2023 (arXiv 2205.08096); vikram2000b/bad-teaching-unlearning and
      if-loops/selective-synaptic-dampening ``src/metrics.py`` (``UnLearningScore``).
    """
    ul = np.asarray(unlearned_logits)
    rt = np.asarray(random_teacher_logits)
    if ul.shape != rt.shape:
        raise ValueError(
            "unlearned_logits and random_teacher_logits must have the same shape, got "
            f"{ul.shape} and {rt.shape}."
        )
    log_p = _log_probs(ul, "unlearned_logits")
    log_q = _log_probs(rt, "random_teacher_logits")
    if log_p.shape[0] == 0:
        raise ValueError("unlearned_logits must hold at least one example.")
    log_m = np.logaddexp(log_p, log_q) - math.log(2.0)
    p, q, m = np.exp(log_p), np.exp(log_q), np.exp(log_m)
    if match_reference_code:
        # Element-wise mean of m * (log m - log p) and of m * (log m - log q).
        kl_m_p = np.where(m > 0, m * (log_m - log_p), 0.0)
        kl_m_q = np.where(m > 0, m * (log_m - log_q), 0.0)
        return float(1.0 - (0.5 * kl_m_p.mean() + 0.5 * kl_m_q.mean()))
    kl_p_m = np.where(p > 0, p * (log_p - log_m), 0.0).sum(axis=-1)
    kl_q_m = np.where(q > 0, q * (log_q - log_m), 0.0).sum(axis=-1)
    js = np.clip(0.5 * kl_p_m + 0.5 * kl_q_m, 0.0, math.log(2.0))
    return float(1.0 - js.mean())


# --------------------------------------------------------------------------------------------------
# U-LiRA.


def _shadow_stats(
    shadow: np.ndarray, name: str, *, fixed_variance: bool, center: str, min_std: float
) -> tuple[np.ndarray, np.ndarray]:
    valid = ~np.isnan(shadow)
    counts = valid.sum(axis=0)
    if (counts == 0).any():
        bad = np.nonzero(counts == 0)[0][:5]
        raise ValueError(f"{name} has no (non-NaN) shadow model for examples {bad.tolist()}...")
    mu = np.nanmedian(shadow, axis=0) if center == "median" else np.nanmean(shadow, axis=0)
    if fixed_variance:
        # One spread per group, pooled over examples: the RMS deviation of every shadow observation
        # from its own example's centre (between-example spread excluded).
        resid = np.where(valid, shadow - mu, 0.0)
        std = np.full(shadow.shape[1], math.sqrt((resid**2).sum() / valid.sum()))
    else:
        if (counts < 2).any():
            bad = np.nonzero(counts < 2)[0][:5]
            raise ValueError(
                f"{name} needs at least 2 shadow models per example for per-example variances "
                f"(examples {bad.tolist()}...); use fixed_variance=True."
            )
        std = np.nanstd(shadow, axis=0)
    return mu, np.maximum(std, min_std)


def _gaussian_logpdf(x: np.ndarray, mu: np.ndarray, std: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mu) / std) ** 2 - np.log(std) - 0.5 * math.log(2.0 * math.pi)


def ulira(
    target_confidences,
    shadow_unlearned,
    shadow_never_seen,
    *,
    target_is_member=None,
    fixed_variance: bool = True,
    center: str = "median",
    min_std: float = 1e-8,
) -> dict:
    """Per-example U-LiRA: a likelihood-ratio membership attack against unlearning.

    For each example ``j``, Gaussians are fitted to the logit-scaled confidences of shadow models
    that were trained on ``j`` and then unlearned it ("in", ``shadow_unlearned``) and of shadow
    models that never trained on ``j`` ("out", ``shadow_never_seen``). A target observation ``phi``
    of example ``j`` scores ``log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out)``: positive means
    it looks like an example that was learned and then unlearned, i.e. the unlearning left a trace.
    For a perfect unlearning algorithm the two Gaussians coincide and the AUC is 0.5.

    Centres are per-example medians (as in LiRA) or means. With ``fixed_variance=True`` (the
    default, better with few shadows) each group gets one standard deviation pooled over examples:
    the RMS deviation of every shadow confidence from its example's centre. (LiRA's public
    ``plot.py`` instead takes the raw standard deviation of all "in" confidences, between-example
    spread included, and reuses it for "out".) With ``fixed_variance=False`` each example gets its
    own two standard deviations. Standard deviations are floored at ``min_std``.

    Args:
      target_confidences: ``[n_targets, n_examples]`` (or ``[n_examples]``) logit-scaled confidences
        (:func:`jaxunlearn.audit.competition.logit_scaled_confidence`) of the audited models.
      shadow_unlearned: ``[n_in_models, n_examples]`` confidences of shadow models trained on the
        example and then unlearned it. NaN marks "this shadow did not train-then-unlearn this
        example" and is ignored; every example needs at least one non-NaN entry.
      shadow_never_seen: ``[n_out_models, n_examples]`` confidences of shadow models never trained
        on the example; NaN masks entries as above.
      target_is_member: optional boolean array shaped like ``target_confidences``: True = that
        target was trained on the example and then unlearned it, False = it never saw it. Needed
        for the AUC and TPR summaries.
      fixed_variance: pool one standard deviation per group over examples (see above).
      center: ``"median"`` or ``"mean"`` for the Gaussian centres.
      min_std: floor on the standard deviations (guards constant shadow confidences).

    Returns:
      ``{"auc": float, "tpr_at_1pct_fpr": float, "scores": ndarray}``; ``scores`` has the shape of
      ``target_confidences``. The two summaries are ``nan`` when ``target_is_member`` is None.

    Raises:
      ValueError: if a shadow array has fewer than 2 models or an example without any non-NaN shadow
        (or, per-example variances, fewer than 2), the numbers of examples differ, targets contain
        NaN or inf, shadows contain inf, ``target_is_member`` has the wrong shape or a single class,
        or ``center`` / ``min_std`` is invalid.

    References:
      Hayes et al., "Inexact Unlearning Needs More Careful Evaluations to Avoid a False Sense of
      Privacy", arXiv 2403.01218 (SaTML 2025). Carlini et al., "Membership Inference Attacks From
      First Principles", IEEE S&P 2022; tensorflow/privacy ``research/mi_lira_2021/plot.py``.
    """
    if center not in ("median", "mean"):
        raise ValueError(f"center must be 'median' or 'mean', got {center!r}.")
    if not min_std > 0:
        raise ValueError(f"min_std must be positive, got {min_std}.")
    target = np.asarray(target_confidences, dtype=np.float64)
    squeeze = target.ndim == 1
    if squeeze:
        target = target[None, :]
    if target.ndim != 2:
        raise ValueError(
            f"target_confidences must have shape [n_targets, n_examples], got {target.shape}."
        )
    if not np.all(np.isfinite(target)):
        raise ValueError("target_confidences must be finite (found NaN or inf).")
    shadows = {}
    for name, value in (
        ("shadow_unlearned", shadow_unlearned),
        ("shadow_never_seen", shadow_never_seen),
    ):
        a = np.asarray(value, dtype=np.float64)
        if a.ndim != 2:
            raise ValueError(f"{name} must have shape [n_models, n_examples], got {a.shape}.")
        if a.shape[0] < 2:
            raise ValueError(f"{name} must hold at least 2 shadow models, got {a.shape[0]}.")
        if a.shape[1] != target.shape[1]:
            raise ValueError(
                f"{name} has {a.shape[1]} examples but target_confidences has {target.shape[1]}."
            )
        if np.isinf(a).any():
            raise ValueError(f"{name} contains inf (use NaN only to mask missing entries).")
        shadows[name] = a
    mu_in, s_in = _shadow_stats(
        shadows["shadow_unlearned"],
        "shadow_unlearned",
        fixed_variance=fixed_variance,
        center=center,
        min_std=min_std,
    )
    mu_out, s_out = _shadow_stats(
        shadows["shadow_never_seen"],
        "shadow_never_seen",
        fixed_variance=fixed_variance,
        center=center,
        min_std=min_std,
    )
    scores = _gaussian_logpdf(target, mu_in, s_in) - _gaussian_logpdf(target, mu_out, s_out)

    auc = tpr = float("nan")
    if target_is_member is not None:
        member = np.asarray(target_is_member)
        if squeeze and member.ndim == 1:
            member = member[None, :]
        if member.shape != target.shape:
            raise ValueError(
                f"target_is_member must have the shape of target_confidences {target.shape}, got "
                f"{member.shape}."
            )
        auc = roc_auc(scores, member)
        tpr = tpr_at_fpr(scores, member, 0.01)
    return {"auc": auc, "tpr_at_1pct_fpr": tpr, "scores": scores[0] if squeeze else scores}
