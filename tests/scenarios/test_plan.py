"""The plan: every config check fails before compute, entries resolve, every config plans."""

import glob
import importlib
import os

import jax
import pytest
from config_testing import tiny_config

from experiments.configs import default
from jaxunlearn import data as data_lib
from jaxunlearn import rules
from jaxunlearn.scenarios import Plan, build_rule, fingerprint, plan, scenario_entry
from jaxunlearn.scenarios.plan import DEFAULTS, RETRAIN, TRAIN_DEFAULTS, rule_schedule

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"dataset": "imagenet"}, "valid datasets"),
        ({"model": "transformer-xxl"}, "valid models"),
        ({"audits": ("accuracy", "vibes")}, "valid audits"),
        ({"scenarios.random_10pct.fraction": 1.5}, "fraction"),
        ({"scenarios.class_0.classes": (42,)}, "classes"),
        ({"rules.finetune.retain_batch_size": 100_000}, "larger than"),
        ({"rules.finetune.hparams": {"lr": 0.1}}, "valid"),
        ({"seeds": 0}, "seeds"),
        ({"rules.finetune.per_scenario": {"class_9": {"epochs": 2}}}, "per_scenario.*class_0"),
        ({"rules.finetune.per_scenario": {"class_0": {"lr": 0.1}}}, "unknown key 'lr'"),
        # Unknown keys of a config file, with the closest valid key.
        ({"sedds": 3}, "unknown key 'sedds'; did you mean 'seeds'"),
        ({"scenarios.random_10pct.fractoin": 0.1}, "'random_10pct'.*'fractoin'.*'fraction'"),
        ({"rules.finetune.epoch": 2}, "'finetune'.*'epoch'; did you mean 'epochs'"),
        ({"train.epochs": 0}, "`train.epochs` must be an integer >= 1; got 0"),
        ({"rules.finetune.epochs": 0}, "'finetune'.*positive"),
        # Every rule's own checks run at plan time: the recipe's and the rules' rates.
        ({"train.learning_rate": float("nan")}, "'retrain'.*finite and positive"),
        ({"train.learning_rate": -0.1}, "'retrain'.*finite and positive"),
        ({"rules.finetune.hparams.learning_rate": float("inf")}, "'finetune'.*finite"),
        ({"rules.gradient_ascent.hparams": {"learning_rate": "fast"}}, "'gradient_ascent'"),
        ({"data_dir": "/tmp/tfds"}, "`data_dir` is where TFDS datasets are prepared"),
        (
            {"rules.finetune.per_scenario": {"class_0": {"hparams": {"lr": 0.1}}}},
            "Scenario 'class_0'.*valid",
        ),
        ({"rules.finetune.per_scenario": {"class_0": {"epochs": 0}}}, "positive"),
        ({"rules.finetune.note": 3}, "`note` must be a string"),
        ({"augmentation": "flip"}, r"`augmentation`: Unknown augmentation 'flip'.*'crop_flip'"),
        ({"originals": "one"}, r"`originals` must be one of \['per_run', 'shared'\]"),
    ],
)
def test_bad_config_fails_before_compute(overrides, message):
    with pytest.raises(ValueError, match=message):
        plan(tiny_config(**overrides))


