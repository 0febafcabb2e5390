"""The experiment binary and runner end to end: records, table, plot, resume, bad input."""

import json
import os
import subprocess
import sys

import pytest

from experiments.configs import default
from jaxunlearn.scenarios import load_results, plan, run_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(**overrides):
    c = default.get_config("tiny")
    c.data_parallel = False
    for k, v in overrides.items():
        node, *path = k.split(".")
        target = c
        for part in [node, *path][:-1]:
            target = target[part]
        target[[node, *path][-1]] = v
    return c


def test_binary_writes_results_table_and_plot(tmp_path):
    workdir = str(tmp_path / "run")
    cmd = [
        sys.executable,
        "-m",
        "experiments.main",
        "--config=experiments/configs/default.py:tiny",
        f"--workdir={workdir}",
        "--config.rules.gradient_ascent.hparams.learning_rate=0.001",
        "--config.data_parallel=False",
    ]  # the 8-device path is tested in test_train
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "random_label" in out.stdout and "Avg_gap" in out.stdout
    assert "step" in out.stderr  # progress lines
    records = json.load(open(os.path.join(workdir, "results.json")))
    methods = {"original", "retrain", "finetune", "gradient_ascent", "neggrad_plus", "random_label"}
    assert {(r["scenario"], r["method"]) for r in records} == {
        (s, m) for s in ("random_10pct", "class_0") for m in methods
    }
    for r in records:
        assert set(r) == {"scenario", "method", "seed", "status", "metrics"}
        assert r["status"] == "ok"
        assert {"UA", "RA", "TA", "MIA_efficacy", "MIA_AUC"} <= set(r["metrics"])
        assert r["metrics"]["runtime_s"] > 0 and "Avg_gap" in r["metrics"]
    retrain = [r for r in records if r["method"] == "retrain" and r["scenario"] == "class_0"]
    assert retrain[0]["metrics"]["UA"] == 100.0
    assert os.path.getsize(os.path.join(workdir, "results.png")) > 10_000


def test_divergence_is_recorded_and_the_rest_finishes(tmp_path):
    c = _tiny(seeds=2)
    c.scenarios = {"class_0": {"kind": "class", "classes": (0,)}}
    c.rules = {
        "retrain": {},
        "gradient_ascent": {
            "epochs": 5,
            "forget_batch_size": 32,
            "hparams": {"learning_rate": 1e4},
        },
        "finetune": {"epochs": 1, "retain_batch_size": 64},
        # Finite parameters (about 1e14) whose logits overflow: diverged too, not audited.
        "task_vector_negation": {
            "epochs": 1,
            "forget_batch_size": 32,
            "hparams": {"scaling_coef": 1e16},
        },
    }
    records = run_experiment(c, str(tmp_path), verbose=False)
    status = {(r.method, r.seed): r.status for r in records}
    assert status[("gradient_ascent", 0)] == "diverged"
    assert status[("gradient_ascent", 1)] == "diverged"
    assert status[("task_vector_negation", 0)] == status[("task_vector_negation", 1)] == "diverged"
    assert status[("finetune", 0)] == status[("finetune", 1)] == "ok"
    assert len(load_results(str(tmp_path / "results.json"))) == len(records) == 10


def test_rerun_resumes_from_checkpoints_and_records(tmp_path):
    c = _tiny()
    c.scenarios = {"class_0": {"kind": "class", "classes": (0,)}}
    c.rules = {"retrain": {}, "finetune": {"epochs": 1, "retain_batch_size": 64}}
    first = run_experiment(c, str(tmp_path), verbose=False)
    assert os.path.isdir(tmp_path / "checkpoints" / "original")
    second = run_experiment(c, str(tmp_path), verbose=False)
    assert json.dumps([r.to_json() for r in first]) == json.dumps([r.to_json() for r in second])


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
        ({"rules.finetune.per_scenario": {"class_0": {"lr": 0.1}}}, "unknown keys"),
        (
            {"rules.finetune.per_scenario": {"class_0": {"hparams": {"lr": 0.1}}}},
            "Scenario 'class_0'.*valid",
        ),
        ({"rules.finetune.per_scenario": {"class_0": {"epochs": 0}}}, "positive"),
    ],
)
def test_bad_config_fails_before_compute(overrides, message):
    with pytest.raises(ValueError, match=message):
        plan(_tiny(**overrides))


