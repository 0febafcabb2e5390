"""The language-model track of the experiment layer (issue 11): TOFU/MUSE-style unlearning.

``plan`` (config -> :class:`LMPlan`), ``benchmark`` (the corpus as row-aligned token arrays),
``artefacts`` (target and retain models: trained, checkpointed, reused), ``evaluate`` (the audit
battery of one model), ``runner`` (:func:`run_lm_experiment`), ``muse`` (sustainability,
scalability, relearning) and ``report`` (the table and the trajectory plot).
"""

from jaxunlearn.scenarios.lm.artefacts import LMArtefacts
from jaxunlearn.scenarios.lm.benchmark import LMBenchmark, load_benchmark
from jaxunlearn.scenarios.lm.plan import LMPlan, is_lm_config, lm_plan
from jaxunlearn.scenarios.lm.runner import run_lm_experiment

__all__ = [
    "LMArtefacts",
    "LMBenchmark",
    "LMPlan",
    "is_lm_config",
    "lm_plan",
    "load_benchmark",
    "run_lm_experiment",
]
