"""Unlearning rules: factories returning ``UnlearningRule(init, update)`` pairs, and their registry.

Every rule is registered in :mod:`jaxunlearn.rules.registry`; ``make(name, network, ...)`` builds
one by name.
"""

from jaxunlearn.rules.adapt_then_unlearn import adapt_then_unlearn
from jaxunlearn.rules.amnesiac import amnesiac
from jaxunlearn.rules.bad_teacher import bad_teacher
from jaxunlearn.rules.boundary import boundary_expand, boundary_shrink
from jaxunlearn.rules.finetune import finetune, retrain
from jaxunlearn.rules.fisher import fisher_forgetting, influence_unlearning
from jaxunlearn.rules.gradient_ascent import gradient_ascent, neggrad_plus
from jaxunlearn.rules.l1_sparse import l1_sparse
from jaxunlearn.rules.laf import label_agnostic_forgetting
from jaxunlearn.rules.orthogonal import gradient_orthogonalization
from jaxunlearn.rules.random_label import random_label
from jaxunlearn.rules.registry import CONTEXT, RuleInfo, get, make, names, register
from jaxunlearn.rules.regression import blindspot, gaussian_amnesiac
from jaxunlearn.rules.salun import salun, weight_attribution_mask
from jaxunlearn.rules.scrub import scrub
from jaxunlearn.rules.ssd import ssd
from jaxunlearn.rules.task_arithmetic import negmerge, task_vector_negation, ties_merge
from jaxunlearn.rules.unsir import unsir

_SPARSE = "Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023"

register(
    RuleInfo(
        "retrain",
        retrain,
        ("retain",),
        "Gold standard: train from scratch on D_r",
        cost="high",
        task="any",
    )
)
register(
    RuleInfo(
        "finetune", finetune, ("retain",), "Warnecke et al., NDSS 2023; " + _SPARSE, task="any"
    )
)
register(
    RuleInfo(
        "gradient_ascent",
        gradient_ascent,
        ("forget",),
        "Thudi et al., Unrolling SGD, EuroS&P 2022; " + _SPARSE,
        task="any",
    )
)
register(
    RuleInfo(
        "neggrad_plus",
        neggrad_plus,
        ("forget", "retain"),
        "Kurmanji et al., Towards Unbounded Machine Unlearning (SCRUB), NeurIPS 2023",
        task="any",
    )
)
register(
    RuleInfo(
        "random_label",
        random_label,
        ("forget", "retain"),
        "Golatkar et al., Eternal Sunshine of the Spotless Net, CVPR 2020",
    )
)
# masks_distill: mask-guided rules (SalUn, WAGLE), l1-sparse, SCRUB, bad teaching.
register(
    RuleInfo(
        "salun",
        salun,
        ("forget", "retain"),
        "Fan et al., SalUn: Gradient-based Weight Saliency, ICLR 2024",
    )
)
register(
    RuleInfo(
        "weight_attribution_mask",
        weight_attribution_mask,
        ("forget", "retain"),
        "Jia et al., WAGLE: Strategic Weight Attribution for Unlearning, NeurIPS 2024",
    )
)
register(RuleInfo("l1_sparse", l1_sparse, ("retain",), _SPARSE, needs_labels=False, task="any"))
register(
    RuleInfo(
        "scrub",
        scrub,
        ("forget", "retain"),
        "Kurmanji et al., Towards Unbounded Machine Unlearning (SCRUB), NeurIPS 2023",
        needs_labels=False,
        cost="medium",
    )
)
register(
    RuleInfo(
        "bad_teacher",
        bad_teacher,
        ("forget", "retain"),
        "Chundawat et al., Can Bad Teaching Induce Forgetting?, AAAI 2023",
        needs_labels=False,
    )
)

# regression_sweep: Deep Regression Unlearning (regression targets only).
_REGRESSION = "Tarun et al., Deep Regression Unlearning, ICML 2023"
register(
    RuleInfo(
        "blindspot",
        blindspot,
        ("forget", "retain"),
        _REGRESSION,
        needs_labels=False,
        cost="medium",
        task="regression",
    )
)
register(
    RuleInfo(
        "gaussian_amnesiac",
        gaussian_amnesiac,
        ("forget", "retain"),
        _REGRESSION,
        needs_labels=False,
        task="regression",
    )
)

