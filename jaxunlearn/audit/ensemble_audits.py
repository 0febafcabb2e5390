"""Ensemble (gold-standard) audits: distributions over many unlearned models against many oracles.

A single unlearned model that scores like a single oracle proves little: two oracles trained with
different seeds already differ. The audits here compare the N runs of a method with N oracles
retrained without the forget set, example by example:

* ``"competition"``: the NeurIPS 2023 unlearning competition's per-example epsilon (how well any
  threshold on the logit-scaled confidence tells the N unlearned models from the N oracles), its
  bucketed forgetting score F, and the final score ``F * (RA_u / RA_r) * (TA_u / TA_r)`` with each
  accuracy averaged over the runs. Metrics ``epsilon_mean``, ``epsilon_median``,
  ``forget_score``, ``competition_score``.
* ``"klom"``: KLoM, the KL divergence between the binned margin distributions of the unlearned and
  the oracle ensembles, per forget example and on fixed samples of retain and test examples
  (``klom_<part>_mean`` / ``klom_<part>_p95``: mean and 95th percentile over examples), as
  ``KL(unlearned || oracle)``.
* ``"klom_published"``: the same in data-unlearning-bench's published direction,
  ``KL(oracle || unlearned)`` (its ``run.py`` swaps the arguments); ``klom_pub_<part>_mean`` /
  ``_p95``.

* ``"ulira"``: U-LiRA, a per-example likelihood-ratio attack against unlearning, on shadow models
  trained on random halves of the audited examples and then unlearned by the method
  (``ulira_auc``, ``ulira_tpr_at_1pct_fpr``). The shadows come from the context
  (``EnsembleContext.shadows``: the experiment's artefacts build them with
  :mod:`jaxunlearn.ensemble.ulira`); :func:`ulira_attack` scores them.

All are registered with :func:`jaxunlearn.audit.register_ensemble`; the experiment runner
calls them with an :class:`~jaxunlearn.audit.EnsembleContext`, whose shared predictions give every
audit the same ``[N, n, C]`` logits. Their per-example arrays (epsilons, confidences, KLoM values,
U-LiRA scores) are kept on the context and handed out by :func:`per_example_arrays`, so that the
runner can store them for plots without computing anything twice.

References:
  Triantafillou et al., "Are we making progress in unlearning? Findings from the first NeurIPS
  unlearning competition", arXiv 2406.09073 (2024); google-deepmind/unlearning_evaluation.
  Georgiev et al., "Attribute-to-Delete: Machine Unlearning via Datamodel Matching",
  arXiv 2410.23232 (ICLR 2025) (KLoM); RoyRin/data-unlearning-bench.
  Hayes et al., "Inexact Unlearning Needs More Careful Evaluations to Avoid a False Sense of
  Privacy", arXiv 2403.01218 (SaTML 2025) (U-LiRA).
"""

from __future__ import annotations

import numpy as np

from jaxunlearn import ensemble
from jaxunlearn.audit import competition, membership
from jaxunlearn.audit.klom import DIRECTIONS as KLOM_DIRECTIONS
from jaxunlearn.audit.klom import klom as klom_divergence
from jaxunlearn.audit.registry import EnsembleContext, register_ensemble

# KLoM on retain and test data uses a fixed sample of at most this many examples per part, so
# that its cost does not grow with the dataset (data-unlearning-bench also audits subsets).
KLOM_SAMPLE_SIZE = 1000
KLOM_PARTS = ("forget", "retain", "test")
ULIRA_FPR = 0.01


# --------------------------------------------------------------------------------------------------
# Shared pieces: finite logits of an ensemble, per-example arrays kept on the context.


def _check_ensembles(ctx: EnsembleContext, audit: str, *, same_size: bool) -> tuple[int, int]:
    sizes = []
    for which in ("unlearned", "oracle"):
        count = ensemble.num_models(getattr(ctx, which))
        if count < ensemble.MIN_MODELS:
            raise ValueError(
                f"Ensemble audit {audit!r} needs at least {ensemble.MIN_MODELS} "
                f"{which} models (method {ctx.method!r}); got {count}"
            )
        sizes.append(count)
    if same_size and sizes[0] != sizes[1]:
        raise ValueError(
            f"Ensemble audit {audit!r} compares equally many unlearned and oracle "
            f"models (method {ctx.method!r}); got {sizes[0]} and {sizes[1]}"
        )
    return sizes[0], sizes[1]


def _checked(logits: np.ndarray, which: str, part: str, method: str) -> np.ndarray:
    if not np.all(np.isfinite(logits)):
        raise ValueError(
            f"The {which} ensemble of method {method!r} has NaN or inf logits on "
            f"the {part} data; a distributional audit needs finite confidences"
        )
    return logits


def _sample(n: int, size: int) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size, replace=False))


