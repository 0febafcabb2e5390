"""Tests of l1-sparse and bad teaching (SCRUB, SalUn, WAGLE and masks: their own modules)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rule_testing import forget_accuracy, smoke_test_rule, tiny_problem

from jaxunlearn import rules
from jaxunlearn.train import make_stream
from jaxunlearn.train.loop import sample_batch


def test_l1_sparse():
    smoke_test_rule("l1_sparse")


def test_l1_sparse_alpha_decays_per_epoch():
    ds, split, net, variables = tiny_problem()
    rule = rules.l1_sparse(net.apply, num_steps=6, steps_per_epoch=2, alpha=0.3)
    stream = make_stream(ds.x_train, ds.y_train, {"retain": split.retain})
    update = jax.jit(rule.update)
    state, alphas = rule.init(variables, key=None), []
    for step in range(6):
        b = sample_batch(stream, {"retain": 16}, jax.random.key(0), jnp.asarray(step))
        variables, state, m = update(variables, state, b, key=jax.random.key(0))
        alphas.append(float(m["alpha"]))
    np.testing.assert_allclose(alphas, [0.3, 0.3, 0.2, 0.2, 0.1, 0.1], rtol=1e-6)


@pytest.mark.parametrize(
    "name, hparams",
    [
        ("bad_teacher", {"learning_rate": 5e-3}),
    ],
)
def test_distillation_rules_run_and_reduce_forget_accuracy(name, hparams):
    res = smoke_test_rule(name, steps=40, **hparams)
    before = forget_accuracy(tiny_problem()[3])
    for seed in range(2):
        after = forget_accuracy(jax.tree.map(lambda x, s=seed: x[s], res.variables))
        assert after < before - 0.5, f"{name} seed {seed}: forget acc {before} -> {after}"
