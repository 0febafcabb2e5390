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


def test_each_epoch_reads_a_fresh_retain_fraction():
    # An epoch is ceil(0.3 * steps_per_epoch) updates, so it reads 30% of the retain set, and the
    # retain part's per-pass permutation makes each epoch's 30% a fresh slice; before, an epoch
    # was a whole pass over the retain set. retain_fraction=None keeps that.
    from jaxunlearn.train import make_stream
    from jaxunlearn.train.loop import sample_batch

    steps = lambda epochs, spe, **hparams: rules.num_steps(
        "bad_teacher", epochs, steps_per_epoch=spe, forget_steps_per_epoch=5, hparams=hparams
    )
    assert steps(2, 20) == 12 and steps(1, 7, retain_fraction=0.5) == 4
    assert steps(2, 20, retain_fraction=None) == 40
    stream = make_stream(np.zeros((120, 1)), np.zeros(120), {
        "forget": np.arange(20), "retain": np.arange(20, 120)
    })  # fmt: skip
    sizes = {"forget": 4, "retain": 5}  # 100 retain examples: 20 steps per pass, 6 per epoch
    rows = lambda steps: [
        int(r)
        for s in steps
        for r in np.asarray(sample_batch(stream, sizes, jax.random.key(0), s)["retain"]["index"])
    ]
    first, second = rows(range(0, 6)), rows(range(6, 12))
    assert len(set(first)) == len(set(second)) == 30 and not set(first) & set(second)
