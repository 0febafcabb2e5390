"""Tests of jaxunlearn.audit.representation: CKA, k-NN, linear probe, and the registered
"representation", "linear_probe" and "zrf" audits."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rule_testing import tiny_problem

from experiments.configs.default import get_config
from jaxunlearn import audit, data, models, rules
from jaxunlearn.audit import representation
from jaxunlearn.audit.representation import (
    linear_cka,
    linear_cka_core,
    linear_probe_accuracy,
    weighted_knn_accuracy,
)
from jaxunlearn.train import fit, make_stream


def _clusters(seed, n, num_classes=4, dim=8, spread=0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (num_classes, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, num_classes, n)
    return centres[labels] * 5 + spread * rng.normal(0, 1, (n, dim)), labels


# ------------------------------------------------------------------------------------------------
# Linear CKA


def test_cka_of_matrix_with_itself_and_its_rotation_is_one():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (300, 20))
    rotation, _ = np.linalg.qr(rng.normal(0, 1, (20, 20)))
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-5)
    # Orthogonal map, isotropic scaling and a translation leave CKA unchanged.
    assert linear_cka(x, 3.0 * x @ rotation + 7.0) == pytest.approx(1.0, abs=1e-5)


def test_cka_gram_path_with_more_features_than_rows():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (16, 64))
    rotation, _ = np.linalg.qr(rng.normal(0, 1, (64, 64)))
    assert linear_cka(x, x @ rotation) == pytest.approx(1.0, abs=1e-5)
    # Both code paths compute the same number.
    y = rng.normal(0, 1, (16, 64))
    feature_form = np.sum(((y - y.mean(0)).T @ (x - x.mean(0))) ** 2) / (
        np.linalg.norm((x - x.mean(0)).T @ (x - x.mean(0)))
        * np.linalg.norm((y - y.mean(0)).T @ (y - y.mean(0)))
    )
    assert linear_cka(x, y) == pytest.approx(feature_form, rel=1e-4)


def test_cka_of_independent_random_matrices_is_small():
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (4000, 6))
    y = rng.normal(0, 1, (4000, 5))
    assert linear_cka(x, y) < 0.02


def test_cka_constant_representation_and_batches():
    rng = np.random.default_rng(3)
    x = rng.normal(0, 1, (50, 4))
    assert linear_cka(x, np.ones((50, 3))) == 0.0
    assert linear_cka(x, x, batch_size=16) == pytest.approx(1.0, abs=1e-5)  # Last batch of 2 rows.
    # Feature maps with trailing axes are flattened.
    assert linear_cka(x.reshape(50, 2, 2), x) == pytest.approx(1.0, abs=1e-5)


def test_cka_core_is_jittable_inside_other_code():
    x = jax.random.normal(jax.random.PRNGKey(0), (32, 5))
    value = jax.jit(lambda a: linear_cka_core(a, 2.0 * a))(x)
    assert float(value) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "x, y, kwargs, match",
    [
        (np.zeros((5, 2)), np.zeros((6, 2)), {}, "same number of rows"),
        (np.zeros((1, 2)), np.zeros((1, 2)), {}, "at least 2 rows"),
        (np.array([[np.nan, 1.0], [0.0, 1.0]]), np.zeros((2, 2)), {}, "x must be finite"),
        (np.zeros(5), np.zeros(5), {}, "shape"),
        (np.zeros((5, 2)), np.zeros((5, 2)), {"batch_size": 1}, "batch_size"),
    ],
)
def test_cka_bad_input(x, y, kwargs, match):
    with pytest.raises(ValueError, match=match):
        linear_cka(x, y, **kwargs)


# ------------------------------------------------------------------------------------------------
# Weighted k-NN


def test_knn_on_well_separated_clusters_is_perfect():
    train, ytr = _clusters(4, 300)
    test, yte = _clusters(4, 100)  # Same seed: same centres.
    assert weighted_knn_accuracy(train, ytr, test, yte) == 100.0
    # Chunking does not change the answer; k larger than the training set is capped.
    assert weighted_knn_accuracy(train, ytr, test, yte, k=500, chunk_size=7) == 100.0


def test_knn_similarity_weighting_beats_majority_vote():
    # Test point at angle 0. One class-0 neighbour at angle 0 (cos 1) vs two class-1 neighbours at
    # +-60 degrees (cos 0.5): exp(1/0.07) > 2 exp(0.5/0.07), so class 0 wins although outvoted.
    angles = np.array([0.0, math.pi / 3, -math.pi / 3])
    train = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    ytr = np.array([0, 1, 1])
    test = np.array([[2.0, 0.0]])  # Norm does not matter (cosine).
    assert weighted_knn_accuracy(train, ytr, test, np.array([0]), k=3) == 100.0
    # With a very high temperature the weights are nearly uniform and the majority wins.
    assert weighted_knn_accuracy(train, ytr, test, np.array([1]), k=3, temperature=100.0) == 100.0


def test_knn_bad_input():
    x = np.zeros((4, 3))
    y = np.zeros(4, int)
    with pytest.raises(ValueError, match="same width"):
        weighted_knn_accuracy(x, y, np.zeros((2, 2)), np.zeros(2, int))
    with pytest.raises(ValueError, match="train_labels"):
        weighted_knn_accuracy(x, np.zeros(3, int), x, y)
    with pytest.raises(ValueError, match="`k` must"):
        weighted_knn_accuracy(x, y, x, y, k=0)
    with pytest.raises(ValueError, match="temperature"):
        weighted_knn_accuracy(x, y, x, y, temperature=0.0)


# ------------------------------------------------------------------------------------------------
# Linear probe


def test_linear_probe_on_separable_features_is_perfect():
    train, ytr = _clusters(5, 400)
    test, yte = _clusters(5, 200)
    assert linear_probe_accuracy(train, ytr, test, yte, epochs=10, batch_size=64) == 100.0


def test_linear_probe_learns_a_linear_rule_and_is_deterministic():
    rng = np.random.default_rng(6)
    x = rng.normal(0, 1, (600, 5))
    x[:, 3] = 1.0  # A constant feature must not break standardisation.
    y = (x[:, 0] - 2 * x[:, 1] > 0).astype(int)
    kwargs = dict(epochs=15, batch_size=100, weight_decay=1e-4, seed=3)
    acc = linear_probe_accuracy(x[:400], y[:400], x[400:], y[400:], **kwargs)
    assert acc >= 95.0
    assert linear_probe_accuracy(x[:400], y[:400], x[400:], y[400:], **kwargs) == acc


def test_linear_probe_bad_input():
    x = np.zeros((4, 3))
    y = np.zeros(4, int)
    with pytest.raises(ValueError, match="epochs"):
        linear_probe_accuracy(x, y, x, y, epochs=0)
    with pytest.raises(ValueError, match="test_features must be finite"):
        linear_probe_accuracy(x, y, np.full((2, 3), np.nan), np.zeros(2, int))
    with pytest.raises(ValueError, match="test_labels"):
        linear_probe_accuracy(x, y, x, np.zeros(4))


def test_knn_accepts_jax_arrays():
    train, ytr = _clusters(7, 120)
    assert (
        weighted_knn_accuracy(
            jnp.asarray(train), jnp.asarray(ytr), jnp.asarray(train), jnp.asarray(ytr), k=5
        )
        == 100.0
    )


# The registered audits.


@functools.cache
def _oracle():
    """A model of the tiny problem's architecture trained on its retain set only."""
    ds, split, net, _ = tiny_problem("class")
    stream = make_stream(ds.x_train, ds.y_train, {"retain": split.retain})
    return fit(
        rules.finetune(net.apply, learning_rate=0.05),
        net.init(jax.random.key(5)),
        stream,
        batch_sizes={"retain": 64},
        num_steps=300,
        key=jax.random.key(6),
    ).variables


