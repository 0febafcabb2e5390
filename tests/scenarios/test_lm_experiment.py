"""The language-model experiment (jaxunlearn.scenarios.lm) on the :tiny corpus and model."""

import json
import os

import numpy as np
import pytest

from experiments.configs import lm_fictitious
from jaxunlearn.scenarios import load_results
from jaxunlearn.scenarios.lm import lm_plan, load_benchmark, run_lm_experiment
from jaxunlearn.scenarios.lm import report as lm_report
from jaxunlearn.scenarios.lm.runner import RETAIN, TARGET, retain_label
from jaxunlearn.scenarios.report import Record


def tiny(**overrides):
    """The :tiny variant on one device, with dotted-key overrides."""
    c = lm_fictitious.get_config("tiny")
    c.data_parallel = False
    for k, v in overrides.items():
        node = c
        *path, last = k.split(".")
        for part in path:
            node = node[part]
        node[last] = v
    return c


@pytest.fixture(scope="module")
def bench():
    c = tiny()
    return load_benchmark(c.dataset, c.data_kwargs.to_dict())


def test_benchmark_rows_are_consistent(bench):
    b = bench
    n = len(b.x)
    assert b.x.shape == b.y.shape == b.para_x.shape and b.pert_x.shape[:2] == (n, 5)
    assert len(b.answers) == len(b.key_facts) == n == len(b.author)
    assert not np.intersect1d(b.holdout, b.train).size
    assert np.all(b.author[b.holdout] >= 0) and np.all(b.author[b.utility] == -1)
    for name in ("forget01", "forget05", "forget10"):
        if name not in b.forget:
            continue
        b.check_split(name)
        f, r = b.forget[name], b.retain[name]
        assert np.array_equal(np.sort(np.concatenate([f, r])), np.sort(b.train))
        assert np.all(b.author[f] >= 0) and set(b.utility) <= set(r)
    # 20 authors x 4 QA: forget10 is 2 authors; prompts are the questions; facts are in answers.
    assert len(b.forget["forget10"]) == 8 and len(b.authors_of(b.forget["forget10"])) == 2
    row = int(b.forget["forget10"][0])
    assert b.tokenizer.decode(b.prompts[row]).startswith("Question: ")
    assert b.key_facts[row].lower() in b.answers[row].lower()
    assert set(b.extra) == {"idk_x", "idk_y", "alt_x", "alt_y"}


def test_passage_windows_and_verbmem_prompts_split_by_hand():
    from jaxunlearn.scenarios.lm.benchmark import passage_windows, verbmem_split

    # 7 ids in rows of width 6 (4 ids each at most): 2 windows of 4 and 3 ids, EOS on the last.
    x, y = passage_windows([5, 6, 7, 8, 9, 10, 11], 6, bos_id=2, eos_id=1, pad_id=0)
    assert x.tolist() == [[2, 5, 6, 7, 8, 0], [2, 9, 10, 11, 1, 0]]
    assert y.tolist() == [[5, 6, 7, 8, -100, -100], [9, 10, 11, 1, -100, -100]]
    # Prompts: BOS + the first floor(n/2) text tokens (EOS and padding are not text).
    prompts, rest = verbmem_split(x, bos_id=2, eos_id=1, pad_id=0)
    assert prompts.tolist() == [[2, 5, 6], [2, 9, 0]]
    assert [r.tolist() for r in rest] == [[7, 8], [10, 11]]
    prompts, rest = verbmem_split(x, bos_id=2, eos_id=1, pad_id=0, prefix_fraction=0.75)
    assert prompts.tolist() == [[2, 5, 6, 7], [2, 9, 10, 0]] and rest[0].tolist() == [8]
    with pytest.raises(ValueError, match="prefix_fraction"):
        verbmem_split(x, bos_id=2, eos_id=1, pad_id=0, prefix_fraction=1.0)
    with pytest.raises(ValueError, match="BOS"):
        verbmem_split(x[:, 1:], bos_id=2, eos_id=1, pad_id=0)
    with pytest.raises(ValueError, match="width"):
        passage_windows([5], 2, bos_id=2, eos_id=1, pad_id=0)


