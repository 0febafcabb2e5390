"""Selective Synaptic Dampening on a hand-built linear model and a tiny untrained MLP (jitted)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import models, rules
from jaxunlearn.core.types import Outputs


def _apply(variables, x, *, train=False):
    del train
    p = variables["params"]
    return Outputs(logits=x @ p["w"] + p["b"], features=x)


def _batch(xf, yf, xr, yr):
    return {
        "forget": {"x": jnp.asarray(xf, jnp.float32), "y": jnp.asarray(yf, jnp.int32)},
        "retain": {"x": jnp.asarray(xr, jnp.float32), "y": jnp.asarray(yr, jnp.int32)},
    }


def test_ssd_dampens_only_forget_specific_weights():
    # Forget inputs use feature 0 only and retain inputs feature 1 only, so row 0 of `w` matters
    # to the forget set alone (I_r = 0, I_D = rho * I_f): it is selected and scaled by
    # lambda * I_D / I_f = lambda * rho. Rows 1 and 2 have I_f = 0 and must not move.
    variables = {"params": {"w": jax.random.normal(jax.random.key(0), (3, 4)), "b": jnp.zeros(4)}}
    eye = np.eye(3)
    batches = [
        _batch(eye[[0] * 4] * s, [0, 1, 2, 3], eye[[1] * 4] * s, [3, 2, 1, 0]) for s in (1.0, 2.0)
    ]
    rho, lam = 0.05, 0.5
    rule = rules.ssd(_apply, forget_fraction=rho, dampening_constant=lam)
    state = rule.init(variables, key=jax.random.key(1))
    update = jax.jit(rule.update)
    for b in batches:
        out, state, metrics = update(variables, state, b, key=jax.random.key(2))
    assert int(state.step.count) == 2
    w0, w = np.asarray(variables["params"]["w"]), np.asarray(out["params"]["w"])
    np.testing.assert_allclose(w[0], lam * rho * w0[0], rtol=1e-5)
    np.testing.assert_array_equal(w[1:], w0[1:])
    assert 0 < float(metrics["dampened_fraction"]) < 1
    # alpha * rho >= 1: nothing can be selected, the model is unchanged.
    rule = rules.ssd(_apply, forget_fraction=0.1, selection_weighting=10.0)
    out, _, _ = jax.jit(rule.update)(
        variables, rule.init(variables, key=None), batches[0], key=None
    )
    np.testing.assert_array_equal(np.asarray(out["params"]["w"]), w0)


def test_ssd_never_increases_weights_nor_flips_their_sign():
    net = models.make_network("mlp", input_shape=(6,), num_outputs=4, hidden=(8,))
    variables = net.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    batches = [
        _batch(
            rng.normal(size=(8, 6)) + 2.0,
            [0] * 8,
            rng.normal(size=(8, 6)),
            rng.integers(1, 4, 8),
        )
        for _ in range(3)
    ]
    rule = rules.make("ssd", net, forget_fraction=0.1, selection_weighting=2.0)
    state, update = rule.init(variables, key=None), jax.jit(rule.update)
    for b in batches:
        out, state, metrics = update(variables, state, b, key=None)
    assert float(metrics["dampened_fraction"]) > 0
    for before, after in zip(
        jax.tree.leaves(variables["params"]), jax.tree.leaves(out["params"]), strict=True
    ):
        before, after = np.asarray(before), np.asarray(after)
        assert np.all(np.abs(after) <= np.abs(before))
        assert np.all(after * before >= 0)  # the factor lies in [0, 1]


def test_ssd_rejects_bad_hyperparameters():
    for kwargs, match in [
        ({"selection_weighting": 0.0}, "selection_weighting"),
        ({"dampening_constant": -1.0}, "dampening_constant"),
        ({"forget_fraction": 1.0}, "forget_fraction"),
    ]:
        with pytest.raises(ValueError, match=match):
            rules.ssd(_apply, **{"forget_fraction": 0.1, **kwargs})
