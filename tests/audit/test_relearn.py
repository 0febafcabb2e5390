"""Tests of the relearning attack (jaxunlearn.audit.relearn) and its "relearn" audit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rule_testing import tiny_problem

from jaxunlearn import audit, data
from jaxunlearn.core import losses

MAX_STEPS = 12
SETTINGS = {"max_steps": MAX_STEPS, "learning_rate": 0.01, "batch_size": 32}


def _halves(kind: str):
    """(relearn x, y, eval x, y): the two halves of a forget set of the tiny problem's data."""
    ds, split, _, _ = tiny_problem("class")
    if kind == "random":
        # The tiny problem's model does not depend on the scenario: reuse the class one.
        split = data.make_split(ds, data.ForgetSpec("random", fraction=0.1), seed=0)
    idx = split.forget
    half = len(idx) // 2
    x, y = jnp.asarray(ds.x_train[idx]), jnp.asarray(ds.y_train[idx])
    return x[:half], y[:half], x[half:], y[half:]


@functools.cache
def _attack(apply):
    return jax.jit(functools.partial(audit.relearn_steps, apply, **SETTINGS))


def _accuracy(net, variables, x, y) -> float:
    return float(losses.accuracy(net.apply(variables, x).logits, y))


def test_original_needs_zero_steps_to_reach_its_own_accuracy():
    _, _, net, original = tiny_problem("class")
    rx, ry, ex, ey = _halves("random")
    own = _accuracy(net, original, ex, ey)
    result = _attack(net.apply)(
        original, rx, ry, ex, ey, target_accuracy=own, key=jax.random.key(0)
    )
    assert int(result.steps) == 0
    assert result.curve.shape == (MAX_STEPS + 1,)
    assert float(result.curve[0]) == pytest.approx(own)


def test_random_model_takes_longer_than_the_original():
    _, _, net, original = tiny_problem("class")
    rx, ry, ex, ey = _halves("random")
    target = _accuracy(net, original, ex, ey)
    fresh = net.init(jax.random.key(123))
    key = jax.random.key(0)
    slow = _attack(net.apply)(fresh, rx, ry, ex, ey, target_accuracy=target, key=key)
    fast = _attack(net.apply)(original, rx, ry, ex, ey, target_accuracy=target, key=key)
    assert int(slow.steps) > int(fast.steps)
    # Relearning does teach the random model something about the held-out forget examples.
    assert float(slow.curve[-1]) > float(slow.curve[0])


def test_unreachable_target_reports_max_steps_plus_one():
    _, _, net, original = tiny_problem("class")
    rx, ry, ex, ey = _halves("random")
    result = _attack(net.apply)(
        original, rx, ry, ex, ey, target_accuracy=1.5, key=jax.random.key(0)
    )
    assert int(result.steps) == MAX_STEPS + 1
    assert np.all((np.asarray(result.curve) >= 0) & (np.asarray(result.curve) <= 1))


def test_vmapped_models_see_the_same_attack():
    _, _, net, original = tiny_problem("class")
    rx, ry, ex, ey = _halves("random")
    fresh = net.init(jax.random.key(7))
    key = jax.random.key(3)

    def attack(variables):
        return audit.relearn_steps(
            net.apply, variables, rx, ry, ex, ey, target_accuracy=0.9, key=key, **SETTINGS
        )

    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), original, fresh)
    both = jax.jit(jax.vmap(attack))(stacked)
    alone = _attack(net.apply)(fresh, rx, ry, ex, ey, target_accuracy=0.9, key=key)
    np.testing.assert_allclose(np.asarray(both.curve[1]), np.asarray(alone.curve), atol=1e-6)


def test_invalid_settings_raise():
    _, _, net, original = tiny_problem("class")
    rx, ry, ex, ey = _halves("class")
    with pytest.raises(ValueError, match="max_steps"):
        audit.relearn_steps(
            net.apply,
            original,
            rx,
            ry,
            ex,
            ey,
            target_accuracy=1.0,
            max_steps=0,
            learning_rate=0.01,
            batch_size=8,
            key=jax.random.key(0),
        )
    with pytest.raises(ValueError, match="non-empty"):
        audit.relearn_steps(
            net.apply,
            original,
            rx[:0],
            ry[:0],
            ex,
            ey,
            target_accuracy=1.0,
            max_steps=2,
            learning_rate=0.01,
            batch_size=8,
            key=jax.random.key(0),
        )
    with pytest.raises(ValueError, match="source"):
        audit.relearn.relearn_audit_fn(source="test")


