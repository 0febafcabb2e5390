"""Tests for the model registry and the functional view of every registered architecture."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn import models
from jaxunlearn.core.rule import rule_from_loss
from jaxunlearn.train import checkpoint, fit, make_stream

INPUT_SHAPE = (8, 8, 1)
NUM_CLASSES = 3
TINY = {
    "mlp": {"hidden": (16,)},
    "cnn": {"channels": (4, 8), "hidden": 16},
    "resnet18": {"width": 8},
}
# The image/flat-input classifiers; the transformer has its own tests (tests/test_transformer.py).
CLASSIFIERS = [name for name in models.names() if name != "transformer"]


@functools.cache
def _network(name: str):
    """A tiny network of each architecture and a 2-member ensemble of its variables.

    Built once per session: on a CPU, compiling ``init`` (its random draws) costs more than
    everything else a test does with the model.
    """
    net = models.make_network(
        name, input_shape=INPUT_SHAPE, num_outputs=NUM_CLASSES, **TINY.get(name, {})
    )
    return net, jax.jit(jax.vmap(net.init))(jax.random.split(jax.random.key(0), 2))


def _variables(name: str):
    net, ensemble = _network(name)
    return net, jax.tree.map(lambda leaf: leaf[0], ensemble)


@functools.cache
def _jitted_apply(name: str):
    return jax.jit(_network(name)[0].apply, static_argnames="train")


@functools.cache
def _train_mode_grad(name: str):
    """``(variables, x, y) -> (grads w.r.t. params, refreshed batch_stats)`` in train mode."""
    net = _network(name)[0]

    def grad(variables, x, y):
        def loss(params):
            out = net.apply({**variables, "params": params}, x, train=True)
            xent = optax.softmax_cross_entropy_with_integer_labels(out.logits, y).mean()
            return xent, out.batch_stats

        return jax.grad(loss, has_aux=True)(variables["params"])

    return jax.jit(grad)


def _images(n: int, seed: int = 0) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (n, *INPUT_SHAPE))


def _labels(n: int) -> jax.Array:
    return jnp.arange(n) % NUM_CLASSES


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_apply_gives_logits_and_features(name):
    net, variables = _variables(name)
    assert net.name == name and net.num_outputs == NUM_CLASSES
    assert set(variables) == {"params", "batch_stats"}
    # A single (unbatched) init gives the same tree as each ensemble member.
    single = jax.eval_shape(net.init, jax.random.key(0))
    assert jax.tree.structure(single) == jax.tree.structure(variables)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), single) == jax.tree.map(
        lambda a: (a.shape, a.dtype), variables
    )
    out = _jitted_apply(name)(variables, _images(4))
    assert out.logits.shape == (4, NUM_CLASSES)
    assert out.features.ndim == 2 and out.features.shape[0] == 4
    assert out.batch_stats is None  # eval mode never returns statistics
    assert np.all(np.isfinite(out.logits)) and np.all(np.isfinite(out.features))


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_vmap_init_gives_distinct_members(name):
    _, ensemble = _network(name)
    for leaf in jax.tree.leaves(ensemble):
        assert leaf.shape[0] == 2
    kernels = [leaf for leaf in jax.tree.leaves(ensemble["params"]) if leaf.ndim >= 3]
    assert kernels and all(not np.array_equal(k[0], k[1]) for k in kernels)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_grad_wrt_params(name):
    _, variables = _variables(name)
    grads, _ = _train_mode_grad(name)(variables, _images(8), _labels(8))
    assert jax.tree.structure(grads) == jax.tree.structure(variables["params"])
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(grads))
    assert any(np.any(leaf != 0) for leaf in jax.tree.leaves(grads))


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="cnn.*mlp.*resnet18"):
        models.make_network("nope", input_shape=INPUT_SHAPE, num_outputs=NUM_CLASSES)


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_cnn_on_mnist_and_cifar_shapes(shape):
    net = models.make_network("cnn", input_shape=shape, num_outputs=10, channels=(2, 4), hidden=8)
    out = jax.eval_shape(
        net.apply,
        jax.eval_shape(net.init, jax.random.key(0)),
        jax.ShapeDtypeStruct((2, *shape), jnp.float32),
    )
    assert out.logits.shape == (2, 10) and out.features.shape == (2, 8)


def test_resnet18_full_size_matches_the_reference():
    # kuangliu/pytorch-cifar ResNet18 on CIFAR-10 has 11,173,962 parameters.
    net = models.make_network("resnet18", input_shape=(32, 32, 3), num_outputs=10)
    variables = jax.eval_shape(net.init, jax.random.key(0))
    assert sum(leaf.size for leaf in jax.tree.leaves(variables["params"])) == 11_173_962
    out = jax.eval_shape(net.apply, variables, jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32))
    assert out.logits.shape == (2, 10) and out.features.shape == (2, 512)


# ---------------------------------------------------------------------------------------------
# BatchNorm statistics (resnet18)
# ---------------------------------------------------------------------------------------------


def _train_mode_stats(variables):
    return _train_mode_grad("resnet18")(variables, _images(8), _labels(8))[1]


def test_resnet18_train_mode_refreshes_batch_stats():
    _, variables = _variables("resnet18")
    stats = _train_mode_stats(variables)
    assert stats is not None
    assert jax.tree.structure(stats) == jax.tree.structure(variables["batch_stats"])
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), stats, variables["batch_stats"])
    assert all(jax.tree.leaves(changed))


def test_resnet18_eval_mode_uses_running_statistics():
    _, variables = _variables("resnet18")
    apply = _jitted_apply("resnet18")
    x = _images(4)
    # Example 0 alone (a batch of copies of it, whose batch variance is zero, so batch statistics
    # would change its output completely) and example 0 among others give the same output.
    alone = apply(variables, jnp.repeat(x[:1], 4, axis=0)).logits
    in_batch = apply(variables, x).logits[0]
    np.testing.assert_allclose(alone, jnp.broadcast_to(in_batch, alone.shape), rtol=1e-5, atol=1e-5)
    # The outputs do depend on the stored statistics.
    refreshed = {**variables, "batch_stats": _train_mode_stats(variables)}
    assert not np.allclose(apply(refreshed, x).logits, apply(variables, x).logits)


def test_resnet18_batch_stats_survive_a_checkpoint(tmp_path):
    _, variables = _variables("resnet18")
    trained = {**variables, "batch_stats": _train_mode_stats(variables)}
    checkpoint.save_tree(str(tmp_path / "ckpt"), trained)
    restored = checkpoint.load_tree(str(tmp_path / "ckpt"), variables)
    assert jax.tree.structure(restored) == jax.tree.structure(trained)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(trained), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_fit_in_train_mode_updates_batch_stats():
    net, variables = _variables("resnet18")

    def loss_fn(v, batch, *, reference, step, key):
        del reference, step, key
        out = net.apply(v, batch["train"]["x"], train=True)
        loss = optax.softmax_cross_entropy_with_integer_labels(
            out.logits, batch["train"]["y"]
        ).mean()
        return loss, {"batch_stats": out.batch_stats}

    rule = rule_from_loss(loss_fn, optax.sgd(0.05), keep_reference=False)
    x, y = np.asarray(_images(16, seed=3)), np.asarray(_labels(16))
    result = fit(
        rule,
        variables,
        make_stream(x, y, {"train": np.arange(16)}),
        batch_sizes={"train": 8},
        num_steps=2,
        key=jax.random.key(0),
    )
    assert result.steps == 2 and not result.diverged
    assert set(result.metrics) == {"loss"}  # the statistics went into the variables
    assert jax.tree.structure(result.variables) == jax.tree.structure(variables)
    changed = jax.tree.map(
        lambda a, b: not np.allclose(a, b),
        result.variables["batch_stats"],
        variables["batch_stats"],
    )
    assert all(jax.tree.leaves(changed))
    assert not np.allclose(
        result.variables["params"]["linear"]["kernel"], variables["params"]["linear"]["kernel"]
    )


@pytest.mark.parametrize(
    "name, settings, message",
    [
        ("mlp", {"num_outputs": 0}, "num_outputs"),
        ("cnn", {"num_outputs": 0}, "num_outputs"),
        ("resnet18", {"num_outputs": -1}, "num_outputs"),
        ("mlp", {"num_outputs": 2.5}, "num_outputs"),
        ("mlp", {"input_shape": (0, 8, 1)}, "input_shape"),
        ("mlp", {"input_shape": ()}, "input_shape"),
        ("resnet18", {"input_shape": (64,)}, r"\(H, W, C\)"),
        ("mlp", {"hidden": (16, 0)}, "hidden"),
        ("cnn", {"channels": (0,)}, "channels"),
        ("resnet18", {"width": 0}, "width"),
        ("mlp", {"hiden": (16,)}, r"valid options: \['hidden'\]"),
    ],
)
def test_impossible_model_settings_are_rejected(name, settings, message):
    settings = {"input_shape": INPUT_SHAPE, "num_outputs": NUM_CLASSES, **settings}
    with pytest.raises(ValueError, match=message):
        models.make_network(name, **settings)


@pytest.mark.parametrize("size", [(8, 8), (7, 9)])
def test_cnn_max_pool_matches_flax_values_and_gradients(size):
    from flax import nnx

    from jaxunlearn.models.cnn import max_pool_2x2

    x = jax.random.normal(jax.random.key(0), (2, *size, 3))  # no ties
    reference = functools.partial(nnx.max_pool, window_shape=(2, 2), strides=(2, 2), padding="SAME")
    np.testing.assert_array_equal(max_pool_2x2(x), reference(x))
    cotangent = jax.random.normal(jax.random.key(1), reference(x).shape)
    grad = lambda f: jax.grad(lambda x: jnp.sum(f(x) * cotangent))(x)  # noqa: E731
    np.testing.assert_array_equal(grad(max_pool_2x2), grad(reference))
