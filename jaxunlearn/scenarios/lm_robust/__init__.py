"""The robust language-model track (issue 12): does the LM truly forget?

Every LM rule of the registry unlearns ``forget10`` of a ``fictitious_authors`` corpus that the
target learned in several forms, as a knowledge graph and through watermarked owners; every
robustness audit of :mod:`jaxunlearn.audit.lm_robust` then looks for what is left.
``benchmark`` (the rows and evaluation sets), ``plan`` (config -> :class:`RobustPlan`),
``audits`` (the battery of one model), ``extensions`` (inference wrappers and analyses),
``runner`` (:func:`run_lm_robust_experiment`) and ``report`` (the table and the heat map). The
target and retain models are the LM scenario's artefacts (:mod:`jaxunlearn.scenarios.lm`).
"""

from jaxunlearn.scenarios.lm_robust.benchmark import RobustBenchmark, build_benchmark
from jaxunlearn.scenarios.lm_robust.extensions import register_analysis, register_wrapper
from jaxunlearn.scenarios.lm_robust.plan import RobustPlan, is_lm_robust_config, robust_plan
from jaxunlearn.scenarios.lm_robust.runner import run_lm_robust_experiment

__all__ = [
    "RobustBenchmark",
    "RobustPlan",
    "build_benchmark",
    "is_lm_robust_config",
    "register_analysis",
    "register_wrapper",
    "robust_plan",
    "run_lm_robust_experiment",
]
