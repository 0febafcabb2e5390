"""Representation-learning rules: self-supervised, continual and guided training as pure rules.

The second kind of update rule over a parameter pytree (the first being unlearning rules): each is
a factory returning ``UnlearningRule(init, update)``, registered in a sibling of the unlearning
rules' registry with the same interface (``make(name, network, num_steps=..., **hparams)``,
``names()``, ``get(name)``), and run by the same :func:`jaxunlearn.train.fit` on plain batches
``{"retain": {"x", "y", ...}}``. A rule draws its augmented views itself from its update key
(:mod:`jaxunlearn.data.views`); EMA targets, centres and frozen references live in its state.

>>> net = repr.encoder("simclr", models.make_network("mlp", input_shape=(8, 8, 1),
...                                                   num_outputs=10))  # doctest: +SKIP
>>> rule = repr.make("simclr", net, num_steps=500)  # doctest: +SKIP
>>> res = train.fit(rule, net.init(key), stream, batch_sizes={"retain": 256},
...                 num_steps=500, key=key)  # doctest: +SKIP

Every module of this package is imported here, so adding a rule is adding one module.
"""

import importlib
import pkgutil

from jaxunlearn.repr import common, heads, losses, registry
from jaxunlearn.repr.heads import backbone_variables, with_projection_head
from jaxunlearn.repr.registry import (
    REPR,
    ReprRuleInfo,
    encoder,
    get,
    make,
    markdown_table,
    names,
    register,
    rule,
    sweepable,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

globals().update({_name: get(_name).factory for _name in names()})

__all__ = [
    "REPR",
    "ReprRuleInfo",
    "backbone_variables",
    "common",
    "encoder",
    "get",
    "heads",
    "losses",
    "make",
    "markdown_table",
    "names",
    "register",
    "registry",
    "rule",
    "sweepable",
    "with_projection_head",
    *names(),
]
