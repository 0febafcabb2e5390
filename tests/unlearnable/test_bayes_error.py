import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from unlearnable_testing import assert_in_budget

from jaxunlearn.unlearnable import bayes_error_noise, kernel_bayes_error


def test_the_estimate_matches_a_hand_computed_case():
    # Points 0, 1, 2 on a line, labels (0, 0, 1), sigma = 1: a = exp(-1/2), b = exp(-2).
    # x0: neighbours x1 (class 0, a), x2 (class 1, b) -> error 1 - a/(a+b)
    # x1: x0 (class 0, a), x2 (class 1, a) -> error 1/2;  x2: x0 (b), x1 (a), both class 0 -> 0.
    a, b = math.exp(-0.5), math.exp(-2.0)
    expected = [1 - a / (a + b), 0.5, 0.0]
    f = jnp.array([[0.0], [1.0], [2.0]])
    y = jnp.array([0, 0, 1])
    per = kernel_bayes_error(f, y, num_classes=2, bandwidth=1.0, per_example=True)
    np.testing.assert_allclose(per, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        kernel_bayes_error(f, y, num_classes=2, bandwidth=1.0), np.mean(expected), rtol=1e-5
    )


def test_separated_classes_have_no_error_and_mixed_ones_the_most():
    key = jax.random.key(0)
    f = jnp.concatenate([jax.random.normal(key, (20, 2)), 50 + jax.random.normal(key, (20, 2))])
    y = jnp.repeat(jnp.arange(2), 20)
    assert float(kernel_bayes_error(f, y, num_classes=2)) < 1e-6
    mixed = kernel_bayes_error(f, jnp.tile(jnp.arange(2), 20), num_classes=2)
    assert 0.3 < float(mixed) <= 0.5 + 1e-6  # at most 1 - 1/C


@pytest.mark.parametrize("norm, radius", [("linf", 8 / 255), ("l2", 0.5)])
def test_the_noise_raises_the_estimate_inside_its_budget(digits_small, tiny_net, norm, radius):
    x, y, _, _ = digits_small
    surrogate = tiny_net.init(jax.random.key(0))
    mask = np.arange(len(x)) % 2 == 0
    p = bayes_error_noise(
        tiny_net,
        x,
        y,
        key=jax.random.key(1),
        surrogate=surrogate,
        epsilon=radius,
        norm=norm,
        steps=3,
        batch_size=100,
        protect=mask,
    )
    delta = np.asarray(p.delta)
    assert np.all(delta[~mask] == 0)  # clean rows stay clean
    if norm == "linf":
        assert_in_budget(x, p.x, p.delta, radius)
    else:
        assert np.linalg.norm(delta.reshape(len(x), -1), axis=1).max() <= radius + 1e-5
        assert p.x.min() >= 0 and p.x.max() <= 1
    assert p.metrics["bayes_error"] > p.metrics["bayes_error_clean"]


def test_bad_budgets_are_named(digits_small, tiny_net):
    x, y, _, _ = digits_small
    v = tiny_net.init(jax.random.key(0))
    for eps in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="`epsilon`"):
            bayes_error_noise(tiny_net, x, y, key=jax.random.key(0), surrogate=v, epsilon=eps)
    with pytest.raises(ValueError, match="norm"):
        bayes_error_noise(tiny_net, x, y, key=jax.random.key(0), surrogate=v, norm="l1")
    with pytest.raises(ValueError, match="`protect`"):
        bayes_error_noise(tiny_net, x, y, key=jax.random.key(0), surrogate=v, protect=[True])


def test_a_second_call_reuses_the_program_with_its_own_surrogate(digits_small, tiny_net):
    from jaxunlearn.unlearnable import budget

    x, y, _, _ = digits_small
    kw = dict(key=jax.random.key(1), steps=1, batch_size=100, bandwidth=1.0)
    a = bayes_error_noise(tiny_net, x, y, surrogate=tiny_net.init(jax.random.key(0)), **kw)
    programs = len(budget._PROGRAMS)
    b = bayes_error_noise(tiny_net, x, y, surrogate=tiny_net.init(jax.random.key(5)), **kw)
    assert len(budget._PROGRAMS) == programs  # compiled once
    assert not np.allclose(a.x, b.x)  # the surrogate is an argument, not a stale constant
