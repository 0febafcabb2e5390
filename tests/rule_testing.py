"""Shared helpers so that each rule's smoke test is one line.

``smoke_test_rule("scrub", alpha=0.5)`` builds the rule through the registry on a small `digits`
problem (an MLP trained for a few epochs, class-0 forgetting), runs it jitted through
:func:`jaxunlearn.train.fit` for a few steps, for two seeds at once with ``vmap``, and checks that
the parameters stay finite, change, and that the metrics are finite.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import data, models, rules
from jaxunlearn.core import losses
from jaxunlearn.core.types import Network, Outputs
from jaxunlearn.train import fit, make_stream


@functools.cache
def tiny_problem(kind: str = "class", dataset: str = "digits"):
    """``(dataset, split, network, trained variables)`` for a quick, real unlearning problem."""
    ds = data.load(dataset)
    if kind == "class":
        spec = data.ForgetSpec("class", classes=(0,))
    else:
        spec = data.ForgetSpec("random", fraction=0.1)
    split = data.make_split(ds, spec, seed=0)
    net = models.make_network(
        "mlp", input_shape=ds.input_shape, num_outputs=ds.num_outputs, hidden=(64,)
    )
    train = rules.finetune(net.apply, learning_rate=0.05)
    stream = make_stream(ds.x_train, ds.y_train, {"retain": np.arange(len(ds.y_train))})
    res = fit(
        train,
        net.init(jax.random.key(0)),
        stream,
        batch_sizes={"retain": 64},
        num_steps=300,
        key=jax.random.key(1),
    )
    return ds, split, net, res.variables


def run_rule(
    name: str,
    *,
    steps: int = 8,
    seeds: int = 2,
    kind: str = "class",
    dataset: str = "digits",
    batch_size: int = 32,
    **hparams,
):
    """Runs registered rule ``name`` for ``steps`` steps on ``seeds`` models (vmapped)."""
    ds, split, net, variables = tiny_problem(kind, dataset)
    info = rules.get(name)
    fraction = len(split.forget) / (len(split.forget) + len(split.retain))
    rule = rules.make(
        name,
        net,
        num_steps=steps,
        steps_per_epoch=steps,
        forget_fraction=fraction,
        forget_classes=split.classes or None,
        **hparams,
    )
    stream = make_stream(ds.x_train, ds.y_train, {"forget": split.forget, "retain": split.retain})
    start = jax.tree.map(lambda x: jnp.stack([x] * seeds), variables)
    keys = jax.vmap(jax.random.key)(jnp.arange(seeds))
    res = fit(
        rule,
        start,
        stream,
        batch_sizes={p: batch_size for p in info.parts},
        num_steps=steps,
        key=keys,
        ensemble=True,
    )
    return start, res


def smoke_test_rule(name: str, *, expect_change: bool = True, **kwargs):
    """Asserts rule ``name`` runs jitted and vmapped, stays finite and changes the model."""
    start, res = run_rule(name, **kwargs)
    assert res.steps == kwargs.get("steps", 8)
    assert not np.any(res.diverged), f"{name} diverged"
    for leaf in jax.tree.leaves(res.variables):
        assert np.all(np.isfinite(np.asarray(leaf))), f"{name} produced non-finite parameters"
    for key, values in res.metrics.items():
        assert np.all(np.isfinite(values)), f"{name} metric {key} is not finite"
    moved = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(
            jax.tree.leaves(res.variables["params"]), jax.tree.leaves(start["params"]), strict=True
        )
    )
    if expect_change:
        assert moved > 0, f"{name} did not change the parameters"
    return res


def forget_accuracy(variables, name_or_kind: str = "class") -> float:
    """Accuracy (fraction) of ``variables`` on the tiny problem's forget set."""
    ds, split, net, _ = tiny_problem(name_or_kind)
    logits = net.apply(variables, jnp.asarray(ds.x_train[split.forget])).logits
    return float(losses.accuracy(logits, jnp.asarray(ds.y_train[split.forget])))


def linear_network(in_dim: int, num_classes: int) -> Network:
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

    return Network(init, apply, "linear", num_classes, (in_dim,))
