"""Boundary shrink and expand: one jitted update against the same step written out by hand.

A hand-built linear model and a tiny untrained MLP; no training.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn import models, rules
from jaxunlearn.core import losses, optim
from jaxunlearn.core.types import Outputs
from jaxunlearn.rules import boundary

NUM_CLASSES = 3


def _linear(variables, x, *, train=False):
    del train
    p = variables["params"]
    return Outputs(logits=x @ p["w"] + p["b"], features=x)


LINEAR = {
    "params": {
        "w": jax.random.normal(jax.random.key(0), (4, NUM_CLASSES)),
        "b": jnp.array([0.1, -0.2, 0.0]),
    }
}
RNG = np.random.default_rng(0)
FORGET = {
    "x": jnp.asarray(RNG.uniform(size=(6, 4)), jnp.float32),
    "y": jnp.asarray(RNG.integers(0, NUM_CLASSES, 6), jnp.int32),
}


def _close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)


def test_fgsm_steps_along_the_input_gradient_sign_then_clips_and_quantises():
    x, y, bound = FORGET["x"], FORGET["y"], 0.3
    got = jax.jit(lambda x: boundary.fgsm(_linear, LINEAR, x, y, bound=bound))(x)
    grad = jax.grad(lambda x: losses.cross_entropy(_linear(LINEAR, x).logits, y))(x)
    expected = np.round(np.clip(x + bound * np.sign(grad), 0.0, 1.0) * 255) / 255
    np.testing.assert_allclose(got, expected, atol=1e-6)
    raw = boundary.fgsm(_linear, LINEAR, x, y, bound=bound, input_range=None, levels=None)
    np.testing.assert_allclose(raw, x + bound * np.sign(grad), atol=1e-6)


def test_boundary_shrink_fine_tunes_towards_the_original_models_attacked_labels():
    lr, bound = 0.5, 0.5
    rule = boundary.boundary_shrink(_linear, bound=bound, optimizer=optax.sgd(lr))
    state = rule.init(LINEAR, key=jax.random.key(0))
    batch = {"forget": FORGET}
    new, state, metrics = jax.jit(rule.update)(LINEAR, state, batch, key=jax.random.key(1))
    x_adv = boundary.fgsm(_linear, LINEAR, FORGET["x"], FORGET["y"], bound=bound)
    targets = jnp.argmax(_linear(LINEAR, x_adv).logits, -1)
    assert 0 < float(metrics["relabelled"]) == float(jnp.mean(targets != FORGET["y"]))
    grads = jax.grad(
        lambda p: losses.cross_entropy(_linear({"params": p}, FORGET["x"]).logits, targets)
    )(LINEAR["params"])
    _close(new["params"], jax.tree.map(lambda p, g: p - lr * g, LINEAR["params"], grads))
    assert int(state.step.count) == 1
    # A second update still attacks the original model, kept as the rule's reference.
    _, state, _ = jax.jit(rule.update)(new, state, batch, key=jax.random.key(2))
    _close(state.reference, LINEAR)
    with pytest.raises(ValueError, match="bound"):
        boundary.boundary_shrink(_linear, bound=0.0)


def test_boundary_expand_trains_a_shadow_class_with_the_reference_optimizer():
    net = models.make_network("mlp", input_shape=(4,), num_outputs=NUM_CLASSES, hidden=(5,))
    variables = net.init(jax.random.key(0))
    lr = 0.1
    rule = rules.make("boundary_expand", net, learning_rate=lr)
    state = rule.init(variables, key=jax.random.key(1))
    assert state.shadow["kernel"].shape == (5,)  # the features' width, read off the head
    update = jax.jit(rule.update)
    new, new_state, metrics = update(variables, state, {"forget": FORGET}, key=jax.random.key(2))
    assert jax.tree.structure(new) == jax.tree.structure(variables)  # the shadow is pruned

    def objective(trainable):
        out = net.apply({**variables, "params": trainable["params"]}, FORGET["x"])
        extra = out.features @ trainable["shadow"]["kernel"] + trainable["shadow"]["bias"]
        wide = jnp.concatenate([out.logits, extra[:, None]], -1)
        return losses.cross_entropy(wide, jnp.full((6,), NUM_CLASSES))

    trainable = {"params": variables["params"], "shadow": state.shadow}
    # SGD with momentum 0.9 and weight decay 5e-4 on the model and the shadow neuron alike.
    opt = optim.sgd(lr, momentum=0.9, weight_decay=5e-4)
    updates, _ = opt.update(jax.grad(objective)(trainable), opt.init(trainable), trainable)
    expected = optax.apply_updates(trainable, updates)
    _close(new["params"], expected["params"])
    _close(new_state.shadow, expected["shadow"])
    assert int(new_state.step.count) == 1
    assert float(metrics["loss"]) == pytest.approx(float(objective(trainable)), rel=1e-6)


def test_boundary_expand_needs_an_unambiguous_feature_width():
    # Kernels [4, 3] and [3, 3] could both be the head of 3 classes: [4, 3] is a hidden layer.
    net = models.make_network("mlp", input_shape=(4,), num_outputs=3, hidden=(3,))
    variables = net.init(jax.random.key(0))
    with pytest.raises(ValueError, match="feature_dim"):
        rules.make("boundary_expand", net).init(variables, key=jax.random.key(1))
    state = rules.make("boundary_expand", net, feature_dim=3).init(variables, key=jax.random.key(1))
    assert state.shadow["kernel"].shape == (3,)


def test_optimizer_settings_go_through_optimizer():
    net = models.make_network("mlp", input_shape=(4,), num_outputs=NUM_CLASSES, hidden=(5,))
    for name in ("boundary_shrink", "boundary_expand"):
        with pytest.raises(ValueError, match="no hyperparameter"):
            rules.make(name, net, momentum=0.5)
        rules.make(name, net, optimizer={"momentum": 0.5, "weight_decay": 0.0})
        with pytest.raises(ValueError, match="nesterov_typo"):
            rules.make(name, net, optimizer={"nesterov_typo": True})
