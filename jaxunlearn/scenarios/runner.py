"""One experiment: dataset + forget scenarios + original + oracles + rules + audits -> records.

Every seed is a member of an ensemble: the originals of all seeds train in one vmapped program,
so do the oracles of a scenario and the unlearning runs of a rule. Expensive artefacts
(originals, oracles) are checkpointed under ``workdir`` with orbax and resumed; each finished
(scenario, rule) writes its records so a rerun skips it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxunlearn import audit as audit_lib
from jaxunlearn import data as data_lib
from jaxunlearn import ensemble as ensemble_lib
from jaxunlearn import models as models_lib
from jaxunlearn import rules as rules_lib
from jaxunlearn.audit import classification as cls
from jaxunlearn.audit import gold
from jaxunlearn.core.types import Network, Variables
from jaxunlearn.train import Progress, data_mesh, multihost, steps_per_epoch

ORIGINAL, RETRAIN = "original", "retrain"


@dataclasses.dataclass
class Record:
    """One row of ``results.json``: a method's audited model on one scenario and seed."""

    scenario: str
    method: str
    seed: int
    status: str
    metrics: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _plain(cfg) -> dict:
    if cfg is None:
        return {}
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


@dataclasses.dataclass
class Plan:
    """A validated experiment: everything needed, checked before any compute."""

    dataset: data_lib.Dataset
    network: Network
    scenarios: dict[str, data_lib.ForgetSpec]
    splits: dict[str, data_lib.Split]
    rules: dict[str, dict]
    audits: tuple[str, ...]
    seeds: int
    train: dict
    mesh: Any
    ensemble_audits: tuple[str, ...] = ()
    # U-LiRA: {"shadows", "rules", "scenarios", "targets"}; empty when off.
    ulira: dict = dataclasses.field(default_factory=dict)
    # {scenario: {rule: its config entry with the scenario's `per_scenario` overrides merged}}.
    entries: dict = dataclasses.field(default_factory=dict)

    def entry(self, scenario: str, name: str) -> dict:
        """Rule ``name``'s config entry as it applies to ``scenario``."""
        return self.entries[scenario][name]


# Keys of a rule's config entry (and of its `per_scenario` overrides).
_ENTRY_KEYS = ("epochs", "forget_batch_size", "retain_batch_size", "hparams")


def scenario_entry(rule_config: Mapping, scenario: str) -> dict:
    """A rule's config entry for ``scenario``: ``per_scenario[scenario]`` overrides the entry's
    epochs and batch sizes and is merged into its hyperparameters (the reference codebases tune
    class-wise and random forgetting separately)."""
    base = _plain(rule_config)
    override = _plain(_plain(base.pop("per_scenario", None)).get(scenario))
    merged = {**base, **{k: v for k, v in override.items() if k != "hparams"}}
    hparams = {**_plain(base.get("hparams")), **_plain(override.get("hparams"))}
    if hparams:
        merged["hparams"] = hparams
    return merged


