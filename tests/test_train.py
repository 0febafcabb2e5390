"""The training loop: determinism, data parallelism, checkpoint resume, divergence, ensembles."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn import data, ensemble, models, rules
from jaxunlearn.core import losses
from jaxunlearn.core.rule import StepCounter, is_step_counter, rule_from_loss
from jaxunlearn.core.types import UnlearningRule
from jaxunlearn.data import augment
from jaxunlearn.train import data_mesh, fit, loop, make_stream, scan_steps


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
    # Augmented batches split over the devices draw the same crops and flips.
    crop_flip = augment.get("crop_flip")
    one = _train(net, stream, num_steps=30, augment=crop_flip)
    eight = _train(net, stream, num_steps=30, mesh=mesh, augment=crop_flip)
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


# Ensembles keep step counters unmapped (a rule's branches on them stay branches) ---------------


def _forget_retain_stream(ds):
    classes = np.asarray(ds.y_train)
    return make_stream(
        ds.x_train,
        ds.y_train,
        {"forget": np.flatnonzero(classes == 0), "retain": np.flatnonzero(classes != 0)},
    )


def _ensemble_fit(rule, net, stream, num_steps, **kw):
    keys = jax.vmap(jax.random.key)(jnp.arange(3))
    return fit(
        rule,
        jax.vmap(net.init)(keys),
        stream,
        batch_sizes={"forget": 16, "retain": 32},
        num_steps=num_steps,
        key=keys,
        ensemble=True,
        **kw,
    )


def _all_mapped(monkeypatch):
    """Makes fit map every state leaf over the models, as it did before counters stayed shared."""
    monkeypatch.setattr(
        loop, "_shared_counters", lambda state: (False,) * len(jax.tree.leaves(state))
    )


def _counts(state) -> list:
    """The values of every StepCounter in a rule state."""
    nodes = jax.tree.leaves(state, is_leaf=is_step_counter)
    return [np.asarray(n.count).tolist() for n in nodes if is_step_counter(n)]


@pytest.mark.parametrize("name", ["scrub", "adapt_then_unlearn"])
def test_ensemble_with_phase_switches_equals_single_runs_and_all_mapped(problem, name, monkeypatch):
    ds, net, _ = problem
    stream = _forget_retain_stream(ds)
    if name == "scrub":  # Adam (optax counts) and max steps in the first of 3-step epochs only
        rule = rules.scrub(
            net.apply, steps_per_epoch=3, msteps=1, lr_decay_epochs=(2,), schedule="interleaved"
        )
    else:
        rule = rules.adapt_then_unlearn(net.apply, num_steps=8, alpha=1e4)
    ens = _ensemble_fit(rule, net, stream, 8, chunk_size=3)
    assert all(x.shape[0] == 3 for x in jax.tree.leaves(ens.state))
    assert _counts(ens.state)[0] == [8, 8, 8]
    for m in (0, 2):
        single = fit(
            rule,
            net.init(jax.random.key(m)),
            stream,
            batch_sizes={"forget": 16, "retain": 32},
            num_steps=8,
            key=jax.random.key(m),
            chunk_size=3,
        )
        _assert_trees_close(
            ensemble.select(ens.variables, m), single.variables, rtol=1e-5, atol=1e-6
        )
        _assert_trees_close(ensemble.select(ens.state, m), single.state, rtol=1e-5, atol=1e-6)
        _assert_trees_close(
            {k: v[m] for k, v in ens.metrics.items()}, single.metrics, rtol=1e-5, atol=1e-6
        )
    # Shared counters come back replicated, so the next chunk accepts them.
    sharded = _ensemble_fit(rule, net, stream, 8, chunk_size=3, mesh=data_mesh(8))
    _assert_trees_close(sharded.variables, ens.variables, rtol=1e-4, atol=1e-5)
    _assert_trees_close(sharded.state, ens.state, rtol=1e-4, atol=1e-5)
    _all_mapped(monkeypatch)
    old = _ensemble_fit(rule, net, stream, 8, chunk_size=3)
    _assert_trees_close(old.variables, ens.variables, rtol=1e-6, atol=1e-7)
    _assert_trees_close(old.state, ens.state, rtol=1e-6, atol=1e-7)
    _assert_trees_close(old.metrics, ens.metrics, rtol=1e-6, atol=1e-7)


def _one_shot_rule(edits: list, edit_step: int = 2) -> UnlearningRule:
    """Edits the parameters at step ``edit_step`` only; the edit branch counts its executions."""

    def init(variables, *, key):
        del variables, key
        return {"step": StepCounter.zero()}

    def update(variables, state, batch, *, key):
        del batch, key

        def edit(params):
            jax.debug.callback(lambda: edits.append(1))
            return jax.tree.map(lambda p: 0.5 * p, params)

        step = state["step"]
        params = jax.lax.cond(step.count == edit_step, edit, lambda p: p, variables["params"])
        return {**variables, "params": params}, {"step": step.next()}, {}

    return UnlearningRule(init, update)


def test_ensemble_step_counter_branches_run_one_branch_per_step(problem, monkeypatch):
    ds, net, _ = problem
    stream = _forget_retain_stream(ds)
    edits = []
    res = _ensemble_fit(_one_shot_rule(edits), net, stream, 6)
    jax.effects_barrier()
    assert len(edits) == 1  # one real branch, taken once for all 3 models
    np.testing.assert_array_equal(res.state["step"].count, [6, 6, 6])
    start = jax.vmap(net.init)(jax.vmap(jax.random.key)(jnp.arange(3)))
    _assert_trees_close(
        res.variables["params"], jax.tree.map(lambda p: 0.5 * p, start["params"]), rtol=1e-6
    )
    # Mapped counters turn the cond into a select that runs the edit at every step.
    _all_mapped(monkeypatch)
    edits.clear()
    old = _ensemble_fit(_one_shot_rule(edits), net, stream, 6)
    jax.effects_barrier()
    assert len(edits) == 6
    _assert_trees_close(old.variables, res.variables, rtol=1e-6)


def test_ensemble_maps_undeclared_integer_state_per_model(problem):
    ds, net, _ = problem
    stream = _forget_retain_stream(ds)

    def init(variables, *, key):
        del variables, key
        return {"step": jnp.zeros((), jnp.int32), "hits": jnp.zeros((), jnp.int32)}

    def update(variables, state, batch, *, key):
        # ``hits`` counts batches whose first input row is bright: it differs between models.
        hit = (batch["retain"]["x"][0].mean() > jax.random.uniform(key)).astype(jnp.int32)
        return variables, {"step": state["step"] + 1, "hits": state["hits"] + hit}, {}

    res = _ensemble_fit(UnlearningRule(init, update), net, stream, 12)
    np.testing.assert_array_equal(res.state["step"], [12, 12, 12])
    for m in (0, 1):
        single = fit(
            UnlearningRule(init, update),
            net.init(jax.random.key(m)),
            stream,
            batch_sizes={"forget": 16, "retain": 32},
            num_steps=12,
            key=jax.random.key(m),
        )
        assert int(res.state["hits"][m]) == int(single.state["hits"])


def test_ensemble_interrupted_then_resumed_equals_uninterrupted(problem, tmp_path):
    ds, net, _ = problem
    stream = _forget_retain_stream(ds)
    rule = rules.scrub(
        net.apply, steps_per_epoch=4, msteps=1, lr_decay_epochs=(2,), schedule="interleaved"
    )
    full = _ensemble_fit(rule, net, stream, 12, chunk_size=4)
    ckpt = str(tmp_path / "ckpt")
    part = _ensemble_fit(rule, net, stream, 8, chunk_size=4, checkpoint_dir=ckpt)
    assert part.steps == 8
    resumed = _ensemble_fit(rule, net, stream, 12, chunk_size=4, checkpoint_dir=ckpt)
    assert resumed.steps == 12 and resumed.metrics["loss"].shape == (3, 4)
    assert _counts(resumed.state)[0] == [12, 12, 12]
    _assert_trees_close(full.variables, resumed.variables, rtol=1e-6, atol=1e-7)
    _assert_trees_close(full.state, resumed.state, rtol=1e-6, atol=1e-7)


# On-device augmentation ---------------------------------------------------------------------


def _input_probe(net):
    """A rule that changes nothing and reports, per step, a pixel of each part's first input."""

    def update(variables, state, batch, *, key):
        del key
        return variables, state, {p: batch[p]["x"][0, 2, 3, 0] for p in batch}

    return UnlearningRule(lambda variables, *, key: (), update)


