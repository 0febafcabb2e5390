"""Experiments: validated plans, the runner that produces records, and reports."""

from jaxunlearn.scenarios.report import plot, table, write_all
from jaxunlearn.scenarios.runner import Plan, Record, load_results, plan, run_experiment, summarize
from jaxunlearn.scenarios.sweep import run_sweep

__all__ = [
    "Plan",
    "Record",
    "load_results",
    "plan",
    "plot",
    "run_experiment",
    "run_sweep",
    "summarize",
    "table",
    "write_all",
]
