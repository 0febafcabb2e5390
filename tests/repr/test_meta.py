"""Meta-training of the learned rule: the ridge meta-objective on a hand-computed case, task
sampling, truncated unrolls with carried state and task resets, vmapped vs sequential tasks,
and bad settings."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import data, models
from jaxunlearn.repr import learned, meta

SMALL = {"hidden": 4, "channels": 2, "rank": 2}


@functools.cache
def split():
    ds = data.load("digits")
    return meta.task_data(ds.x_train, ds.y_train), meta.task_data(ds.x_test, ds.y_test)


@functools.cache
def net():
    return models.make_network("mlp", input_shape=(8, 8, 1), num_outputs=10, hidden=(8,))


def test_ridge_meta_objective_on_a_hand_computed_case():
    # Centred, unit-norm support rows; labels 0, 1, 0, 1; targets +-0.5.
    # F^T F = 2 I, F^T T = [[1, -1], [1, -1]], so W = [[1, -1], [1, -1]] / (2 + ridge).
    fs = jnp.asarray([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    ys = jnp.asarray([0, 1, 0, 1])
    # Query [1, 0] predicts class 0 (right); query [1, 1] predicts class 0 but is class 1:
    # normalised prediction [1, -1]/sqrt(2) against target [-1, 1]/sqrt(2): distance^2 = 4.
    fq = jnp.asarray([[1.0, 0.0], [1.0, 1.0]])
    yq = jnp.asarray([0, 1])
    loss, acc = meta.ridge_meta_objective(fs, ys, fq, yq, num_classes=2, ridge=0.1)
    assert float(loss) == pytest.approx(2.0, abs=1e-5)
    assert float(acc) == pytest.approx(0.5)
    loss, acc = meta.ridge_meta_objective(fs, ys, fq[:1], yq[:1], num_classes=2)
    assert float(loss) == pytest.approx(0.0, abs=1e-5) and float(acc) == 1.0


def test_tasks_episodes_and_batches_stay_in_the_tasks_classes():
    train, _ = split()
    task = meta.sample_task(jax.random.key(0), train, num_ways=4, projection_prob=1.0)
    classes = np.asarray(task.classes)
    assert len(set(classes.tolist())) == 4
    p = np.asarray(task.projection)
    np.testing.assert_allclose(p @ p.T, np.eye(64), atol=1e-4)
    plain = meta.sample_task(jax.random.key(0), train, num_ways=4, projection_prob=0.0)
    np.testing.assert_array_equal(plain.projection, np.eye(64))
    xs, ys, xq, yq = meta.episode(jax.random.key(1), train, plain, 3, 2)
    assert xs.shape == (12, 8, 8, 1) and xq.shape == (8, 8, 8, 1)
    np.testing.assert_array_equal(ys, np.repeat(np.arange(4), 3))
    # Every support image is an image of its task class.
    x, y = np.asarray(train.x), np.asarray(train.y)
    for img, label in zip(np.asarray(xs), np.asarray(ys), strict=True):
        rows = np.flatnonzero(np.all(x == img, axis=(1, 2, 3)))
        assert classes[label] in y[rows]
    batch = meta.unlabelled_batch(jax.random.key(2), train, plain, 16)
    for img in np.asarray(batch):
        rows = np.flatnonzero(np.all(x == img, axis=(1, 2, 3)))
        assert set(y[rows]) & set(classes.tolist())


def test_truncated_unrolls_carry_state_reset_tasks_and_vmap_matches_sequential():
    train, test = split()
    settings = meta.MetaSettings(
        num_tasks=2,
        unroll_length=2,
        trajectory_length=2,
        batch_size=8,
        num_ways=3,
        shots=2,
        queries=2,
        projection_prob=0.5,
    )
    trainers = [
        meta.meta_trainer(
            net(),
            train,
            test,
            settings=settings,
            theta_dims=SMALL,
            vectorize=v,
            eval_tasks=2,
            eval_episodes=1,
        )
        for v in (True, False)
    ]
    state = trainers[0].init(jax.random.key(0))
    np.testing.assert_array_equal(state.inner.step, [0, 0])  # one truncation per trajectory
    one, m_vmap = trainers[0].step(state, jax.random.key(1))
    _, m_seq = trainers[1].step(state, jax.random.key(1))
    for k in ("meta_loss", "meta_accuracy", "grad_norm"):
        np.testing.assert_allclose(m_vmap[k], m_seq[k], rtol=1e-4)
    np.testing.assert_array_equal(one.inner.step, [2, 2])
    np.testing.assert_array_equal(one.inner.serial, [0, 0])
    assert int(one.step) == 1
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), one.theta, state.theta)
    assert max(jax.tree.leaves(moved)) > 0 and float(m_vmap["grad_norm"]) > 0
    # The base networks were trained by the rule during the unroll, then carried over.
    k0 = state.inner.variables["params"]["layers"]["0"]["kernel"]
    assert float(jnp.abs(one.inner.variables["params"]["layers"]["0"]["kernel"] - k0).max()) > 0
    # Both tasks reached trajectory_length: the next truncation starts new tasks and networks.
    two, _ = trainers[0].step(one, jax.random.key(2))
    np.testing.assert_array_equal(two.inner.serial, [1, 1])
    np.testing.assert_array_equal(two.inner.step, [2, 2])
    assert not np.array_equal(two.inner.task.classes, one.inner.task.classes)
    # meta_train continues from a state and a history, one meta-step per key fold-in.
    history = {"meta_loss": [0.5], "meta_accuracy": [0.5], "grad_norm": [1.0], "eval": []}
    state3, history = meta.meta_train(
        trainers[0], 1, key=jax.random.key(5), state=two, history=history
    )
    assert int(state3.step) == 3 and len(history["meta_loss"]) == 2
    np.testing.assert_array_equal(state3.inner.step, [2, 2])


@pytest.mark.parametrize(
    "override, match",
    [
        ({"unroll_length": 0}, "`unroll_length` must be an integer >= 1"),
        ({"unroll_length": -3}, "`unroll_length` must be an integer >= 1"),
        ({"trajectory_length": 5, "unroll_length": 10}, "`trajectory_length` \\(5\\) must be"),
        ({"batch_size": 1}, "`batch_size` must be >= 2"),
        ({"num_ways": 1}, "`num_ways` must be an integer >= 2"),
        ({"projection_prob": 1.5}, "`projection_prob` must lie in \\[0, 1\\]"),
        ({"learning_rate": 0.0}, "`learning_rate` must be finite and > 0"),
        ({"ridge": -0.1}, "`ridge` must be finite and >= 0"),
    ],
)
def test_bad_settings_name_the_setting(override, match):
    with pytest.raises(ValueError, match=match):
        meta.MetaSettings(**override)


def test_bad_trainer_input_fails_before_compute():
    train, _ = split()
    with pytest.raises(ValueError, match="`num_ways` \\(11\\) exceeds the classes"):
        meta.meta_trainer(net(), train, settings=meta.MetaSettings(num_ways=11))
    cnn = models.make_network("cnn", input_shape=(8, 8, 1), num_outputs=10, channels=(4,), hidden=8)
    with pytest.raises(ValueError, match="hidden layers of an MLP"):
        meta.meta_trainer(cnn, train)
    wide = models.make_network("mlp", input_shape=(4, 4, 1), num_outputs=10, hidden=(8,))
    with pytest.raises(ValueError, match="takes 16 inputs but the data has 64"):
        meta.meta_trainer(wide, train)
    with pytest.raises(ValueError, match="`num_steps` must be an integer >= 1"):
        meta.meta_train(meta.meta_trainer(net(), train), 0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="classes \\[1\\] have none"):
        meta.task_data(np.zeros((3, 2)), np.asarray([0, 0, 2]))
    assert learned.architecture_of(jax.eval_shape(net().init, jax.random.key(0))) == (64, 8)