def plan(config) -> Plan:
    """Validates ``config`` and resolves names; raises ``ValueError`` before any compute."""
    data_lib.check_name(config.dataset)
    models_lib.check_name(config.model)
    seeds = int(config.seeds)
    if seeds < 1:
        raise ValueError(f"`seeds` must be at least 1; got {seeds}")
    rules = {name: _plain(rc) for name, rc in _plain(config.rules).items()}
    for name, rc in rules.items():
        rules_lib.get(name)
        unknown = set(rc) - {*_ENTRY_KEYS, "per_scenario"}
        if unknown:
            raise ValueError(f"Rule config {name!r} has unknown keys {sorted(unknown)}; valid: "
                             f"{sorted({*_ENTRY_KEYS, 'per_scenario'})}")
    audits = tuple(config.audits)
    ensemble_audits = tuple(config.get("ensemble_audits", ()))
    scenario_cfg = _plain(config.scenarios)
    if not scenario_cfg:
        raise ValueError("The config names no forget `scenarios`")
    entries = {sname: {} for sname in scenario_cfg}
    for name, rc in rules.items():
        overrides = _plain(rc.get("per_scenario"))
        if set(overrides) - set(scenario_cfg):
            raise ValueError(f"Rule {name!r}: `per_scenario` names scenarios "
                             f"{sorted(set(overrides) - set(scenario_cfg))}; the config has "
                             f"{sorted(scenario_cfg)}")
        for sname, override in overrides.items():
            unknown = set(_plain(override)) - set(_ENTRY_KEYS)
            if unknown:
                raise ValueError(f"Rule {name!r}, `per_scenario.{sname}` has unknown keys "
                                 f"{sorted(unknown)}; valid: {list(_ENTRY_KEYS)}")
        for sname in scenario_cfg:
            entry = entries[sname][name] = scenario_entry(rc, sname)
            try:
                rules_lib.registry.check_hparams(name, _plain(entry.get("hparams")))
            except ValueError as e:
                raise ValueError(f"Scenario {sname!r}: {e}") from None
            if name != RETRAIN and float(entry.get("epochs", 1)) <= 0:
                raise ValueError(f"Rule {name!r}: `epochs` must be positive (scenario {sname!r})")
    dataset = data_lib.load(config.dataset, **_plain(config.get("data_kwargs")))
    audit_lib.check_names(audits, dataset.task)
    audit_lib.check_ensemble_names(ensemble_audits, dataset.task)
    if ensemble_audits and seeds < 2:
        raise ValueError(f"Ensemble audits {list(ensemble_audits)} need `seeds` >= 2 (one model "
                         f"per seed); got {seeds}")
    for name in rules:
        task = rules_lib.get(name).task
        if task not in ("any", dataset.task):
            raise ValueError(f"Rule {name!r} is for {task} tasks; {config.dataset!r} is "
                             f"{dataset.task}")
    for sname, scfg in scenario_cfg.items():
        _check_availability(sname, scfg, entries[sname])
        scfg.pop("retain_available", None)
        scfg.pop("labels_available", None)
    scenarios = {n: data_lib.ForgetSpec.from_config(s) for n, s in scenario_cfg.items()}
    splits = {n: data_lib.make_split(dataset, s, seed=int(config.get("forget_seed", 0)))
              for n, s in scenarios.items()}
    train = _plain(config.train)
    mesh = None
    n_dev = jax.device_count()
    if not config.get("data_parallel", True) and jax.process_count() > 1:
        raise ValueError(f"`data_parallel=False` keeps every model on one device, but this job has "
                         f"{jax.process_count()} processes: a multi-process job runs on the data "
                         "mesh over all of their devices.")
    if config.get("data_parallel", True) and n_dev > 1:
        mesh = data_mesh(n_dev)
    n_train = len(dataset.y_train)
    from jaxunlearn.train.loop import check_batch_sizes

    check_batch_sizes({"retain": int(train["batch_size"])}, {"retain": n_train},
                      n_dev if mesh is not None else 1)
    for sname, split in splits.items():
        sizes = {"forget": len(split.forget), "retain": len(split.retain)}
        for name, rc in entries[sname].items():
            if name == RETRAIN:
                continue
            try:
                check_batch_sizes(rule_batch_sizes(name, rc), sizes,
                                  n_dev if mesh is not None else 1)
            except ValueError as e:
                raise ValueError(f"Scenario {sname!r}, rule {name!r}: {e}") from None
    ulira = _ulira_plan(config, dataset, splits, entries, n_dev if mesh is not None else 1)
    network = models_lib.make_network(config.model, input_shape=dataset.input_shape,
                                      num_outputs=dataset.num_outputs,
                                      **_plain(config.get("model_kwargs")))
    return Plan(dataset, network, scenarios, splits, rules, audits, seeds, train, mesh,
                ensemble_audits, ulira, entries)