def test_per_scenario_entries_override_the_rule_entry():
    # One entry per rule, with overrides for a scenario (the reference codebases tune class-wise
    # and random forgetting separately): epochs and batch sizes replace, hparams merge.
    from jaxunlearn.scenarios.runner import build_rule, scenario_entry

    base = {"epochs": 1, "hparams": {"learning_rate": 0.01, "momentum": 0.5}}
    override = {"class_0": {"epochs": 3, "hparams": {"learning_rate": 0.1}}}
    assert scenario_entry({**base, "per_scenario": override}, "class_0") == {
        "epochs": 3,
        "hparams": {"learning_rate": 0.1, "momentum": 0.5},
    }
    assert scenario_entry({**base, "per_scenario": override}, "random_10pct") == base
    p = plan(_tiny(**{"rules.finetune": {**base, "per_scenario": override}}))
    steps = {}
    for sname, split in p.splits.items():
        sizes = {"forget": len(split.forget), "retain": len(split.retain)}
        steps[sname] = build_rule("finetune", p.network, p.entry(sname, "finetune"), sizes)[2]
    # class_0 runs 3 retain epochs, random_10pct 1 (retain sets of 1295 and 1293 examples).
    assert steps["class_0"] == 3 * (1295 // 64) and steps["random_10pct"] == 1293 // 64


def test_unknown_rule_and_missing_retain_are_rejected():
    c = _tiny()
    c.rules = {"forget_it_all": {}}
    with pytest.raises(ValueError, match="valid rules"):
        plan(c)
    c = _tiny()
    c.scenarios = {"forget_only": {"kind": "class", "classes": (0,), "retain_available": False}}
    c.rules = {"gradient_ascent": {"epochs": 1, "forget_batch_size": 32}, "finetune": {"epochs": 1}}
    with pytest.raises(ValueError, match="no retain set"):
        plan(c)


def test_rules_that_need_labels_are_rejected_when_a_scenario_has_none():
    c = _tiny()
    c.scenarios = {"unlabelled": {"kind": "class", "classes": (0,), "labels_available": False}}
    c.rules = {"retrain": {}, "label_agnostic_forgetting": {"epochs": 1,
                                                            "hparams": {"repair": True}}}
    with pytest.raises(ValueError, match="repair"):
        plan(c)
    c.rules = {"retrain": {}, "random_label": {"epochs": 1}}
    with pytest.raises(ValueError, match="no labels"):
        plan(c)
    c.rules = {"retrain": {}, "label_agnostic_forgetting": {"epochs": 1}}
    plan(c)  # label-free unlearning is fine


def test_binaries_keep_compiled_programs_in_a_persistent_cache(tmp_path):
    # `common.set_up()` (called first by both binaries) points JAX's persistent compilation cache
    # at --compilation_cache_dir, so a rerun does not compile again; '' turns it off.
    script = (
        "import sys, jax, jax.numpy as jnp\n"
        "from absl import flags\n"
        "from experiments import common\n"
        "flags.FLAGS(sys.argv)\n"
        "common.set_up({})\n"
        "jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).block_until_ready()\n"
    )
    env_cache = tmp_path / "from_env"
    env = dict(
        os.environ,
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_COMPILATION_CACHE_DIR=str(env_cache),
    )
    flag_cache = tmp_path / "from_flag"
    for value in (flag_cache, ""):
        out = subprocess.run(
            [sys.executable, "-c", script, f"--compilation_cache_dir={value}"], cwd=ROOT,
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
    # The flag's directory was filled; with the cache off, not even $JAX_COMPILATION_CACHE_DIR.
    assert any(flag_cache.iterdir())
    assert not env_cache.exists() or not any(env_cache.iterdir())
