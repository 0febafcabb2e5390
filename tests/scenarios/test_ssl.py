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
        ssl.encoder_rule(
            "learned_unsupervised_rule", cnn, width=8, num_steps=2, key=jax.random.key(0)
        )
    net, _ = ssl.encoder_rule("simclr", cnn, width=8, num_steps=2, key=jax.random.key(0))
    start = net.init(jax.random.key(0))
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


def _tiny_with(**overrides):
    """The tiny config as a dict; ``unlearn.<key>`` overrides a key of the unlearn section."""
    c = config_module.get_config("tiny").to_dict()
    for key, value in overrides.items():
        if key.startswith("unlearn."):
            c["unlearn"][key.removeprefix("unlearn.")] = value
        else:
            c[key] = value
    return c


_CNN = {"model": "cnn", "model_kwargs": {}}


@pytest.mark.parametrize(
    "overrides, match",
    [
        # An encoder that is not trained, or cannot be built for the backbone.
        ({"unlearn.encoders": ("byol",)}, r"`unlearn.encoders` names 'byol'.*\['simclr'\]"),
        (
            {**_CNN, "rules": (), "unlearn.encoders": ("learned_unsupervised_rule",)},
            "'learned_unsupervised_rule' cannot be built for the 'cnn' backbone.*MLP",
        ),
        (
            {**_CNN, "rules": ("simclr", "learned_unsupervised_rule")},
            "'learned_unsupervised_rule' cannot be built",
        ),
        # Unlearning rules: unknown, a language-model rule, a bad name or value of a setting.
        ({"unlearn.rules": {"forget_everything": {}}}, "Unknown rule 'forget_everything'"),
        ({"unlearn.rules": {"concept_ablation": {}}}, "'concept_ablation', a language_model rule"),
        ({"unlearn.rules": {"bad_teacher": {"temprature": 2.0}}}, r"no hyperparameter.*temprature"),
        (
            {"unlearn.rules": {"bad_teacher": {"learning_rate": -1.0}}},
            r"`unlearn.rules.bad_teacher` on encoder 'simclr', request 'class 0'.*learning_rate",
        ),
        # Rules that read the retain set's labels, or a repair stage that reads labels.
        ({"unlearn.rules": {"scrub": {}}}, r"names 'scrub', which reads the retain set's labels"),
        (
            {"unlearn.rules": {"label_agnostic_forgetting": {"repair": True}}},
            r"`unlearn.rules.label_agnostic_forgetting` sets `repair`",
        ),
        # The encoder's own loss turned around: a bad name or value.
        ({"unlearn.ascent": {"forget_wieght": 1.0}}, r"`unlearn.ascent` has unknown.*wieght"),
        ({"unlearn.ascent": {"forget_weight": -1.0}}, r"`unlearn.ascent` on encoder 'simclr'"),
        # What only the data can tell: a class it does not have, a batch larger than it.
        ({"unlearn.forget": {"x": {"kind": "class", "classes": (12,)}}}, r"classes` \[12\]"),
        ({"unlearn.forget": {"x": {"kind": "random", "fraction": 1.0}}}, "fraction"),
        ({"batch_size": 100_000}, r"`batch_size`.*1437"),
    ],
)
def test_unlearning_misconfigurations_fail_before_any_training(
    tmp_path, monkeypatch, overrides, match
):
    # Before, an unlearning setting was built only after every encoder was trained (and an
    # unlearn encoder that could not be built was silently left out).
    def no_training(*args, **kwargs):
        raise AssertionError("trained before the config was checked")

    monkeypatch.setattr(ssl, "fit", no_training)
    monkeypatch.setattr(ssl, "train_encoder", no_training)
    c = _tiny_with(**overrides)
    with pytest.raises(ValueError, match=match):
        ssl.plan(c)
    with pytest.raises(ValueError, match=match):
        ssl.run(c, str(tmp_path), log=lambda m: None)
    assert not os.listdir(tmp_path)


def test_the_plan_builds_what_the_run_trains_and_unlearns():
    p = ssl.plan(_tiny_with(**{"unlearn.rules": {"bad_teacher": {}, "boundary_expand": {}}}))
    assert list(p.encoders) == ["simclr"] and p.cfg["skipped"] == {}
    assert list(p.splits) == ["class 0"] and p.splits["class 0"].classes == (0,)
    # Class 0 of digits' training split: 142 of 1437 examples.
    assert len(p.splits["class 0"].forget) == 142 and len(p.splits["class 0"].retain) == 1295
    methods = p.methods[("simclr", "class 0")]
    assert list(methods) == [ssl.ASCENT, "bad_teacher", "boundary_expand"]
    # The label-free rules see the encoder's projection as its logits; the ascent the encoder.
    encoder = p.encoders["simclr"].network
    assert methods[ssl.ASCENT][0] is encoder
    assert methods["bad_teacher"][0].name == f"{encoder.name}:projection"
    # A rule that cannot be built for the backbone, not asked for by name, is skipped with why.
    p = ssl.plan(_tiny_with(**_CNN, rules=()))
    assert "learned_unsupervised_rule" not in p.encoders
    assert "MLP" in p.cfg["skipped"]["learned_unsupervised_rule"]
