"""Core vocabulary: types, the rule builders and algebra, losses, optimizers and tree utilities."""

from jaxunlearn.core import lm_losses, lora, losses, optim, tree
from jaxunlearn.core.combinators import (
    MaskedState,
    MaskScore,
    PhasesState,
    leaf_paths,
    masked,
    one_shot,
    path_mask,
    phases,
    saliency_masked,
    top_fraction_mask,
)
from jaxunlearn.core.rule import (
    LossRuleState,
    StepCounter,
    grads_of_loss,
    optimizer_step,
    rule_from_grads,
    rule_from_loss,
)
from jaxunlearn.core.types import Batch, Network, Outputs, UnlearningRule, Variables

__all__ = [
    "Batch",
    "LossRuleState",
    "MaskScore",
    "MaskedState",
    "Network",
    "Outputs",
    "PhasesState",
    "StepCounter",
    "UnlearningRule",
    "Variables",
    "grads_of_loss",
    "leaf_paths",
    "lm_losses",
    "lora",
    "losses",
    "masked",
    "one_shot",
    "optim",
    "optimizer_step",
    "path_mask",
    "phases",
    "rule_from_grads",
    "rule_from_loss",
    "saliency_masked",
    "top_fraction_mask",
    "tree",
]
