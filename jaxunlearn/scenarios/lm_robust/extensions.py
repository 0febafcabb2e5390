"""Extension points of the robust-LM experiment: inference wrappers and analyses.

Not every method of issue 12 is a weight update that the rule registry can run:

* an **inference wrapper** (ECO prompts: a prompt classifier plus embedding corruption at
  inference, the weights never change) is registered with :func:`register_wrapper` as
  ``factory(plan, target_variables, *, key) -> (network, variables, info)``: the wrapped
  :class:`~jaxunlearn.core.types.Network` (its ``apply`` applies the wrapper), the variables it
  runs with and a JSON ``info`` dict (what was fitted; ``results.json`` ``wrappers[name]``). The
  experiment audits it as one more row, named after the wrapper, next to the rules. The audits
  that read ``network.apply`` or decode with
  :func:`~jaxunlearn.models.generation.generate` (which applies a wrapper's
  ``apply.prompt_embed_offset``) see the wrapper: forms, structure, relearning (from its
  variables), in-context, probes, WaterDrum, retain similarity. Those that read the parameters
  directly (:data:`~jaxunlearn.scenarios.lm_robust.audits.READS_WEIGHTS`: concept vectors, the
  GCG search) would see the unwrapped model, so they are not run on a wrapper and its row shows
  ``n/a`` there;
* an **analysis** (UnTrac's data attribution, a synthetic forget set built by sampling the model)
  is registered with :func:`register_analysis` as ``analysis(plan, artefacts, log) -> payload``
  (anything JSON-serialisable; ``artefacts`` is the run's
  :class:`~jaxunlearn.scenarios.lm.artefacts.LMArtefacts`, whose ``target()`` and
  ``retain(plan.split)`` are the trained models). Its payload lands in ``results.json`` under
  ``analyses[name]``.

A config names the ones to run in ``wrappers`` and ``analyses`` and sets their keyword arguments
in ``methods[name]`` (over the ``defaults`` given at registration; :func:`settings`); an
unregistered name or an unknown setting is a ``ValueError`` when the plan is built. Both are
cached like the rules: a rerun restores a wrapper's row and an analysis's payload when the
fingerprint (data, model, recipe, audits, the method's settings) matches. Registering is done by
the module defining the method, at import time, e.g.::

    from jaxunlearn.scenarios.lm_robust import extensions

    @extensions.register_analysis("untrac", defaults={"train_steps": 300})
    def untrac_analysis(plan, artefacts, log):
        ...
        return {"spearman": rho}

The issue's three (ECO, UnTrac, the synthetic forget set) are in
:mod:`~jaxunlearn.scenarios.lm_robust.methods`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

ANALYSES: dict[str, Callable] = {}
WRAPPERS: dict[str, Callable] = {}
DEFAULTS: dict[str, dict] = {}  # {name: default settings} of every wrapper and analysis
# {name: report(payload) -> str}: a wrapper's info or an analysis's payload as a small table.
REPORTS: dict[str, Callable[[dict], str]] = {}


def _register(
    table: dict, kind: str, name: str, defaults: Mapping | None, report: Callable | None
) -> Callable:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a {kind} name must be a non-empty string; got {name!r}")
    if name in (ANALYSES if table is WRAPPERS else WRAPPERS):
        raise ValueError(f"{name!r} is already registered as another kind of extension")

    def decorate(fn: Callable) -> Callable:
        if name in table and table[name] is not fn:
            raise ValueError(f"{kind} {name!r} is already registered")
        table[name] = fn
        DEFAULTS[name] = dict(defaults or {})
        if report is not None:
            REPORTS[name] = report
        return fn

    return decorate


def register_analysis(
    name: str, defaults: Mapping | None = None, report: Callable | None = None
) -> Callable:
    """Decorator: registers ``analysis(plan, artefacts, log) -> JSON payload`` as ``name``, with
    its default settings (:func:`settings`) and ``report(payload) -> str``, the small table
    printed after the rule x audit table."""
    return _register(ANALYSES, "analysis", name, defaults, report)


def register_wrapper(
    name: str, defaults: Mapping | None = None, report: Callable | None = None
) -> Callable:
    """Decorator: registers ``factory(plan, target_variables, *, key) -> (network, variables,
    info)``, an inference-time wrapper audited as a row ``name``, with its default settings and
    ``report(info) -> str``."""
    return _register(WRAPPERS, "wrapper", name, defaults, report)


def settings(name: str, given: Mapping | None = None) -> dict:
    """The registered defaults of extension ``name`` overridden by ``given`` (a config's
    ``methods[name]``); ``ValueError`` naming an unknown key as ``methods.<name>.<key>``."""
    if name not in DEFAULTS:
        raise ValueError(
            f"no wrapper or analysis {name!r} is registered; registered: {sorted(DEFAULTS)}"
        )
    given = dict(given or {})
    bad = sorted(set(given) - set(DEFAULTS[name]))
    if bad:
        raise ValueError(
            f"`methods.{name}` has unknown keys {bad}; valid: {sorted(DEFAULTS[name])}"
        )
    return {**DEFAULTS[name], **given}
