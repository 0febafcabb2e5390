import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from unlearnable_testing import assert_in_budget

from jaxunlearn.core import losses
from jaxunlearn.unlearnable import error_minimizing_noise
from jaxunlearn.unlearnable.error_minimizing import pgd_min

EPS = 8 / 255
FAST = dict(pgd_steps=2, train_steps=3, max_rounds=2, batch_size=100, learning_rate=0.05)


def test_samplewise_noise_respects_the_budget_and_the_pixel_range(digits_small, tiny_net):
    x, y, _, _ = digits_small
    p = error_minimizing_noise(tiny_net, x, y, key=jax.random.key(0), **FAST)
    assert p.x.shape == x.shape
    assert_in_budget(x, p.x, p.delta, EPS)
    # Digits have many pixels at 0 and 1: clipping is active, and nothing leaves [0, 1].
    assert np.any((np.asarray(x) == 0) & (np.asarray(p.delta) == 0))
    assert 1 <= p.metrics["rounds"] <= 2


def test_classwise_noise_is_one_pattern_per_class(digits_small, tiny_net):
    x, y, _, _ = digits_small
    p = error_minimizing_noise(tiny_net, x, y, key=jax.random.key(1), mode="classwise", **FAST)
    assert_in_budget(x, p.x, p.delta, EPS)
    delta, prot = np.asarray(p.delta), np.asarray(p.x)
    i, j = np.flatnonzero(y == 3)[:2]
    # Where neither image was clipped, the two images of class 3 carry the same perturbation.
    inside = (prot[i] > 0) & (prot[i] < 1) & (prot[j] > 0) & (prot[j] < 1)
    assert inside.sum() > 5
    np.testing.assert_allclose(delta[i][inside], delta[j][inside], atol=1e-6)
    k = np.flatnonzero(y == 4)[0]
    inside_k = inside & (prot[k] > 0) & (prot[k] < 1)
    assert not np.allclose(delta[i][inside_k], delta[k][inside_k])


def test_the_stopping_rule_ends_the_rounds(digits_small, tiny_net):
    x, y, _, _ = digits_small
    # Stop once accuracy > 1%: after the first round. Never stop (error 0): max_rounds.
    easy = error_minimizing_noise(
        tiny_net, x, y, key=jax.random.key(0), **{**FAST, "max_rounds": 3}, stop_error=0.99
    )
    assert easy.metrics["rounds"] == 1 and easy.metrics["stopped"] == 1
    never = error_minimizing_noise(tiny_net, x, y, key=jax.random.key(0), **FAST, stop_error=0.0)
    assert never.metrics["rounds"] == 2


def test_pgd_steps_lower_the_loss_of_a_fixed_model(digits_small, tiny_net):
    x, y, _, _ = digits_small
    v = tiny_net.init(jax.random.key(0))
    x, y = jnp.asarray(x), jnp.asarray(y)
    eta = pgd_min(
        tiny_net.apply,
        v,
        x,
        y,
        jnp.zeros_like(x),
        epsilon=0.1,
        step_size=0.02,
        steps=10,
        value_range=(0.0, 1.0),
    )
    before = losses.cross_entropy(tiny_net.apply(v, x).logits, y)
    after = losses.cross_entropy(tiny_net.apply(v, x + eta).logits, y)
    assert float(after) < float(before) - 0.05
    assert float(jnp.abs(eta).max()) <= 0.1 + 1e-6


def test_pgd_min_can_return_the_references_eta_before_the_range_clip(digits_small, tiny_net):
    x, y, _, _ = digits_small
    v = tiny_net.init(jax.random.key(0))
    x, y = jnp.asarray(x), jnp.asarray(y)
    kw = dict(epsilon=0.1, step_size=0.05, steps=1, value_range=(0.0, 1.0))
    start = jnp.full_like(x, -0.1)
    after = pgd_min(tiny_net.apply, v, x, y, start, **kw)
    before = pgd_min(tiny_net.apply, v, x, y, start, **kw, eta_before_range_clip=True)
    # The same step: the released image is the clipped one either way.
    np.testing.assert_allclose(jnp.clip(x + before, 0.0, 1.0) - x, after, atol=1e-6)
    black = np.asarray(x) == 0.0
    assert black.mean() > 0.3  # digits sit on a black background
    assert (np.asarray(before)[black] < -1e-3).any()  # points below the range there
    assert (np.asarray(after)[black] >= 0.0).all()
    assert float(jnp.abs(before).max()) <= 0.1 + 1e-6


@pytest.mark.parametrize("mode", ["classwise", "samplewise"])
def test_reference_clipping_optimises_other_noise_but_releases_in_range(
    digits_small, tiny_net, mode
):
    x, y, _, _ = digits_small
    kw = dict(key=jax.random.key(0), mode=mode, **FAST)
    ours = error_minimizing_noise(tiny_net, x, y, **kw)
    ref = error_minimizing_noise(tiny_net, x, y, **kw, reference_clipping=True)
    for p in (ours, ref):
        assert_in_budget(x, p.x, p.delta, EPS)
    assert not np.allclose(ours.x, ref.x)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"epsilon": 0.0}, "`epsilon`"),
        ({"epsilon": -1.0}, "`epsilon`"),
        ({"epsilon": math.inf}, "`epsilon`"),
        ({"epsilon": math.nan}, "`epsilon`"),
        ({"mode": "pixelwise"}, "mode.*samplewise"),
        ({"step_size": 0.0}, "`step_size`"),
        ({"stop_error": 1.0}, "stop_error"),
    ],
)
def test_bad_settings_are_named_before_compute(digits_small, tiny_net, kwargs, match):
    x, y, _, _ = digits_small
    with pytest.raises(ValueError, match=match):
        error_minimizing_noise(tiny_net, x, y, key=jax.random.key(0), **kwargs)
    with pytest.raises(ValueError, match="value range"):
        error_minimizing_noise(tiny_net, x * 2, y, key=jax.random.key(0))
