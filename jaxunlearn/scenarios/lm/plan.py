"""The plan of a language-model experiment: every default and check, before any compute.

:func:`lm_plan` turns an LM experiment config (``experiments/configs/lm_fictitious.py``) into an
:class:`LMPlan`: the benchmark (token arrays and evaluation fields of the corpus, see
:mod:`jaxunlearn.scenarios.lm.benchmark`), the transformer, the mesh, the training recipe of the
target and retain models, and one resolved entry per (scenario, rule). A config that cannot run
(an unknown key, rule or split, an empty forget split, a batch larger than its data) raises a
``ValueError`` naming the setting here.

The rule entries have the classifier track's form (``epochs``, ``forget_batch_size``,
``retain_batch_size``, ``hparams``) and are built by the same
:func:`~jaxunlearn.scenarios.plan.build_run` (the merging rules get their validation parts); the
target and retain models are trained by the registered ``retrain`` rule with the config's
``train`` recipe (:func:`~jaxunlearn.scenarios.plan.retrain_entry`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax

from jaxunlearn import rules as rules_lib
from jaxunlearn.core.checks import check_count
from jaxunlearn.core.types import Network
from jaxunlearn.scenarios.plan import (
    ENTRY_DEFAULTS,
    RETRAIN,
    build_run,
    plain,
    retrain_entry,
    rule_batch_sizes,
    scenario_entry,
    unknown_keys,
)
from jaxunlearn.train import data_mesh
from jaxunlearn.train.loop import check_batch_sizes

TRACK = "lm"
# Optional top-level keys and their defaults.
DEFAULTS: dict[str, Any] = {
    "data_kwargs": {},
    "model_kwargs": {},
    "root_seed": 0,
    "seeds": 1,
    "retain_seeds": 2,
    "data_parallel": True,
    "distributed": False,
    "scenarios": ("forget10",),
    "main_scenario": "",  # "": the first scenario
    "scenario_rules": (),
    "audit_points": 4,
    "eval": {},
    "muse_rules": (),
    "sustainability_requests": 3,
    "scalability_fractions": (0.25, 0.5, 1.0),
    "relearn_steps": 10,
    "train_passages": False,
}
REQUIRED = ("track", "dataset", "model", "rules", "train")
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 40,
    "batch_size": 32,
    "learning_rate": 2e-3,
    "optimizer": {"name": "adam"},
    "chunk_size": 0,
}
EVAL_DEFAULTS: dict[str, Any] = {
    "batch_size": 64,
    "retain_questions": 200,
    "max_new_tokens": 24,
    "leak_questions": 400,
    "leak_samples": 200,
    "sample_rows": 200,
    "leak_ks": (1, 4, 16, 64),
    "leak_rouge": 0.1,
    "min_k": 0.4,
}


@dataclasses.dataclass
class LMPlan:
    """A validated LM experiment.

    Attributes:
      benchmark: the corpus as token arrays (:class:`~jaxunlearn.scenarios.lm.benchmark.
        LMBenchmark`).
      network: the transformer.
      scenarios: the forget splits run, in order; ``main_scenario`` gets every rule, the table's
        trajectory plot and the MUSE scenarios, the others ``scenario_rules``.
      rules: rule names of the main scenario, in config order.
      entries: ``{scenario: {rule: resolved entry}}`` (``retrain``: the training recipe).
      seeds: unlearning runs per rule (one vmapped ensemble from copies of the target).
      retain_seeds: retain models of the main split (seed 0: the forget-quality reference; seed 1:
        the noise floor row); the other splits get one (:meth:`retain_count`).
      train: the resolved training recipe.
      eval: the resolved evaluation settings (:data:`EVAL_DEFAULTS`).
      mesh: the data mesh, or ``None``.
      root_seed: every model key derives from ``jax.random.key(root_seed)``.
      train_passages: the target and retain models also train on the authors' passages (as
        :attr:`LMBenchmark.passage_x` windows; a retain model never on its forget authors'), and
        the audits add MUSE's verbatim memorisation of the forget authors' passages.
      sources: what the fingerprints record of the data and model.
    """

    benchmark: Any
    network: Network
    scenarios: tuple[str, ...]
    main_scenario: str
    scenario_rules: tuple[str, ...]
    rules: tuple[str, ...]
    entries: dict
    seeds: int
    retain_seeds: int
    train: dict
    eval: dict
    audit_points: int
    mesh: Any
    root_seed: int
    muse_rules: tuple[str, ...]
    sustainability_requests: int
    scalability_fractions: tuple[float, ...]
    relearn_steps: int
    train_passages: bool = False
    sources: dict = dataclasses.field(default_factory=dict)

    def entry(self, scenario: str, name: str) -> dict:
        return self.entries[scenario][name]

    def retain_count(self, scenario: str) -> int:
        """Retain models of ``scenario``: ``retain_seeds`` on the main split, else one."""
        return self.retain_seeds if scenario == self.main_scenario else 1

    def rules_of(self, scenario: str) -> tuple[str, ...]:
        """The unlearning rules run on ``scenario``."""
        if scenario == self.main_scenario:
            return self.rules
        return tuple(r for r in self.scenario_rules if r in self.entries[scenario])

    @property
    def num_devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.devices.size

    def sizes(self, scenario: str) -> dict[str, int]:
        b = self.benchmark
        return {"forget": len(b.forget[scenario]), "retain": len(b.retain[scenario])}


def is_lm_config(config) -> bool:
    """Whether ``config`` is an LM-track config (``track = "lm"``)."""
    get = getattr(config, "get", None)
    return get is not None and get("track", None) == TRACK


def lm_plan(config, *, benchmark=None) -> LMPlan:
    """Validates an LM config and resolves its defaults; ``ValueError`` before any compute.

    Args:
      config: the experiment config (``ConfigDict`` or mapping) with ``track = "lm"``.
      benchmark: an :class:`~jaxunlearn.scenarios.lm.benchmark.LMBenchmark` to use instead of
        loading ``config.dataset`` (tests, notebooks that built one).
    """
    from jaxunlearn import models as models_lib
    from jaxunlearn.scenarios.lm import benchmark as bench_lib

    given = plain(config)
    unknown_keys("The LM config", given, {*REQUIRED, *DEFAULTS})
    missing = [k for k in REQUIRED if k not in given]
    if missing:
        raise ValueError(f"The LM config has no {missing}; every LM config sets {list(REQUIRED)}")
    if given["track"] != TRACK:
        raise ValueError(f"`track` must be {TRACK!r} for the LM runner; got {given['track']!r}")
    cfg = {**DEFAULTS, **given}
    unknown_keys("`train`", plain(cfg["train"]), TRAIN_DEFAULTS)
    train = {**TRAIN_DEFAULTS, **plain(cfg["train"])}
    check_count(train["epochs"], "train.epochs", 1)
    unknown_keys("`eval`", plain(cfg["eval"]), EVAL_DEFAULTS)
    ev = {**EVAL_DEFAULTS, **plain(cfg["eval"])}
    ev["leak_ks"] = tuple(int(k) for k in ev["leak_ks"])
    for name in ("batch_size", "leak_questions", "leak_samples", "sample_rows"):
        check_count(ev[name], f"eval.{name}", 1)
    if any(k < 1 or k > int(ev["leak_samples"]) for k in ev["leak_ks"]):
        raise ValueError(
            f"`eval.leak_ks` must lie in [1, eval.leak_samples={ev['leak_samples']}]; "
            f"got {list(ev['leak_ks'])}"
        )
    seeds = check_count(cfg["seeds"], "seeds", 1)
    retain_seeds = check_count(cfg["retain_seeds"], "retain_seeds", 1)
    audit_points = check_count(cfg["audit_points"], "audit_points", 1)
    scenarios = tuple(cfg["scenarios"])
    if not scenarios:
        raise ValueError("`scenarios` names no forget split")
    main = cfg["main_scenario"] or scenarios[0]
    if main not in scenarios:
        raise ValueError(f"`main_scenario` {main!r} is not one of `scenarios` {list(scenarios)}")
    rule_cfgs = {name: plain(rc) for name, rc in plain(cfg["rules"]).items()}
    if not rule_cfgs:
        raise ValueError("`rules` names no unlearning rule")
    if RETRAIN in rule_cfgs:
        raise ValueError(
            "`rules` must not list 'retrain': the retain models are trained with `train`"
        )
    valid_keys = sorted({*ENTRY_DEFAULTS, "per_scenario"})
    for name, rc in rule_cfgs.items():
        rules_lib.get(name)  # unknown rule: ValueError listing the valid ones
        unknown_keys(f"Rule config {name!r}", rc, valid_keys)
    for name in ("sustainability_requests", "relearn_steps"):
        check_count(cfg[name], name, 1)
    fractions = tuple(float(f) for f in cfg["scalability_fractions"])
    if not all(0.0 < f <= 1.0 for f in fractions):
        raise ValueError(
            f"`scalability_fractions` must lie in (0, 1] (shares of the forget authors); "
            f"got {list(fractions)}"
        )
    scenario_rules = tuple(cfg["scenario_rules"])
    for name in (*scenario_rules, *cfg["muse_rules"]):
        if name not in rule_cfgs:
            raise ValueError(
                f"`scenario_rules`/`muse_rules` name {name!r}, which `rules` does not configure; "
                f"configured: {sorted(rule_cfgs)}"
            )
    if benchmark is None:
        benchmark = bench_lib.load_benchmark(cfg["dataset"], plain(cfg["data_kwargs"]))
    for sname in scenarios:
        benchmark.check_split(sname)
    if cfg["train_passages"] and (benchmark.passage_x is None or not len(benchmark.passage_x)):
        raise ValueError("`train_passages` is set but the benchmark has no passages")
    if cfg["train_passages"]:  # every split's audit scores its forget authors' passages
        for sname in scenarios:
            if not len(benchmark.passage_rows(benchmark.authors_of(benchmark.forget[sname]))):
                raise ValueError(
                    f"`train_passages` is set but the forget authors of {sname!r} have no passages"
                )
    mk = plain(cfg["model_kwargs"])
    if "vocab_size" in mk or "max_len" in mk:
        raise ValueError(
            "`model_kwargs` must not set vocab_size or max_len: they come from the corpus (its "
            "tokenizer, its longest sequence and the longest prompt plus eval.max_new_tokens)"
        )
    # The context holds every training sequence and every prompt with its generated answer.
    context = max(benchmark.max_len, benchmark.prompts.shape[1] + int(ev["max_new_tokens"]))
    network = models_lib.make_network(
        cfg["model"],
        vocab_size=benchmark.vocab_size,
        max_len=context,
        pad_id=benchmark.pad_id,
        **mk,
    )
    n_dev = jax.device_count()
    mesh = data_mesh(n_dev) if bool(cfg["data_parallel"]) and n_dev > 1 else None
    devices = 1 if mesh is None else n_dev
    try:
        check_batch_sizes(
            {"retain": int(train["batch_size"])}, {"retain": len(benchmark.train)}, devices
        )
    except ValueError as e:
        raise ValueError(f"`train.batch_size`: {e}") from None
    recipe = {
        "epochs": train["epochs"],
        "batch_size": train["batch_size"],
        "learning_rate": train["learning_rate"],
    }
    entries: dict[str, dict[str, dict]] = {}
    for sname in scenarios:
        entries[sname] = {
            RETRAIN: _retrain_entry(recipe, train["optimizer"]),
        }
        names = rule_cfgs if sname == main else {n: rule_cfgs[n] for n in scenario_rules}
        sizes = {
            "forget": len(benchmark.forget[sname]),
            "retain": len(benchmark.retain[sname]),
        }
        for name, rc in names.items():
            entry = scenario_entry(rc, sname)
            entries[sname][name] = entry
            try:
                rules_lib.registry.check_hparams(name, plain(entry.get("hparams")))
                check_batch_sizes(rule_batch_sizes(name, entry), sizes, devices)
                build_run(
                    name,
                    network,
                    entry,
                    benchmark.y,
                    benchmark.forget[sname],
                    benchmark.retain[sname],
                    num_devices=devices,
                )
            except (ValueError, TypeError) as e:
                raise ValueError(f"Scenario {sname!r}, rule {name!r}: {e}") from None
    return LMPlan(
        benchmark=benchmark,
        network=network,
        scenarios=scenarios,
        main_scenario=main,
        scenario_rules=scenario_rules,
        rules=tuple(rule_cfgs),
        entries=entries,
        seeds=seeds,
        retain_seeds=retain_seeds,
        train=train,
        eval=ev,
        audit_points=audit_points,
        mesh=mesh,
        root_seed=int(cfg["root_seed"]),
        muse_rules=tuple(cfg["muse_rules"]),
        sustainability_requests=int(cfg["sustainability_requests"]),
        scalability_fractions=fractions,
        relearn_steps=int(cfg["relearn_steps"]),
        train_passages=bool(cfg["train_passages"]),
        sources={
            "dataset": cfg["dataset"],
            "data_kwargs": plain(cfg["data_kwargs"]),
            "model": cfg["model"],
            "model_kwargs": mk,
        },
    )


def _retrain_entry(recipe: Mapping, optimizer) -> dict:
    entry = retrain_entry({**recipe, "momentum": 0.0, "weight_decay": 0.0}, {})
    entry["hparams"]["optimizer"] = plain(optimizer)
    return entry
