"""The training loop: determinism, data parallelism, checkpoint resume, divergence, ensembles."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn import data, models, rules
from jaxunlearn.core import losses
from jaxunlearn.core.rule import rule_from_loss
from jaxunlearn.train import fit, make_stream, scan_steps


@pytest.fixture(scope="module")
def problem():
    ds = data.load("digits")
    net = models.make_network("mlp", input_shape=ds.input_shape, num_outputs=10, hidden=(32,))
    stream = make_stream(ds.x_train, ds.y_train, {"retain": np.arange(len(ds.y_train))})
    return ds, net, stream


def _train(net, stream, **kw):
    rule = rules.finetune(net.apply, learning_rate=0.05)
    return fit(
        rule,
        net.init(jax.random.key(0)),
        stream,
        batch_sizes={"retain": 64},
        num_steps=kw.pop("num_steps", 40),
        key=jax.random.key(1),
        **kw,
    )


def _assert_trees_close(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


def test_training_learns_and_is_deterministic(problem):
    ds, net, stream = problem
    a = _train(net, stream, num_steps=200)
    b = _train(net, stream, num_steps=200, chunk_size=7)
    _assert_trees_close(a.variables, b.variables, rtol=1e-5, atol=1e-6)
    logits = net.apply(a.variables, jnp.asarray(ds.x_test)).logits
    assert float(losses.accuracy(logits, ds.y_test)) > 0.9
    assert a.metrics["loss"].shape == (200,)
    assert a.compile_s > 0 and a.runtime_s > 0 and not a.diverged


def test_scan_steps_matches_fit(problem):
    _, net, stream = problem
    rule = rules.finetune(net.apply, learning_rate=0.05)
    v0 = net.init(jax.random.key(0))
    a = fit(rule, v0, stream, batch_sizes={"retain": 64}, num_steps=30, key=jax.random.key(1))
    v, _, m = jax.jit(
        lambda v: scan_steps(
            rule, v, stream, batch_sizes={"retain": 64}, num_steps=30, key=jax.random.key(1)
        )
    )(v0)
    _assert_trees_close(a.variables, v, rtol=1e-5, atol=1e-6)
    assert m["loss"].shape == (30,)


def test_data_parallel_on_8_devices_matches_one_device(problem):
    assert jax.device_count() == 8, "tests/conftest.py should force 8 CPU devices"
    _, net, stream = problem
    mesh = jax.make_mesh((8,), ("data",))
    one = _train(net, stream, num_steps=30)
    eight = _train(net, stream, num_steps=30, mesh=mesh)
    _assert_trees_close(one.variables, eight.variables, rtol=1e-4, atol=1e-5)


def test_batch_size_must_divide_devices_and_fit_data(problem):
    _, net, stream = problem
    rule = rules.finetune(net.apply)
    with pytest.raises(ValueError, match="larger than"):
        fit(
            rule,
            net.init(jax.random.key(0)),
            stream,
            batch_sizes={"retain": 10_000},
            num_steps=1,
            key=jax.random.key(0),
        )
    with pytest.raises(ValueError, match="divisible"):
        fit(
            rule,
            net.init(jax.random.key(0)),
            stream,
            batch_sizes={"retain": 60},
            num_steps=1,
            key=jax.random.key(0),
            mesh=jax.make_mesh((8,), ("data",)),
        )


def test_interrupted_then_resumed_run_equals_uninterrupted(problem, tmp_path):
    _, net, stream = problem
    full = _train(net, stream, num_steps=40, chunk_size=10)
    ckpt = str(tmp_path / "ckpt")
    part = _train(net, stream, num_steps=20, chunk_size=10, checkpoint_dir=ckpt)
    assert part.steps == 20
    # A rerun of the full job with the same checkpoint directory resumes at step 20.
    resumed = _train(net, stream, num_steps=40, chunk_size=10, checkpoint_dir=ckpt)
    assert resumed.steps == 40 and resumed.metrics["loss"].shape == (20,)
    _assert_trees_close(full.variables, resumed.variables, rtol=1e-6, atol=1e-7)
    _assert_trees_close(full.state, resumed.state, rtol=1e-6, atol=1e-7)


def test_divergence_is_detected_and_stops(problem):
    _, net, stream = problem

    def exploding(variables, batch, *, reference, step, key):
        out = net.apply(variables, batch["retain"]["x"])
        return -jnp.exp(jnp.sum(out.logits**2)), {}

    rule = rule_from_loss(exploding, optax.sgd(10.0), keep_reference=False)
    res = fit(
        rule,
        net.init(jax.random.key(0)),
        stream,
        batch_sizes={"retain": 64},
        num_steps=100,
        key=jax.random.key(0),
        chunk_size=10,
    )
    assert res.diverged and res.steps < 100


def test_ensemble_vmaps_over_seeds_and_matches_single_runs(problem):
    _, net, stream = problem
    rule = rules.finetune(net.apply, learning_rate=0.05)
    keys = jax.vmap(jax.random.key)(jnp.arange(3))
    init = jax.vmap(net.init)(keys)
    ens = fit(rule, init, stream, batch_sizes={"retain": 64}, num_steps=20, key=keys, ensemble=True)
    assert ens.diverged.shape == (3,) and not ens.diverged.any()
    single = fit(
        rule,
        jax.tree.map(lambda x: x[1], init),
        stream,
        batch_sizes={"retain": 64},
        num_steps=20,
        key=keys[1],
    )
    _assert_trees_close(
        jax.tree.map(lambda x: x[1], ens.variables), single.variables, rtol=1e-5, atol=1e-6
    )