def _context(variables, **kwargs):
    ds, split, net, original = tiny_problem("class")
    kwargs.setdefault("original", original)
    kwargs.setdefault("oracle", _oracle())
    return audit.AuditContext(net, ds, split, variables, extra={"seed": 0}, **kwargs)


def _head_only_edit(variables):
    """Forgets class 0 the shallow way: a large negative bias on its logit, features untouched."""
    edited = jax.tree.map(lambda x: x, variables)
    bias = edited["params"]["head"]["bias"]
    edited["params"]["head"]["bias"] = bias.at[0].add(-50.0)
    return edited


def test_default_config_runs_the_cheap_audits():
    audits = get_config().audits
    for name in ("representation", "relearn", "zrf"):
        assert name in audits
        assert name in audit.names()
    assert "linear_probe" in audit.names() and "linear_probe" not in audits


def test_cka_of_a_model_with_itself_is_one():
    _, _, _, original = tiny_problem("class")
    metrics = audit.run(("representation",), _context(original, oracle=original))
    for name in ("CKA_orig_forget", "CKA_oracle_forget", "CKA_orig_retain", "CKA_oracle_retain"):
        assert metrics[name] == pytest.approx(100.0, abs=1e-3)


def test_head_only_edit_keeps_the_original_features_but_the_oracle_does_not():
    _, _, _, original = tiny_problem("class")
    edited = _head_only_edit(original)
    shallow = audit.run(("accuracy", "representation"), _context(edited))
    oracle = audit.run(("accuracy", "representation"), _context(_oracle()))
    baseline = audit.run(("representation",), _context(original))
    # By accuracy both forgot class 0 ...
    assert shallow["UA"] == pytest.approx(100.0) and oracle["UA"] == pytest.approx(100.0)
    # ... but the edited model's features are exactly the original's.
    assert shallow["CKA_orig_forget"] == pytest.approx(100.0, abs=1e-3)
    assert oracle["CKA_orig_forget"] < 99.0
    assert shallow["CKA_oracle_forget"] == pytest.approx(oracle["CKA_orig_forget"], abs=1e-3)
    for name in ("kNN_forget", "kNN_retain"):
        assert shallow[name] == pytest.approx(baseline[name])
    # The forgotten class is in the k-NN memory (the test split), so the original's forget-class
    # features are classified correctly rather than scoring 0 by construction.
    assert baseline["kNN_forget"] > 90.0
    assert 0.0 <= oracle["kNN_forget"] <= 100.0


