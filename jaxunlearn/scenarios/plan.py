"""The plan of an experiment: every config default and every check, resolved before any compute.

:func:`plan` turns an experiment config (``ml_collections.ConfigDict`` or a plain mapping) into a
:class:`Plan`: the dataset, the network, the forget splits, one resolved entry per (scenario,
rule), the audits and the U-LiRA options. Everything that can be wrong with a config (an unknown
name, a batch larger than its data, a rule that needs labels a scenario withholds) raises a
``ValueError`` naming the setting here, so that nothing is trained for a config that cannot run.

The defaults of every optional config key live in :data:`DEFAULTS` (top level),
:data:`TRAIN_DEFAULTS` (the training recipe of originals, oracles and shadow models) and
:data:`ENTRY_DEFAULTS` (a rule entry); nothing downstream reads the config again.

The training recipe is the registered ``retrain`` rule's entry: originals, oracles and U-LiRA
shadows are all trained from scratch by that rule (:mod:`jaxunlearn.scenarios.artefacts`), so the
oracle is checked and scheduled like every other rule.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from jaxunlearn import audit as audit_lib
from jaxunlearn import data as data_lib
from jaxunlearn import ensemble as ensemble_lib
from jaxunlearn import models as models_lib
from jaxunlearn import rules as rules_lib
from jaxunlearn.core.checks import check_count
from jaxunlearn.core.types import Network
from jaxunlearn.data import augment as augment_lib
from jaxunlearn.train import data_mesh, steps_per_epoch
from jaxunlearn.train.loop import check_batch_sizes

ORIGINAL, RETRAIN = "original", "retrain"
# `originals`: every run unlearns its own original (KLoM's benchmark), or all runs unlearn one
# shared original (the NeurIPS 2023 competition: 512 runs from one model).
ORIGINALS = ("per_run", "shared")

# Optional top-level config keys and their defaults.
DEFAULTS: dict[str, Any] = {
    "data_kwargs": {},
    "data_dir": "",  # where TFDS datasets are prepared ("": TFDS's default); not for in-memory data
    "model_kwargs": {},
    "forget_seed": 0,  # the forget sets' random draw
    "root_seed": 0,  # every model's key derives from jax.random.key(root_seed) (see artefacts)
    "data_parallel": True,
    "distributed": False,
    "ensemble_audits": (),
    "ulira_shadows": 0,  # 0: U-LiRA off
    "ulira_rules": (),
    "ulira_scenarios": (),  # empty: every scenario
    "ulira_targets": 0,  # 0: the whole forget set (rounded down to an even count)
    # On-device augmentation of every training batch of originals, oracles, shadows and rules
    # (jaxunlearn.data.augment): "auto" is the dataset's default (crop_flip on CIFAR-10/100).
    "augmentation": augment_lib.AUTO,
    "originals": "per_run",  # one of ORIGINALS
}
# Top-level config keys without a default.
REQUIRED = ("dataset", "model", "seeds", "scenarios", "rules", "audits")
# The training recipe (`config.train`) of originals, oracles and shadows.
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 30,
    "batch_size": 64,
    "learning_rate": 0.05,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "chunk_size": 0,  # steps per compiled chunk; 0: fit's default
}
# Keys of a rule's config entry (and of its `per_scenario` overrides), with their defaults.
ENTRY_DEFAULTS: dict[str, Any] = {
    "epochs": 1,
    "forget_batch_size": 64,
    "retain_batch_size": 64,
    "hparams": {},
    # Shown under the results table (a marker on the method): what the config's author found, e.g.
    # that no stable learning rate forgets on this scenario. Not part of any fingerprint.
    "note": "",
}
# Scenario keys besides the forget spec's: what the scenario gives the methods.
_AVAILABILITY_KEYS = ("retain_available", "labels_available")
# The recipe's SGD settings, given to the retrain rule as its optimizer settings.
_TRAIN_OPTIMIZER = ("momentum", "weight_decay")
# Where the validation parts a rule declares (``RuleInfo.validation_parts``: the merging rules'
# choice of lambda) are drawn from, and their batch size (capped at the set's size).
VALIDATION_SOURCES = {"val_forget": "forget", "val_control": "retain"}
VALIDATION_BATCH_SIZE = 128


def unknown_keys(where: str, keys, valid) -> None:
    """Raises a ``ValueError`` naming the first of ``keys`` not in ``valid``, with the closest
    valid key ("did you mean") and the valid ones."""
    valid = sorted(valid)
    for key in keys:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise ValueError(f"{where} has an unknown key {key!r}{hint} Valid keys: {valid}")


def plain(cfg) -> dict:
    """A ConfigDict, a mapping or ``None`` as a plain dict."""
    if cfg is None:
        return {}
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


@dataclasses.dataclass
class Plan:
    """A validated experiment: everything needed, checked before any compute.

    Attributes:
      dataset, network: the data and the functional model.
      scenarios, splits: forget specs and their index sets, by scenario name.
      rules: the config's rule names, in order (``retrain``, the oracle, always among them).
      audits, ensemble_audits: the per-model and ensemble audits.
      seeds: N, models per ensemble (originals, oracles, runs of each rule).
      train: the resolved training recipe (:data:`TRAIN_DEFAULTS` filled in).
      mesh: the data-parallel mesh, or ``None``.
      ulira: ``{"shadows", "rules", "scenarios", "targets"}``; empty when U-LiRA is off.
      entries: ``{scenario: {rule: resolved entry}}`` (``per_scenario`` merged, defaults filled).
      root_seed, forget_seed: the root of every model key, and the forget sets' draw.
      sources: the config's ``dataset``, ``data_kwargs``, ``model``, ``model_kwargs`` as given
        (what :mod:`jaxunlearn.scenarios.fingerprint` records of the data and model).
      augmentation: the resolved augmentation name (:mod:`jaxunlearn.data.augment`) of every
        training batch: originals, oracles, shadows and unlearning runs.
      originals: ``"per_run"`` (run ``s`` unlearns original ``s``) or ``"shared"`` (every run
        unlearns original 0, as the NeurIPS 2023 competition does).
      retain_available: ``{scenario: whether it gives the methods its retain set}`` (the
        scenario's ``retain_available``, default true).
    """

    dataset: data_lib.Dataset
    network: Network
    scenarios: dict[str, data_lib.ForgetSpec]
    splits: dict[str, data_lib.Split]
    rules: tuple[str, ...]
    audits: tuple[str, ...]
    seeds: int
    train: dict
    mesh: Any
    ensemble_audits: tuple[str, ...] = ()
    ulira: dict = dataclasses.field(default_factory=dict)
    entries: dict = dataclasses.field(default_factory=dict)
    root_seed: int = 0
    forget_seed: int = 0
    sources: dict = dataclasses.field(default_factory=dict)
    augmentation: str = "none"
    originals: str = "per_run"
    retain_available: dict = dataclasses.field(default_factory=dict)

    def entry(self, scenario: str, name: str) -> dict:
        """Rule ``name``'s resolved config entry as it applies to ``scenario``."""
        return self.entries[scenario][name]

    @property
    def num_devices(self) -> int:
        """Devices each batch is split over (1 without a mesh)."""
        return 1 if self.mesh is None else self.mesh.devices.size


def retrain_entry(train: Mapping, rule_config: Mapping) -> dict:
    """The ``retrain`` rule's entry: the training recipe, overridden by the config's entry."""
    base = {
        "epochs": train["epochs"],
        "retain_batch_size": train["batch_size"],
        "hparams": {
            "learning_rate": train["learning_rate"],
            "optimizer": {k: train[k] for k in _TRAIN_OPTIMIZER},
        },
    }
    rc = plain(rule_config)
    merged = {**base, **{k: v for k, v in rc.items() if k != "hparams"}}
    merged["hparams"] = {**base["hparams"], **plain(rc.get("hparams"))}
    return merged


def scenario_entry(rule_config: Mapping, scenario: str) -> dict:
    """A rule's config entry for ``scenario``: ``per_scenario[scenario]`` overrides the entry's
    epochs and batch sizes and is merged into its hyperparameters (the reference codebases tune
    class-wise and random forgetting separately)."""
    base = plain(rule_config)
    override = plain(plain(base.pop("per_scenario", None)).get(scenario))
    merged = {**base, **{k: v for k, v in override.items() if k != "hparams"}}
    hparams = {**plain(base.get("hparams")), **plain(override.get("hparams"))}
    if hparams:
        merged["hparams"] = hparams
    return merged


def validation_batch_size(size: int, num_devices: int = 1) -> int:
    """The batch size of a validation part drawn from ``size`` examples:
    :data:`VALIDATION_BATCH_SIZE`, or fewer for a smaller set, rounded down to a multiple of the
    devices (at least one batch per device)."""
    bs = min(VALIDATION_BATCH_SIZE, int(size))
    return max(bs - bs % num_devices, num_devices)


def rule_batch_sizes(
    name: str,
    rule_config: Mapping,
    sizes: Mapping[str, int] | None = None,
    num_devices: int = 1,
) -> dict[str, int]:
    """``{part: batch size}`` of a rule's config entry for the parts the rule reads: the entry's
    ``<part>_batch_size`` for its forget/retain parts, and :func:`validation_batch_size` for the
    validation parts it declares that ``sizes`` (the index sets' sizes) has."""
    info = rules_lib.get(name)
    out = {
        part: int(rule_config.get(f"{part}_batch_size", ENTRY_DEFAULTS[f"{part}_batch_size"]))
        for part in info.parts
    }
    for part in info.validation_parts:
        if sizes is not None and part in sizes:
            out[part] = validation_batch_size(sizes[part], num_devices)
    return out


def rule_schedule(
    name: str,
    rule_config: Mapping,
    sizes: Mapping[str, int],
    *,
    num_classes: int | None = None,
    forget_classes: tuple[int, ...] = (),
    num_devices: int = 1,
):
    """``(batch sizes, steps per epoch, forget steps per epoch, number of steps)`` of a rule's
    config entry for index sets of ``sizes``: ``epochs`` epochs, an epoch being a pass over the
    rule's epoch part (retain if it reads it, else forget) unless the rule declares its own run
    length (:func:`jaxunlearn.rules.num_steps`, which gets ``num_classes`` and
    ``forget_classes``). The forget steps per epoch are ``None`` for a rule that reads no forget
    data."""
    info = rules_lib.get(name)
    bs = rule_batch_sizes(name, rule_config, sizes, num_devices)
    spe = steps_per_epoch(sizes[info.epoch_part], bs[info.epoch_part])
    fspe = steps_per_epoch(sizes["forget"], bs["forget"]) if "forget" in bs else None
    epochs = float(rule_config.get("epochs", ENTRY_DEFAULTS["epochs"]))
    num_steps = rules_lib.num_steps(
        name,
        epochs,
        steps_per_epoch=spe,
        forget_steps_per_epoch=fspe,
        hparams=plain(rule_config.get("hparams")),
        num_classes=num_classes,
        forget_classes=tuple(forget_classes) or None,
    )
    return bs, spe, fspe, num_steps


def forget_fraction(sizes: Mapping[str, int]) -> float:
    """``|D_f| / (|D_f| + |D_r|)`` for forget/retain sets of ``sizes``."""
    return sizes["forget"] / (sizes["forget"] + sizes["retain"])


def build_rule(
    name: str,
    network,
    rule_config: Mapping,
    sizes: Mapping[str, int],
    *,
    forget_classes: tuple[int, ...] = (),
    num_devices: int = 1,
    scenario_sizes: Mapping[str, int] | None = None,
    **overrides,
):
    """Rule ``name`` built from its config entry for index sets of ``sizes``: ``(rule, batch
    sizes, number of steps)``, the steps being ``epochs`` passes over its epoch part (see
    :func:`rule_schedule`; ``sizes`` are those of :func:`rule_index`'s sets).

    The registry also gets the run's schedule, the forget set's share of the training set (from
    ``scenario_sizes``, the scenario's forget and retain sizes, when the rule's index sets are
    others; default ``sizes``) and the forgotten classes of a class-wise scenario
    (``Split.classes``); ``overrides`` replace hyperparameters of the entry (a sweep's grid
    value)."""
    bs, spe, fspe, num_steps = rule_schedule(
        name,
        rule_config,
        sizes,
        num_classes=network.num_outputs,
        forget_classes=forget_classes,
        num_devices=num_devices,
    )
    hparams = {**plain(rule_config.get("hparams")), **overrides}
    scenario = sizes if scenario_sizes is None else scenario_sizes
    rule = rules_lib.make(
        name,
        network,
        num_steps=num_steps,
        steps_per_epoch=spe,
        forget_steps_per_epoch=fspe,
        forget_fraction=forget_fraction(scenario)
        if {"forget", "retain"} <= set(scenario)
        else None,
        forget_classes=tuple(forget_classes) or None,
        **hparams,
    )
    return rule, bs, num_steps


def rule_index(
    name: str,
    rule_config: Mapping,
    forget,
    retain,
    *,
    labels,
    num_classes: int,
    forget_classes: tuple[int, ...] = (),
    retain_available: bool = True,
) -> tuple[dict[str, Any], dict]:
    """The index sets rule ``name``'s batches are drawn from, and its entry for them.

    Usually the scenario's ``forget`` and ``retain`` sets, for the parts the rule reads; what
    the references feed a rule beyond that comes from the registry:

    * a rule's own index sets (``RuleInfo.index_sets``): UNSIR's reference schedule draws its
      retain batches from the reference's retain subsample and counts its steps with it (the
      returned entry carries the subsample's ``retain_per_class``; see
      :func:`jaxunlearn.rules.unsir.reference_retain_subsample`);
    * the validation parts a rule declares (``RuleInfo.validation_parts``): the merging rules
      choose the scale of their edit by NegMerge's criterion, the lowest forget accuracy with a
      control accuracy of at least 0.95 x the original's, on ``val_forget`` batches drawn from
      the forget set and ``val_control`` batches drawn from the retain set. The references hold
      these splits out of the data their task vectors are trained on; a forget set has no
      held-out copy (an example is forgotten, not generalised from), so the criterion is
      evaluated on the very data UA and RA are measured on. A scenario that withholds the retain
      set gives no validation parts (the rules then keep ``lambda = 1``).

    Args:
      name: the rule.
      rule_config: its resolved entry for the scenario.
      forget, retain: the scenario's index sets into the training set (``forget`` may carry a
        leading model axis, as a U-LiRA shadow ensemble's in-sets do).
      labels: the training labels (``y_train``).
      num_classes: the data set's classes.
      forget_classes: the forgotten classes of a class-wise scenario.
      retain_available: whether the scenario gives the methods its retain set.

    Returns:
      ``(index, entry)``: ``{part: indices}`` for every batch part, and the entry with the
      hyperparameters the index sets determine merged into its ``hparams``.
    """
    info = rules_lib.get(name)
    index: dict[str, Any] = {"forget": forget, "retain": retain}
    entry = dict(rule_config)
    if info.index_sets is not None:
        hparams = plain(entry.get("hparams"))
        index, overrides = info.index_sets(
            index,
            labels=labels,
            num_classes=num_classes,
            forget_classes=tuple(forget_classes),
            hparams=hparams,
        )
        if overrides:
            entry["hparams"] = {**hparams, **overrides}
    parts = list(info.parts)
    if retain_available:
        for part in info.validation_parts:
            index[part] = index[VALIDATION_SOURCES[part]]
            parts.append(part)
    return {part: index[part] for part in parts}, entry


def build_run(
    name: str,
    network,
    rule_config: Mapping,
    labels,
    forget,
    retain,
    *,
    forget_classes: tuple[int, ...] = (),
    retain_available: bool = True,
    num_devices: int = 1,
    **overrides,
):
    """Rule ``name`` and the data of its run: ``(rule, index sets, batch sizes, number of
    steps)``, from :func:`rule_index` and :func:`build_rule` (``overrides``: hyperparameters
    replacing the entry's, as a sweep's grid value)."""
    index, entry = rule_index(
        name,
        rule_config,
        forget,
        retain,
        labels=labels,
        num_classes=network.num_outputs,
        forget_classes=forget_classes,
        retain_available=retain_available,
    )
    sizes = {part: int(np.shape(ix)[-1]) for part, ix in index.items()}
    rule, bs, num_steps = build_rule(
        name,
        network,
        entry,
        sizes,
        forget_classes=forget_classes,
        num_devices=num_devices,
        scenario_sizes={"forget": int(np.shape(forget)[-1]), "retain": int(np.shape(retain)[-1])},
        **overrides,
    )
    return rule, index, bs, num_steps


def plan(config) -> Plan:
    """Validates ``config`` and resolves names and defaults; raises ``ValueError`` before any
    compute."""
    given = plain(config)
    unknown_keys("The config", given, {*REQUIRED, *DEFAULTS, "train"})
    missing = [k for k in REQUIRED if k not in given]
    if missing:
        raise ValueError(f"The config has no {missing}; every config sets {list(REQUIRED)}")
    cfg = {**DEFAULTS, **given}
    data_lib.check_name(cfg["dataset"])
    models_lib.check_name(cfg["model"])
    _augmentation(cfg["augmentation"], cfg["dataset"])
    if cfg["originals"] not in ORIGINALS:
        raise ValueError(f"`originals` must be one of {list(ORIGINALS)}; got {cfg['originals']!r}")
    seeds = check_count(cfg["seeds"], "seeds", 1)
    unknown_keys("`train`", plain(cfg.get("train")), TRAIN_DEFAULTS)
    train = {**TRAIN_DEFAULTS, **plain(cfg.get("train"))}
    check_count(train["epochs"], "train.epochs", 1)
    rule_cfgs = {name: plain(rc) for name, rc in plain(cfg["rules"]).items()}
    rule_cfgs.setdefault(RETRAIN, {})  # the oracle: every audit's reference
    valid_keys = sorted({*ENTRY_DEFAULTS, "per_scenario"})
    for name, rc in rule_cfgs.items():
        rules_lib.get(name)
        unknown_keys(f"Rule config {name!r}", rc, valid_keys)
    audits = tuple(cfg["audits"])
    ensemble_audits = tuple(cfg["ensemble_audits"])
    scenario_cfg = {n: plain(s) for n, s in plain(cfg.get("scenarios")).items()}
    if not scenario_cfg:
        raise ValueError("The config names no forget `scenarios`")
    entries: dict[str, dict[str, dict]] = {sname: {} for sname in scenario_cfg}
    for name, rc in rule_cfgs.items():
        overrides = plain(rc.get("per_scenario"))
        if set(overrides) - set(scenario_cfg):
            raise ValueError(
                f"Rule {name!r}: `per_scenario` names scenarios "
                f"{sorted(set(overrides) - set(scenario_cfg))}; the config has "
                f"{sorted(scenario_cfg)}"
            )
        for sname, override in overrides.items():
            unknown_keys(f"Rule {name!r}, `per_scenario.{sname}`", plain(override), ENTRY_DEFAULTS)
        for sname in scenario_cfg:
            entry = scenario_entry(rc, sname)
            if name == RETRAIN:
                entry = retrain_entry(train, entry)
            entries[sname][name] = entry
            try:
                rules_lib.registry.check_hparams(name, plain(entry.get("hparams")))
            except ValueError as e:
                raise ValueError(f"Scenario {sname!r}: {e}") from None
            if float(entry.get("epochs", ENTRY_DEFAULTS["epochs"])) <= 0:
                raise ValueError(f"Rule {name!r}: `epochs` must be positive (scenario {sname!r})")
            if not isinstance(entry.get("note", ""), str):
                raise ValueError(
                    f"Rule {name!r}: `note` must be a string shown under the table; got "
                    f"{entry['note']!r} (scenario {sname!r})"
                )
            if name == RETRAIN and float(entry["epochs"]) != int(entry["epochs"]):
                raise ValueError(
                    f"Rule {name!r} trains whole epochs from scratch; got epochs="
                    f"{entry['epochs']} (scenario {sname!r})"
                )
    dataset = _load(cfg["dataset"], plain(cfg["data_kwargs"]), str(cfg["data_dir"] or ""))
    augmentation = _augmentation(cfg["augmentation"], cfg["dataset"], dataset.input_shape)
    audit_lib.check_names(audits, dataset.task)
    audit_lib.check_ensemble_names(ensemble_audits, dataset.task)
    if ensemble_audits and seeds < 2:
        raise ValueError(
            f"Ensemble audits {list(ensemble_audits)} need `seeds` >= 2 (one model "
            f"per seed); got {seeds}"
        )
    for name in rule_cfgs:
        task = rules_lib.get(name).task
        if task not in ("any", dataset.task):
            raise ValueError(
                f"Rule {name!r} is for {task} tasks; {cfg['dataset']!r} is {dataset.task}"
            )
    retain_available = {}
    for sname, scfg in scenario_cfg.items():
        unknown_keys(f"Scenario {sname!r}", scfg, {*data_lib.forget.FIELDS, *_AVAILABILITY_KEYS})
        _check_availability(sname, scfg, entries[sname])
        retain_available[sname] = bool(scfg.pop("retain_available", True))
        scfg.pop("labels_available", None)
    scenarios = {n: data_lib.ForgetSpec.from_config(s) for n, s in scenario_cfg.items()}
    forget_seed = int(cfg["forget_seed"])
    splits = {n: data_lib.make_split(dataset, s, seed=forget_seed) for n, s in scenarios.items()}
    n_dev = jax.device_count()
    data_parallel = bool(cfg["data_parallel"])
    if not data_parallel and jax.process_count() > 1:
        raise ValueError(
            f"`data_parallel=False` keeps every model on one device, but this job has "
            f"{jax.process_count()} processes: a multi-process job runs on the data "
            "mesh over all of their devices."
        )
    mesh = data_mesh(n_dev) if data_parallel and n_dev > 1 else None
    devices = n_dev if mesh is not None else 1
    n_train = len(dataset.y_train)
    try:
        check_batch_sizes({"retain": int(train["batch_size"])}, {"retain": n_train}, devices)
    except ValueError as e:
        raise ValueError(f"`train.batch_size`: {e}") from None
    for sname, split in splits.items():
        for name, rc in entries[sname].items():
            try:
                index, rc = rule_index(
                    name,
                    rc,
                    split.forget,
                    split.retain,
                    labels=dataset.y_train,
                    num_classes=dataset.num_outputs,
                    forget_classes=split.classes,
                    retain_available=retain_available[sname],
                )
                sizes = {part: len(ix) for part, ix in index.items()}
                check_batch_sizes(rule_batch_sizes(name, rc, sizes, devices), sizes, devices)
            except ValueError as e:
                raise ValueError(f"Scenario {sname!r}, rule {name!r}: {e}") from None
    ulira = _ulira_plan(cfg, dataset, splits, entries, ensemble_audits, devices)
    network = models_lib.make_network(
        cfg["model"],
        input_shape=dataset.input_shape,
        num_outputs=dataset.num_outputs,
        **plain(cfg["model_kwargs"]),
    )
    for sname, split in splits.items():  # every factory's own checks (finite positive rates)
        for name, entry in entries[sname].items():
            try:
                build_run(
                    name,
                    network,
                    entry,
                    dataset.y_train,
                    split.forget,
                    split.retain,
                    forget_classes=split.classes,
                    retain_available=retain_available[sname],
                    num_devices=devices,
                )
            except (ValueError, TypeError) as e:
                raise ValueError(f"Scenario {sname!r}, rule {name!r}: {e}") from None
    return Plan(
        dataset=dataset,
        network=network,
        scenarios=scenarios,
        splits=splits,
        rules=tuple(rule_cfgs),
        audits=audits,
        seeds=seeds,
        train=train,
        mesh=mesh,
        ensemble_audits=ensemble_audits,
        ulira=ulira,
        entries=entries,
        root_seed=int(cfg["root_seed"]),
        forget_seed=forget_seed,
        retain_available=retain_available,
        sources={
            "dataset": cfg["dataset"],
            "data_kwargs": {k: v for k, v in plain(cfg["data_kwargs"]).items() if k != "data_dir"},
            "model": cfg["model"],
            "model_kwargs": plain(cfg["model_kwargs"]),
        },
        augmentation=augmentation,
        originals=str(cfg["originals"]),
    )


def _augmentation(name, dataset: str, input_shape=None) -> str:
    """The config's ``augmentation`` resolved for ``dataset`` (see
    :func:`jaxunlearn.data.augment.resolve`), its errors naming the setting."""
    try:
        return augment_lib.resolve(name, dataset, input_shape)
    except ValueError as e:
        raise ValueError(f"`augmentation`: {e}") from None


def _load(name: str, kwargs: dict, data_dir: str):
    """The dataset; ``data_dir`` (the config's top-level key) goes to a TFDS loader."""
    if data_dir:
        if "data_dir" in kwargs and kwargs["data_dir"] != data_dir:
            raise ValueError(
                f"`data_dir` is set twice: data_dir={data_dir!r} and "
                f"data_kwargs.data_dir={kwargs['data_dir']!r}; set `data_dir` only"
            )
        kwargs = {**kwargs, "data_dir": data_dir}
    try:
        return data_lib.load(name, **kwargs)
    except TypeError as e:
        if "data_dir" in kwargs and "data_dir" in str(e):
            raise ValueError(
                f"`data_dir` is where TFDS datasets are prepared; dataset {name!r} is not one "
                "(it is built in memory): leave `data_dir` unset"
            ) from None
        raise ValueError(f"`data_kwargs` of dataset {name!r}: {e}") from None


def _ulira_plan(
    cfg: Mapping, dataset, splits: dict, entries: dict, ensemble_audits, num_devices: int
) -> dict:
    """Validates the options of the ``ulira`` ensemble audit (``ulira_shadows``, ``ulira_rules``,
    ``ulira_scenarios``, ``ulira_targets``); returns them resolved, or ``{}`` when it is off."""
    shadows = int(cfg["ulira_shadows"])
    listed = "ulira" in ensemble_audits
    if listed != bool(shadows):
        raise ValueError(
            "U-LiRA runs when `ensemble_audits` names 'ulira' and `ulira_shadows` is positive; "
            f"got ensemble_audits={list(ensemble_audits)}, ulira_shadows={shadows}"
        )
    if not shadows:
        return {}
    if shadows < ensemble_lib.ulira.MIN_SHADOWS or shadows % 2:
        raise ValueError(
            f"`ulira_shadows` must be 0 (off) or an even number >= "
            f"{ensemble_lib.ulira.MIN_SHADOWS}; got {shadows}"
        )
    rules = next(iter(entries.values()))
    unlearning = sorted(n for n in rules if n != RETRAIN)
    names = tuple(cfg["ulira_rules"])
    for name in names:
        if name not in unlearning:
            raise ValueError(
                f"`ulira_rules` names {name!r}, which is not an unlearning rule of "
                f"this config; valid: {unlearning}"
            )
    scenarios = tuple(cfg["ulira_scenarios"]) or tuple(splits)
    for sname in scenarios:
        if sname not in splits:
            raise ValueError(f"`ulira_scenarios` names {sname!r}; the config has {sorted(splits)}")
    targets = int(cfg["ulira_targets"])
    for sname in scenarios:
        split = splits[sname]
        try:
            k = len(ensemble_lib.choose_targets(split.forget, targets or None))
        except ValueError as e:
            raise ValueError(f"Scenario {sname!r}, `ulira_targets`: {e}") from None
        sizes = {"forget": k // 2, "retain": len(split.retain)}
        sizes.update({part: sizes[source] for part, source in VALIDATION_SOURCES.items()})
        for name in names:
            try:
                bs = rule_batch_sizes(name, entries[sname][name], sizes, num_devices)
                check_batch_sizes(bs, sizes, num_devices)
            except ValueError as e:
                raise ValueError(
                    f"U-LiRA shadows of scenario {sname!r} forget {k // 2} examples "
                    f"each; rule {name!r}: {e}"
                ) from None
    return {"shadows": shadows, "rules": names, "scenarios": scenarios, "targets": targets}


def _check_availability(sname: str, scfg: dict, rules: dict) -> None:
    """Rejects rules that need data a scenario withholds (its retain set, or its labels)."""
    retain = bool(scfg.get("retain_available", True))
    labels = bool(scfg.get("labels_available", True))
    for name, rc in rules.items():
        info = rules_lib.get(name)
        # The retrain oracle is the audits' reference, trained on the split's retain set whatever
        # the scenario gives the methods.
        if name == RETRAIN:
            continue
        if not retain and "retain" in info.parts:
            raise ValueError(
                f"Scenario {sname!r} gives no retain set (retain_available=False), "
                f"but rule {name!r} needs one."
            )
        hp = plain(rc.get("hparams"))
        stages = info.label_stages(hp)
        if not labels and (info.needs_labels or stages):
            raise ValueError(
                f"Scenario {sname!r} gives no labels (labels_available=False), but "
                f"rule {name!r} needs them"
                + (f" for its `{stages[0]}` stage." if not info.needs_labels else ".")
            )
