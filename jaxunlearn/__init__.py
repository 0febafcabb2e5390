"""jaxunlearn: machine unlearning for JAX.

Unlearning rules are pure ``(init, update)`` pairs over a parameter pytree (:mod:`jaxunlearn.rules`,
built with the algebra in :mod:`jaxunlearn.core`); :func:`fit` runs any rule, jitted and fused
with ``lax.scan``, on one model or a vmapped ensemble; audits (:mod:`jaxunlearn.audit`) measure
forgetting against models retrained without the forget set.

>>> import jaxunlearn as ju                                                  # doctest: +SKIP
>>> ds = ju.data.load("digits")                                              # doctest: +SKIP
>>> net = ju.models.make_network("mlp", input_shape=ds.input_shape,
...                              num_outputs=ds.num_outputs)                 # doctest: +SKIP
>>> rule = ju.rules.make("scrub", net, steps_per_epoch=20)                   # doctest: +SKIP
>>> result = ju.fit(rule, variables, stream, batch_sizes={"forget": 32, "retain": 64},
...                 num_steps=200, key=key)                                  # doctest: +SKIP
"""

import importlib

from jaxunlearn import audit, core, data, ensemble, losses, models, rules, train
from jaxunlearn.core import (
    MaskScore,
    Network,
    Outputs,
    StepCounter,
    UnlearningRule,
    masked,
    one_shot,
    optim,
    phases,
    rule_from_grads,
    rule_from_loss,
    saliency_masked,
)
from jaxunlearn.data import ForgetSpec, Split, make_split
from jaxunlearn.models import make_network
from jaxunlearn.train import FitResult, fit, make_stream

__version__ = "0.1.0"

# Experiment machinery (config plans, the runner, reports) pulls in plotting: imported on use;
# so are the representation-learning rules (``ju.repr``; the name would shadow the builtin here).
_LAZY = ("scenarios", "repr")


def __getattr__(name: str):
    if name in _LAZY:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FitResult",
    "ForgetSpec",
    "MaskScore",
    "Network",
    "Outputs",
    "Split",
    "StepCounter",
    "UnlearningRule",
    "audit",
    "core",
    "data",
    "ensemble",
    "fit",
    "losses",
    "make_network",
    "make_split",
    "make_stream",
    "masked",
    "models",
    "one_shot",
    "optim",
    "phases",
    "repr",
    "rule_from_grads",
    "rule_from_loss",
    "rules",
    "saliency_masked",
    "scenarios",
    "train",
]