def test_passage_windows_rebuild_each_passage(bench):
    b = bench
    assert b.passage_x.shape[1] == b.max_len and len(b.passage_author) == len(b.passage_x)
    for author in (0, int(b.authors_of(b.forget["forget10"])[0])):
        rows = b.passage_rows([author])
        text = np.concatenate(
            [r[1:][(r[1:] != b.pad_id) & (r[1:] != b.eos_id)] for r in b.passage_x[rows]]
        )
        assert b.tokenizer.decode(text) == b.passages[author]


def test_training_data_adds_the_passages_of_the_trained_authors():
    from jaxunlearn.scenarios.lm.artefacts import training_data

    p = lm_plan(tiny())
    b = p.benchmark
    assert p.train_passages
    x, y, rows = training_data(p, b.train)
    extra = rows[rows >= len(b.x)] - len(b.x)
    assert np.array_equal(x[len(b.x) :], b.passage_x) and len(y) == len(x)
    assert set(b.passage_author[extra]) == set(range(20))  # the training authors, no holdout
    forget = set(b.authors_of(b.forget["forget10"]).tolist())
    _, _, rows = training_data(p, b.retain["forget10"])
    kept = set(b.passage_author[rows[rows >= len(b.x)] - len(b.x)].tolist())
    assert kept == set(range(20)) - forget
    off = lm_plan(tiny(train_passages=False))
    assert training_data(off, b.train)[2].tolist() == b.train.tolist()


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"scenarios": ("forget10", "forget99")}, "Unknown forget split"),
        ({"main_scenario": "forget05"}, "main_scenario"),
        ({"eval.leak_ks": (1, 64)}, "leak_ks"),
        ({"retain_seeds": 0}, "retain_seeds"),
        ({"train.batch_size": 1000}, "train.batch_size"),
        ({"rules.npo.forget_batch_size": 64}, "larger than the forget data"),
        ({"model_kwargs.max_len": 16}, "max_len"),
        ({"scenario_rules": ("no_such_rule",)}, "no_such_rule"),
    ],
)
def test_plan_rejects_bad_configs(overrides, match):
    with pytest.raises(ValueError, match=match):
        lm_plan(tiny(**overrides))


def test_plan_rejects_retrain_and_unknown_keys():
    c = tiny()
    c.rules.retrain = {}
    with pytest.raises(ValueError, match="retrain"):
        lm_plan(c)
    c = tiny().to_dict()
    c["epochs"] = 3
    with pytest.raises(ValueError, match="unknown key 'epochs'"):
        lm_plan(c)


def test_table_formats_p_values_and_marks_diverged_rules():
    recs = [
        Record("forget10", TARGET, 0, "ok", {"forget_quality": 2.5e-7, "model_utility": 0.81}),
        Record("forget10", RETAIN, 0, "ok", {"forget_quality": 1.0, "model_utility": 0.8}),
        Record("forget10", "npo", 0, "diverged", {"runtime_s": 1.0}),
    ]
    text = lm_report.table(recs)
    lines = text.splitlines()
    assert "2.50e-07" in lines[2] and "0.810" in lines[2]
    assert "1.00e+00" in lines[3]
    assert lines[4].split()[2] == "0/1†"
    assert "npo on forget10: diverged on seeds [0]" in text


class Interrupted(Exception):
    """Stands in for a kill in the middle of a rule run."""