def _ulira_plan(config, dataset, splits: dict, entries: dict, num_devices: int) -> dict:
    """Validates the U-LiRA options (``ulira_shadows``, ``ulira_rules``, ``ulira_scenarios``,
    ``ulira_targets``); returns them resolved, or ``{}`` when ``ulira_shadows`` is 0."""
    from jaxunlearn.train.loop import check_batch_sizes

    shadows = int(config.get("ulira_shadows", 0))
    if not shadows:
        return {}
    if shadows < ensemble_lib.ulira.MIN_SHADOWS or shadows % 2:
        raise ValueError(f"`ulira_shadows` must be 0 (off) or an even number >= "
                         f"{ensemble_lib.ulira.MIN_SHADOWS}; got {shadows}")
    if dataset.task != "classification":
        raise ValueError("`ulira_shadows`: U-LiRA scores logit-scaled confidences of classifiers; "
                         f"{config.dataset!r} is a {dataset.task} dataset")
    rules = next(iter(entries.values()))
    unlearning = sorted(n for n in rules if n != RETRAIN)
    names = tuple(config.get("ulira_rules", ()))
    for name in names:
        if name not in unlearning:
            raise ValueError(f"`ulira_rules` names {name!r}, which is not an unlearning rule of "
                             f"this config; valid: {unlearning}")
    scenarios = tuple(config.get("ulira_scenarios", ())) or tuple(splits)
    for sname in scenarios:
        if sname not in splits:
            raise ValueError(f"`ulira_scenarios` names {sname!r}; the config has {sorted(splits)}")
    targets = int(config.get("ulira_targets", 0))
    for sname in scenarios:
        split = splits[sname]
        try:
            k = len(ensemble_lib.choose_targets(split.forget, targets or None))
        except ValueError as e:
            raise ValueError(f"Scenario {sname!r}, `ulira_targets`: {e}") from None
        sizes = {"forget": k // 2, "retain": len(split.retain)}
        for name in names:
            rc = entries[sname][name]
            try:
                check_batch_sizes(rule_batch_sizes(name, rc), sizes, num_devices)
            except ValueError as e:
                raise ValueError(f"U-LiRA shadows of scenario {sname!r} forget {k // 2} examples "
                                 f"each; rule {name!r}: {e}") from None
    return {"shadows": shadows, "rules": names, "scenarios": scenarios, "targets": targets}


def _check_availability(sname: str, scfg: dict, rules: dict) -> None:
    """Rejects rules that need data a scenario withholds (its retain set, or its labels)."""
    retain = bool(scfg.get("retain_available", True))
    labels = bool(scfg.get("labels_available", True))
    for name, rc in rules.items():
        info = rules_lib.get(name)
        if not retain and (name == RETRAIN or "retain" in info.parts):
            raise ValueError(f"Scenario {sname!r} gives no retain set (retain_available=False), "
                             f"but rule {name!r} needs one.")
        hp = _plain(rc.get("hparams"))
        # The retrain oracle is the audit's reference, not a method given the scenario's data.
        wants_labels = name != RETRAIN and (info.needs_labels or bool(hp.get("repair", False)))
        if not labels and wants_labels:
            raise ValueError(f"Scenario {sname!r} gives no labels (labels_available=False), but "
                             f"rule {name!r} needs them"
                             + (" for its `repair` stage." if not info.needs_labels else "."))


def _train_rule(p: Plan):
    t = p.train
    return rules_lib.finetune(
        p.network.apply, learning_rate=float(t["learning_rate"]),
        momentum=float(t.get("momentum", 0.9)), weight_decay=float(t.get("weight_decay", 5e-4)),
        train_mode=True)


def train_models(p: Plan, index: np.ndarray, keys, *, label: str, checkpoint_dir: str | None,
                 verbose: bool = True):
    """Trains one model per key from scratch on ``index`` with the config's recipe, in one
    vmapped program (:func:`jaxunlearn.ensemble.train`); returns the FitResult."""
    t = p.train
    return ensemble_lib.train(
        p.network, _train_rule(p), p.dataset.x_train, p.dataset.y_train, index, keys=keys,
        epochs=int(t["epochs"]), batch_size=int(t["batch_size"]), mesh=p.mesh,
        chunk_size=int(t.get("chunk_size", 0)) or None, checkpoint_dir=checkpoint_dir,
        progress=Progress(label, enabled=verbose), min_models=1)


def _model(variables: Variables, i: int) -> Variables:
    return jax.tree.map(lambda x: x[i], variables)


def _seed_keys(seeds: int, offset: int):
    return ensemble_lib.seed_keys(seeds, offset)


def run_experiment(config, workdir: str, *, verbose: bool = True) -> list[Record]:
    """Runs the experiment ``config`` in ``workdir`` and writes ``results.json``, table and plot.

    In a multi-process job (after ``jax.distributed.initialize()``) every process calls this with
    the same arguments and gets the records; only process 0 prints and writes files, and
    ``workdir`` must be shared by all processes (see :mod:`jaxunlearn.train.multihost`).

    Returns:
      The records: one per (scenario, method, seed), ``original`` and ``retrain`` included.
    """
    p = plan(config)
    verbose = verbose and multihost.is_primary()
    os.makedirs(workdir, exist_ok=True)
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)
    ckpt_root = os.path.join(workdir, "checkpoints")
    log(f"jaxunlearn: {config.dataset} / {config.model}, {p.seeds} seeds, "
        f"scenarios {list(p.scenarios)}, rules {list(p.rules)}")

    all_train = np.arange(len(p.dataset.y_train), dtype=np.int32)
    orig = train_models(p, all_train, _seed_keys(p.seeds, 0), label="original",
                        checkpoint_dir=os.path.join(ckpt_root, ORIGINAL), verbose=verbose)
    records: list[Record] = []
    for sname, split in p.splits.items():
        log(f"scenario {sname}: forget {len(split.forget)}, retain {len(split.retain)}")
        oracle = train_models(p, split.retain, _seed_keys(p.seeds, 10_000),
                              label=f"{sname}/retrain",
                              checkpoint_dir=os.path.join(ckpt_root, sname, RETRAIN),
                              verbose=verbose)
        scen_records = []
        retrain_records = _audit_all(p, sname, RETRAIN, oracle.variables, orig, oracle, oracle,
                                     runtime=oracle.runtime_s / p.seeds,
                                     compile_s=oracle.compile_s)
        original_records = _audit_all(p, sname, ORIGINAL, orig.variables, orig, oracle, orig,
                                      runtime=orig.runtime_s / p.seeds, compile_s=orig.compile_s)
        # The oracles themselves are the reference of ensemble audits, so only the original
        # is compared with them here (a retrain-vs-retrain baseline needs independent oracles).
        _add_ensemble_metrics(p, sname, ORIGINAL, original_records, orig.variables, orig, oracle,
                              retrain_records, workdir)
        shadows = _ulira_shadows(p, sname, ckpt_root, verbose=verbose)
        if shadows is not None:  # the attack on shadows that never unlearned: its full strength
            _add_group_metrics(original_records, gold.ulira_metrics(p.network, shadows, p.dataset))
        scen_records += original_records + retrain_records
        for name in p.rules:
            if name == RETRAIN:
                continue
            cache = os.path.join(workdir, "records", sname, f"{name}.json")
            if multihost.agree(os.path.exists(cache)):  # all processes skip, or none
                with open(cache) as f:
                    scen_records += [Record(**r) for r in json.load(f)]
                log(f"  {name}: restored finished records")
                continue
            res = _unlearn(p, sname, name, orig.variables, verbose=verbose)
            recs = _audit_all(p, sname, name, res.variables, orig, oracle, res,
                              runtime=res.runtime_s / p.seeds, compile_s=res.compile_s)
            _add_ensemble_metrics(p, sname, name, recs, res.variables, orig, oracle,
                                  retrain_records, workdir)
            if shadows is not None and name in p.ulira["rules"]:
                _add_group_metrics(recs, _ulira_after(p, sname, name, shadows, verbose=verbose))
            multihost.write_json(cache, [r.to_json() for r in recs])
            scen_records += recs
        _add_gaps(scen_records, audit_lib.gap_metrics(p.dataset.task))
        records += scen_records
    if not multihost.is_primary():
        return records
    from jaxunlearn.scenarios import report

    report.write_all(records, workdir, title=f"{config.dataset} / {config.model}")
    if p.ensemble_audits:
        path = report.per_example_plot(records, workdir,
                                       title=f"{config.dataset} / {config.model}, {p.seeds} models")
        if path:
            log(f"wrote {path}")
    return records