def _sample_part(ctx: EnsembleContext, part: str) -> tuple[str, np.ndarray]:
    """``(name, rows)``: the fixed sample of ``part`` that KLoM audits (the forget set whole,
    retain and test data sampled, see ``KLOM_SAMPLE_SIZE``), defined once on the shared
    predictions."""
    n = len(ctx.data(part)[1])
    if part == "forget" or n <= KLOM_SAMPLE_SIZE:
        return part, np.arange(n)
    rows = _sample(n, KLOM_SAMPLE_SIZE)
    name = f"{part}@klom_sample"
    if not ctx.predictions.has_part(name):
        ctx.predictions.add_subset(name, part, rows)
    return name, rows


def _margins(ctx: EnsembleContext, part: str, which: str) -> np.ndarray:
    """``[N, n]`` logit-scaled confidences (= margins) of ``which`` on ``part``'s sample."""
    name, rows = _sample_part(ctx, part)
    logits = _checked(ctx.logits(name, which), which, part, ctx.method)
    return competition.logit_scaled_confidence(logits, ctx.data(part)[1][rows])


def _keep(ctx: EnsembleContext, name: str, value: np.ndarray) -> np.ndarray:
    ctx.arrays[name] = np.asarray(value)
    return value


def per_example_arrays(ctx: EnsembleContext) -> dict[str, np.ndarray]:
    """The per-example arrays behind the ensemble audits that ran on ``ctx`` (for plots, files).

    Keys present after ``"competition"``: ``epsilon`` ``[n_forget]``, ``confidence_unlearned``
    and ``confidence_oracle`` ``[N, n_forget]``; after ``"klom"``: ``klom_forget``,
    ``klom_retain``, ``klom_test`` (one value per audited example) and ``retain_sample`` /
    ``test_sample`` (which retain / test examples those are, as positions in the split's index
    sets); after ``"ulira"``: ``ulira_scores`` and ``ulira_member`` ``[shadows, targets]`` and
    ``ulira_targets``. ``forget_index`` (training-set indices of the forget set) is always there.
    """
    return {"forget_index": np.asarray(ctx.split.forget), **ctx.arrays}


# --------------------------------------------------------------------------------------------------
# The NeurIPS 2023 competition score.


def _mean_accuracy(ctx: EnsembleContext, which: str, metric: str) -> float:
    """RA or TA (percent) averaged over the runs: from the records when the per-model accuracy
    audit ran, else computed from the ensemble's logits."""
    records = ctx.records if which == "unlearned" else ctx.oracle_records
    values = [r[metric] for r in records if metric in r]
    if records and len(values) == len(records):
        return float(np.mean(values))
    part = {"RA": "retain", "TA": "test"}[metric]
    logits, y = ctx.logits(part, which), ctx.data(part)[1]
    if len(y) == 0:
        return float("nan")
    return float(100.0 * np.mean(np.argmax(logits, -1) == y))


def competition_audit(ctx: EnsembleContext) -> dict[str, float]:
    """Per-example epsilon, forgetting score and final score of the NeurIPS 2023 competition."""
    count, _ = _check_ensembles(ctx, "competition", same_size=True)
    unlearned = _keep(ctx, "confidence_unlearned", _margins(ctx, "forget", "unlearned"))
    oracle = _keep(ctx, "confidence_oracle", _margins(ctx, "forget", "oracle"))
    eps = _keep(ctx, "epsilon", competition.epsilon_per_example(unlearned, oracle))
    score = competition.forgetting_score(eps, num_models=count)
    ra_u, ra_r = _mean_accuracy(ctx, "unlearned", "RA"), _mean_accuracy(ctx, "oracle", "RA")
    ta_u, ta_r = _mean_accuracy(ctx, "unlearned", "TA"), _mean_accuracy(ctx, "oracle", "TA")
    final = score * (ra_u / ra_r) * (ta_u / ta_r) if ra_r > 0 and ta_r > 0 else float("nan")
    return {
        "epsilon_mean": float(np.mean(eps)),
        "epsilon_median": float(np.median(eps)),
        "forget_score": float(score),
        "competition_score": float(final),
    }


# --------------------------------------------------------------------------------------------------
# KLoM.


def klom_audit_fn(*, direction: str = "unlearned_vs_oracle", prefix: str = "klom"):
    """A KLoM audit (KL of binned margins between the unlearned and the oracle ensembles) on
    forget, retain and test examples, in ``direction`` (see :func:`jaxunlearn.audit.klom`):
    metrics ``{prefix}_<part>_mean`` / ``_p95`` and per-example arrays ``{prefix}_<part>``."""
    if direction not in KLOM_DIRECTIONS:
        raise ValueError(f"direction must be one of {list(KLOM_DIRECTIONS)}; got {direction!r}")

    def audit(ctx: EnsembleContext) -> dict[str, float]:
        _check_ensembles(ctx, f"klom ({direction})", same_size=False)
        out = {}
        for part in KLOM_PARTS:
            if len(ctx.data(part)[1]) == 0:
                continue
            values = _keep(
                ctx,
                f"{prefix}_{part}",
                klom_divergence(
                    _margins(ctx, part, "unlearned"),
                    _margins(ctx, part, "oracle"),
                    direction=direction,
                ),
            )
            out[f"{prefix}_{part}_mean"] = float(np.mean(values))
            out[f"{prefix}_{part}_p95"] = float(np.percentile(values, 95))
            if part != "forget":
                _keep(ctx, f"{part}_sample", _sample(len(ctx.data(part)[1]), KLOM_SAMPLE_SIZE))
        return out

    return audit