def test_per_scenario_entries_override_the_rule_entry():
    # One entry per rule, with overrides for a scenario (the reference codebases tune class-wise
    # and random forgetting separately): epochs and batch sizes replace, hparams merge.
    base = {"epochs": 1, "hparams": {"learning_rate": 0.01, "optimizer": {"momentum": 0.5}}}
    override = {"class_0": {"epochs": 3, "hparams": {"learning_rate": 0.1}}}
    assert scenario_entry({**base, "per_scenario": override}, "class_0") == {
        "epochs": 3,
        "hparams": {"learning_rate": 0.1, "optimizer": {"momentum": 0.5}},
    }
    assert scenario_entry({**base, "per_scenario": override}, "random_10pct") == base
    p = plan(tiny_config(**{"rules.finetune": {**base, "per_scenario": override}}))
    steps = {}
    for sname, split in p.splits.items():
        sizes = {"forget": len(split.forget), "retain": len(split.retain)}
        steps[sname] = build_rule("finetune", p.network, p.entry(sname, "finetune"), sizes)[2]
    # class_0 runs 3 retain epochs, random_10pct 1 (retain sets of 1295 and 1293 examples).
    assert steps["class_0"] == 3 * (1295 // 64) and steps["random_10pct"] == 1293 // 64


def test_unknown_rule_and_missing_retain_are_rejected():
    c = tiny_config()
    c.rules = {"forget_it_all": {}}
    with pytest.raises(ValueError, match="valid rules"):
        plan(c)
    c = tiny_config()
    c.scenarios = {"forget_only": {"kind": "class", "classes": (0,), "retain_available": False}}
    c.rules = {"gradient_ascent": {"epochs": 1, "forget_batch_size": 32}, "finetune": {"epochs": 1}}
    with pytest.raises(ValueError, match="no retain set"):
        plan(c)


def test_rules_that_need_labels_are_rejected_when_a_scenario_has_none():
    c = tiny_config()
    c.scenarios = {"unlabelled": {"kind": "class", "classes": (0,), "labels_available": False}}
    c.rules = {
        "retrain": {},
        "label_agnostic_forgetting": {"epochs": 1, "hparams": {"repair": True}},
    }
    with pytest.raises(ValueError, match="repair"):
        plan(c)
    c.rules = {"retrain": {}, "random_label": {"epochs": 1}}
    with pytest.raises(ValueError, match="no labels"):
        plan(c)
    c.rules = {"retrain": {}, "label_agnostic_forgetting": {"epochs": 1}}
    plan(c)  # label-free unlearning is fine


def _config_modules():
    paths = sorted(glob.glob(os.path.join(ROOT, "experiments", "configs", "*.py")))
    names = [os.path.basename(p)[:-3] for p in paths if not p.endswith("__init__.py")]
    # Every config file of every track: each is planned by its track's plan function
    # (experiments.common.TRACKS), which checks it and builds what it would train, training
    # nothing; the checks below then look at the plan each track returns.
    return [importlib.import_module(f"experiments.configs.{n}") for n in names]


def _check_rule_schedules(entry_of, scenarios, sizes_of, rule_names_of):
    # Every rule of every scenario exists, reads the parts it declares and runs at least a step.
    for sname in scenarios:
        sizes = sizes_of(sname)
        assert sizes["forget"] >= 1 and sizes["retain"] >= 1
        for name in rule_names_of(sname):
            batch_sizes, _, _, num_steps = rule_schedule(name, entry_of(sname, name), sizes)
            assert num_steps >= 1 and set(batch_sizes) == set(rules.get(name).parts)


def _split_sizes(split):
    return {"forget": len(split.forget), "retain": len(split.retain)}


def _check_classifier(p):
    assert isinstance(p, Plan) and RETRAIN in p.rules and p.seeds >= 1
    _check_rule_schedules(p.entry, p.splits, lambda s: _split_sizes(p.splits[s]), lambda s: p.rules)


def _check_lm(p):
    from jaxunlearn.scenarios.lm import LMPlan

    assert isinstance(p, LMPlan) and p.seeds >= 1 and p.retain_seeds >= 1
    assert p.main_scenario in p.scenarios and set(p.entries) == set(p.scenarios)
    assert all(RETRAIN in p.entries[s] for s in p.scenarios)
    assert p.rules and set(p.rules) <= set(rules.names())
    assert p.network.name == "transformer"
    # Prompts plus the generated answer fit the model's context.
    assert p.network.spec.max_len >= p.benchmark.prompts.shape[1] + p.eval["max_new_tokens"]
    _check_rule_schedules(p.entry, p.scenarios, p.sizes, p.rules_of)


def _check_lm_robust(p):
    from jaxunlearn.scenarios.lm_robust import RobustPlan, audits, extensions

    assert isinstance(p, RobustPlan) and p.lm.rules == p.rules
    _check_lm(p.lm)
    assert p.lm.scenarios == (p.split,) and p.audits and set(p.audits) <= set(audits.AUDITS)
    assert set(p.wrappers) <= set(extensions.WRAPPERS)
    assert set(p.analyses) <= set(extensions.ANALYSES)


def _check_ssl(p):
    from jaxunlearn import repr as repr_lib
    from jaxunlearn.repr import unlearning
    from jaxunlearn.scenarios import ssl

    assert isinstance(p, ssl.SSLPlan) and p.encoders and set(p.encoders) <= set(repr_lib.names())
    if not p.cfg["explicit_rules"]:  # the registry is iterated: every rule trained or skipped
        assert set(p.encoders) | set(p.cfg["skipped"]) == set(repr_lib.names())
    u = p.cfg["unlearn"]
    assert set(u["encoders"]) <= set(p.encoders) and set(p.splits) == set(u["forget"])
    assert set(p.methods) == {(e, s) for e in u["encoders"] for s in p.splits}
    assert set(u["rules"]) <= set(unlearning.label_free_names())
    for built in p.methods.values():
        assert list(built) == [ssl.ASCENT, *u["rules"]]
    for split in p.splits.values():
        assert len(split.forget) >= 1 and len(split.retain) >= 1
        assert not set(split.forget) & set(split.retain)


def _check_learned_rule(p):
    import math

    from jaxunlearn.scenarios import learned_rule

    assert isinstance(p, learned_rule.LearnedRulePlan)
    assert p.architecture[0] == math.prod(p.dataset.input_shape)
    assert p.trainer.settings == p.cfg["meta_settings"] and p.cfg["evaluation"]["seeds"] >= 1


def _check_unlearnable(cfg):
    from jaxunlearn.unlearnable import registry

    assert cfg["seeds"] >= 1 and cfg["fractions"] and all(0 < f <= 1 for f in cfg["fractions"])
    assert cfg["methods"] and cfg["countermeasures"]
    assert {m["generator"] for m in cfg["methods"].values()} <= set(registry.names())


# What each track's plan must hold; a new track adds its check here.
_PLAN_CHECKS = {
    "classifier": _check_classifier,
    "lm": _check_lm,
    "lm_robust": _check_lm_robust,
    "ssl": _check_ssl,
    "unlearnable": _check_unlearnable,
    "learned_rule": _check_learned_rule,
}


def test_every_track_has_a_plan_check():
    from experiments import common

    assert set(_PLAN_CHECKS) == set(common.TRACKS)


@pytest.mark.parametrize(
    "module, variant",
    [(m, v) for m in _config_modules() for v in m.VARIANTS],
    ids=lambda x: getattr(x, "__name__", x).rsplit(".", 1)[-1] or "plain",
)
def test_every_config_variant_plans(module, variant):
    # Plan only (data, splits, rule entries, schedules, mesh; the ssl encoders and methods and the
    # learned rule's meta-training built abstractly): nothing is trained. The tests run on 8 CPU
    # devices, so every batch size must also split over them.
    from experiments import common

    config = module.get_config(variant)
    _PLAN_CHECKS[common.track(config)](common.plan(config))
    with pytest.raises(ValueError, match="variant"):
        module.get_config("no-such-variant")


def test_the_oracle_is_the_retrain_rule_with_the_training_recipe():
    c = tiny_config()
    del c.rules["retrain"]  # the oracle is planned whether or not the config lists it
    c.train.learning_rate = 0.07
    del c.train["momentum"]  # a default of TRAIN_DEFAULTS
    p = plan(c)
    entry = p.entry("class_0", RETRAIN)
    assert entry["epochs"] == c.train.epochs and entry["retain_batch_size"] == c.train.batch_size
    assert entry["hparams"] == {
        "learning_rate": 0.07,
        "optimizer": {
            "momentum": TRAIN_DEFAULTS["momentum"],
            "weight_decay": c.train.weight_decay,
        },
    }
    assert p.root_seed == DEFAULTS["root_seed"] and p.mesh is None
    # A config's retrain entry overrides the recipe for the oracles only.
    p = plan(tiny_config(**{"rules.retrain": {"hparams": {"learning_rate": 0.2}}}))
    assert p.entry("class_0", RETRAIN)["hparams"]["learning_rate"] == 0.2
    assert p.train["learning_rate"] == 0.05
    # Checked like every rule: its batch size, its epochs.
    with pytest.raises(ValueError, match="rule 'retrain'.*larger than"):
        plan(tiny_config(**{"rules.retrain": {"retain_batch_size": 100_000}}))
    with pytest.raises(ValueError, match="'retrain'.*positive"):
        plan(tiny_config(**{"rules.retrain": {"epochs": 0}}))
    with pytest.raises(ValueError, match="'retrain' trains whole epochs"):
        plan(tiny_config(**{"rules.retrain": {"epochs": 2.5}}))
    with pytest.raises(ValueError, match="`train` has an unknown key 'lr'"):
        plan(tiny_config(**{"train.lr": 0.1}))


def test_a_plan_is_built_on_the_data_mesh_of_every_device():
    p = plan(tiny_config(data_parallel=True))
    assert p.num_devices == jax.device_count() == 8
    with pytest.raises(ValueError, match="divisible"):
        plan(tiny_config(data_parallel=True, **{"rules.finetune.retain_batch_size": 60}))


def test_data_dir_reaches_the_tfds_loader(tmp_path):
    # `--config.data_dir=...` (the key the loader's "not prepared" message names) is passed to
    # the TFDS loader, which looks there and downloads nothing.
    tfds_datasets = pytest.importorskip("jaxunlearn.data.tfds_datasets")
    pytest.importorskip("tensorflow_datasets")
    assert default.get_config().data_dir == ""  # settable from the command line
    with pytest.raises(tfds_datasets.DatasetNotPreparedError) as info:
        plan(tiny_config(dataset="mnist", data_dir=str(tmp_path)))
    assert str(tmp_path) in str(info.value) and "--config.data_dir" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_augmentation_is_read_resolved_and_fingerprinted(monkeypatch):
    assert plan(tiny_config()).augmentation == "none"  # "auto" on digits
    p = plan(tiny_config(augmentation="crop_flip"))
    assert p.augmentation == "crop_flip"
    # A changed augmentation changes the originals', oracles' and every record's fingerprint.
    base = plan(tiny_config())
    assert fingerprint.original_fields(p)["augmentation"] == "crop_flip"
    for fields in (fingerprint.original_fields, lambda q: fingerprint.oracle_fields(q, "class_0")):
        assert fingerprint.digest(fields(p)) != fingerprint.digest(fields(base))
    assert fingerprint.digest(fingerprint.record_fields(p, "class_0", "finetune")) != (
        fingerprint.digest(fingerprint.record_fields(base, "class_0", "finetune"))
    )
    # "auto" is the dataset's default, resolved before anything is loaded; an unknown name fails
    # before the data are even read.
    monkeypatch.setattr(data_lib, "load", lambda *a, **k: pytest.fail("data loaded"))
    with pytest.raises(ValueError, match="Unknown augmentation 'crop_and_flip'"):
        plan(tiny_config(augmentation="crop_and_flip"))


def test_augmentation_of_non_image_data_is_rejected():
    from experiments.configs import regression

    c = regression.get_config()
    assert plan(c).augmentation == "none"
    c.augmentation = "crop"
    with pytest.raises(ValueError, match="`augmentation`: Augmentation 'crop'.*'diabetes'"):
        plan(c)


def test_rule_index_feeds_unsir_its_subsample_and_the_merging_rules_validation_parts():
    # What the references feed a rule beyond the scenario's forget and retain sets. Before, every
    # rule read the whole retain set and the merging rules got no validation parts (lambda = 1).
    import math

    import numpy as np

    from jaxunlearn.scenarios.plan import build_run, rule_index, validation_batch_size

    c = tiny_config()
    c.scenarios = {"class_0": {"kind": "class", "classes": (0,)}}
    c.rules = {"retrain": {}, "unsir": {}, "negmerge": {"forget_batch_size": 32}}
    p = plan(c)
    split, y = p.splits["class_0"], p.dataset.y_train
    run = lambda name: build_run(
        name, p.network, p.entry("class_0", name), y, split.forget, split.retain,
        forget_classes=split.classes,
    )  # fmt: skip
    # UNSIR: the first k of every retained class, k = min(500, the smallest class: digits has
    # fewer than 500 per class), and the reference's noise + impair + repair updates for them.
    _, index, bs, num_steps = run("unsir")
    k = int(np.bincount(y[split.retain], minlength=10)[1:].min())
    counts = np.bincount(y[index["retain"]], minlength=10)
    assert counts[0] == 0 and set(counts[1:].tolist()) == {k} and 100 < k < 500
    np.testing.assert_array_equal(index["forget"], split.forget)
    assert num_steps == 25 + math.ceil((80 * 32 + 9 * k) / 32) + math.ceil(9 * k / 128)
    # NegMerge: validation batches from the forget set and the retain set.
    _, index, bs, _ = run("negmerge")
    assert set(index) == {"forget", "val_forget", "val_control"}
    assert index["val_forget"] is split.forget and index["val_control"] is split.retain
    assert bs == {"forget": 32, "val_forget": 128, "val_control": 128}
    # A scenario that withholds its retain set gives none (the rule keeps lambda = 1).
    index, _ = rule_index(
        "negmerge", {}, split.forget, split.retain, labels=y, num_classes=10,
        retain_available=False,
    )  # fmt: skip
    assert set(index) == {"forget"}
    assert validation_batch_size(1000) == 128 and validation_batch_size(100, 8) == 96


def test_the_catalog_runs_wagle_with_its_graddiff_inner_rule_at_a_95pc_mask():
    from experiments.configs import catalog

    hparams = catalog.catalog_rules()["weight_attribution_mask"]["hparams"]
    assert hparams["inner"]["name"] == "grad_diff" and hparams["mask_fraction"] == 0.95


def test_every_config_names_a_track_the_binary_dispatches():
    from experiments import common

    paths = sorted(glob.glob(os.path.join(ROOT, "experiments", "configs", "*.py")))
    names = [os.path.basename(p)[:-3] for p in paths if not p.endswith("__init__.py")]
    for name in names:
        config = importlib.import_module(f"experiments.configs.{name}").get_config()
        entry = common.TRACKS[common.track(config)]
        assert callable(entry.runner()) and callable(entry.planner()), name
    with pytest.raises(ValueError, match="valid tracks: .*'ssl'"):
        common.track({"track": "sssl"})


def _set(config, dotted: str, value):
    *path, last = dotted.split(".")
    node = config
    for part in path:
        node = node[part]
    node[last] = value


@pytest.mark.parametrize(
    "config_name, overrides, match",
    [
        # The learned-rule track: what only the dataset can refute failed after meta-training (the
        # evaluation's support draw, its fit). digits' smallest class has 139 training examples,
        # its training split 1437.
        ("learned_rule", {"meta.shots": 140}, r"`meta.shots` \(140\) exceeds.*class \(139\)"),
        ("learned_rule", {"evaluation.batch_size": 2000}, r"`evaluation.batch_size`.*1437"),
        ("learned_rule", {"evaluation.knn_k": 1500}, r"`evaluation.knn_k`"),
        ("learned_rule", {"meta.num_ways": 11}, r"`num_ways` \(11\) exceeds the classes"),
        # The LM track's MUSE settings (silently clipped to one request or step before).
        ("lm_fictitious", {"scalability_fractions": (0.5, 1.5)}, r"`scalability_fractions`"),
        ("lm_fictitious", {"sustainability_requests": 0}, r"`sustainability_requests`"),
        ("lm_fictitious", {"relearn_steps": 0}, r"`relearn_steps` must be an integer >= 1; got 0"),
        ("lm_robust", {"audits": ("relearn", "vibes")}, r"unknown audits \['vibes'\]"),
        ("ssl", {"unlearn.encoders": ("byol",)}, r"`unlearn.encoders` names 'byol'"),
        ("unlearnable", {"fractions": ()}, r"`fractions` is empty"),
    ],
)
def test_a_tracks_plan_rejects_what_cannot_run(config_name, overrides, match):
    from experiments import common

    c = importlib.import_module(f"experiments.configs.{config_name}").get_config("tiny")
    common.plan(c)  # the variant itself plans
    for key, value in overrides.items():
        _set(c, key, value)
    with pytest.raises(ValueError, match=match):
        common.plan(c)


def test_the_learned_rule_plan_serves_the_largest_support_set_the_data_has():
    from experiments import common
    from experiments.configs import learned_rule

    c = learned_rule.get_config("tiny")
    c.meta.shots = 139
    assert common.plan(c).cfg["meta"]["shots"] == 139