def _constant_per_key(images, key):
    # Replaces every image by one number drawn from the key: the key each call received.
    return jnp.broadcast_to(jax.random.uniform(key), images.shape)


def test_augmentation_changes_updates_and_is_deterministic_from_the_key(problem):
    _, net, stream = problem
    crop_flip = augment.get("crop_flip")
    plain = _train(net, stream, num_steps=20)
    a = _train(net, stream, num_steps=20, augment=crop_flip)
    b = _train(net, stream, num_steps=20, augment=crop_flip, chunk_size=3)
    none = _train(net, stream, num_steps=20, augment=augment.get("none"))
    _assert_trees_close(a.variables, b.variables, rtol=1e-5, atol=1e-6)
    _assert_trees_close(plain.variables, none.variables, rtol=0, atol=0)
    diff = max(
        float(jnp.max(jnp.abs(x - y)))
        for x, y in zip(jax.tree.leaves(a.variables), jax.tree.leaves(plain.variables), strict=True)
    )
    assert diff > 1e-3  # augmented batches give other updates
    assert not np.allclose(a.metrics["loss"], plain.metrics["loss"])


def test_augmentation_keys_differ_per_part_step_and_model(problem):
    ds, net, _ = problem
    stream = _forget_retain_stream(ds)
    probe, sizes = _input_probe(net), {"forget": 16, "retain": 32}
    keys = jax.vmap(jax.random.key)(jnp.arange(3))
    res = fit(
        probe,
        jax.vmap(net.init)(keys),
        stream,
        batch_sizes=sizes,
        num_steps=6,
        key=keys,
        ensemble=True,
        augment=_constant_per_key,
    )
    f, r = res.metrics["forget"], res.metrics["retain"]  # [models, steps]
    assert f.shape == (3, 6)
    values = np.concatenate([f.ravel(), r.ravel()])
    assert len(np.unique(values)) == values.size  # parts, steps and models all draw anew
    # Model 1 of the ensemble draws exactly what a single run with its key draws.
    single = fit(
        probe,
        net.init(keys[1]),
        stream,
        batch_sizes=sizes,
        num_steps=6,
        key=keys[1],
        augment=_constant_per_key,
    )
    np.testing.assert_array_equal(single.metrics["forget"], f[1])
    # Without augmentation the probe reads the data itself.
    raw = fit(probe, net.init(keys[0]), stream, batch_sizes=sizes, num_steps=2, key=keys[0])
    assert set(np.unique(raw.metrics["retain"])) <= set(np.unique(ds.x_train))


