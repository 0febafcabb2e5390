"""Extension points of the robust-LM experiment: inference wrappers and analyses.

Not every method of issue 12 is a weight update that the rule registry can run:

* an **inference wrapper** (ECO prompts: a prompt classifier plus embedding corruption at
  inference, the weights never change) is registered with :func:`register_wrapper` as
  ``factory(plan, target_variables, *, key) -> (network, variables)``: the wrapped
  :class:`~jaxunlearn.core.types.Network` (its ``apply`` applies the wrapper) and the variables it
  runs with. The experiment audits it as one more row, named after the wrapper, next to the rules.
  The audits that read ``network.apply`` see the wrapper (forms, structure, relearning starts from
  its variables, in-context, probes, retain similarity); those that read the parameters directly
  (concept vectors, the GCG search and WaterDrum's KV-cache decoding) see the unwrapped model;
* an **analysis** (UnTrac's data attribution, a synthetic forget set built by sampling the model)
  is registered with :func:`register_analysis` as ``analysis(plan, artefacts, log) -> payload``
  (anything JSON-serialisable; ``artefacts`` is the run's
  :class:`~jaxunlearn.scenarios.lm.artefacts.LMArtefacts`, whose ``target()`` and
  ``retain(plan.split)`` are the trained models). Its payload lands in ``results.json`` under
  ``analyses[name]``.

A config names the ones to run in ``wrappers`` and ``analyses``; an unregistered name is a
``ValueError`` when the plan is built. Registering is done by the module defining the method, at
import time, e.g.::

    from jaxunlearn.scenarios.lm_robust import extensions

    @extensions.register_analysis("untrac")
    def untrac_analysis(plan, artefacts, log):
        ...
        return {"spearman": rho}
"""

from __future__ import annotations

from collections.abc import Callable

ANALYSES: dict[str, Callable] = {}
WRAPPERS: dict[str, Callable] = {}


def _register(table: dict, kind: str, name: str) -> Callable:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {kind} name must be a non-empty string; got {name!r}")

    def decorate(fn: Callable) -> Callable:
        if name in table and table[name] is not fn:
            raise ValueError(f"{kind} {name!r} is already registered")
        table[name] = fn
        return fn

    return decorate


def register_analysis(name: str) -> Callable:
    """Decorator: registers ``analysis(plan, artefacts, log) -> JSON payload`` as ``name``."""
    return _register(ANALYSES, "analysis", name)


def register_wrapper(name: str) -> Callable:
    """Decorator: registers ``factory(plan, target_variables, *, key) -> (network, variables)``,
    an inference-time wrapper audited as a row ``name``."""
    return _register(WRAPPERS, "wrapper", name)
