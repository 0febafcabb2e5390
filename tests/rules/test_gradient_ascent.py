"""Gradient ascent, NegGrad+ and GradDiff: their losses, and BatchNorm statistics over two parts."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_train_mode import NETS

from jaxunlearn import models, rules
from jaxunlearn.core import losses
from jaxunlearn.rules.gradient_ascent import retain_and_forget_losses

NUM_CLASSES, IN_DIM, LR = 3, 5, 0.1
MLP = models.make_network("mlp", input_shape=(IN_DIM,), num_outputs=NUM_CLASSES, hidden=(8,))


def _batch():
    rng = np.random.default_rng(0)
    part = lambda n: {
        "x": jnp.asarray(rng.normal(size=(n, IN_DIM)), jnp.float32),
        "y": jnp.asarray(rng.integers(0, NUM_CLASSES, n), jnp.int32),
    }
    return {"forget": part(4), "retain": part(8)}


@pytest.mark.parametrize("retain_weight", [1.0, 0.5])
def test_grad_diff_steps_on_minus_forget_loss_plus_weighted_retain_loss(retain_weight):
    variables, batch = MLP.init(jax.random.key(0)), _batch()
    rule = rules.grad_diff(MLP.apply, retain_weight=retain_weight, optimizer=optax.sgd(LR))
    new, _, metrics = jax.jit(rule.update)(variables, rule.init(variables), batch, key=None)

    def loss(params):
        ce = lambda part: losses.cross_entropy(
            MLP.apply({**variables, "params": params}, batch[part]["x"]).logits, batch[part]["y"]
        )
        return retain_weight * ce("retain") - ce("forget")

    grads = jax.grad(loss)(variables["params"])
    want = jax.tree.map(lambda p, g: p - LR * g, variables["params"], grads)
    for a, b in zip(jax.tree.leaves(new["params"]), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(metrics["loss"]), float(loss(variables["params"])), rtol=1e-6)
    with pytest.raises(ValueError, match="retain_weight"):
        rules.grad_diff(MLP.apply, retain_weight=-1.0)


def test_two_part_losses_refresh_batch_norm_on_retain_then_forget():
    # As two forward passes of a PyTorch model in train() mode: the running averages see the
    # retain batch, then the forget batch.
    net = NETS["classification"]
    variables, batch = net.init(jax.random.key(0)), _batch()
    _, _, metrics = retain_and_forget_losses(net.apply, variables, batch, train=True)
    after_retain = net.apply(variables, batch["retain"]["x"], train=True).batch_stats
    want = net.apply(
        {**variables, "batch_stats": after_retain}, batch["forget"]["x"], train=True
    ).batch_stats
    for a, b in zip(jax.tree.leaves(metrics["batch_stats"]), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)
    _, _, frozen = retain_and_forget_losses(net.apply, variables, batch, train=False)
    assert "batch_stats" not in frozen
