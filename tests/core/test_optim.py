"""Optimizers with PyTorch semantics, and how a rule resolves its optimizer from settings."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn.core import optim


def _step(opt, params, grads):
    state = opt.init(params)
    updates, _ = opt.update(grads, state, params)
    return optax.apply_updates(params, updates)


def test_resolve_defaults_and_overrides():
    params, grads = jnp.array([1.0, -2.0]), jnp.array([0.5, 0.5])
    ref = _step(optim.resolve(None, learning_rate=0.1), params, grads)
    # Reference SGD: weight decay 5e-4 added to the gradient (momentum has no effect on step 1).
    np.testing.assert_allclose(ref, params - 0.1 * (grads + 5e-4 * params), rtol=1e-6)
    plain = _step(optim.resolve({"weight_decay": 0.0}, learning_rate=0.1), params, grads)
    np.testing.assert_allclose(plain, params - 0.1 * grads, rtol=1e-6)
    adam = optim.resolve({"name": "adam"}, learning_rate=0.1, default=optim.REFERENCE_SGD)
    assert adam is not None
    given = optax.sgd(1.0)
    assert optim.resolve(given, learning_rate=0.1) is given


@pytest.mark.parametrize(
    "optimizer,lr,match",
    [
        (
            {"name": "rmsprop"},
            0.1,
            "Unknown optimizer 'rmsprop'; valid: \\['adam', 'adamw', 'sgd'\\]",
        ),
        ({"momentun": 0.9}, 0.1, "no setting"),
        ({"learning_rate": 0.1}, 0.1, "learning_rate"),
        (None, "fast", "must be a number"),
        (None, -0.1, "positive"),
        (None, float("nan"), "finite"),
        ("sgd", 0.1, "GradientTransformation"),
    ],
)
def test_resolve_rejects_bad_settings(optimizer, lr, match):
    with pytest.raises(ValueError, match=match):
        optim.resolve(optimizer, learning_rate=lr)


def test_adamw_decays_weights_outside_adam():
    # Step 1 of Adam moves every coordinate by lr * sign(g); AdamW also subtracts lr * wd * w.
    params, grads = jnp.array([1.0, -2.0]), jnp.array([0.5, -0.25])
    lm = optim.resolve(None, learning_rate=0.1, default=optim.REFERENCE_ADAMW)
    expected = params - 0.1 * (jnp.sign(grads) + 0.01 * params)
    np.testing.assert_allclose(_step(lm, params, grads), expected, rtol=1e-5)
    no_decay = optim.resolve(
        {"weight_decay": 0.0}, learning_rate=0.1, default=optim.REFERENCE_ADAMW
    )
    np.testing.assert_allclose(
        _step(no_decay, params, grads), params - 0.1 * jnp.sign(grads), rtol=1e-5
    )
