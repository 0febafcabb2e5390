"""The self-supervised experiment: every standalone rule trained and evaluated, then unlearning."""

import json
import os

import jax
import numpy as np
import pytest

from experiments.configs import ssl as config_module
from jaxunlearn import models
from jaxunlearn import repr as R
from jaxunlearn.data.datasets import Dataset
from jaxunlearn.data.forget import Split
from jaxunlearn.scenarios import report, ssl


def test_the_tiny_config_writes_tables_results_curves_and_plot(tmp_path):
    records = ssl.run(config_module.get_config("tiny"), str(tmp_path), log=lambda m: None)
    for name in ("results.json", "results.txt", "results.png", "curves.json"):
        assert os.path.getsize(tmp_path / name) > 0
    loaded = report.load_results(str(tmp_path / "results.json"))
    assert [r.to_json() for r in loaded] == [r.to_json() for r in records]
    train = {r.method: r.metrics for r in loaded if r.scenario == ssl.TRAIN_SCENARIO}
    assert set(train) == {ssl.PIXELS, ssl.RANDOM, ssl.SUPERVISED, "simclr"}
    for name in ("simclr", ssl.SUPERVISED):
        m = train[name]
        assert 0 <= m["kNN"] <= 100 and 0 <= m["probe"] <= 100 and m["rank"] > 1
        assert m["kNN_gain"] == pytest.approx(m["kNN"] - train[ssl.RANDOM]["kNN"])
        assert m["train_s"] > 0
    unlearn = {r.method: r.metrics for r in loaded if r.scenario == "simclr: class 0"}
    assert set(unlearn) == {ssl.ORIGINAL, ssl.ORACLE, ssl.ASCENT, "bad_teacher"}
    oracle, original = unlearn[ssl.ORACLE], unlearn[ssl.ORIGINAL]
    assert oracle["CKA_oracle_forget"] == pytest.approx(100.0, abs=1e-3)
    assert original["CKA_orig_forget"] == pytest.approx(100.0, abs=1e-3)
    assert oracle["CKA_orig_forget"] == pytest.approx(original["CKA_oracle_forget"], abs=1e-3)
    for m in unlearn.values():
        assert 0 <= m["kNN_forget"] <= 100 and 0 <= m["CKA_oracle_retain"] <= 100 + 1e-3
        assert 0 <= m["align_forget"] <= 4 and 0 <= m["align_retain"] <= 4
    curves = json.loads((tmp_path / "curves.json").read_text())
    assert [s for s, _ in curves["simclr"]] == [0, 2, 4]
    text = (tmp_path / "results.txt").read_text()
    assert "kNN_gain" in text and "CKA_oracle_forget" in text and "ssl_ascent" in text


def test_the_registry_is_iterated_and_the_rules_that_cannot_train_alone_say_why():
    names, skipped = ssl.standalone_rules()
    assert set(names) | set(skipped) == set(R.names())
    assert {"simclr", "byol", "vicreg", "barlow_twins", "simsiam", "dino", "rotation"} <= set(names)
    assert {"lwf", "representational_alignment"} <= set(skipped)
    assert "labels" in skipped["lwf"]


def test_a_rule_that_cannot_be_built_for_the_backbone_says_why_before_compute():
    if "learned_unsupervised_rule" not in R.names():
        pytest.skip("no learned rule in this registry")
    cnn = models.make_network("cnn", input_shape=(8, 8, 1), num_outputs=10)
    with pytest.raises(ValueError, match="MLP"):
        ssl.build_encoder_rule(
            "learned_unsupervised_rule", cnn, width=8, num_steps=2, key=jax.random.key(0)
        )
    net, _, start = ssl.build_encoder_rule(
        "simclr", cnn, width=8, num_steps=2, key=jax.random.key(0)
    )
    assert net.apply(start, np.zeros((2, 8, 8, 1), np.float32)).projection.shape == (2, 128)


