"""Bad teaching: distilling a random teacher on the forget set lowers forget accuracy."""

import jax
import jax.numpy as jnp
import numpy as np
from rule_testing import forget_accuracy, smoke_test_rule, tiny_problem

from jaxunlearn import models, rules


def test_bad_teacher_reduces_forget_accuracy():
    res = smoke_test_rule("bad_teacher", steps=40, learning_rate=5e-3)
    before = forget_accuracy(tiny_problem()[3])
    for seed in range(2):
        after = forget_accuracy(jax.tree.map(lambda x, s=seed: x[s], res.variables))
        assert after < before - 0.5, f"bad_teacher seed {seed}: forget acc {before} -> {after}"


def _kl(student_logits, target_probs):
    s = jax.nn.log_softmax(student_logits, -1)
    return jnp.mean(jnp.sum(target_probs * (jnp.log(target_probs) - s), -1))


def test_bad_teacher_weighs_forget_as_the_reference_loader_of_forget_and_30pc_retain():
    # The reference mixes D_f with a random 30% of D_r in one loader: with a 10% forget set the
    # forget share of its batches is 0.1 / (0.1 + 0.3 * 0.9) ~ 0.27, whatever our batch sizes
    # (here 8 + 8, a share of 0.5 in the old pooled loss).
    net = models.make_network("mlp", input_shape=(6,), num_outputs=4, hidden=(5,))
    variables = net.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (16, 6))
    y = jnp.zeros((16,), jnp.int32)
    batch = {"forget": {"x": x[:8], "y": y[:8]}, "retain": {"x": x[8:], "y": y[8:]}}
    rule = rules.make("bad_teacher", net, num_steps=4, steps_per_epoch=4, forget_fraction=0.1)
    state = rule.init(variables, key=jax.random.key(2))
    _, _, metrics = jax.jit(rule.update)(variables, state, batch, key=jax.random.key(3))

    student = net.apply(variables, x).logits
    bad = jax.nn.softmax(net.apply(state.incompetent, x[:8]).logits, -1)
    good = jax.nn.softmax(net.apply(variables, x[8:]).logits, -1)
    share = 0.1 / (0.1 + 0.3 * 0.9)
    expected = share * _kl(student[:8], bad) + (1 - share) * _kl(student[8:], good)
    np.testing.assert_allclose(float(metrics["loss"]), float(expected) / 4, rtol=1e-5)

    # retain_fraction=None: the old weighting by batch sizes (the pooled mean).
    pooled = rules.make(
        "bad_teacher",
        net,
        num_steps=4,
        steps_per_epoch=4,
        forget_fraction=0.1,
        retain_fraction=None,
    )
    _, _, metrics = jax.jit(pooled.update)(variables, state, batch, key=jax.random.key(3))
    expected = 0.5 * _kl(student[:8], bad) + 0.5 * _kl(student[8:], good)
    np.testing.assert_allclose(float(metrics["loss"]), float(expected) / 4, rtol=1e-5)
