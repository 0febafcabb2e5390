"""Gradient orthogonalisation (UNO surgery): the projection, the cap and the optimizer settings."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from rule_testing import smoke_test_rule

from jaxunlearn import data, models, rules
from jaxunlearn.core.rule import LossRuleState
from jaxunlearn.rules import orthogonal
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


def _step(net, variables, batch, **hparams):
    rule = rules.make("gradient_orthogonalization", net, **hparams)
    state = rule.init(variables, key=jax.random.key(0))
    return jax.jit(rule.update)(variables, state, batch, key=jax.random.key(1))


def test_orthogonalized_update_is_orthogonal_to_the_retain_gradient():
    net, variables, batch = _untrained()
    new, state, metrics = _step(net, variables, batch, optimizer=optax.sgd(0.1))
    assert isinstance(state, LossRuleState) and int(state.step.count) == 1
    g_r = jax.grad(lambda p: part_loss(net.apply, {**variables, "params": p}, batch, "retain")[0])(
        variables["params"]
    )
    delta = optax.tree.sub(new["params"], variables["params"])
    cos = optax.tree.vdot(delta, g_r) / (optax.tree.norm(delta) * optax.tree.norm(g_r))
    assert float(optax.tree.norm(delta)) > 0
    assert abs(float(cos)) < 1e-4
    assert float(metrics["grad_cos2"]) > 1e-6  # the raw forget gradient was not orthogonal
    projected = orthogonal.project_orthogonal(g_r, g_r)
    assert float(optax.tree.norm(projected)) < 1e-5 * float(optax.tree.norm(g_r))


def test_projection_and_squared_cosine_on_hand_made_vectors():
    g, d = {"a": jnp.array([3.0, 4.0])}, {"a": jnp.array([1.0, 0.0])}
    np.testing.assert_allclose(orthogonal.project_orthogonal(g, d)["a"], [0.0, 4.0])
    np.testing.assert_allclose(orthogonal.squared_cosine(g, d), 9.0 / 25.0, rtol=1e-6)
    zero = {"a": jnp.zeros(2)}
    np.testing.assert_allclose(orthogonal.project_orthogonal(g, zero)["a"], [3.0, 4.0])
    assert float(orthogonal.squared_cosine(g, zero)) == 0.0


def test_forget_loss_cap_stops_the_ascent():
    net, variables, batch = _untrained()
    sgd = optax.sgd(0.1)
    # Every forget example's loss is above a tiny cap: the capped ascent has no gradient.
    capped, _, metrics = _step(net, variables, batch, optimizer=sgd, forget_loss_cap=1e-3)
    assert float(metrics["forget_loss"]) > 1e-3
    for a, b in zip(jax.tree.leaves(capped), jax.tree.leaves(variables), strict=True):
        np.testing.assert_array_equal(a, b)
    loose, _, _ = _step(net, variables, batch, optimizer=sgd, forget_loss_cap=1e3)
    plain, _, _ = _step(net, variables, batch, optimizer=sgd)
    for a, b in zip(jax.tree.leaves(loose), jax.tree.leaves(plain), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_optimizer_settings_go_through_resolve():
    net, variables, batch = _untrained()
    default, _, _ = _step(net, variables, batch)
    explicit, _, _ = _step(
        net,
        variables,
        batch,
        optimizer=optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.01, momentum=0.9)),
    )
    for a, b in zip(jax.tree.leaves(default), jax.tree.leaves(explicit), strict=True):
        np.testing.assert_array_equal(a, b)  # the reference SGD: momentum 0.9, decay 5e-4
    for retired in ("momentum", "weight_decay"):
        with pytest.raises(ValueError, match="no hyperparameter"):
            rules.make("gradient_orthogonalization", net, **{retired: 0.0})


def test_gradient_orthogonalization_smoke_with_retain_descent():
    smoke_test_rule("gradient_orthogonalization", retain_weight=1.0)