def test_an_interrupted_rule_run_resumes_to_the_uninterrupted_result(bench, tmp_path, monkeypatch):
    import jax

    from jaxunlearn.scenarios.artefacts import role_keys
    from jaxunlearn.scenarios.lm import runner

    p = lm_plan(tiny(), benchmark=bench)
    b = p.benchmark
    start = jax.tree.map(lambda x: x[None], p.network.init(jax.random.key(3)))
    args = (p, "npo", start, b.forget["forget10"], b.retain["forget10"])
    # NPO on the tiny split: 10 steps, 3 segments of 4 steps, checkpoints every 2 steps.
    kw = dict(
        keys=role_keys(0, "unlearn", 1),
        entry=p.entry("forget10", "npo"),
        points=3,
        chunk_size=2,
        verbose=False,
    )
    # One rule object for every run, so that they share one compiled program.
    built = runner.build_lm_run(p, "npo", kw["entry"], *args[3:])
    monkeypatch.setattr(runner, "build_lm_run", lambda *a, **k: built)
    leaf = lambda v: np.asarray(v["params"]["embed_tokens"]["embedding"])
    point = lambda i, step, v, d: {"i": i, "step": step, "x": float(leaf(v).sum())}
    points = []
    full, div, steps, _ = runner.run_rule(
        *args, **kw, on_point=lambda *a: points.append(point(*a)) or points[-1]
    )
    assert steps == 12 and not div.any() and [q["step"] for q in points] == [4, 8, 12]

    # Killed inside segment 1 after its first chunk (fit has checkpointed step 2 of 4), then
    # killed again in segment 2's audit (its fit finished, segments.json not yet updated).
    ckpt = str(tmp_path / "npo")
    calls = {"n": 0}

    def progress(label, enabled):
        def report(step, total, metrics, elapsed):
            calls["n"] += 1
            if calls["n"] == 3:  # chunks: 2 of segment 0, then the first of segment 1
                raise Interrupted

        return report

    monkeypatch.setattr(runner, "Progress", progress)
    with pytest.raises(Interrupted):
        runner.run_rule(*args, **kw, on_point=point, checkpoint_dir=ckpt)
    assert sorted(os.listdir(ckpt)) == ["segment_0", "segment_1", runner.SEGMENTS_FILE]
    monkeypatch.setattr(runner, "Progress", lambda label, enabled: None)

    def stop_in_audit(i, step, v, d):
        if i == 2:
            raise Interrupted
        return point(i, step, v, d)

    restored = []
    on_restored = lambda i, step, value: restored.append((i, step, value))
    with pytest.raises(Interrupted):
        runner.run_rule(
            *args, **kw, on_point=stop_in_audit, checkpoint_dir=ckpt, on_restored=on_restored
        )
    assert restored == [(0, 4, points[0])]
    # Segment 0's checkpoint is dropped once segment 1 is recorded.
    assert sorted(os.listdir(ckpt)) == ["segment_1", "segment_2", runner.SEGMENTS_FILE]
    restored.clear()
    audited = []
    resumed, div2, steps2, runtime = runner.run_rule(
        *args,
        **kw,
        on_point=lambda *a: audited.append(point(*a)) or audited[-1],
        checkpoint_dir=ckpt,
        on_restored=on_restored,
    )
    assert [r[2] for r in restored] == points[:2] and audited == points[2:]
    assert steps2 == steps and not div2.any() and runtime > 0
    for a, c in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One :tiny run in which gradient ascent diverges (SGD at a huge step size)."""
    workdir = str(tmp_path_factory.mktemp("lm"))
    c = tiny()
    c.rules.gradient_ascent.hparams = {"learning_rate": 1e30, "optimizer": {"name": "sgd"}}
    return c, workdir, run_lm_experiment(c, workdir, verbose=False)


def test_tiny_run_writes_the_table_and_plot(tiny_run):
    c, workdir, out = tiny_run
    by = {r.method: r for r in out["records"]}
    assert set(by) == {TARGET, RETAIN, retain_label(1), "gradient_ascent", "npo"}
    # The reference retain model against itself; the target is far from it.
    assert by[RETAIN].metrics["forget_quality"] == 1.0
    assert by[TARGET].metrics["forget_quality"] < by[retain_label(1)].metrics["forget_quality"]
    assert by[TARGET].metrics["train_exact_match"] > 0.5
    for method in (TARGET, RETAIN, "npo"):
        m = by[method].metrics
        assert 0.0 <= m["model_utility"] <= 1.0 and 0.0 <= m["rouge_forget"] <= 1.0
        assert m["leak@1"] <= m["leak@4"] <= m["leak@16"]
    assert by[TARGET].metrics["rouge_forget"] > by[RETAIN].metrics["rouge_forget"]
    # MUSE VerbMem: the target continues the forget passages it trained on; the retain model
    # never saw them.
    verbmem = {m: by[m].metrics["VerbMem_f"] for m in (TARGET, RETAIN, retain_label(1), "npo")}
    assert all(0.0 <= v <= 100.0 for v in verbmem.values()), verbmem
    assert verbmem[TARGET] > verbmem[RETAIN] + 10.0, verbmem
    # The diverged rule is recorded as such; the others ran.
    assert by["gradient_ascent"].status == "diverged" and by["npo"].status == "ok"
    traj = out["trajectories"]["forget10"]["rules"]
    assert len(traj["npo"]) == c.audit_points + 1 and traj["npo"][0]["step"] == 0
    assert traj["gradient_ascent"][-1].get("diverged")
    for name in ("results.json", "results.txt", "trajectory.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0
    # The rules' run checkpoints are removed once their records are stored.
    rules_dir = os.path.join(workdir, "checkpoints", "lm", "forget10", "rules")
    assert not os.path.isdir(rules_dir) or not os.listdir(rules_dir)
    assert {r.method for r in load_results(os.path.join(workdir, "results.json"))} == set(by)
    with open(os.path.join(workdir, "results.json")) as f:
        assert "trajectories" in json.load(f)
    assert "forget_quality" in out["table"] and "†" in out["table"]
    assert "VerbMem_f" in out["table"]


def test_a_rerun_restores_models_and_records(tiny_run, capsys):
    c, workdir, out = tiny_run
    again = run_lm_experiment(c, workdir, verbose=True)
    err = capsys.readouterr().err
    assert "training (fingerprint" not in err and err.count("matches") >= 3
    first = {(r.method, r.seed): r.metrics for r in out["records"]}
    assert {(r.method, r.seed): r.metrics for r in again["records"]} == first


def test_lm_sweep_selects_on_validation_and_reports_on_test(tiny_run):
    from jaxunlearn.scenarios.lm.sweep import run_lm_sweep

    c, workdir, _ = tiny_run
    grid = {"learning_rate": [1e-4, 1e-3], "beta": [0.1, 1.0]}
    result = run_lm_sweep(c, workdir, scenario="forget10", rule="npo", grid=grid, verbose=False)
    assert [r["point"] for r in result["rows"]] == [
        {"learning_rate": lr, "beta": beta} for lr in (1e-4, 1e-3) for beta in (0.1, 1.0)
    ]
    assert result["chosen"] in [r["point"] for r in result["rows"]]
    chosen = next(r for r in result["rows"] if r["point"] == result["chosen"])
    ok = [r for r in result["rows"] if r["ok"]]
    floor = result["utility_floor"] * result["target_validation"]["model_utility"]
    if result["chosen_by"].startswith("max forget quality"):
        assert chosen["model_utility"] >= floor
        assert chosen["forget_quality"] == max(
            r["forget_quality"] for r in ok if r["model_utility"] >= floor
        )
    assert set(result["test"]) >= {"forget_quality", "model_utility"}
    for name in ("sweep.json", "sweep.txt", "sweep.png"):
        assert os.path.getsize(os.path.join(workdir, name)) > 0


def test_lm_sweep_rejects_a_parameter_it_cannot_vmap():
    from jaxunlearn.scenarios.lm.sweep import check_grid

    with pytest.raises(ValueError, match="not a sweepable"):
        check_grid("npo", {"retain_loss": [0, 1]})
    with pytest.raises(ValueError, match="positive"):
        check_grid("npo", {"learning_rate": [0.0, 1e-3]})


# Data parallelism reorders the gradient's float sums; over a few hundred training steps of a
# memorising model the two runs drift apart slightly, and greedy decoding and the KS test turn
# that into discrete steps. The tolerance is what the tiny run shows between 1 and 8 devices
# (rouge_forget: the retain model's answers to 8 questions on authors it never saw, which moved
# by 0.12 once the models also train on passages). VerbMem_f, over the forget authors' 4 passage
# windows, is not compared: a retain model's moves by 15-20 points between the two runs.
REPRODUCIBLE = {
    "model_utility": 0.05,
    "rouge_forget": 0.15,
    "rouge_retain": 0.1,
    "truth_ratio_forget": 0.05,
    "prob_forget": 0.05,
}


def test_one_and_eight_devices_give_the_same_table(tiny_run, tmp_path):
    import jax

    assert jax.device_count() == 8
    c, _, out = tiny_run
    # The target, the reference retain model and one rule on 8 devices (the other rows add
    # compile time, not coverage: they run the same sharded programs).
    c8 = tiny(data_parallel=True, retain_seeds=1)
    c8.rules = {"npo": c.rules.npo}
    sharded = run_lm_experiment(c8, str(tmp_path), verbose=False)
    eight = {(r.method, r.seed): r for r in sharded["records"]}
    one = {(r.method, r.seed): r for r in out["records"] if (r.method, r.seed) in eight}
    assert {m for m, _ in eight} == {TARGET, RETAIN, "npo"} and set(one) == set(eight)
    for key, r in one.items():
        assert eight[key].status == r.status, key
        for metric, tol in REPRODUCIBLE.items():
            if metric in r.metrics:
                assert abs(eight[key].metrics[metric] - r.metrics[metric]) <= tol, (key, metric)
