"""Experiments: validated plans, the runner that produces records, and reports."""

from jaxunlearn.scenarios.report import plot, table, write_all
from jaxunlearn.scenarios.runner import Plan, Record, load_results, plan, run_experiment, summarize

__all__ = ["Plan", "Record", "load_results", "plan", "plot", "run_experiment", "summarize",
           "table", "write_all"]
