"""The learned-rule experiment (``experiments/configs/learned_rule.py:tiny``): meta-trains, saves
and reloads theta, writes the table, results and plot, resumes, and rejects bad settings before
compute."""

import json
import os

import jax
import pytest

from experiments.configs import learned_rule as config_module
from jaxunlearn.repr import learned
from jaxunlearn.scenarios import learned_rule, report


def test_the_tiny_config_meta_trains_and_reports_the_encoders(tmp_path):
    logs = []
    records = learned_rule.run(config_module.get_config("tiny"), str(tmp_path), log=logs.append)
    for name in ("results.json", "results.txt", "results.png"):
        assert os.path.getsize(tmp_path / name) > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [report.Record(**r).to_json() for r in saved["records"]] == [
        r.to_json() for r in records
    ]
    assert {r.method for r in records} == set(learned_rule.ENCODERS)
    for r in records:
        assert r.status == "ok" and set(r.metrics) == set(learned_rule.METRICS)
        assert 0 <= r.metrics["knn"] <= 100 and 0 <= r.metrics["ridge_loss"] <= 4
    history = saved["history"]
    assert len(history["meta_loss"]) == 3
    assert [e["step"] for e in history["eval"]] == [0, 2, 3]
    assert saved["meta"]["eval_initial"]["step"] == 0
    text = (tmp_path / "results.txt").read_text()
    assert "learned_rule" in text and "random_encoder" in text and "inner steps/s" in text
    # The trained theta is an orbax checkpoint for this architecture only.
    theta_dir = str(tmp_path / learned_rule.THETA_DIR)
    assert learned.checkpoint_metadata(theta_dir)["architecture"] == [64, 16]
    theta = learned.load_theta(theta_dir, architecture=(64, 16))
    assert learned.theta_dims(theta) == {"hidden": 8, "channels": 2, "rank": 2}
    with pytest.raises(ValueError, match="meta-trained for a base MLP with widths"):
        learned.load_theta(theta_dir, architecture=(64, 32, 16))
    # A rerun resumes from the meta checkpoint: no meta-step is taken again.
    logs.clear()
    again = learned_rule.run(config_module.get_config("tiny"), str(tmp_path), log=logs.append)
    assert any("resuming at meta-step 3" in m for m in logs)
    assert not any(m.startswith("meta-step") for m in logs)
    after = learned.load_theta(theta_dir)
    for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(theta), strict=True):
        assert bool((a == b).all())
    assert [r.metrics for r in again] == [r.metrics for r in records]


@pytest.mark.parametrize(
    "override, match",
    [
        ({"meta.unroll_length": 0}, "`unroll_length` must be an integer >= 1"),
        ({"meta.trajectory_length": 1}, "`trajectory_length` \\(1\\) must be at least"),
        ({"meta.num_steps": 0}, "`meta.num_steps` must be an integer >= 1"),
        ({"meta.unknown": 1}, "`meta` has unknown key"),
        ({"evaluation.seeds": 0}, "`evaluation.seeds` must be an integer >= 1"),
        ({"rule.hidden": 0}, "`rule.hidden` must be an integer >= 1"),
        ({"model": "cnn"}, "`model` must be 'mlp'"),
        ({"dataset": "imagenet21k"}, "Unknown dataset"),
        ({"meta.num_ways": 11}, "`num_ways` \\(11\\) exceeds the classes"),
    ],
)
def test_bad_settings_fail_before_compute(tmp_path, override, match):
    c = config_module.get_config("tiny").to_dict()
    for key, value in override.items():
        node, *rest = key.split(".")
        if rest:
            c[node] = {**c[node], rest[0]: value}
        else:
            c[node] = value
    with pytest.raises(ValueError, match=match):
        learned_rule.run(c, str(tmp_path))
    assert not os.listdir(tmp_path)


def test_unknown_variants_are_rejected():
    with pytest.raises(ValueError, match="variant"):
        config_module.get_config("huge")
    assert config_module.get_config().track == "learned_rule"