def rule_batch_sizes(name: str, rule_config: Mapping) -> dict[str, int]:
    """``{part: batch size}`` of a rule's config entry for the parts the rule reads (default 64)."""
    return {part: int(rule_config.get(f"{part}_batch_size", 64))
            for part in rules_lib.get(name).parts}


def rule_schedule(name: str, rule_config: Mapping, sizes: Mapping[str, int]):
    """``(batch sizes, steps per epoch, number of steps)`` of a rule's config entry for
    forget/retain sets of ``sizes``: ``epochs`` passes over the rule's epoch part (retain if it
    reads it, else forget), batch sizes defaulting to 64."""
    info = rules_lib.get(name)
    bs = rule_batch_sizes(name, rule_config)
    spe = steps_per_epoch(sizes[info.epoch_part], bs[info.epoch_part])
    num_steps = max(1, int(math.ceil(float(rule_config.get("epochs", 1)) * spe)))
    return bs, spe, num_steps


def build_rule(name: str, network, rule_config: Mapping, sizes: Mapping[str, int], *,
               forget_classes: tuple[int, ...] = (), **overrides):
    """Rule ``name`` built from its config entry for forget/retain sets of ``sizes``: ``(rule,
    batch sizes, number of steps)``, the steps being ``epochs`` passes over its epoch part.

    The registry also gets the run's schedule, the forget set's share of the training set and
    the forgotten classes of a class-wise scenario (``Split.classes``); ``overrides`` replace
    hyperparameters of the entry (a sweep's grid value)."""
    bs, spe, num_steps = rule_schedule(name, rule_config, sizes)
    hparams = {**_plain(rule_config.get("hparams")), **overrides}
    rule = rules_lib.make(name, network, num_steps=num_steps, steps_per_epoch=spe,
                          forget_fraction=forget_fraction(sizes),
                          forget_classes=tuple(forget_classes) or None, **hparams)
    return rule, bs, num_steps


