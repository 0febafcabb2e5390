"""Tests for the convolution with scan-friendly gradients (``jaxunlearn.models.conv``)."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from jaxunlearn import models
from jaxunlearn.core.rule import rule_from_loss
from jaxunlearn.models import conv
from jaxunlearn.train import fit, make_stream


def _reference(x, w, strides, padding):
    dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)


CASES = list(
    itertools.product(
        (7, 8),  # height (width is height + 2): odd and even sizes
        (1, 3),  # kernel
        (1, 2),  # stride
        ("SAME", "VALID", ((1, 1), (1, 1)), ((0, 2), (2, 1))),
    )
)


@pytest.mark.parametrize(("size", "kernel", "stride", "padding"), CASES)
def test_conv2d_gradients_match_xla(size, kernel, stride, padding):
    x = jax.random.normal(jax.random.key(0), (2, size, size + 2, 3))
    w = jax.random.normal(jax.random.key(1), (kernel, kernel, 3, 4))
    strides = (stride, stride)
    y = _reference(x, w, strides, padding)
    np.testing.assert_array_equal(conv.conv2d(x, w, strides, padding), y)
    cotangent = jax.random.normal(jax.random.key(2), y.shape)

    def grads(f):
        return jax.grad(lambda x, w: jnp.sum(f(x, w, strides, padding) * cotangent), (0, 1))(x, w)

    for got, want in zip(grads(conv.conv2d), grads(_reference), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))


def _build(name, mode, monkeypatch):
    monkeypatch.setattr(conv, "USE_CUSTOM_GRAD", mode)
    kwargs = {"cnn": {"channels": (4, 8), "hidden": 16}, "resnet18": {"width": 4}}[name]
    net = models.make_network(name, input_shape=(9, 9, 2), num_outputs=3, **kwargs)
    variables = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(1), (4, 9, 9, 2))
    y = jnp.arange(4) % 3

    def loss(params):
        out = net.apply({**variables, "params": params}, x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(out.logits, y).mean()

    logits = jax.jit(net.apply)(variables, x).logits
    return variables, logits, jax.jit(jax.grad(loss))(variables["params"])


@pytest.mark.parametrize("name", ["cnn", "resnet18"])
def test_models_same_parameters_outputs_and_gradients(name, monkeypatch):
    v_off, logits_off, g_off = _build(name, "off", monkeypatch)
    v_on, logits_on, g_on = _build(name, "on", monkeypatch)
    assert jax.tree.structure(v_on) == jax.tree.structure(v_off)
    jax.tree.map(np.testing.assert_array_equal, v_on, v_off)
    np.testing.assert_array_equal(logits_on, logits_off)  # the same forward convolution
    for a, b in zip(jax.tree.leaves(g_on), jax.tree.leaves(g_off), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.abs(b).max()) + 1e-7)


def test_fit_runs_the_cnn_with_custom_gradients(monkeypatch):
    monkeypatch.setattr(conv, "USE_CUSTOM_GRAD", "on")
    net = models.make_network(
        "cnn", input_shape=(8, 8, 1), num_outputs=3, channels=(2, 4), hidden=8
    )
    variables = net.init(jax.random.key(0))

    def loss_fn(v, batch, *, reference, step, key):
        del reference, step, key
        out = net.apply(v, batch["train"]["x"])
        return optax.softmax_cross_entropy_with_integer_labels(
            out.logits, batch["train"]["y"]
        ).mean(), {}

    rule = rule_from_loss(loss_fn, optax.sgd(0.1), keep_reference=False)
    x = np.asarray(jax.random.uniform(jax.random.key(3), (16, 8, 8, 1)))
    y = np.arange(16) % 3
    result = fit(
        rule,
        variables,
        make_stream(x, y, {"train": np.arange(16)}),
        batch_sizes={"train": 8},
        num_steps=3,
        key=jax.random.key(0),
    )
    assert result.steps == 3 and not result.diverged
    kernel_moved = jax.tree.map(
        lambda a, b: bool(np.any(a != b)), result.variables["params"], variables["params"]
    )
    assert all(jax.tree.leaves(kernel_moved))
