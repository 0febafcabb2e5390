"""Tests for BatchNorm with matmul statistics (``jaxunlearn.models.batch_norm``)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxunlearn import models
from jaxunlearn.models import batch_norm


def _pair(features=5):
    ours = batch_norm.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    ref = nnx.BatchNorm(features, momentum=0.9, epsilon=1e-5, rngs=nnx.Rngs(0))
    for m in (ours, ref):  # non-trivial scale, bias and running statistics
        m.scale[...] = jnp.linspace(0.5, 2.0, features)
        m.bias[...] = jnp.linspace(-1.0, 1.0, features)
        m.mean[...] = jnp.full((features,), 0.3)
        m.var[...] = jnp.full((features,), 2.0)
    return ours, ref


def _apply(module, x, train):
    module.use_running_average = not train
    y = module(x)
    return y, module.mean[...], module.var[...]


@pytest.mark.parametrize("train", [True, False])
def test_outputs_and_running_statistics_match_flax(train, monkeypatch):
    monkeypatch.setattr(batch_norm, "USE_MATMUL_STATS", "on")
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(0), (4, 3, 3, 5))
    ours, ref = _pair()
    for got, want in zip(_apply(ours, x, train), _apply(ref, x, train), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    if train:  # the running statistics moved toward the batch's
        batch_var = np.var(np.asarray(x).reshape(-1, 5), axis=0)
        np.testing.assert_allclose(ours.var[...], 0.9 * 2.0 + 0.1 * batch_var, rtol=1e-5)


def test_gradients_match_autodiff_of_the_definition():
    x = 1.0 + jax.random.normal(jax.random.key(1), (6, 2, 2, 3))
    scale = jnp.array([0.5, 1.0, 2.0])
    bias = jnp.array([0.1, -0.2, 0.3])
    weights = jax.random.normal(jax.random.key(2), (6, 2, 2, 3))

    def definition(x, scale, bias):
        mean = x.mean((0, 1, 2))
        var = jnp.maximum((x * x).mean((0, 1, 2)) - mean**2, 0.0)
        return (x - mean) / jnp.sqrt(var + 1e-5) * scale + bias, mean, var

    def loss(f):
        def inner(x, scale, bias):
            y, mean, var = f(x, scale, bias)
            # Every output carries a cotangent, including the statistics.
            return jnp.sum(y * weights) + jnp.sum(mean * scale) + jnp.sum(var * bias)

        return jax.grad(inner, (0, 1, 2))(x, scale, bias)

    ours = loss(lambda x, s, b: batch_norm.batch_norm_train(x, s, b, 1e-5))
    for got, want in zip(ours, loss(definition), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_resnet_uses_it_and_trains_like_flax(monkeypatch):
    net = models.make_network("resnet18", input_shape=(8, 8, 2), num_outputs=3, width=4)
    variables = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (4, 8, 8, 2))

    def run(mode):
        # One compiled program per mode (the switch is read while tracing): eager dispatch of
        # ResNet-18's ops and their gradients takes over a minute on 2 cores.
        monkeypatch.setattr(batch_norm, "USE_MATMUL_STATS", mode)

        @jax.jit
        def step(variables, x):
            def loss(p):
                return jnp.sum(net.apply({**variables, "params": p}, x, train=True).logits)

            out = net.apply(variables, x, train=True)
            return out.logits, out.batch_stats, jax.grad(loss)(variables["params"])

        return step(variables, x)

    for got, want in zip(jax.tree.leaves(run("on")), jax.tree.leaves(run("off")), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(jnp.abs(want).max()))
