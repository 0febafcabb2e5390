"""Experiments: the validated plan, its artefacts, the runner that produces records, reports.

``plan`` (config -> :class:`Plan`, every default and check), ``artefacts`` (originals, oracles,
shadow models: keyed, checkpointed, shared), ``fingerprint`` (the config fields behind each
artefact and record: a rerun reuses only what still holds), ``lock`` (one run per workdir),
``runner`` (rules and audits -> records), ``report``
(records -> files, tables, plots) and ``sweep`` (a hyperparameter grid as one program).
"""

from jaxunlearn.scenarios import fingerprint
from jaxunlearn.scenarios.artefacts import Artefacts, role_keys
from jaxunlearn.scenarios.lock import WorkdirLockedError, workdir_lock
from jaxunlearn.scenarios.plan import Plan, build_rule, plan, scenario_entry
from jaxunlearn.scenarios.report import Record, load_results, plot, summarize, table, write_all
from jaxunlearn.scenarios.runner import run_experiment
from jaxunlearn.scenarios.sweep import run_sweep

__all__ = [
    "Artefacts",
    "Plan",
    "Record",
    "WorkdirLockedError",
    "build_rule",
    "fingerprint",
    "load_results",
    "plan",
    "plot",
    "role_keys",
    "run_experiment",
    "run_sweep",
    "scenario_entry",
    "summarize",
    "table",
    "workdir_lock",
    "write_all",
]
