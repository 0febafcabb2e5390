"""The experiment binary and runner end to end: records, table, plot, divergence, resume."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
from config_testing import tiny_config
from report_testing import assert_png_with_content

from jaxunlearn import audit, data, models
from jaxunlearn.scenarios import load_results, run_experiment
from jaxunlearn.scenarios.runner import _records

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
        assert set(r) == {"scenario", "method", "seed", "status", "metrics", "fingerprint", "note"}
        assert r["status"] == "ok"
        assert {"UA", "RA", "TA", "MIA_efficacy", "MIA_AUC"} <= set(r["metrics"])
        assert r["metrics"]["runtime_s"] > 0 and "Avg_gap" in r["metrics"]
    retrain = [r for r in records if r["method"] == "retrain" and r["scenario"] == "class_0"]
    assert retrain[0]["metrics"]["UA"] == 100.0
    assert_png_with_content(os.path.join(workdir, "results.png"))


def test_divergence_is_recorded_and_the_rest_finishes(tmp_path):
    c = tiny_config(seeds=2)
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
    c = tiny_config()
    c.scenarios = {"class_0": {"kind": "class", "classes": (0,)}}
    c.rules = {"retrain": {}, "finetune": {"epochs": 1, "retain_batch_size": 64}}
    first = run_experiment(c, str(tmp_path), verbose=False)
    assert os.path.isdir(tmp_path / "checkpoints" / "original")
    second = run_experiment(c, str(tmp_path), verbose=False)
    assert json.dumps([r.to_json() for r in first]) == json.dumps([r.to_json() for r in second])


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
            [sys.executable, "-c", script, f"--compilation_cache_dir={value}"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
    # The flag's directory was filled; with the cache off, not even $JAX_COMPILATION_CACHE_DIR.
    assert any(flag_cache.iterdir())
    assert not env_cache.exists() or not any(env_cache.iterdir())


def test_the_runner_feeds_each_rule_what_its_reference_reads(tmp_path, monkeypatch):
    # A tiny run through the runner: UNSIR reads the reference's retain subsample for its
    # reference step count, bad teaching a fresh 30% of the retain set per epoch, NegMerge
    # validation parts to choose lambda, amnesiac its labels from the batches' rows.
    import math

    from jaxunlearn import ensemble
    from jaxunlearn.scenarios import plan

    c = tiny_config()
    c.scenarios = {"class_0": {"kind": "class", "classes": (0,)}}
    c.audits = ("accuracy",)
    c.rules = {
        "retrain": {},
        "unsir": {},
        "bad_teacher": {"forget_batch_size": 16, "retain_batch_size": 64},
        "negmerge": {"epochs": 1, "forget_batch_size": 32},
        "amnesiac": {"forget_batch_size": 16, "retain_batch_size": 112},
    }
    runs = {}
    unlearn = ensemble.unlearn

    def spy(rule, variables, x, y, index, **kwargs):
        runs[kwargs["progress"].label] = (index, kwargs["batch_sizes"], kwargs["num_steps"])
        return unlearn(rule, variables, x, y, index, **kwargs)

    monkeypatch.setattr(ensemble, "unlearn", spy)
    records = run_experiment(c, str(tmp_path / "run"), verbose=True)
    assert {r.method for r in records if r.status == "ok"} == {"original", *c.rules}
    split = plan(c).splits["class_0"]
    n_r = len(split.retain)
    index, _, num_steps = runs["class_0/unsir"]
    assert 0 < len(index["retain"]) < n_r and num_steps > 25 + 80
    index, _, num_steps = runs["class_0/bad_teacher"]
    assert num_steps == math.ceil(0.3 * (n_r // 64)) and len(index["retain"]) == n_r
    index, batch_sizes, _ = runs["class_0/negmerge"]
    assert {"val_forget", "val_control"} <= set(index) <= set(batch_sizes) | {"forget"}
    np.testing.assert_array_equal(index["val_control"], split.retain)
    assert set(runs["class_0/amnesiac"][0]) == {"forget", "retain"}


def test_records_audit_the_models_that_did_not_diverge_once():
    """One context over three hand-built models: row 1's outputs are NaN, row 2 is flagged
    diverged by its run; row 0 alone is audited, with the values it has alone."""
    rng = np.random.default_rng(0)
    x_train, x_test = rng.normal(size=(60, 4)), rng.normal(size=(30, 4))
    y_train, y_test = rng.integers(0, 3, 60), rng.integers(0, 3, 30)
    ds = data.Dataset(
        "toy",
        x_train.astype(np.float32),
        y_train.astype(np.int32),
        x_test.astype(np.float32),
        y_test.astype(np.int32),
        3,
    )
    split = data.make_split(ds, data.ForgetSpec("random", fraction=0.2), seed=0)
    net = models.make_network("mlp", input_shape=(4,), num_outputs=3, hidden=(8,))
    runs = jax.vmap(net.init)(jax.random.split(jax.random.key(0), 3))
    runs = jax.tree.map(lambda v: v.at[1].set(np.nan), runs)
    predictions = audit.make_predictions(net, ds, split, {"m": runs, "original": runs})
    ctx = audit.AuditContext(
        net,
        ds,
        split,
        runtime_s=np.array([1.0, 2.0, 3.0]),
        compile_s=0.5,
        predictions=predictions,
        groups={"unlearned": "m", "original": "original"},
    )
    audits = ("accuracy", "mia_auc", "runtime")
    recs = _records(audits, ctx, "s", "m", np.array([False, False, True]), "d")
    assert [(r.seed, r.status) for r in recs] == [(0, "ok"), (1, "diverged"), (2, "diverged")]
    assert recs[0].metrics == audit.run(audits, ctx.take([0]))
    assert recs[0].metrics["runtime_s"] == 1.0 and np.isfinite(recs[0].metrics["MIA_AUC"])
    assert recs[1].metrics == {"runtime_s": 2.0, "compile_s": 0.5}
    assert recs[2].metrics == {"runtime_s": 3.0, "compile_s": 0.5}
    assert all(type(v) is float for r in recs for v in r.metrics.values())  # JSON-ready
    # Every model diverged: no audit runs.
    none = _records(audits, ctx, "s", "m", True)
    assert [r.status for r in none] == ["diverged"] * 3