def test_random_forgetting_representation_metrics_are_finite():
    ds, _, net, original = tiny_problem("class")
    # The tiny problem's model does not depend on the scenario: reuse the class one.
    split = data.make_split(ds, data.ForgetSpec("random", fraction=0.1), seed=0)
    ctx = audit.AuditContext(
        net, ds, split, original, original=original, oracle=original, extra={"seed": 0}
    )
    metrics = audit.run(("representation", "zrf"), ctx)
    assert all(np.isfinite(v) for v in metrics.values())
    assert metrics["kNN_forget"] > 80.0


def test_representation_on_regression_gives_cka_only():
    ds = data.load("diabetes")
    split = data.make_split(ds, data.ForgetSpec("random", fraction=0.1), seed=0)
    net = models.make_network(
        "mlp", input_shape=ds.input_shape, num_outputs=ds.num_outputs, hidden=(16,)
    )
    a, b = net.init(jax.random.key(0)), net.init(jax.random.key(1))
    metrics = audit.run(
        ("representation",), audit.AuditContext(net, ds, split, a, original=a, oracle=b)
    )
    assert set(metrics) == {
        "CKA_orig_forget",
        "CKA_oracle_forget",
        "CKA_orig_retain",
        "CKA_oracle_retain",
    }
    assert metrics["CKA_orig_retain"] == pytest.approx(100.0, abs=1e-3)
    assert metrics["CKA_oracle_retain"] < 100.0


def test_zrf_of_the_teacher_itself_is_one():
    ds, split, net, original = tiny_problem("class")
    logits = np.asarray(net.apply(original, ds.x_train[split.forget]).logits)
    assert audit.zrf_score(logits, logits) == pytest.approx(1.0, abs=1e-9)
    teacher = representation.zrf_teacher(net, 0)
    assert audit.run(("zrf",), _context(teacher))["ZRF"] == pytest.approx(1.0, abs=1e-6)
    trained = audit.run(("zrf",), _context(original))["ZRF"]
    assert 1.0 - np.log(2.0) <= trained < 0.9


def test_linear_probe_audit():
    _, _, _, original = tiny_problem("class")
    metrics = audit.run(("linear_probe",), _context(original))
    assert set(metrics) == {"probe_forget", "probe_retain"}
    assert metrics["probe_forget"] > 90.0 and metrics["probe_retain"] > 90.0