def test_unlearning_audit_on_hand_made_features():
    # Two classes on two axes; the model equals the oracle; forget = class 0.
    train = np.array([[1, 0], [1, 0.1], [0, 1], [0.1, 1]], np.float32)
    test = np.array([[1, 0.05], [0.05, 1]], np.float32)
    ds = Dataset(
        "toy",
        train[:, None, :, None],
        np.array([0, 0, 1, 1], np.int32),
        test[:, None, :, None],
        np.array([0, 1], np.int32),
        num_classes=2,
    )
    split = Split(
        forget=np.array([0, 1]),
        retain=np.array([2, 3]),
        test=np.array([1]),
        test_forget=np.array([0]),
        classes=(0,),
    )
    collapsed = (np.ones((4, 2), np.float32) + np.arange(4)[:, None] * [[0.0, 1.0]], test)
    out = ssl.unlearning_audit(
        (train, test), oracle=(train, test), original=collapsed, ds=ds, split=split
    )
    assert out["CKA_oracle_forget"] == pytest.approx(100.0)
    assert out["CKA_oracle_retain"] == pytest.approx(100.0)
    assert out["kNN_forget"] == 100.0 and out["kNN_retain"] == 100.0 and out["kNN_test"] == 100.0
    # CKA of [[1, 0], [1, .1]] to [[1, 1], [1, 2]] on two rows: both vary along one axis -> 1.
    assert out["CKA_orig_forget"] == pytest.approx(100.0)
    assert out["rank"] > 1.0
    assert "align_forget" not in out  # no views given
    # Views: forget pairs identical (alignment 0), retain pairs orthogonal (|a - b|^2 = 2).
    a = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], np.float32)
    b = np.array([[1, 0], [0, 1], [0, 1], [1, 0]], np.float32)
    viewed = ssl.EncoderFeatures(train, test, (a, b))
    out = ssl.unlearning_audit(viewed, oracle=viewed, original=viewed, ds=ds, split=split)
    assert out["align_forget"] == pytest.approx(0.0) and out["align_retain"] == pytest.approx(2.0)
    assert (
        ssl.unlearning_audit(
            (train * np.nan, test), oracle=(train, test), original=(train, test), ds=ds, split=split
        )
        == {}
    )


@pytest.mark.parametrize(
    "override, match",
    [
        ({"colour": 1}, "unknown key"),
        ({"eval_every": 3}, "`eval_every`"),
        ({"steps": 0}, "`steps`"),
        ({"batch_size": 1}, "`batch_size`"),
        ({"rules": ("lwf",)}, "cannot train alone"),
        ({"rules": ("simclrr",)}, "Unknown representation rule"),
        ({"hparams": {"simclr": {"temprature": 0.5}}}, "no hyperparameter"),
        ({"unlearn": {"encoders": ("vicreg",)}}, "`unlearn.encoders`"),
        ({"unlearn": {"rules": {"gradient_ascent": {}}}}, "reads forget labels"),
        ({"unlearn": {"forget": {"x": {"kind": "class", "clases": (0,)}}}}, "clases"),
        ({"unlearn": {"step": 3}}, "`unlearn` has unknown"),
        ({"dataset": "imagenet21k"}, "Unknown dataset"),
    ],
)
def test_bad_settings_fail_before_compute(tmp_path, override, match):
    c = config_module.get_config("tiny").to_dict()
    c.update(override)
    with pytest.raises(ValueError, match=match):
        ssl.run(c, str(tmp_path))
    assert not os.listdir(tmp_path)


def test_unknown_variants_are_rejected():
    with pytest.raises(ValueError, match="variant"):
        config_module.get_config("huge")


def test_mock_cifar10_takes_the_same_code_path(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    c = config_module.get_config("tiny").to_dict()
    c.update(
        dataset="cifar10",
        data_kwargs={"max_train": 64, "max_test": 32},
        probe_epochs=2,
        unlearn={
            **c["unlearn"],
            "rules": {},
            "forget": {"random": {"kind": "random", "count": 16}},
        },
    )
    with tfds.testing.mock_data(num_examples=64, policy=tfds.testing.MockPolicy.USE_CODE):
        records = ssl.run(c, str(tmp_path), log=lambda m: None)
    methods = {(r.scenario, r.method) for r in records}
    assert ("train", "simclr") in methods and ("simclr: random", ssl.ASCENT) in methods
