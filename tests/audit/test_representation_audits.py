"""Tests of the registered "representation", "linear_probe" and "zrf" audits."""

import functools

import jax
import numpy as np
import pytest
from rule_testing import tiny_problem

from experiments.configs.default import get_config
from jaxunlearn import audit, data, models, rules
from jaxunlearn.audit import representation_audits
from jaxunlearn.train import fit, make_stream


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
    teacher = representation_audits.zrf_teacher(net, 0)
    assert audit.run(("zrf",), _context(teacher))["ZRF"] == pytest.approx(1.0, abs=1e-6)
    trained = audit.run(("zrf",), _context(original))["ZRF"]
    assert 1.0 - np.log(2.0) <= trained < 0.9


def test_linear_probe_audit():
    _, _, _, original = tiny_problem("class")
    metrics = audit.run(("linear_probe",), _context(original))
    assert set(metrics) == {"probe_forget", "probe_retain"}
    assert metrics["probe_forget"] > 90.0 and metrics["probe_retain"] > 90.0
