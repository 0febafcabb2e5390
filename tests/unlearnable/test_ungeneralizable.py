import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from unlearnable_testing import assert_in_budget

from jaxunlearn import unlearnable
from jaxunlearn.unlearnable import uge_terms, ungeneralizable_examples

FAST = dict(steps=3, batch_size=64)


def _linear_terms(x, xu, y, student, temperature=1.0):
    """The terms with a linear authorised network at W = 0 (uniform predictions), the identity
    as the shared feature space and fixed student logits."""
    return uge_terms(
        lambda p, v: v @ p["w"],
        {"w": jnp.zeros((x.shape[1], 2))},
        lambda v: v,
        lambda v: jnp.broadcast_to(jnp.asarray(student), (len(v), 2)),
        x,
        xu,
        y,
        temperature,
    )


def test_terms_on_hand_computable_inputs():
    x = jnp.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0]])
    y = jnp.array([0, 1])
    same = _linear_terms(x, x, y, [0.0, 0.0])
    assert [float(same[k]) for k in ("gm", "fd", "ud")] == pytest.approx([0, 0, 0], abs=1e-6)
    # At W = 0 the CE gradient is x^T (1/2 - onehot(y)) / n: linear in x, so 2x gives the same
    # direction (gm = 0) and -x the opposite one (gm = 1 - (-1) = 2).
    assert float(_linear_terms(x, 2 * x, y, [0.0, 0.0])["gm"]) == pytest.approx(0, abs=1e-6)
    assert float(_linear_terms(x, -x, y, [0.0, 0.0])["gm"]) == pytest.approx(2, abs=1e-6)
    # Feature distance: every feature moved by 0.1 -> mean squared distance 3 * 0.01, negated.
    assert float(_linear_terms(x, x + 0.1, y, [0.0, 0.0])["fd"]) == pytest.approx(-0.03)
    # Undistillation: teacher uniform, student (1/4, 3/4): -T^2 KL(teacher || student).
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    ud = _linear_terms(x, x, y, [0.0, math.log(3.0)])["ud"]
    assert float(ud) == pytest.approx(-kl, rel=1e-5)
    ud_t2 = _linear_terms(x, x, y, [0.0, 2 * math.log(3.0)], temperature=2.0)["ud"]
    assert float(ud_t2) == pytest.approx(-4 * kl, rel=1e-5)


def test_budget_and_value_range_hold_exactly_and_the_objective_improves(digits_small, tiny_net):
    x, y, _, _ = digits_small
    assert (x == 0).any() and (x == 1).any()  # pixels at both ends: clipping is exercised
    surrogate = tiny_net.init(jax.random.key(1))
    p = ungeneralizable_examples(
        tiny_net, x, y, key=jax.random.key(0), surrogate=surrogate, epsilon=32 / 255, **FAST
    )
    assert_in_budget(x, p.x, p.delta, 32 / 255)
    assert np.all(np.asarray(p.delta)[x == 0] >= 0) and np.all(np.asarray(p.delta)[x == 1] <= 0)
    assert np.abs(np.asarray(p.delta)).max() == pytest.approx(32 / 255, abs=1e-6)
    # The feature distance grows (its term falls) from the random start.
    assert p.metrics["fd"] < p.metrics["fd_start"] < 0
    # Through the registry, with the same surrogate: the same program, the same result.
    q = unlearnable.protect(
        "ungeneralizable_examples",
        tiny_net,
        x,
        y,
        key=jax.random.key(0),
        surrogate=surrogate,
        epsilon=32 / 255,
        **FAST,
    )
    np.testing.assert_allclose(q.x, p.x, atol=1e-7)


def test_bad_input_is_refused_before_compute(digits_small, tiny_net):
    x, y, _, _ = digits_small
    v = tiny_net.init(jax.random.key(0))
    kw = dict(key=jax.random.key(0), surrogate=v)
    with pytest.raises(ValueError, match="`epsilon`"):
        ungeneralizable_examples(tiny_net, x, y, epsilon=0.0, **kw)
    with pytest.raises(ValueError, match="`fd_weight`"):
        ungeneralizable_examples(tiny_net, x, y, fd_weight=-1.0, **kw)
    with pytest.raises(ValueError, match="`steps`"):
        ungeneralizable_examples(tiny_net, x, y, steps=0, **kw)
    with pytest.raises(ValueError, match="`temperature`"):
        ungeneralizable_examples(tiny_net, x, y, temperature=float("inf"), **kw)
    with pytest.raises(ValueError, match="`x` must lie in the dataset's value range"):
        ungeneralizable_examples(tiny_net, x + 1.0, y, **kw)
    with pytest.raises(ValueError, match="needs `surrogate`"):
        unlearnable.protect("ungeneralizable_examples", tiny_net, x, y, key=jax.random.key(0))