def test_augmented_run_interrupted_then_resumed_equals_uninterrupted(problem, tmp_path):
    _, net, stream = problem
    crop_flip = augment.get("crop_flip")
    full = _train(net, stream, num_steps=30, chunk_size=10, augment=crop_flip)
    ckpt = str(tmp_path / "ckpt")
    part = _train(net, stream, num_steps=20, chunk_size=10, checkpoint_dir=ckpt, augment=crop_flip)
    assert part.steps == 20
    resumed = _train(
        net, stream, num_steps=30, chunk_size=10, checkpoint_dir=ckpt, augment=crop_flip
    )
    assert resumed.steps == 30
    _assert_trees_close(full.variables, resumed.variables, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(full.metrics["loss"][20:], resumed.metrics["loss"], rtol=1e-6)


def test_scan_steps_augments_as_fit(problem):
    _, net, stream = problem
    rule = rules.finetune(net.apply, learning_rate=0.05)
    v0, crop_flip = net.init(jax.random.key(0)), augment.get("crop_flip")
    kw = {"batch_sizes": {"retain": 64}, "num_steps": 12, "key": jax.random.key(1)}
    a = fit(rule, v0, stream, augment=crop_flip, **kw)
    v, _, _ = jax.jit(lambda v: scan_steps(rule, v, stream, augment=crop_flip, **kw))(v0)
    _assert_trees_close(a.variables, v, rtol=1e-5, atol=1e-6)


# Checks before compute ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "y_len, index, message",
    [
        (10, {"retain": np.arange(3)}, "x has 12 examples but y has 10"),
        (12, {"retain": np.array([0, 5, 12])}, r"index\['retain'\] holds indices in \[0, 12\]"),
        (12, {"forget": np.array([-1, 2])}, r"valid indices are 0..11"),
        (12, {"retain": np.arange(3.0)}, "integer indices"),
        (12, {"retain": np.ones(12, bool)}, "flatnonzero"),
        (12, {"retain": jnp.array([3, 40])}, r"\[3, 40\]"),
    ],
)
def test_make_stream_rejects_bad_indices_and_lengths(y_len, index, message):
    x = np.zeros((12, 4), np.float32)
    with pytest.raises(ValueError, match=message):
        make_stream(x, np.zeros(y_len, np.int32), index)


