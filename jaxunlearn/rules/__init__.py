"""Unlearning rules: factories returning ``UnlearningRule(init, update)`` pairs, and their registry.

Each rule module registers its factories where they are defined (``@registry.rule(...)``), and
this package imports every module in it, so adding a rule is adding one module: the registry,
the README table and the parametrised tests pick it up. Every registered factory is also an
attribute of this package (``rules.scrub(apply, ...)``); ``make(name, network, ...)`` builds one
by name with its context filled in.
"""

import importlib
import pkgutil

from jaxunlearn.rules import registry
from jaxunlearn.rules.registry import (
    CONTEXT,
    RuleInfo,
    get,
    make,
    markdown_table,
    names,
    num_steps,
    register,
    rule,
    sweepable,
)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

globals().update({_name: get(_name).factory for _name in names()})

__all__ = [
    "CONTEXT",
    "RuleInfo",
    "get",
    "make",
    "markdown_table",
    "names",
    "num_steps",
    "register",
    "registry",
    "rule",
    "sweepable",
    *names(),
]
