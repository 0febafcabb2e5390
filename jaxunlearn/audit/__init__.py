"""Audits: does the unlearned model behave like one retrained without the forget set?

Pure metric functions over model outputs, and a registry of named audits (``suite``) that the
experiment runner applies to every model.
"""

from jaxunlearn.audit.classification import (accuracy_percent, avg_gap, loss_membership_auc,
                                             mia_efficacy, true_class_probability)
from jaxunlearn.audit.suite import (AuditContext, check_names, gap_metrics, names, predict,
                                    register, run)
from jaxunlearn.audit import regression  # noqa: F401,E402  (registers "regression_error")

__all__ = ["AuditContext", "accuracy_percent", "avg_gap", "check_names", "gap_metrics",
           "loss_membership_auc",
           "mia_efficacy", "names", "predict", "register", "run", "true_class_probability"]
