"""UNSIR and amnesiac (SSD, Fisher/IU and boundary unlearning: their own test modules)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rule_testing import smoke_test_rule

from jaxunlearn import rules
from jaxunlearn.core.types import Network, Outputs


@pytest.mark.parametrize(
    "name, hparams",
    [
        ("unsir", {"noise_steps": 2, "impair_epochs": 0.5}),
        ("amnesiac", {}),
    ],
)
def test_oneshot_boundary_smoke(name, hparams):
    smoke_test_rule(name, **hparams)


def _linear_network(in_dim: int, num_classes: int) -> Network:
    """logits = x @ w + b, features = x: a model whose gradients are easy to reason about."""

    def init(key):
        return {
            "params": {
                "w": jax.random.normal(key, (in_dim, num_classes)),
                "b": jnp.zeros((num_classes,)),
            },
            "batch_stats": {},
        }

    def apply(variables, x, *, train=False):
        del train
        p = variables["params"]
        return Outputs(logits=x @ p["w"] + p["b"], features=x)

    return Network(init, apply, "linear", num_classes)


def _batch(xf, yf, xr, yr):
    return {
        "forget": {"x": jnp.asarray(xf, jnp.float32), "y": jnp.asarray(yf, jnp.int32)},
        "retain": {"x": jnp.asarray(xr, jnp.float32), "y": jnp.asarray(yr, jnp.int32)},
    }


def test_unsir_phases():
    net = _linear_network(3, 4)
    variables = net.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    batch = _batch(
        rng.normal(size=(4, 3)), [2, 2, 2, 2], rng.normal(size=(8, 3)), rng.integers(0, 4, 8)
    )
    rule = rules.unsir(
        net.apply,
        steps_per_epoch=2,
        input_shape=(3,),
        noise_batch_size=6,
        noise_steps=3,
        impair_epochs=1.0,
    )
    state = rule.init(variables, key=jax.random.key(1))
    update = jax.jit(rule.update)
    current, noise_losses, phases = variables, [], []
    for step in range(6):
        current, state, metrics = update(current, state, batch, key=jax.random.key(step))
        noise_losses.append(float(metrics["noise_loss"]))
        phases.append(int(metrics["phase"]))
        if step < 3:  # noise phase: the model is untouched
            np.testing.assert_array_equal(
                np.asarray(current["params"]["w"]), np.asarray(variables["params"]["w"])
            )
    assert phases == [0, 0, 0, 1, 1, 2]
    assert noise_losses[2] < noise_losses[0]  # the noise is learned
    np.testing.assert_array_equal(np.asarray(state.noise_labels), [2] * 6)
    assert not np.allclose(np.asarray(current["params"]["w"]), np.asarray(variables["params"]["w"]))


def test_amnesiac_labels_are_never_the_true_label():
    # Inputs are one-hot labels and logits = margin * x, so an example's cross-entropy is ~0 if
    # its training label is the true one and ~margin otherwise; a loss of ~margin on the forget
    # half (retain half ~0) means every forget label was wrong.
    num_classes, margin, n = 3, 50.0, 256

    def apply(variables, x, *, train=False):
        del train
        return Outputs(logits=margin * variables["params"]["s"] * x, features=x)

    rule = rules.amnesiac(apply, num_classes=num_classes)
    variables = {"params": {"s": jnp.ones(())}, "batch_stats": {}}
    y = jnp.arange(n) % num_classes
    onehot = jax.nn.one_hot(y, num_classes)
    batch = _batch(onehot, y, onehot, y)
    state = rule.init(variables, key=None)
    update = jax.jit(rule.update)
    for seed in range(4):
        _, _, metrics = update(variables, state, batch, key=jax.random.key(seed))
        assert float(metrics["loss"]) > margin / 2 - margin / (4 * n)
