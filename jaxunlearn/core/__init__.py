"""Core vocabulary: types, the loss-to-rule builder, losses, optimizers and tree utilities."""

from jaxunlearn.core import losses, optim, tree
from jaxunlearn.core.rule import LossRuleState, rule_from_loss
from jaxunlearn.core.types import Batch, Network, Outputs, UnlearningRule, Variables

__all__ = [
    "Batch",
    "LossRuleState",
    "Network",
    "Outputs",
    "UnlearningRule",
    "Variables",
    "losses",
    "optim",
    "rule_from_loss",
    "tree",
]
