"""Amnesiac: forget labels are drawn among the wrong classes only."""

import jax
import jax.numpy as jnp

from jaxunlearn import rules
from jaxunlearn.core.types import Outputs


def _batch(xf, yf, xr, yr):
    return {
        "forget": {"x": jnp.asarray(xf, jnp.float32), "y": jnp.asarray(yf, jnp.int32)},
        "retain": {"x": jnp.asarray(xr, jnp.float32), "y": jnp.asarray(yr, jnp.int32)},
    }


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