def forget_fraction(sizes: Mapping[str, int]) -> float:
    """``|D_f| / (|D_f| + |D_r|)`` for forget/retain sets of ``sizes``."""
    return sizes["forget"] / (sizes["forget"] + sizes["retain"])


def _unlearn(p: Plan, sname: str, name: str, originals: Variables, *, verbose: bool):
    split = p.splits[sname]
    index = {"forget": split.forget, "retain": split.retain}
    sizes = {part: len(ix) for part, ix in index.items()}
    rule, bs, num_steps = build_rule(name, p.network, p.entry(sname, name), sizes,
                                     forget_classes=split.classes)
    return ensemble_lib.unlearn(
        rule, originals, p.dataset.x_train, p.dataset.y_train, {part: index[part] for part in bs},
        keys=_seed_keys(p.seeds, 20_000), batch_sizes=bs, num_steps=num_steps, mesh=p.mesh,
        progress=Progress(f"{sname}/{name}", enabled=verbose), min_models=1)


def _ulira_shadows(p: Plan, sname: str, ckpt_root: str, *, verbose: bool):
    """U-LiRA's trained shadow models of scenario ``sname`` (checkpointed), or ``None``."""
    if not p.ulira or sname not in p.ulira["scenarios"]:
        return None
    split = p.splits[sname]
    t = p.train
    targets = ensemble_lib.choose_targets(split.forget, p.ulira["targets"] or None)
    shadows, _ = ensemble_lib.ulira.train_shadows(
        p.network, _train_rule(p), p.dataset.x_train, p.dataset.y_train, split.retain, targets,
        num_shadows=p.ulira["shadows"], epochs=int(t["epochs"]), batch_size=int(t["batch_size"]),
        mesh=p.mesh, chunk_size=int(t.get("chunk_size", 0)) or None,
        checkpoint_dir=os.path.join(ckpt_root, sname, "ulira_shadows"),
        progress=Progress(f"{sname}/ulira_shadows", enabled=verbose))
    return shadows


