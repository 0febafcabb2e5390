"""UNSIR: the noise, impair and repair phases, the noise hand-off and the optimizer settings."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rule_testing import linear_network, smoke_test_rule

from jaxunlearn import rules
from jaxunlearn.core.combinators import PhasesState
from jaxunlearn.rules.unsir import ImpairState, NoiseState, reference_steps


def _batches(n):
    rng = np.random.default_rng(0)
    for i in range(n):
        yield {
            "forget": {
                "x": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
                "y": jnp.full((4,), 2 if i == 0 else 1, jnp.int32),  # labels come from batch 0
            },
            "retain": {
                "x": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
                "y": jnp.asarray(rng.integers(0, 4, 8), jnp.int32),
            },
        }


def _run(steps, **hparams):
    net = linear_network(3, 4)
    variables = net.init(jax.random.key(0))
    hparams = {"impair_epochs": 1.0, **hparams}
    rule = rules.unsir(
        net.apply, steps_per_epoch=2, input_shape=(3,), noise_batch_size=6, **hparams
    )
    state = rule.init(variables, key=jax.random.key(1))
    update = jax.jit(rule.update)
    current, history = variables, []
    for step, batch in enumerate(_batches(steps)):
        current, state, metrics = update(current, state, batch, key=jax.random.key(step))
        history.append((current, state, {k: float(v) for k, v in metrics.items()}))
    return variables, history


def _ce(net, variables, x, y):
    logits = net.apply(variables, x).logits
    picked = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
    return float(jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked))


def _same(a, b):
    return all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_noise_then_impair_then_repair():
    variables, history = _run(7, noise_steps=3, impair_epochs=1.0)
    assert [int(m["phase"]) for _, _, m in history] == [0, 0, 0, 1, 1, 2, 2]
    for current, _, _ in history[:3]:  # noise phase: the model is untouched
        assert _same(current, variables)
    noise_losses = [m["noise_loss"] for _, _, m in history[:3]]
    assert noise_losses[2] < noise_losses[0]  # the noise is learned
    state = history[-1][1]
    assert isinstance(state, PhasesState) and int(state.step.count) == 7
    noise, impair, repair = state.phases
    assert isinstance(noise, NoiseState) and isinstance(impair, ImpairState)
    np.testing.assert_array_equal(noise.labels, [2] * 6)  # the first forget batch's labels
    # The impair phase trained on the learned noise (handed over, then frozen), not a new draw.
    assert _same(impair.noise.noise, noise.noise)
    assert _same(impair.noise.labels, noise.labels)
    # Each model phase has its own optimizer, started when the phase starts: Adam counts.
    counts = [int(x) for x in jax.tree.leaves(impair.opt_state) if x.dtype == jnp.int32]
    assert counts and set(counts) == {2}
    counts = [int(x) for x in jax.tree.leaves(repair.opt_state) if x.dtype == jnp.int32]
    assert counts and set(counts) == {2}
    assert not np.allclose(history[-1][0]["params"]["w"], variables["params"]["w"])


def test_the_impair_phase_trains_on_noise_and_retain_the_repair_on_retain():
    variables, history = _run(5, noise_steps=1, impair_epochs=1.0)
    net = linear_network(3, 4)
    batches = list(_batches(5))
    impair = history[2][1].phases[1]
    x = jnp.concatenate([impair.noise.noise, batches[1]["retain"]["x"]])
    y = jnp.concatenate([impair.noise.labels, batches[1]["retain"]["y"]])
    np.testing.assert_allclose(history[1][2]["loss"], _ce(net, history[0][0], x, y), rtol=1e-5)
    retain = batches[3]["retain"]
    np.testing.assert_allclose(
        history[3][2]["loss"], _ce(net, history[2][0], retain["x"], retain["y"]), rtol=1e-5
    )


def test_phases_of_zero_updates_are_left_out():
    # No noise phase: the impair phase draws the noise and takes the first batch's labels.
    _, history = _run(4, noise_steps=0, impair_epochs=1.0)
    assert [int(m["phase"]) for _, _, m in history] == [1, 1, 2, 2]
    impair = history[-1][1].phases[0]
    np.testing.assert_array_equal(impair.noise.labels, [2] * 6)
    assert int(impair.noise.seen.count) == 2
    # No impair phase: noise, then repair.
    _, history = _run(4, noise_steps=2, impair_epochs=0.0)
    assert [int(m["phase"]) for _, _, m in history] == [0, 0, 2, 2]
    _, history = _run(2, noise_steps=0, impair_epochs=0.0)
    assert [int(m["phase"]) for _, _, m in history] == [2, 2]


def test_optimizer_settings_go_through_resolve():
    net = linear_network(3, 4)
    make = lambda **h: rules.make("unsir", net, steps_per_epoch=2, **h)
    make(optimizer={"weight_decay": 0.1}, noise_optimizer={"name": "sgd"})
    with pytest.raises(ValueError, match="no setting"):
        make(noise_optimizer={"momentum": 0.9})  # the reference noise optimizer is Adam
    with pytest.raises(ValueError, match="positive"):
        make(noise_learning_rate=0.0)


def test_unsir_smoke():
    smoke_test_rule("unsir", noise_steps=2, impair_epochs=0.5)


def test_reference_step_counts():
    # CIFAR-10, one class forgotten: (80 * 32 + 9 * 500) / 32 impair and 4500 / 128 repair updates.
    steps = reference_steps(num_classes=10, num_forget_classes=1)
    assert (steps.impair, steps.repair, steps.retain_examples) == (221, 36, 4500)
    assert steps.noise_share == pytest.approx(2560 / 7060)


def test_reference_schedule_impairs_repairs_then_stops():
    # 3 retained classes x 4 images and 2 noise copies of 6: impair ceil(24 / 6) = 4 updates with
    # a noise share of 1/2, repair ceil(12 / 8) = 2, then the model is left as it is.
    hparams = dict(
        impair_epochs=None,
        num_classes=4,
        forget_classes=(2,),
        retain_per_class=4,
        num_noise_batches=2,
        impair_batch_size=6,
        repair_batch_size=8,
        noise_steps=1,
    )
    variables, history = _run(10, **hparams)
    assert [int(m["phase"]) for _, _, m in history] == [0, 1, 1, 1, 1, 2, 2, 3, 3, 3]
    assert _same(history[-1][0], history[6][0]) and not _same(history[6][0], history[4][0])
    net = linear_network(3, 4)
    batch = list(_batches(10))[1]
    noise = history[1][1].phases[1].noise
    want = 0.5 * _ce(net, history[0][0], noise.noise, noise.labels) + 0.5 * _ce(
        net, history[0][0], batch["retain"]["x"], batch["retain"]["y"]
    )
    np.testing.assert_allclose(history[1][2]["loss"], want, rtol=1e-5)


def test_the_registry_gives_the_reference_schedule():
    net = linear_network(3, 4)
    rule = rules.make("unsir", net, steps_per_epoch=2, forget_classes=(0,), retain_per_class=2)
    # 6 retained images: impair ceil((2560 + 6) / 32) = 81 updates after 25 noise steps.
    variables = net.init(jax.random.key(0))
    state = rule.init(variables, key=jax.random.key(0))
    state = state._replace(step=state.step._replace(count=jnp.asarray(25 + 81, jnp.int32)))
    _, _, metrics = jax.jit(rule.update)(variables, state, next(_batches(1)), key=jax.random.key(1))
    assert int(metrics["phase"]) == 2


def test_reference_retain_subsample_takes_the_first_k_of_every_retained_class():
    from jaxunlearn.rules.unsir import reference_retain_subsample

    labels = np.array([0, 1, 2, 1, 2, 2, 0, 1, 2, 1])
    retain = np.array([1, 2, 3, 4, 5, 7, 8, 9])  # class 1: rows 1, 3, 7, 9; class 2: 2, 4, 5, 8
    # Class 0 forgotten: k = min(500, 4) rows of classes 1 and 2, in retain's order.
    sub, k = reference_retain_subsample(labels, retain, num_classes=3, forget_classes=(0,))
    assert k == 4 and sub.tolist() == [1, 3, 7, 9, 2, 4, 5, 8]
    sub, k = reference_retain_subsample(
        labels, retain, num_classes=3, forget_classes=(0,), retain_per_class=3
    )
    assert k == 3 and sub.tolist() == [1, 3, 7, 2, 4, 5]
    # A forget set that is not a class keeps every class; the smallest one (class 0: row 6 only
    # once row 0 is forgotten) sets k.
    sub, k = reference_retain_subsample(labels, np.arange(1, 10), num_classes=3)
    assert k == 1 and sub.tolist() == [6, 1, 2]
    with pytest.raises(ValueError, match=r"retained classes \[0\]"):
        reference_retain_subsample(labels, retain, num_classes=3)


def test_the_registry_runs_the_reference_schedule_on_the_subsample():
    # The registry's index sets give UNSIR the subsample and its per-class size; its run length
    # is the noise, impair and repair updates of that subsample (the earlier schedule: epochs
    # over the whole retain set).
    from jaxunlearn.rules.unsir import reference_steps

    info = rules.get("unsir")
    labels = np.repeat(np.arange(10), 30)
    index = {"forget": np.arange(30), "retain": np.arange(30, 300)}
    sets, overrides = info.index_sets(
        index, labels=labels, num_classes=10, forget_classes=(0,), hparams={}
    )
    assert overrides == {"retain_per_class": 30} and len(sets["retain"]) == 270
    steps = reference_steps(num_classes=10, num_forget_classes=1, retain_per_class=30)
    assert (steps.impair, steps.repair) == (89, 3)  # ceil((2560 + 270) / 32), ceil(270 / 128)
    n = rules.num_steps(
        "unsir",
        1,
        steps_per_epoch=4,
        forget_steps_per_epoch=1,
        hparams=overrides,
        num_classes=10,
        forget_classes=(0,),
    )
    assert n == 25 + 89 + 3
    with pytest.raises(ValueError, match="epochs=1"):
        rules.num_steps(
            "unsir", 2, steps_per_epoch=4, forget_steps_per_epoch=1, hparams={}, num_classes=10
        )
    earlier = {"impair_epochs": 1.0}
    same, none = info.index_sets(
        index, labels=labels, num_classes=10, forget_classes=(0,), hparams=earlier
    )
    assert none == {} and len(same["retain"]) == 270 and same["retain"] is index["retain"]
    assert (
        rules.num_steps(
            "unsir", 3, steps_per_epoch=4, forget_steps_per_epoch=1, hparams=earlier, num_classes=10
        )
        == 12
    )
