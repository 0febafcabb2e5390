"""Adapt-then-Unlearn: the adapt phase, the hand-off of the adapted copy, the repulsion."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn import data, models, rules
from jaxunlearn.rules.adapt_then_unlearn import (
    REPULSIONS,
    layer_mean_squared_distance,
    mean_squared_distance,
    repulsion,
)
from jaxunlearn.rules.common import part_loss


@functools.cache
def _untrained():
    """A tiny untrained MLP on `digits` and one (forget, retain) batch."""
    ds = data.load("digits")
    net = models.make_network(
        "mlp", input_shape=ds.input_shape, num_outputs=ds.num_outputs, hidden=(8,)
    )
    x, y = jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)
    batch = {"forget": {"x": x[:16], "y": y[:16]}, "retain": {"x": x[16:48], "y": y[16:48]}}
    return net, net.init(jax.random.key(0)), batch


def _same(a, b):
    return all(
        np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_adapts_a_copy_then_unlearns_away_from_it():
    net, variables, batch = _untrained()
    lr, gamma, alpha = 0.1, 3.0, 1e4
    sgd = optax.sgd(lr)
    rule = rules.make(
        "adapt_then_unlearn",
        net,
        num_steps=10,  # 2 adapt updates, then unlearning
        gamma=gamma,
        alpha=alpha,
        adapt_optimizer=optax.sgd(0.05),
        optimizer=sgd,
    )
    update = jax.jit(rule.update)
    state = rule.init(variables, key=jax.random.key(0))
    current, phases = variables, []
    for i in range(3):
        before = current
        current, state, metrics = update(current, state, batch, key=jax.random.key(i))
        phases.append(int(metrics["phase"]))
        if i < 2:  # the adapt phase returns the variables unchanged
            assert _same(current, variables) and float(metrics["adapt_loss"]) > 0
    assert phases == [0, 0, 1] and int(state.step.count) == 3
    adapt_state, unlearn_state = state.phases
    # Two SGD steps on the forget loss give the adapted copy...
    adapted = variables["params"]
    for _ in range(2):
        grads = jax.grad(
            lambda p: part_loss(net.apply, {**variables, "params": p}, batch, "forget")[0]
        )(adapted)
        adapted = jax.tree.map(lambda p, g: p - 0.05 * g, adapted, grads)
    for got, want in zip(
        jax.tree.leaves(adapt_state.adapted["params"]), jax.tree.leaves(adapted), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    # ...which the unlearning phase received as its anchor.
    assert _same(unlearn_state.reference, adapt_state.adapted)

    # The first unlearning update is one SGD step on retain loss + gamma * exp(-alpha * d), d the
    # reference's per-layer mean squared distance averaged over the layers.
    def objective(p):
        retain = part_loss(net.apply, {**variables, "params": p}, batch, "retain")[0]
        return retain + gamma * repulsion(layer_mean_squared_distance(p, adapted), "exp", alpha)

    want = jax.tree.map(
        lambda p, g: p - lr * g, before["params"], jax.grad(objective)(before["params"])
    )
    for got, w in zip(jax.tree.leaves(current["params"]), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(got, w, rtol=1e-4, atol=1e-6)
    assert float(metrics["distance"]) > 0 and float(metrics["repulsion"]) < 1.0


def test_repulsions_decrease_with_distance():
    d = jnp.array([0.1, 1.0, 10.0])
    for kind in REPULSIONS:
        r = np.asarray(repulsion(d, kind, 2.0))
        assert np.all(np.diff(r) < 0), kind
    np.testing.assert_allclose(repulsion(d, "exp", 2.0), np.exp(-2.0 * np.asarray(d)))
    tree = {"a": jnp.array([1.0, 3.0]), "b": jnp.array([[2.0]])}
    zero = jax.tree.map(jnp.zeros_like, tree)
    np.testing.assert_allclose(mean_squared_distance(tree, zero), 14.0 / 3.0, rtol=1e-6)
    # The reference's distance: each layer's mean squared difference, averaged over layers.
    np.testing.assert_allclose(layer_mean_squared_distance(tree, zero), 4.5, rtol=1e-6)


def test_default_repulsion_is_the_references_100_exp_of_the_layer_distance():
    net, variables, batch = _untrained()
    moved = {**variables, "params": jax.tree.map(lambda p: p + 0.01, variables["params"])}
    for distance, measure in (
        ("per_layer", layer_mean_squared_distance),
        ("global", mean_squared_distance),
    ):
        rule = rules.make("adapt_then_unlearn", net, num_steps=4, distance=distance)
        state = rule.init(variables, key=jax.random.key(0))
        adapt_state, unlearn_state = state.phases
        # Start the unlearning phase from a model 0.01 away from the adapted copy (the original).
        state = state._replace(step=state.step._replace(count=jnp.asarray(1, jnp.int32)))
        _, _, metrics = jax.jit(rule.update)(moved, state, batch, key=jax.random.key(1))
        d = measure(moved["params"], adapt_state.adapted["params"])
        np.testing.assert_allclose(metrics["distance"], d, rtol=1e-5)
        np.testing.assert_allclose(metrics["repulsion"], np.exp(-float(d)), rtol=1e-5)
    # gamma (the weight) defaults to the reference's 100, alpha (its --gamma) to 1.
    defaults = rules.get("adapt_then_unlearn").factory.__kwdefaults__
    assert defaults["gamma"] == 100.0 and defaults["alpha"] == 1.0


def test_several_adapted_copies_and_the_distance_averaged_over_them():
    net, variables, batch = _untrained()
    rule = rules.make(
        "adapt_then_unlearn", net, num_steps=6, num_adapted=3, adapt_subsample=0.5, alpha=1e4
    )
    update = jax.jit(rule.update)
    state = rule.init(variables, key=jax.random.key(0))
    current = variables
    for i in range(3):  # one adapt update (round(0.2 * 6)), then unlearning
        current, state, metrics = update(current, state, batch, key=jax.random.key(i))
    adapt_state, unlearn_state = state.phases
    copies = adapt_state.adapted["params"]
    assert all(x.shape[0] == 3 for x in jax.tree.leaves(copies))
    # Each copy adapted on its own subset of the forget batch: they differ.
    first = jax.tree.leaves(copies)[0]
    assert not np.allclose(first[0], first[1])
    assert _same(unlearn_state.reference, adapt_state.adapted)
    # The last update's distance is the mean over the copies of the per-layer distance.
    _, _, again = jax.jit(rule.update)(current, state, batch, key=jax.random.key(9))
    want = np.mean(
        [
            float(
                layer_mean_squared_distance(
                    current["params"], jax.tree.map(lambda c, k=k: c[k], copies)
                )
            )
            for k in range(3)
        ]
    )
    np.testing.assert_allclose(float(again["distance"]), want, rtol=1e-5)
    with pytest.raises(ValueError, match="adapt_subsample"):
        rules.make("adapt_then_unlearn", net, num_steps=6, num_adapted=2)


def test_optimizer_settings_go_through_resolve():
    net, _, _ = _untrained()
    for retired in ("momentum", "weight_decay"):
        with pytest.raises(ValueError, match="no hyperparameter"):
            rules.make("adapt_then_unlearn", net, num_steps=10, **{retired: 0.0})
    with pytest.raises(ValueError, match="no setting"):
        rules.make("adapt_then_unlearn", net, num_steps=10, adapt_optimizer={"betas": 0.9})


@pytest.mark.parametrize(
    "hparams, match",
    [
        ({"repulsion_kind": "cubic"}, "repulsion_kind"),
        ({"adapt_fraction": 1.0}, "adapt_fraction"),
        ({"alpha": 0.0}, "alpha"),
    ],
)
def test_rejects_bad_settings(hparams, match):
    net, _, _ = _untrained()
    with pytest.raises(ValueError, match=match):
        rules.make("adapt_then_unlearn", net, num_steps=10, **hparams)