# KL(unlearned || oracle), and data-unlearning-bench's published KL(oracle || unlearned).
klom_audit = klom_audit_fn()
klom_published_audit = klom_audit_fn(direction="oracle_vs_unlearned", prefix="klom_pub")


# --------------------------------------------------------------------------------------------------
# U-LiRA.


def ulira_attack(confidences, member, *, fpr: float = ULIRA_FPR) -> dict:
    """Leave-one-out U-LiRA over a set of shadow models.

    Each model in turn plays the attacked target: the others provide, per example, the confidences
    of models that trained on it and unlearned it (``member``) and of models that never saw it,
    and :func:`jaxunlearn.audit.membership.ulira` scores the target's confidences with the
    Gaussian likelihood ratio (fixed variance, as recommended for few shadows). The scores of all
    targets are pooled into one ROC.

    Args:
      confidences: ``[N, k]`` logit-scaled confidences of N models on k examples.
      member: bool ``[N, k]``: model ``m`` trained on (and unlearned) example ``j``.
      fpr: the false-positive rate at which the true-positive rate is reported.

    Returns:
      ``{"auc", "tpr_at_fpr", "scores" [N, k]}``: AUC 0.5 means the unlearned examples cannot be
      told from never-seen ones.

    Raises:
      ValueError: on mismatched shapes, NaN confidences, or fewer than 3 models.
    """
    conf = np.asarray(confidences, np.float64)
    member = np.asarray(member, bool)
    if conf.ndim != 2 or conf.shape != member.shape:
        raise ValueError(
            f"`confidences` and `member` must both be [num_models, num_examples]; "
            f"got {conf.shape} and {member.shape}"
        )
    if conf.shape[0] < 3:
        raise ValueError(
            f"`confidences` holds {conf.shape[0]} models; leave-one-out U-LiRA "
            "needs at least 3 (2 shadows per target)"
        )
    if not np.all(np.isfinite(conf)):
        raise ValueError("`confidences` contains NaN or inf")
    scores = np.empty_like(conf)
    for target in range(conf.shape[0]):
        others = np.arange(conf.shape[0]) != target
        shadow_in = np.where(member[others], conf[others], np.nan)
        shadow_out = np.where(~member[others], conf[others], np.nan)
        scores[target] = membership.ulira(conf[target], shadow_in, shadow_out)["scores"]
    return {
        "auc": membership.roc_auc(scores, member),
        "tpr_at_fpr": membership.tpr_at_fpr(scores, member, fpr),
        "scores": scores,
    }


def ulira_audit(ctx: EnsembleContext) -> dict[str, float]:
    """U-LiRA of the method's shadows (``ctx.shadows()``): ``ulira_auc`` and
    ``ulira_tpr_at_1pct_fpr``; nothing where the experiment gives this method no shadows.

    The shadows come from the experiment's artefacts: trained on the retain set plus a random
    half of the audited forget examples, then unlearned by the method (for the original: as
    trained, the attack's full strength). Their logits on the audited examples come from the
    shared predictions, as every other audit's.
    """
    shadows = ctx.shadows() if ctx.shadows is not None else None
    if shadows is None:
        return {}
    group, part = f"ulira_shadows/{ctx.method}", "ulira_targets"
    if not ctx.predictions.has_part(part):
        ctx.predictions.add_part(part, ctx.dataset.x_train[shadows.targets])
    if not ctx.predictions.has_group(group):
        ctx.predictions.add_group(group, shadows.variables)
    logits = _checked(ctx.predictions.logits(group, part), "shadow", part, ctx.method)
    confidences = competition.logit_scaled_confidence(logits, ctx.dataset.y_train[shadows.targets])
    result = ulira_attack(confidences, shadows.member)
    _keep(ctx, "ulira_scores", result["scores"])
    _keep(ctx, "ulira_member", shadows.member)
    _keep(ctx, "ulira_targets", shadows.targets)
    return {"ulira_auc": result["auc"], "ulira_tpr_at_1pct_fpr": result["tpr_at_fpr"]}


register_ensemble("competition", competition_audit, task="classification")
register_ensemble("klom", klom_audit, task="classification")
register_ensemble("klom_published", klom_published_audit, task="classification")
register_ensemble("ulira", ulira_audit, task="classification")
