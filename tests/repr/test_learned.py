"""The learned unsupervised rule: its update on hand-set parameters, jit/vmap, the registry, the
orbax checkpoint of theta and the errors for bad input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import data, models
from jaxunlearn import repr as R
from jaxunlearn.repr import learned

NAME = "learned_unsupervised_rule"
SMALL = {"hidden": 8, "channels": 2, "rank": 2}


@functools.cache
def digits():
    ds = data.load("digits")
    return jnp.asarray(ds.x_train[:32]), jnp.asarray(ds.y_train[:32])


@functools.cache
def mlp(hidden=(16, 8)):
    return models.make_network("mlp", input_shape=(8, 8, 1), num_outputs=10, hidden=hidden)


def constant_theta(*, pre, post, bias, lr=0.1, bias_lr=0.05):
    """A theta whose every unit has the same hidden state: readouts are their biases."""
    theta = jax.tree.map(jnp.zeros_like, learned.init_theta(jax.random.key(0), **SMALL))
    theta["pre"]["b"] = jnp.asarray(pre, jnp.float32)
    theta["post"]["b"] = jnp.asarray(post, jnp.float32)
    theta["bias"]["b"] = jnp.asarray([bias], jnp.float32)
    theta["log_lr"] = jnp.log(jnp.float32(lr))
    theta["log_bias_lr"] = jnp.log(jnp.float32(bias_lr))
    return theta


def test_forward_gives_the_networks_features():
    x, _ = digits()
    v = mlp().init(jax.random.key(1))
    np.testing.assert_allclose(
        learned.features_of(v["params"], x), mlp().apply(v, x).features, rtol=1e-6
    )
    assert learned.architecture_of(v) == (64, 16, 8)


def test_update_with_constant_readouts_matches_the_hand_computation():
    # pre . post = 1*2 + 0.5*(-1) = 1.5 for every (i, j): dW is constant, its column RMS is 1.
    theta = constant_theta(pre=[1.0, 0.5], post=[2.0, -1.0], bias=0.3)
    x, _ = digits()
    v = mlp().init(jax.random.key(2))
    new, metrics = jax.jit(learned.learned_update)(theta, v["params"], x)
    assert float(metrics["update_norm"]) == pytest.approx(1.5, rel=1e-5)
    for i in ("0", "1"):
        w = np.asarray(v["params"]["layers"][i]["kernel"], np.float64)
        norm = np.linalg.norm(w, axis=0)
        unit = w / norm
        delta = np.ones_like(w)
        delta -= (delta * unit).sum(0) * unit  # the radial part projected out
        moved = w + 0.1 * delta / np.sqrt(w.shape[0])
        expected = moved * norm / np.linalg.norm(moved, axis=0)
        got = np.asarray(new["layers"][i]["kernel"])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(got, axis=0), norm, rtol=1e-5)
        np.testing.assert_allclose(
            new["layers"][i]["bias"],
            np.asarray(v["params"]["layers"][i]["bias"]) + 0.05 * np.tanh(0.3),
            rtol=1e-6,
        )
    # The classifier head is not the rule's to change.
    for a, b in zip(
        jax.tree.leaves(new["head"]), jax.tree.leaves(v["params"]["head"]), strict=True
    ):
        np.testing.assert_array_equal(a, b)


def test_rule_jits_vmaps_over_seeds_and_moves_only_the_hidden_layers():
    x, _ = digits()
    net = mlp()
    rule = R.make(NAME, net, **SMALL)
    keys = jax.random.split(jax.random.key(0), 2)
    variables = jax.vmap(net.init)(keys)
    state = jax.vmap(lambda v, k: rule.init(v, key=k))(variables, keys)
    update = jax.jit(
        jax.vmap(lambda v, s, k: rule.update(v, s, {"retain": {"x": x}}, key=k), in_axes=0)
    )
    new, state2, metrics = update(variables, state, keys)
    for _ in range(4):
        new, state2, metrics = update(new, state2, keys)
    assert np.all(np.asarray(state2.step.count) == 5)
    assert np.all(np.isfinite(np.asarray(metrics["feature_std"])))
    k0 = variables["params"]["layers"]["0"]["kernel"]
    assert float(jnp.abs(new["params"]["layers"]["0"]["kernel"] - k0).max()) > 1e-4
    np.testing.assert_array_equal(
        new["params"]["head"]["kernel"], variables["params"]["head"]["kernel"]
    )
    # Without a theta each seed draws its own (an untrained rule), and the seeds differ.
    assert (
        float(jnp.abs(state.theta["unit"]["l1"]["w"][0] - state.theta["unit"]["l1"]["w"][1]).max())
        > 0
    )
    gap = new["params"]["layers"]["1"]["kernel"][0] - new["params"]["layers"]["1"]["kernel"][1]
    assert float(jnp.abs(gap).max()) > 0


def test_step_scale_is_sweepable():
    x, _ = digits()
    net = mlp()
    v = net.init(jax.random.key(0))
    theta = learned.init_theta(jax.random.key(3), **SMALL)

    def moved(scale):
        rule = R.make(NAME, net, theta=theta, step_scale=scale)
        state = rule.init(v, key=jax.random.key(0))
        new = rule.update(v, state, {"retain": {"x": x}}, key=jax.random.key(1))[0]
        return jnp.abs(
            new["params"]["layers"]["1"]["bias"] - v["params"]["layers"]["1"]["bias"]
        ).max()

    out = jax.jit(jax.vmap(moved))(jnp.asarray([0.5, 2.0]))
    assert R.sweepable(NAME) == ("step_scale",)
    assert 3.0 < float(out[1] / out[0]) < 5.0  # the bias step is linear in the scale


def test_theta_checkpoint_round_trip_and_other_architecture_is_refused(tmp_path):
    theta = learned.init_theta(jax.random.key(4), **SMALL)
    learned.save_theta(str(tmp_path), theta, (64, 16, 8), info={"meta_steps": 3})
    meta = learned.checkpoint_metadata(str(tmp_path))
    assert meta["architecture"] == [64, 16, 8] and meta["hidden"] == 8
    rule = R.make(NAME, mlp(), checkpoint=str(tmp_path))
    state = rule.init(mlp().init(jax.random.key(0)), key=jax.random.key(0))
    for a, b in zip(jax.tree.leaves(state.theta), jax.tree.leaves(theta), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"widths \(64, 16, 8\).*widths \(64, 32\)"):
        R.make(NAME, mlp((32,)), checkpoint=str(tmp_path))
    with pytest.raises(ValueError, match="not a learned-rule checkpoint"):
        R.make(NAME, mlp(), checkpoint=str(tmp_path / "nowhere"))


def test_bad_input_fails_before_compute():
    x, _ = digits()
    with pytest.raises(ValueError, match="`step_scale`"):
        R.make(NAME, mlp(), step_scale=-1.0)
    with pytest.raises(ValueError, match="`hidden` must be an integer >= 1"):
        R.make(NAME, mlp(), hidden=0)
    with pytest.raises(ValueError, match="`theta` or `checkpoint`, not both"):
        R.make(NAME, mlp(), theta=learned.init_theta(jax.random.key(0)), checkpoint="/x")
    with pytest.raises(ValueError, match="not a learned-rule parameter tree"):
        R.make(NAME, mlp(), theta={"w": jnp.zeros(3)})
    cnn = models.make_network("cnn", input_shape=(8, 8, 1), num_outputs=10, channels=(4,), hidden=8)
    with pytest.raises(ValueError, match="hidden layers of an MLP"):
        R.make(NAME, cnn)
    rule = R.make(NAME, mlp(), **SMALL)
    v = jax.eval_shape(mlp().init, jax.random.key(0))

    def one(batch):
        return jax.eval_shape(
            lambda v: rule.update(
                v, rule.init(v, key=jax.random.key(0)), batch, key=jax.random.key(1)
            ),
            v,
        )

    with pytest.raises(ValueError, match="batch size 1 is too small"):
        one({"retain": {"x": x[:1]}})
    with pytest.raises(ValueError, match="inputs have 32 values"):
        one({"retain": {"x": x[:4, :4]}})


def test_meta_gradient_through_two_updates_matches_finite_differences():
    """d(ridge objective after two learned updates) / d(log step size), by autodiff and by
    central differences: the rule is differentiable end to end in theta."""
    from jaxunlearn.repr import meta

    x, y = digits()
    v = mlp().init(jax.random.key(5))
    theta = learned.init_theta(jax.random.key(6), **SMALL)

    def objective(log_lr):
        t = {**theta, "log_lr": log_lr}
        params = v["params"]
        for _ in range(2):
            params = learned.learned_update(t, params, x)[0]
        f = learned.features_of(params, x)
        return meta.ridge_meta_objective(f[:16], y[:16], f[16:], y[16:], num_classes=10)[0]

    f = jax.jit(objective)
    grad = float(jax.jit(jax.grad(objective))(theta["log_lr"]))
    eps = 0.05
    numeric = (float(f(theta["log_lr"] + eps)) - float(f(theta["log_lr"] - eps))) / (2 * eps)
    assert abs(grad) > 1e-4
    assert grad == pytest.approx(numeric, rel=0.05, abs=1e-4)
