"""Unlearning with two forget sets under one rule, scored on the true forget facts."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from rule_testing import lm_batch, tiny_lm_problem

from jaxunlearn.audit.forget_sets import compare_forget_sets


def test_the_true_forget_set_forgets_and_an_unrelated_one_does_not():
    net, variables, stream = tiny_lm_problem()
    f, r = lm_batch(stream, "forget"), lm_batch(stream, "retain")
    true = (f["x"], f["y"])
    unrelated = (r["x"][-8:], r["y"][-8:])  # retain facts the evaluation does not read
    retain = (r["x"][:24], r["y"][:24])
    out = compare_forget_sets(
        net,
        variables,
        {"true": true, "unrelated": unrelated},
        retain=retain,
        eval_forget=true,
        eval_retain=(r["x"][:16], r["y"][:16]),
        rule="npo",
        hparams={"learning_rate": 0.005},
        steps=8,
        batch_size=8,
        key=jax.random.key(0),
    )
    assert out["original"]["forget_accuracy"] == pytest.approx(1.0)
    # NPO on the true set forgets every fact (0 / 8); on unrelated facts most survive (5 / 8).
    assert out["true"]["forget_accuracy"] <= 0.125
    assert out["unrelated"]["forget_accuracy"] >= out["true"]["forget_accuracy"] + 0.375
    assert out["true"]["retain_accuracy"] >= 0.75
    assert out["true"]["rows"] == 8.0
    assert set(out) == {"original", "true", "unrelated"}
    with pytest.raises(ValueError, match="forget_sets"):
        compare_forget_sets(
            net, variables, {}, retain=retain, eval_forget=true, eval_retain=true,
            steps=1, batch_size=8, key=jax.random.key(0),
        )  # fmt: skip
    with pytest.raises(ValueError, match="steps"):
        compare_forget_sets(
            net, variables, {"t": true}, retain=retain, eval_forget=true, eval_retain=true,
            steps=0, batch_size=8, key=jax.random.key(0),
        )  # fmt: skip
    assert np.isfinite(out["unrelated"]["retain_accuracy"])
