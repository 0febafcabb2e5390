"""SCRUB: its max/min schedules, epoch decay, optimizer settings and forgetting on `digits`."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from rule_testing import forget_accuracy, smoke_test_rule, tiny_problem

from jaxunlearn import data, models, rules
from jaxunlearn.core import losses
from jaxunlearn.core.rule import StepCounter
from jaxunlearn.rules.scrub import scrub_num_steps
from jaxunlearn.train import fit, make_stream, steps_per_epoch


@functools.cache
def _untrained():
    """A tiny untrained MLP on `digits` and one (forget, retain) batch."""
    ds = data.load("digits")
    net = models.make_network(
        "mlp", input_shape=ds.input_shape, num_outputs=ds.num_outputs, hidden=(8,)
    )
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    batch = {"forget": {"x": x[:8], "y": y[:8]}, "retain": {"x": x[8:24], "y": y[8:24]}}
    return net, net.init(jax.random.key(0)), batch


def _perturbed(variables, scale=0.3):
    # A student away from its teacher, so the max step's KL has a gradient.
    keys = iter(jax.random.split(jax.random.key(7), len(jax.tree.leaves(variables["params"]))))
    params = jax.tree.map(
        lambda p: p + scale * jax.random.normal(next(keys), p.shape), variables["params"]
    )
    return {**variables, "params": params}


def _flags(rule, variables, batch, steps):
    state = rule.init(variables, key=jax.random.key(0))
    update = jax.jit(rule.update)
    flags = []
    for i in range(steps):
        variables, state, metrics = update(variables, state, batch, key=jax.random.key(i))
        flags.append(int(metrics["max_step"]))
    return flags


def test_reference_schedule_is_a_forget_pass_of_max_steps_then_a_retain_pass_of_min_steps():
    # The reference: for each of the first msteps epochs, a max pass over D_f, then a min pass
    # over D_r; later epochs only the min pass. The interleaved schedule (the old default) took a
    # max step on every update of the first msteps epochs: [1, 1, 1, 1, 1, 1, 0, ...].
    net, variables, batch = _untrained()
    rule = rules.scrub(net.apply, steps_per_epoch=3, forget_steps_per_epoch=2, msteps=2)
    assert _flags(rule, variables, batch, 13) == [1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0]
    assert scrub_num_steps(3, 3, 2, msteps=2) == 13
    made = rules.make("scrub", net, num_steps=13, steps_per_epoch=3, forget_steps_per_epoch=2,
                      msteps=2)  # fmt: skip
    assert _flags(made, variables, batch, 13) == [1, 1, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0]


def test_reference_max_step_reads_only_forget_and_min_step_only_retain():
    net, teacher, batch = _untrained()
    lr, temperature = 0.5, 2.0
    rule = rules.scrub(
        net.apply, steps_per_epoch=2, forget_steps_per_epoch=1, msteps=1, optimizer=optax.sgd(lr)
    )
    student = _perturbed(teacher)
    state = rule.init(teacher, key=None)
    update = jax.jit(rule.update)
    other = {"x": batch["retain"]["x"][::-1] + 1.0, "y": batch["retain"]["y"][::-1]}

    def kl(params):
        x = batch["forget"]["x"]
        s = net.apply({**student, "params": params}, x).logits
        return losses.distillation_kl(s, net.apply(teacher, x).logits, temperature)

    # Update 0 is a max step: plain ascent on the forget KL, whatever the retain batch holds.
    new, state1, metrics = update(student, state, batch, key=jax.random.key(0))
    assert float(metrics["max_step"]) == 1.0 and float(metrics["retain_ce"]) == 0.0
    want = jax.tree.map(lambda p, g: p + lr * g, student["params"], jax.grad(kl)(student["params"]))
    for got, w in zip(jax.tree.leaves(new["params"]), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
    same, _, _ = update(student, state, {**batch, "retain": other}, key=jax.random.key(0))
    _assert_equal(new, same)
    # Update 1 is a min step: the forget batch does not matter.
    a, _, m1 = update(new, state1, batch, key=jax.random.key(1))
    b, _, _ = update(new, state1, {**batch, "forget": other}, key=jax.random.key(1))
    assert float(m1["max_step"]) == 0.0 and float(m1["forget_kl"]) == 0.0
    _assert_equal(a, b)


def _assert_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def test_reference_schedule_counts_epochs_with_their_forget_pass_for_the_lr_decay():
    # Epoch 0 is updates 0 (max) and 1-2 (min); update 3 starts epoch 1, after the milestone.
    net, variables, batch = _untrained()
    student = _perturbed(variables)
    kwargs = dict(steps_per_epoch=2, forget_steps_per_epoch=1, msteps=1, optimizer=optax.sgd(0.1))
    decayed = rules.scrub(net.apply, lr_decay_epochs=(1,), lr_decay_rate=0.25, **kwargs)
    plain = rules.scrub(net.apply, lr_decay_epochs=(), **kwargs)
    for step, factor in ((2, 1.0), (3, 0.25)):
        state = decayed.init(variables, key=None)
        state = state._replace(step=StepCounter(jnp.asarray(step, jnp.int32)))
        a, _, _ = jax.jit(decayed.update)(student, state, batch, key=jax.random.key(0))
        b, _, _ = jax.jit(plain.update)(student, state, batch, key=jax.random.key(0))
        for pa, pb, p0 in zip(
            jax.tree.leaves(a["params"]),
            jax.tree.leaves(b["params"]),
            jax.tree.leaves(student["params"]),
            strict=True,
        ):
            np.testing.assert_allclose(pa - p0, factor * (pb - p0), rtol=1e-4, atol=1e-7)


def test_run_length_must_be_whole_reference_epochs():
    net, _, _ = _untrained()
    assert scrub_num_steps(10, 9, 1, msteps=3) == 93
    assert scrub_num_steps(2, 9, 4, msteps=3) == 26  # msteps beyond the run
    # 90 = 10 retain passes, what a runner counting epochs over D_r alone would ask for.
    with pytest.raises(ValueError, match=r"9 epochs take 84, 10 take 93.*scrub_num_steps"):
        rules.make("scrub", net, num_steps=90, steps_per_epoch=9, forget_steps_per_epoch=1)
    rules.make("scrub", net, num_steps=93, steps_per_epoch=9, forget_steps_per_epoch=1)
    with pytest.raises(ValueError, match="interleaved"):
        rules.scrub(net.apply, steps_per_epoch=3, forget_steps_per_epoch=1, max_steps_per_epoch=1)
    with pytest.raises(ValueError, match="schedule"):
        rules.scrub(net.apply, steps_per_epoch=3, schedule="alternating")


def test_without_forget_steps_per_epoch_the_rule_falls_back_to_interleaved_with_a_warning():
    net, variables, batch = _untrained()
    with pytest.warns(UserWarning, match="forget_steps_per_epoch"):
        rule = rules.scrub(net.apply, steps_per_epoch=3, msteps=1)
    assert _flags(rule, variables, batch, 4) == [1, 1, 1, 0]


def test_max_steps_follow_epochs_and_max_steps_per_epoch():
    net, variables, batch = _untrained()
    rule = rules.scrub(
        net.apply, steps_per_epoch=3, msteps=2, max_steps_per_epoch=2, schedule="interleaved"
    )
    state = rule.init(variables, key=jax.random.key(0))
    assert isinstance(state.step, StepCounter)
    update = jax.jit(rule.update)
    flags = []
    for i in range(9):
        variables, state, metrics = update(variables, state, batch, key=jax.random.key(i))
        flags.append(int(metrics["max_step"]))
    assert flags == [1, 1, 0, 1, 1, 0, 0, 0, 0]
    assert int(state.step.count) == 9


def test_an_update_is_a_max_step_on_forget_then_a_min_step_on_retain():
    net, teacher, batch = _untrained()
    lr, temperature, alpha, gamma = 0.5, 2.0, 0.5, 1.0
    rule = rules.scrub(
        net.apply, steps_per_epoch=4, msteps=1, optimizer=optax.sgd(lr), schedule="interleaved"
    )
    student = _perturbed(teacher)
    state = rule.init(teacher, key=None)
    new, _, metrics = jax.jit(rule.update)(student, state, batch, key=jax.random.key(0))
    assert float(metrics["max_step"]) == 1.0

    def kl(params, part):
        x = batch[part]["x"]
        s = net.apply({**student, "params": params}, x).logits
        return losses.distillation_kl(s, net.apply(teacher, x).logits, temperature)

    def min_loss(params):
        logits = net.apply({**student, "params": params}, batch["retain"]["x"]).logits
        ce = losses.cross_entropy(logits, batch["retain"]["y"])
        return gamma * ce + alpha * kl(params, "retain")

    p0 = student["params"]
    p1 = jax.tree.map(lambda p, g: p + lr * g, p0, jax.grad(kl)(p0, "forget"))  # ascent
    p2 = jax.tree.map(lambda p, g: p - lr * g, p1, jax.grad(min_loss)(p1))
    assert float(kl(p1, "forget")) > float(kl(p0, "forget"))
    np.testing.assert_allclose(float(metrics["forget_kl"]), float(kl(p0, "forget")), rtol=1e-5)
    for got, want in zip(jax.tree.leaves(new["params"]), jax.tree.leaves(p2), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_lr_decay_scales_the_optimizer_updates():
    net, variables, batch = _untrained()
    student = _perturbed(variables)
    kwargs = dict(steps_per_epoch=2, msteps=0, optimizer=optax.sgd(0.1), schedule="interleaved")
    decayed = rules.scrub(net.apply, lr_decay_epochs=(1,), lr_decay_rate=0.25, **kwargs)
    plain = rules.scrub(net.apply, lr_decay_epochs=(), **kwargs)
    state = decayed.init(variables, key=None)
    # Update 2 is in epoch 1, after the milestone: the step is a quarter of the undecayed one.
    state = state._replace(step=StepCounter(jnp.asarray(2, jnp.int32)))
    a, _, _ = jax.jit(decayed.update)(student, state, batch, key=jax.random.key(0))
    b, _, _ = jax.jit(plain.update)(student, state, batch, key=jax.random.key(0))
    for pa, pb, p0 in zip(
        jax.tree.leaves(a["params"]),
        jax.tree.leaves(b["params"]),
        jax.tree.leaves(student["params"]),
        strict=True,
    ):
        np.testing.assert_allclose(pa - p0, 0.25 * (pb - p0), rtol=1e-4, atol=1e-7)


def test_optimizer_settings_go_through_resolve():
    net, variables, batch = _untrained()
    student = _perturbed(variables)
    state_of = lambda rule: rule.init(variables, key=None)

    def step(**hparams):
        rule = rules.make(
            "scrub", net, steps_per_epoch=4, forget_steps_per_epoch=1, msteps=0, **hparams
        )
        return jax.jit(rule.update)(student, state_of(rule), batch, key=jax.random.key(0))[0]

    default, no_decay = step(), step(optimizer={"weight_decay": 0.0})
    explicit = step(optimizer=optax.chain(optax.add_decayed_weights(0.1), optax.adam(5e-4)))
    for a, b in zip(jax.tree.leaves(default), jax.tree.leaves(explicit), strict=True):
        np.testing.assert_array_equal(a, b)  # the reference: Adam with coupled decay 0.1
    assert float(optax.tree.norm(optax.tree.sub(default["params"], no_decay["params"]))) > 0
    with pytest.raises(ValueError, match="no hyperparameter"):
        rules.make("scrub", net, steps_per_epoch=4, weight_decay=0.0)


def test_scrub_reduces_forget_accuracy():
    res = smoke_test_rule(
        "scrub",
        steps=40,
        learning_rate=5e-3,
        optimizer={"weight_decay": 0.0},
        schedule="interleaved",
    )
    before = forget_accuracy(tiny_problem()[3])
    for seed in range(2):
        after = forget_accuracy(jax.tree.map(lambda x, s=seed: x[s], res.variables))
        assert after < before - 0.5, f"scrub seed {seed}: forget acc {before} -> {after}"


def test_scrub_reference_schedule_reduces_forget_accuracy():
    ds, split, net, variables = tiny_problem()
    sizes = {"forget": 16, "retain": 64}
    spe = steps_per_epoch(len(split.retain), sizes["retain"])
    fspe = steps_per_epoch(len(split.forget), sizes["forget"])
    num_steps = scrub_num_steps(2, spe, fspe, msteps=2)
    rule = rules.make(
        "scrub",
        net,
        num_steps=num_steps,
        steps_per_epoch=spe,
        forget_steps_per_epoch=fspe,
        msteps=2,
        learning_rate=5e-3,
        optimizer={"weight_decay": 0.0},
    )
    stream = make_stream(ds.x_train, ds.y_train, {"forget": split.forget, "retain": split.retain})
    res = fit(rule, variables, stream, batch_sizes=sizes, num_steps=num_steps,
              key=jax.random.key(3))  # fmt: skip
    assert np.sum(res.metrics["max_step"]) == 2 * fspe
    before, after = forget_accuracy(variables), forget_accuracy(res.variables)
    assert after < before - 0.5, f"scrub (reference schedule): forget acc {before} -> {after}"