# merge_repr: weight-space editing (task arithmetic, NegMerge, TIES), UNO, Adapt-then-Unlearn, LAF.
register(
    RuleInfo(
        "task_vector_negation",
        task_vector_negation,
        ("forget",),
        "Ilharco et al., Editing Models with Task Arithmetic, ICLR 2023",
        task="any",
    )
)
register(
    RuleInfo(
        "negmerge",
        negmerge,
        ("forget",),
        "Kim et al., NegMerge: Consensual Weight Negation for Strong Machine Unlearning, 2024",
        cost="medium",
        task="any",
    )
)
register(
    RuleInfo(
        "ties_merge",
        ties_merge,
        ("forget", "retain"),
        "Yadav et al., TIES-Merging, NeurIPS 2023; Xu et al., ZJUKLAB at SemEval-2025 "
        "Task 4: Unlearning via Model Merging, arXiv 2503.21088",
        cost="medium",
    )
)
register(
    RuleInfo(
        "gradient_orthogonalization",
        gradient_orthogonalization,
        ("forget", "retain"),
        "Mandal & Gottwald, UNO: Unlearning via Orthogonalization, arXiv 2506.04712",
        task="any",
    )
)
register(
    RuleInfo(
        "adapt_then_unlearn",
        adapt_then_unlearn,
        ("forget", "retain"),
        "Tiwary et al., Adapt then Unlearn: Exploiting Parameter Space Semantics, TMLR 2025",
        task="any",
    )
)
register(
    RuleInfo(
        "label_agnostic_forgetting",
        label_agnostic_forgetting,
        ("forget", "retain"),
        "Shen et al., Label-Agnostic Forgetting, ICLR 2024",
        needs_labels=False,
        cost="medium",
        task="any",
    )
)

# oneshot_boundary: one-shot editors (SSD, Fisher forgetting, IU), boundary unlearning, UNSIR,
# amnesiac.
register(
    RuleInfo(
        "ssd",
        ssd,
        ("forget", "retain"),
        "Foster et al., Fast Machine Unlearning Without Retraining Through Selective "
        "Synaptic Dampening, AAAI 2024",
        cost="none",
        task="any",
    )
)
register(
    RuleInfo(
        "fisher_forgetting",
        fisher_forgetting,
        ("retain",),
        "Golatkar et al., Eternal Sunshine of the Spotless Net, CVPR 2020; " + _SPARSE,
        needs_labels=False,
        cost="none",
    )
)
register(
    RuleInfo(
        "influence_unlearning",
        influence_unlearning,
        ("forget", "retain"),
        "Koh & Liang, ICML 2017; Izzo et al., AISTATS 2021; " + _SPARSE,
        cost="none",
        task="any",
    )
)
register(
    RuleInfo(
        "boundary_shrink",
        boundary_shrink,
        ("forget",),
        "Chen et al., Boundary Unlearning, CVPR 2023",
    )
)
register(
    RuleInfo(
        "boundary_expand",
        boundary_expand,
        ("forget",),
        "Chen et al., Boundary Unlearning, CVPR 2023",
        needs_labels=False,
    )
)
register(
    RuleInfo(
        "unsir",
        unsir,
        ("forget", "retain"),
        "Tarun et al., Fast Yet Effective Machine Unlearning, IEEE TNNLS 2023",
    )
)
register(
    RuleInfo(
        "amnesiac",
        amnesiac,
        ("forget", "retain"),
        "Graves et al., Amnesiac Machine Learning, AAAI 2021; Foster et al., AAAI 2024",
    )
)

__all__ = [
    "CONTEXT",
    "blindspot",
    "gaussian_amnesiac",
    "RuleInfo",
    "finetune",
    "get",
    "gradient_ascent",
    "make",
    "names",
    "neggrad_plus",
    "random_label",
    "register",
    "retrain",
    "bad_teacher",
    "l1_sparse",
    "salun",
    "scrub",
    "weight_attribution_mask",
    "adapt_then_unlearn",
    "gradient_orthogonalization",
    "label_agnostic_forgetting",
    "negmerge",
    "task_vector_negation",
    "ties_merge",
    "amnesiac",
    "boundary_expand",
    "boundary_shrink",
    "fisher_forgetting",
    "influence_unlearning",
    "ssd",
    "unsir",
]
