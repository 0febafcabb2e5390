"""Audits: does the unlearned model behave like one retrained without the forget set?

Pure metric functions over model outputs, and a registry of named audits (``registry``) that the
experiment runner applies to the N models of a run at once (each per-model audit returns one
value per model: ``run_models``, or ``run_finite`` over the models whose outputs are finite;
``run`` is the one-model form). Every module of this package is
imported here, so an audit module that registers its audits (``register``,
``register_ensemble``) needs no other edit.
"""

import importlib
import pkgutil

from jaxunlearn.audit.attribution import (
    UnTracResult,
    author_groups,
    graded_rows,
    leave_dataset_out,
    run_untrac,
    spearman,
    untrac,
    untrac_inv,
)
from jaxunlearn.audit.classification import (
    accuracy_percent,
    avg_gap,
    loss_membership_auc,
    mia_efficacy,
    true_class_probability,
)
from jaxunlearn.audit.competition import (
    competition_score,
    epsilon_per_example,
    forgetting_score,
    logit_scaled_confidence,
)
from jaxunlearn.audit.forget_sets import compare_forget_sets
from jaxunlearn.audit.klom import klom, margins
from jaxunlearn.audit.lm import (
    exact_memorization,
    extraction_strength,
    forget_quality,
    forget_truth_ratio,
    leak_at_k,
    log_prob_moments,
    loss_score,
    membership_auc,
    min_k_plus_plus_score,
    min_k_score,
    model_utility,
    normalised_probability,
    privleak,
    probability,
    retain_truth_ratio,
    truth_ratio,
    zlib_score,
)
from jaxunlearn.audit.lm_robust import (
    adversarial_prompt,
    concept_vectors,
    form_consistency,
    in_context_recovery,
    latent_probe,
    locate_concept_vectors,
    relearn_lm,
    retain_similarity,
    waterdrum,
)
from jaxunlearn.audit.membership import roc_auc, tpr_at_fpr, ulira, zrf_score
from jaxunlearn.audit.registry import (
    AuditContext,
    EnsembleContext,
    check_ensemble_names,
    check_names,
    ensemble_names,
    gap_metrics,
    make_predictions,
    names,
    register,
    register_ensemble,
    run,
    run_ensemble,
    run_finite,
    run_models,
)
from jaxunlearn.audit.relearn import RelearnResult, relearn_steps  # noqa: E402  (+ "relearn")
from jaxunlearn.audit.repr_measures import alignment, effective_rank, uniformity
from jaxunlearn.audit.representation import linear_cka, linear_probe_accuracy, weighted_knn_accuracy
from jaxunlearn.audit.text import (
    count_leaks,
    knowledge_memorization,
    leaks,
    rouge_l,
    verbatim_memorization,
    zlib_lengths,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = [
    "AuditContext",
    "EnsembleContext",
    "check_ensemble_names",
    "ensemble_names",
    "register_ensemble",
    "run_ensemble",
    "accuracy_percent",
    "avg_gap",
    "check_names",
    "gap_metrics",
    "loss_membership_auc",
    "mia_efficacy",
    "names",
    "make_predictions",
    "register",
    "run",
    "run_finite",
    "run_models",
    "true_class_probability",
    "competition_score",
    "epsilon_per_example",
    "forgetting_score",
    "logit_scaled_confidence",
    "klom",
    "margins",
    "roc_auc",
    "tpr_at_fpr",
    "ulira",
    "zrf_score",
    "RelearnResult",
    "relearn_steps",
    # Data attribution by unlearning (UnTrac) and forget-set comparison.
    "UnTracResult",
    "author_groups",
    "compare_forget_sets",
    "graded_rows",
    "leave_dataset_out",
    "run_untrac",
    "spearman",
    "untrac",
    "untrac_inv",
    "linear_cka",
    "linear_probe_accuracy",
    "weighted_knn_accuracy",
    # Label-free embedding measures (RankMe, uniformity, alignment).
    "alignment",
    "effective_rank",
    "uniformity",
    # Language models (TOFU, MUSE, membership inference, leak@k).
    "exact_memorization",
    "extraction_strength",
    "forget_quality",
    "forget_truth_ratio",
    "leak_at_k",
    "log_prob_moments",
    "loss_score",
    "membership_auc",
    "min_k_plus_plus_score",
    "min_k_score",
    "model_utility",
    "normalised_probability",
    "privleak",
    "probability",
    "retain_truth_ratio",
    "truth_ratio",
    "zlib_score",
    "count_leaks",
    "knowledge_memorization",
    "leaks",
    "rouge_l",
    "verbatim_memorization",
    "zlib_lengths",
    # Robust LM evaluation (forms, watermarks, probes, relearning, in context, GCG, concepts).
    "adversarial_prompt",
    "concept_vectors",
    "form_consistency",
    "in_context_recovery",
    "latent_probe",
    "locate_concept_vectors",
    "relearn_lm",
    "retain_similarity",
    "waterdrum",
]