def _ulira_after(p: Plan, sname: str, name: str, shadows, *, verbose: bool) -> dict:
    """U-LiRA AUC and TPR of rule ``name``: every shadow unlearns its in set with the rule."""
    sizes = {"forget": len(shadows.targets) // 2, "retain": len(shadows.base)}
    rule, bs, num_steps = build_rule(name, p.network, p.entry(sname, name), sizes)
    unlearned, _ = ensemble_lib.ulira.unlearn_shadows(
        shadows, rule, p.dataset.x_train, p.dataset.y_train, batch_sizes=bs, num_steps=num_steps,
        mesh=p.mesh, progress=Progress(f"{sname}/{name}/ulira", enabled=verbose))
    return gold.ulira_metrics(p.network, unlearned, p.dataset)


def _add_group_metrics(recs: list[Record], group: Mapping[str, float]) -> None:
    for r in recs:
        if r.status == "ok":
            r.metrics.update(group)


def _audit_all(p: Plan, sname: str, method: str, variables, orig, oracle, result, *,
               runtime: float, compile_s: float) -> list[Record]:
    diverged = np.broadcast_to(np.asarray(getattr(result, "diverged", False)), (p.seeds,))
    out = []
    for s in range(p.seeds):
        ctx = audit_lib.AuditContext(
            network=p.network, dataset=p.dataset, split=p.splits[sname],
            variables=_model(variables, s), original=_model(orig.variables, s),
            oracle=_model(oracle.variables, s), runtime_s=runtime, compile_s=compile_s,
            extra={"seed": s})
        # Diverged: non-finite parameters, or finite ones whose outputs overflow.
        if diverged[s] or not ctx.outputs_finite():
            out.append(Record(sname, method, s, "diverged",
                              {"runtime_s": runtime, "compile_s": compile_s}))
            continue
        out.append(Record(sname, method, s, "ok", audit_lib.run(p.audits, ctx)))
    return out


def _add_ensemble_metrics(p: Plan, sname: str, method: str, recs: list[Record], variables,
                          orig, oracle, retrain_records: list[Record], workdir: str) -> None:
    """Ensemble audits compare a method's N runs with the N oracles; each of the method's records
    gets the group's metrics (the same values for every seed), and the per-example arrays behind
    them go to ``workdir/ensemble/<scenario>/<method>.npz``."""
    if not p.ensemble_audits:
        return
    ok = [r.seed for r in recs if r.status == "ok"]
    if len(ok) < 2:
        return  # too few finished runs for a distributional audit
    take = lambda tree: jax.tree.map(lambda x: x[np.asarray(ok)], tree)
    ctx = audit_lib.EnsembleContext(
        network=p.network, dataset=p.dataset, split=p.splits[sname],
        unlearned=take(variables), oracle=take(oracle.variables),
        original=take(orig.variables), records=[recs[s].metrics for s in ok],
        oracle_records=[retrain_records[s].metrics for s in ok], method=method)
    group = audit_lib.run_ensemble(p.ensemble_audits, ctx)
    for s in ok:
        recs[s].metrics.update(group)
    arrays = gold.per_example_arrays(ctx)
    if not multihost.is_primary():
        return
    path = os.path.join(workdir, "ensemble", sname, f"{method}.npz")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, models=np.asarray(ok), **arrays)


def _add_gaps(records: list[Record], keys) -> None:
    reference = {r.seed: r.metrics for r in records if r.method == RETRAIN and r.status == "ok"}
    for r in records:
        if r.status == "ok" and r.seed in reference:
            gap = cls.avg_gap(r.metrics, reference[r.seed], keys)
            if not math.isnan(gap):
                r.metrics["Avg_gap"] = gap


def load_results(path: str) -> list[Record]:
    """Reads ``results.json`` back into records."""
    with open(path) as f:
        return [Record(**r) for r in json.load(f)]


def summarize(records: list[Record]) -> Mapping:
    """``{(scenario, method): {metric: (mean, std, n)}}`` over seeds with status ok."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r.scenario, r.method), []).append(r)
    out = {}
    for key, recs in groups.items():
        ok = [r for r in recs if r.status == "ok"]
        metrics = sorted({m for r in ok for m in r.metrics})
        stats = {}
        for m in metrics:
            vals = np.array([r.metrics[m] for r in ok if m in r.metrics], float)
            stats[m] = (float(np.mean(vals)), float(np.std(vals)), len(vals))
        out[key] = {"stats": stats, "n": len(recs), "diverged": len(recs) - len(ok)}
    return out


