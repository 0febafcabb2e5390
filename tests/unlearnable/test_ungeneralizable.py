import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
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
    with pytest.raises(ValueError, match="`authorized_steps`"):
        ungeneralizable_examples(tiny_net, x, y, authorized_steps=-1, **kw)
    with pytest.raises(ValueError, match="`rounds`"):
        ungeneralizable_examples(tiny_net, x, y, rounds=0, **kw)
    with pytest.raises(ValueError, match="`authorized_learning_rate`"):
        ungeneralizable_examples(tiny_net, x, y, authorized_learning_rate=0.0, **kw)
    with pytest.raises(ValueError, match="`x` must lie in the dataset's value range"):
        ungeneralizable_examples(tiny_net, x + 1.0, y, **kw)
    with pytest.raises(ValueError, match="needs `surrogate`"):
        unlearnable.protect("ungeneralizable_examples", tiny_net, x, y, key=jax.random.key(0))


def _constant_step(c):
    """An optimizer whose every update adds ``c`` to every parameter (ignores the gradient)."""
    return optax.GradientTransformation(
        lambda params: optax.EmptyState(),
        lambda g, state, params=None: (jax.tree.map(lambda a: jnp.full_like(a, c), g), state),
    )


def test_trajectory_with_a_frozen_learner_is_the_default(digits_small, tiny_net):
    x, y, _, _ = digits_small
    kw = dict(key=jax.random.key(0), surrogate=tiny_net.init(jax.random.key(1)), **FAST)
    p = ungeneralizable_examples(tiny_net, x, y, **kw)
    q = ungeneralizable_examples(
        tiny_net, x, y, authorized_steps=2, authorized_optimizer=optax.set_to_zero(), **kw
    )
    # The authorised network never moves: one sweep gives the init-only images, bit for bit.
    assert q.metrics["authorized_distance"] == 0.0
    np.testing.assert_array_equal(np.asarray(q.x), np.asarray(p.x))
    assert {k: q.metrics[k] for k in p.metrics} == p.metrics


def test_trajectory_takes_rounds_times_batches_times_steps_learner_updates(digits_small, tiny_net):
    x, y, _, _ = digits_small  # 200 images in batches of 64: 4 batches per sweep
    p = ungeneralizable_examples(
        tiny_net,
        x,
        y,
        key=jax.random.key(0),
        surrogate=tiny_net.init(jax.random.key(1)),
        authorized_steps=2,
        rounds=2,
        authorized_optimizer=_constant_step(1e-3),
        **FAST,
    )
    n_params = 64 * 16 + 16 + 16 * 10 + 10
    updates = 2 * 4 * 2
    assert p.metrics["authorized_distance"] == pytest.approx(
        1e-3 * updates * n_params**0.5, rel=1e-5
    )


def test_trajectory_matches_gradients_at_the_trained_authorised_network(digits_small, tiny_net):
    x, y, _, _ = digits_small
    kw = dict(
        key=jax.random.key(0),
        surrogate=tiny_net.init(jax.random.key(1)),
        epsilon=32 / 255,
        fd_weight=0.0,
        ud_weight=0.0,
        authorized_steps=1,
        rounds=3,
        authorized_learning_rate=0.5,
        **FAST,
    )
    p = ungeneralizable_examples(tiny_net, x, y, **kw)
    assert_in_budget(x, p.x, p.delta, 32 / 255)
    assert p.metrics["authorized_distance"] > 1.0  # the authorised network trained
    # At its final parameters, the released images' gradients match the clean ones better than
    # the random starts' do.
    assert p.metrics["gm_final"] < 0.8 * p.metrics["gm_final_start"]
    # Through the registry: the same program, the same result.
    q = unlearnable.protect("ungeneralizable_examples", tiny_net, x, y, **kw)
    np.testing.assert_array_equal(np.asarray(q.x), np.asarray(p.x))
