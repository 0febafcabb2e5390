"""Ensembles: N models in one vmapped program equal N single runs; per-model index sets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import data, ensemble, models, rules
from jaxunlearn.core.types import UnlearningRule
from jaxunlearn.train import data_mesh, fit, make_stream, sample_batch


@pytest.fixture(scope="module")
def problem():
    ds = data.load("digits")
    net = models.make_network("mlp", input_shape=ds.input_shape, num_outputs=10, hidden=(16,))
    rule = rules.finetune(net.apply, learning_rate=0.05, train_mode=True)
    return ds, net, rule


def _close(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


def test_ensemble_training_equals_single_runs_and_data_parallel(problem):
    ds, net, rule = problem
    index = np.arange(512)
    keys = ensemble.seed_keys(3, offset=7)
    res = ensemble.train(
        net, rule, ds.x_train, ds.y_train, index, keys=keys, epochs=2, batch_size=64
    )
    assert res.steps == 16 and res.diverged.shape == (3,) and not res.diverged.any()
    stream = make_stream(ds.x_train, ds.y_train, {"retain": index})
    for m in (0, 2):
        single = fit(
            rule,
            net.init(jax.random.key(7 + m)),
            stream,
            batch_sizes={"retain": 64},
            num_steps=16,
            key=jax.random.key(7 + m),
        )
        _close(ensemble.select(res.variables, m), single.variables, rtol=1e-5, atol=1e-6)
    sharded = ensemble.train(
        net,
        rule,
        ds.x_train,
        ds.y_train,
        index,
        keys=keys,
        epochs=2,
        batch_size=64,
        mesh=data_mesh(8),
    )
    _close(sharded.variables, res.variables, rtol=1e-4, atol=1e-5)


def _recording_rule(n: int) -> UnlearningRule:
    """Counts which rows (``x`` holds the row number) each part's batches contained."""

    def init(variables, *, key):
        del variables, key
        return {"forget": jnp.zeros(n, jnp.int32), "retain": jnp.zeros(n, jnp.int32)}

    def update(variables, state, batch, *, key):
        del key
        state = {
            part: state[part].at[batch[part]["x"][:, 0].astype(jnp.int32)].add(1) for part in state
        }
        return (
            variables,
            state,
            {"first_forget": batch["forget"]["x"][0, 0], "sum_retain": batch["retain"]["x"].sum()},
        )

    return UnlearningRule(init, update)


def test_per_model_index_sets_and_shared_parts():
    n = 40
    x = np.arange(n, dtype=np.float32)[:, None]
    y = np.zeros(n, np.int32)
    forget = np.array([[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]])  # one set per model
    retain = np.arange(30, 40)  # shared
    variables = ensemble.replicate({"params": {"w": jnp.zeros(1)}}, 3)
    res = ensemble.unlearn(
        _recording_rule(n),
        variables,
        x,
        y,
        {"forget": forget, "retain": retain},
        keys=ensemble.seed_keys(3),
        batch_sizes={"forget": 2, "retain": 5},
        num_steps=6,
        chunk_size=4,
    )
    for m in range(3):
        seen = np.nonzero(np.asarray(res.state["forget"][m]))[0]
        np.testing.assert_array_equal(seen, forget[m])
        assert np.asarray(res.state["forget"][m]).sum() == 12  # 6 steps x 2, 3 epochs
        np.testing.assert_array_equal(np.nonzero(np.asarray(res.state["retain"][m]))[0], retain)


def test_fit_draws_the_batches_of_sample_batch_across_epochs_and_chunks():
    # fit draws each epoch's permutation once and carries it; the batches must stay those of
    # sample_batch (a pure function of key and step) whatever the chunking.
    n = 40
    x = np.arange(n, dtype=np.float32)[:, None]
    stream = make_stream(
        x, np.zeros(n, np.int32), {"forget": np.arange(7), "retain": np.arange(10, 40)}
    )
    sizes = {"forget": 3, "retain": 8}
    key = jax.random.key(5)
    res = fit(
        _recording_rule(n),
        {"params": {"w": jnp.zeros(1)}},
        stream,
        batch_sizes=sizes,
        num_steps=11,
        key=key,
        chunk_size=4,
    )
    data_key = jax.random.fold_in(key, 0)
    for step in range(11):
        batch = sample_batch(stream, sizes, data_key, jnp.asarray(step))
        assert res.metrics["first_forget"][step] == batch["forget"]["x"][0, 0]
        assert res.metrics["sum_retain"][step] == batch["retain"]["x"].sum()


def test_bad_input_names_the_argument(problem):
    ds, net, rule = problem
    index = np.arange(128)
    with pytest.raises(ValueError, match="`keys` holds 1 model"):
        ensemble.train(
            net,
            rule,
            ds.x_train,
            ds.y_train,
            index,
            keys=ensemble.seed_keys(1),
            epochs=1,
            batch_size=64,
        )
    with pytest.raises(ValueError, match="`keys` must have shape"):
        ensemble.train(
            net,
            rule,
            ds.x_train,
            ds.y_train,
            index,
            keys=jax.random.key(0),
            epochs=1,
            batch_size=64,
        )
    with pytest.raises(ValueError, match=r"`index\['retain'\]` has sets for 2 models"):
        ensemble.train(
            net,
            rule,
            ds.x_train,
            ds.y_train,
            np.zeros((2, 64), int),
            keys=ensemble.seed_keys(3),
            epochs=1,
            batch_size=64,
        )
    with pytest.raises(ValueError, match="`count` must be an integer >= 2; got 1"):
        ensemble.replicate(net.init(jax.random.key(0)), 1)
    three = jax.vmap(net.init)(ensemble.seed_keys(3))
    with pytest.raises(ValueError, match="`variables` holds 3 models but `keys` has 2"):
        ensemble.unlearn(
            rule,
            three,
            ds.x_train,
            ds.y_train,
            {"retain": index},
            keys=ensemble.seed_keys(2),
            batch_sizes={"retain": 64},
            num_steps=1,
        )


def test_shadow_membership_design_is_balanced():
    member = ensemble.membership_design(8, 10, seed=3)
    assert member.shape == (8, 10) and member.dtype == bool
    np.testing.assert_array_equal(member.sum(axis=1), 5)  # equal-sized in sets: one program
    np.testing.assert_array_equal(member.sum(axis=0), 4)  # every target in for half the models
    assert len({tuple(row) for row in member}) > 2  # not just two repeated halves
    for bad in (4, 7):
        with pytest.raises(ValueError, match="num_shadows"):
            ensemble.membership_design(bad, 10)
    with pytest.raises(ValueError, match="num_targets"):
        ensemble.membership_design(6, 9)
    targets = ensemble.choose_targets(np.arange(100, 111))
    assert len(targets) == 10 and set(targets) <= set(range(100, 111))
    with pytest.raises(ValueError, match="num_targets"):
        ensemble.choose_targets(np.arange(10), 12)