def test_relearn_audit_attacks_model_and_oracle_alike():
    ds, split, net, original = tiny_problem("class")
    fresh = net.init(jax.random.key(11))
    ctx = audit.AuditContext(
        net, ds, split, original, original=original, oracle=fresh, extra={"seed": 0}
    )
    metrics = audit.run(("relearn",), ctx)
    assert metrics["relearn_steps"] == 0.0  # the original already has the original's accuracy
    assert 0.0 <= metrics["relearn_steps_oracle"] <= audit.relearn.RELEARN_MAX_STEPS + 1
    assert 0.0 <= metrics["relearn_acc@5"] <= 100.0
    # Audited model = oracle: both attacks are the same run.
    same = audit.run(
        ("relearn",),
        audit.AuditContext(
            net, ds, split, fresh, original=original, oracle=fresh, extra={"seed": 0}
        ),
    )
    assert same["relearn_steps"] == same["relearn_steps_oracle"]


def test_anamnesis_tolerance_alpha_uncensors_the_oracle():
    # Relearned = within alpha of the original's accuracy, target (1 - alpha) * accuracy, as the
    # Anamnesis Index's reference (zero-shot-unlearning metrics.py: error_range = 0.05).
    assert audit.relearn.anamnesis_target(0.8, 0.05) == pytest.approx(0.76)
    assert audit.relearn.anamnesis_target(0.8, 0.0) == 0.8
    assert audit.relearn.RELEARN_ALPHA == 0.05
    with pytest.raises(ValueError, match="alpha"):
        audit.relearn.anamnesis_target(0.8, 1.0)
    with pytest.raises(ValueError, match="alpha"):
        audit.relearn.relearn_audit_fn(alpha=-0.1)
    # A random "oracle" relearning the digits' random forget set: it never reaches the original's
    # accuracy (censored at max_steps + 1), but reaches a fifth of it; the step is read off the
    # oracle's own curve under the audit's attack.
    ds, split, net, original = tiny_problem("class")
    split = data.make_split(ds, data.ForgetSpec("random", fraction=0.1), seed=0)
    fresh = net.init(jax.random.key(11))
    ctx = audit.AuditContext(
        net, ds, split, original, original=original, oracle=fresh, extra={"seed": 0}
    )
    relearn_idx, eval_pos = audit.relearn._attack_split(ctx, "forget")
    eval_y = ctx.data("forget")[1][eval_pos]
    original_logits = ctx.logits("forget", "original")[0, eval_pos]  # the one model's row
    accuracy = float(np.mean(np.argmax(original_logits, -1) == eval_y))
    curve = audit.relearn_steps(
        net.apply,
        fresh,
        jnp.asarray(ds.x_train[relearn_idx]),
        jnp.asarray(ds.y_train[relearn_idx]),
        jnp.asarray(ctx.data("forget")[0][eval_pos]),
        jnp.asarray(eval_y),
        target_accuracy=accuracy,
        max_steps=audit.relearn.RELEARN_MAX_STEPS,
        learning_rate=audit.relearn.RELEARN_LEARNING_RATE,
        batch_size=audit.relearn.RELEARN_BATCH_SIZE,
        key=jax.random.key(0),
    ).curve
    curve = np.asarray(curve)
    censored = audit.relearn.RELEARN_MAX_STEPS + 1
    strict = {k: v.item() for k, v in audit.relearn.relearn_audit_fn(alpha=0.0)(ctx).items()}
    assert strict["relearn_steps_oracle"] == censored and curve.max() < accuracy
    loose = {k: v.item() for k, v in audit.relearn.relearn_audit_fn(alpha=0.8)(ctx).items()}
    expected = int(np.argmax(curve >= 0.2 * accuracy - 1e-6))
    assert 0 < expected < censored and curve[expected - 1] < 0.2 * accuracy
    assert loose["relearn_steps_oracle"] == expected
    assert loose["relearn_steps"] == strict["relearn_steps"] == 0  # the original itself