def test_fit_without_a_batch_size_for_a_part_the_rule_reads_says_which():
    net = models.make_network("mlp", input_shape=(4,), num_outputs=2, hidden=(4,))
    x, y = np.zeros((12, 4), np.float32), np.arange(12) % 2
    stream = make_stream(x, y, {"forget": np.arange(4), "retain": np.arange(4, 12)})
    rule = rules.gradient_ascent(net.apply, learning_rate=0.1)  # reads batch["forget"]
    with pytest.raises(ValueError, match="batch part 'forget'.*no batch size") as e:
        fit(
            rule,
            net.init(jax.random.key(0)),
            stream,
            batch_sizes={"retain": 4},
            num_steps=1,
            key=jax.random.key(1),
        )
    assert "\n" not in str(e.value)


def test_stream_batches_carry_row_indices_and_extra_fields():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    y = np.arange(6, dtype=np.int32)
    alt = 100 + np.arange(6, dtype=np.int32)
    stream = make_stream(x, y, {"forget": np.array([1, 3, 5])}, extra={"alt": alt})
    batch = loop.sample_batch(stream, {"forget": 3}, jax.random.key(0), jnp.zeros((), jnp.int32))
    rows = np.asarray(batch["forget"]["index"])
    assert sorted(rows.tolist()) == [1, 3, 5]
    np.testing.assert_array_equal(batch["forget"]["y"], y[rows])
    np.testing.assert_array_equal(batch["forget"]["alt"], alt[rows])
    np.testing.assert_array_equal(batch["forget"]["x"], x[rows])


@pytest.mark.parametrize(
    "extra, message",
    [({"alt": np.zeros(5)}, "one row per example"), ({"y": np.zeros(6)}, "hide the batch")],
)
def test_make_stream_rejects_bad_extra_fields(extra, message):
    with pytest.raises(ValueError, match=message):
        make_stream(np.zeros((6, 2)), np.zeros(6, np.int32), {"retain": np.arange(6)}, extra=extra)


def test_fitting_the_same_rule_again_reuses_its_compiled_init(monkeypatch):
    from jaxunlearn.train import loop

    calls = []
    jit = jax.jit

    def counting_jit(fn, *args, **kwargs):
        calls.append(fn)
        return jit(fn, *args, **kwargs)

    monkeypatch.setattr(loop, "_INITS", type(loop._INITS)())
    monkeypatch.setattr(loop.jax, "jit", counting_jit)
    net = models.make_network("mlp", input_shape=(4,), num_outputs=2, hidden=(3,))
    rule = rule_from_loss(
        lambda v, b, *, reference, step, key: (jnp.sum(net.apply(v, b["t"]["x"]).logits), {}),
        optax.sgd(0.1),
        keep_reference=False,
    )
    stream = make_stream(np.ones((4, 4), np.float32), np.zeros(4, np.int32), {"t": np.arange(4)})
    for seed in range(2):
        variables = net.init(jax.random.key(seed))
        fit(rule, variables, stream, batch_sizes={"t": 2}, num_steps=1, key=jax.random.key(0))
    # One jit for the initialiser and one for the chunk program, both reused by the second fit.
    assert len(calls) == 2
