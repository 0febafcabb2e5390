"""The plan of a robust-LM experiment: the rules, audits and analyses, checked before any compute.

:func:`robust_plan` turns a ``track = "lm_robust"`` config (``experiments/configs/lm_robust.py``)
into a :class:`RobustPlan`: the benchmark of :mod:`~jaxunlearn.scenarios.lm_robust.benchmark`, an
:class:`~jaxunlearn.scenarios.lm.plan.LMPlan` for it (built by the LM scenario's
:func:`~jaxunlearn.scenarios.lm.plan.lm_plan`: the transformer, the training recipe of the target
and retain models, one resolved entry per rule), and the audit and analysis settings.

The rules are every rule the registry marks ``task="language_model"`` (a rule registered later,
e.g. ``concept_ablation``, joins without a config change), plus the config's ``extra_rules``
(task ``"any"`` rules such as gradient ascent), minus ``exclude_rules``. Each gets
``rule_defaults`` (its ``learning_rate`` only if the rule takes one) overridden by its entry in
``rules``.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

from jaxunlearn import rules as rules_lib
from jaxunlearn.scenarios.lm.plan import LMPlan, lm_plan
from jaxunlearn.scenarios.lm_robust import benchmark as bench_lib
from jaxunlearn.scenarios.plan import plain, unknown_keys

TRACK = "lm_robust"
REQUIRED = ("track", "dataset", "model", "train")
DEFAULTS: dict[str, Any] = {
    "data_kwargs": {},
    "variants": {},
    "model_kwargs": {},
    "root_seed": 0,
    "seeds": 2,
    "data_parallel": True,
    "distributed": False,
    "rule_tasks": ("language_model",),
    "extra_rules": (),
    "exclude_rules": (),
    "rule_defaults": {},
    "rules": {},
    "audits": (),  # () = every audit of AUDITS
    "audit": {},
    "analyses": (),
    "wrappers": (),
}
RULE_DEFAULTS: dict[str, Any] = {
    "epochs": 1,
    "forget_batch_size": 16,
    "retain_batch_size": 16,
    "hparams": {"learning_rate": 5e-4},
}


@dataclasses.dataclass
class RobustPlan:
    """A validated robust-LM experiment.

    Attributes:
      bench: the :class:`~jaxunlearn.scenarios.lm_robust.benchmark.RobustBenchmark`.
      lm: the LM plan of its rows (network, recipe, rule entries, mesh, seeds, root seed).
      rules: the rules run, in order.
      audits: the audits run (names of :data:`~jaxunlearn.scenarios.lm_robust.audits.AUDITS`).
      audit: the resolved audit settings.
      analyses, wrappers: names of :data:`~jaxunlearn.scenarios.lm_robust.extensions.ANALYSES`
        and :data:`~jaxunlearn.scenarios.lm_robust.extensions.WRAPPERS` to run.
      variants: the resolved variant settings.
    """

    bench: Any
    lm: LMPlan
    rules: tuple[str, ...]
    audits: tuple[str, ...]
    audit: dict
    analyses: tuple[str, ...]
    wrappers: tuple[str, ...]
    variants: dict

    @property
    def split(self) -> str:
        return self.bench.split

    @property
    def network(self):
        return self.lm.network


def is_lm_robust_config(config) -> bool:
    """Whether ``config`` is a robust-LM config (``track = "lm_robust"``)."""
    get = getattr(config, "get", None)
    return get is not None and get("track", None) == TRACK


def select_rules(rule_tasks, extra_rules=(), exclude_rules=()) -> tuple[str, ...]:
    """Registered rules whose task is in ``rule_tasks``, then ``extra_rules``, minus
    ``exclude_rules`` (registry order; unknown names are a ``ValueError``)."""
    for name in (*extra_rules, *exclude_rules):
        rules_lib.get(name)
    chosen = [n for n in rules_lib.names() if rules_lib.get(n).task in tuple(rule_tasks)]
    chosen += [n for n in extra_rules if n not in chosen]
    return tuple(n for n in chosen if n not in set(exclude_rules))


def _takes(name: str, hparam: str) -> bool:
    params = inspect.signature(rules_lib.get(name).factory).parameters
    return hparam in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def rule_entry(name: str, defaults: dict, override: dict) -> dict:
    """``defaults`` (hyperparameters the rule does not take dropped) overridden by ``override``
    (its hyperparameters merged)."""
    base = {k: v for k, v in defaults.items() if k != "hparams"}
    hp = {k: v for k, v in plain(defaults.get("hparams")).items() if _takes(name, k)}
    entry = {**base, **{k: v for k, v in override.items() if k != "hparams"}}
    entry["hparams"] = {**hp, **plain(override.get("hparams"))}
    return entry


def robust_plan(config, *, bench=None) -> RobustPlan:
    """Validates a robust-LM config; ``ValueError`` naming the setting before any compute.

    Args:
      config: the config (``ConfigDict`` or mapping) with ``track = "lm_robust"``.
      bench: a :class:`~jaxunlearn.scenarios.lm_robust.benchmark.RobustBenchmark` to use instead
        of building one from ``data_kwargs`` and ``variants``.
    """
    from jaxunlearn.scenarios.lm_robust import audits as audits_lib
    from jaxunlearn.scenarios.lm_robust import extensions

    given = plain(config)
    unknown_keys("The lm_robust config", given, {*REQUIRED, *DEFAULTS})
    missing = [k for k in REQUIRED if k not in given]
    if missing:
        raise ValueError(f"The lm_robust config has no {missing}; it sets {list(REQUIRED)}")
    if given["track"] != TRACK:
        raise ValueError(f"`track` must be {TRACK!r}; got {given['track']!r}")
    cfg = {**DEFAULTS, **given}
    if cfg["dataset"] != "fictitious_authors":
        raise ValueError(
            f"`dataset` must be 'fictitious_authors' (the corpus whose variants the audits need); "
            f"got {cfg['dataset']!r}"
        )
    variants = bench_lib.check_variants(plain(cfg["variants"]))
    names = select_rules(cfg["rule_tasks"], cfg["extra_rules"], cfg["exclude_rules"])
    overrides = {k: plain(v) for k, v in plain(cfg["rules"]).items()}
    stray = sorted(set(overrides) - set(names))
    if stray:
        raise ValueError(
            f"`rules` configures {stray}, which are not run (not selected by `rule_tasks`/"
            f"`extra_rules`, or excluded); run: {list(names)}"
        )
    if not names:
        raise ValueError("no rule selected: `rule_tasks` and `extra_rules` name none")
    defaults = {**RULE_DEFAULTS, **plain(cfg["rule_defaults"])}
    entries = {n: rule_entry(n, defaults, overrides.get(n, {})) for n in names}
    audits = tuple(cfg["audits"]) or tuple(audits_lib.AUDITS)
    unknown = [a for a in audits if a not in audits_lib.AUDITS]
    if unknown:
        raise ValueError(
            f"`audits` names unknown audits {unknown}; valid: {list(audits_lib.AUDITS)}"
        )
    audit = audits_lib.resolve_settings(plain(cfg["audit"]))
    for kind, chosen, table in (
        ("analyses", cfg["analyses"], extensions.ANALYSES),
        ("wrappers", cfg["wrappers"], extensions.WRAPPERS),
    ):
        bad = [a for a in chosen if a not in table]
        if bad:
            raise ValueError(f"`{kind}` names unregistered {bad}; registered: {sorted(table)}")
    if bench is None:
        bench = bench_lib.build_benchmark(plain(cfg["data_kwargs"]), variants)
    lm_config = {
        "track": "lm",
        "dataset": cfg["dataset"],
        # The fingerprints of the trained models cover the corpus and its variants.
        "data_kwargs": {**plain(cfg["data_kwargs"]), "variants": _jsonable(variants)},
        "model": cfg["model"],
        "model_kwargs": plain(cfg["model_kwargs"]),
        "root_seed": cfg["root_seed"],
        "seeds": cfg["seeds"],
        "retain_seeds": 1,
        "data_parallel": cfg["data_parallel"],
        "distributed": cfg["distributed"],
        "scenarios": (bench.split,),
        "rules": entries,
        "train": plain(cfg["train"]),
        "eval": {"max_new_tokens": int(audit["max_new_tokens"])},
    }
    lm = lm_plan(lm_config, benchmark=bench.lm)
    return RobustPlan(
        bench=bench,
        lm=lm,
        rules=names,
        audits=audits,
        audit=audit,
        analyses=tuple(cfg["analyses"]),
        wrappers=tuple(cfg["wrappers"]),
        variants=variants,
    )


def _jsonable(v: dict) -> dict:
    return {k: list(x) if isinstance(x, tuple) else x for k, x in v.items()}
