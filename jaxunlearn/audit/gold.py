"""Gold-standard audits: distributions over many unlearned models against many retrained oracles.

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
  (``klom_<part>_mean`` / ``klom_<part>_p95``: mean and 95th percentile over examples).

Both are registered with :func:`jaxunlearn.audit.register_ensemble`; the experiment runner calls
them with an :class:`~jaxunlearn.audit.EnsembleContext`. Their per-example arrays (epsilons,
confidences, KLoM values) are kept on the context and handed out by :func:`per_example_arrays`, so
that the runner can store them for plots without computing anything twice.

U-LiRA (a per-example likelihood-ratio attack against unlearning) needs shadow models of its own,
trained on random halves of the audited examples and then unlearned: :func:`run_ulira` builds them
with :mod:`jaxunlearn.ensemble.ulira` (two vmapped programs) and :func:`ulira_attack` scores them.

References:
  Triantafillou et al., "Are we making progress in unlearning? Findings from the first NeurIPS
  unlearning competition", arXiv 2406.09073 (2024); google-deepmind/unlearning_evaluation.
  Georgiev et al., "Attribute-to-Delete: Machine Unlearning via Datamodel Matching",
  arXiv 2410.23232 (ICLR 2025) (KLoM); RoyRin/data-unlearning-bench.
  Hayes et al., "Inexact Unlearning Needs More Careful Evaluations to Avoid a False Sense of
  Privacy", arXiv 2403.01218 (SaTML 2025) (U-LiRA).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from jaxunlearn import ensemble
from jaxunlearn.audit import classification as cls
from jaxunlearn.audit import competition, membership
from jaxunlearn.audit.klom import klom as klom_divergence
from jaxunlearn.audit.suite import EnsembleContext, register_ensemble
from jaxunlearn.core.types import Network, UnlearningRule
from jaxunlearn.data.datasets import Dataset
from jaxunlearn.data.forget import Split

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
            raise ValueError(f"Ensemble audit {audit!r} needs at least {ensemble.MIN_MODELS} "
                             f"{which} models (method {ctx.method!r}); got {count}")
        sizes.append(count)
    if same_size and sizes[0] != sizes[1]:
        raise ValueError(f"Ensemble audit {audit!r} compares equally many unlearned and oracle "
                         f"models (method {ctx.method!r}); got {sizes[0]} and {sizes[1]}")
    return sizes[0], sizes[1]


def _checked(logits: np.ndarray, which: str, part: str, method: str) -> np.ndarray:
    if not np.all(np.isfinite(logits)):
        raise ValueError(f"The {which} ensemble of method {method!r} has NaN or inf logits on "
                         f"the {part} data; a distributional audit needs finite confidences")
    return logits


def _sample(n: int, size: int) -> np.ndarray:
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size, replace=False))


def _margins(ctx: EnsembleContext, part: str, which: str) -> np.ndarray:
    """``[N, n]`` logit-scaled confidences (= margins) of ``which`` on ``part`` (cached).

    The forget set is used whole; retain and test data are sampled (see ``KLOM_SAMPLE_SIZE``).
    """
    key = ("gold", "margins", part, which)
    if key not in ctx._cache:
        x, y = ctx.data(part)
        if part == "forget":
            logits = ctx.logits(part, which)
        else:
            rows = _sample(len(y), KLOM_SAMPLE_SIZE)
            x, y = x[rows], y[rows]
            logits = ensemble.predict_logits(ctx.network, getattr(ctx, which), x)
        ctx._cache[key] = competition.logit_scaled_confidence(
            _checked(logits, which, part, ctx.method), y)
    return ctx._cache[key]


def _keep(ctx: EnsembleContext, name: str, value: np.ndarray) -> np.ndarray:
    ctx._cache[("gold", "array", name)] = np.asarray(value)
    return value


def per_example_arrays(ctx: EnsembleContext) -> dict[str, np.ndarray]:
    """The per-example arrays behind the gold audits that ran on ``ctx`` (for plots and files).

    Keys present after ``"competition"``: ``epsilon`` ``[n_forget]``, ``confidence_unlearned``
    and ``confidence_oracle`` ``[N, n_forget]``; after ``"klom"``: ``klom_forget``,
    ``klom_retain``, ``klom_test`` (one value per audited example) and ``retain_sample`` /
    ``test_sample`` (which retain / test examples those are, as positions in the split's index
    sets). ``forget_index`` (training-set indices of the forget set) is always there.
    """
    out = {"forget_index": np.asarray(ctx.split.forget)}
    for key, value in ctx._cache.items():
        if isinstance(key, tuple) and key[:2] == ("gold", "array"):
            out[key[2]] = value
    return out


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
    logits = ctx.logits(part, which)
    y = ctx.data(part)[1]
    return float(np.mean([cls.accuracy_percent(logits[m], y) for m in range(len(logits))]))


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
    return {"epsilon_mean": float(np.mean(eps)), "epsilon_median": float(np.median(eps)),
            "forget_score": float(score), "competition_score": float(final)}


# --------------------------------------------------------------------------------------------------
# KLoM.


def klom_audit(ctx: EnsembleContext) -> dict[str, float]:
    """KLoM (KL of binned margins, unlearned vs oracle) on forget, retain and test examples."""
    _check_ensembles(ctx, "klom", same_size=False)
    out = {}
    for part in KLOM_PARTS:
        if len(ctx.data(part)[1]) == 0:
            continue
        values = _keep(ctx, f"klom_{part}", klom_divergence(_margins(ctx, part, "unlearned"),
                                                       _margins(ctx, part, "oracle")))
        out[f"klom_{part}_mean"] = float(np.mean(values))
        out[f"klom_{part}_p95"] = float(np.percentile(values, 95))
        if part != "forget":
            _keep(ctx, f"{part}_sample", _sample(len(ctx.data(part)[1]), KLOM_SAMPLE_SIZE))
    return out


# --------------------------------------------------------------------------------------------------
# U-LiRA.


def shadow_confidences(network: Network, shadows: ensemble.Shadows, dataset: Dataset) -> np.ndarray:
    """``[N, k]`` logit-scaled confidences of every shadow model on every target example."""
    x, y = dataset.x_train[shadows.targets], dataset.y_train[shadows.targets]
    logits = ensemble.predict_logits(network, shadows.variables, x)
    return competition.logit_scaled_confidence(_checked(logits, "shadow", "target", "ulira"), y)


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
        raise ValueError(f"`confidences` and `member` must both be [num_models, num_examples]; "
                         f"got {conf.shape} and {member.shape}")
    if conf.shape[0] < 3:
        raise ValueError(f"`confidences` holds {conf.shape[0]} models; leave-one-out U-LiRA "
                         "needs at least 3 (2 shadows per target)")
    if not np.all(np.isfinite(conf)):
        raise ValueError("`confidences` contains NaN or inf")
    scores = np.empty_like(conf)
    for target in range(conf.shape[0]):
        others = np.arange(conf.shape[0]) != target
        shadow_in = np.where(member[others], conf[others], np.nan)
        shadow_out = np.where(~member[others], conf[others], np.nan)
        scores[target] = membership.ulira(conf[target], shadow_in, shadow_out)["scores"]
    return {"auc": membership.roc_auc(scores, member),
            "tpr_at_fpr": membership.tpr_at_fpr(scores, member, fpr), "scores": scores}


def ulira_metrics(network: Network, shadows: ensemble.Shadows, dataset: Dataset) -> dict:
    """``{"ulira_auc", "ulira_tpr_at_1pct_fpr"}`` of a set of (unlearned) shadows."""
    result = ulira_attack(shadow_confidences(network, shadows, dataset), shadows.member)
    return {"ulira_auc": result["auc"], "ulira_tpr_at_1pct_fpr": result["tpr_at_fpr"]}


def run_ulira(network: Network, dataset: Dataset, split: Split, *, train_rule: UnlearningRule,
              train_epochs: int, train_batch_size: int, rule: UnlearningRule,
              batch_sizes: Mapping[str, int], num_steps: int, num_shadows: int = 16,
              num_targets: int | None = None, seed: int = 0, mesh=None,
              checkpoint_dir: str | None = None) -> dict:
    """U-LiRA end to end: train shadows, unlearn their in sets, attack.

    Targets are ``num_targets`` examples of ``split.forget`` (all of it, rounded down to an even
    count, by default). Each of the ``num_shadows`` models trains from scratch on ``split.retain``
    plus a random half of the targets (one vmapped program), then runs ``rule`` to forget that
    half with ``split.retain`` as its retain set (a second program). Build ``rule`` and
    ``num_steps`` for forget sets of ``num_targets // 2`` examples.

    Args:
      network, dataset, split: the problem.
      train_rule, train_epochs, train_batch_size: the training recipe of the shadows (the same as
        the original model's).
      rule, batch_sizes, num_steps: the unlearning run of every shadow.
      num_shadows: N, even and at least 6; LiRA's public demo uses 16.
      num_targets: how many forget examples to audit.
      seed: design, targets and keys.
      mesh: data-parallel mesh for both programs.
      checkpoint_dir: orbax checkpoints of the trained shadows.

    Returns:
      ``{"auc", "tpr_at_1pct_fpr"}`` after unlearning, ``{"auc_before",
      "tpr_at_1pct_fpr_before"}`` of the trained shadows before unlearning (the attack's strength
      without any unlearning), and the arrays ``scores``, ``member``, ``targets``.
    """
    targets = ensemble.choose_targets(split.forget, num_targets, seed=seed)
    shadows, _ = ensemble.ulira.train_shadows(
        network, train_rule, dataset.x_train, dataset.y_train, split.retain, targets,
        num_shadows=num_shadows, epochs=train_epochs, batch_size=train_batch_size, seed=seed,
        mesh=mesh, checkpoint_dir=checkpoint_dir)
    before = ulira_attack(shadow_confidences(network, shadows, dataset), shadows.member)
    unlearned, _ = ensemble.ulira.unlearn_shadows(
        shadows, rule, dataset.x_train, dataset.y_train, batch_sizes=batch_sizes,
        num_steps=num_steps, seed=seed, mesh=mesh)
    after = ulira_attack(shadow_confidences(network, unlearned, dataset), shadows.member)
    return {"auc": after["auc"], "tpr_at_1pct_fpr": after["tpr_at_fpr"],
            "auc_before": before["auc"], "tpr_at_1pct_fpr_before": before["tpr_at_fpr"],
            "scores": after["scores"], "member": shadows.member, "targets": targets}


register_ensemble("competition", competition_audit, task="classification")
register_ensemble("klom", klom_audit, task="classification")
