"""Every hyperparameter a rule declares sweepable can be a tracer, so a sweep vmaps its grid.

A factory checks a hyperparameter only when it is concrete (:func:`jaxunlearn.core.checks.
concrete`); the sweep builds the rule once per concrete grid value first, so nothing goes
unchecked. Hyperparameters that fix a shape or a step count are not declared sweepable; the sweep
runs those unrolled, one run per value.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest
from rule_testing import lm_batch, tiny_lm_problem

from jaxunlearn import data, models, rules
from jaxunlearn.core.checks import concrete
from jaxunlearn.rules import registry

CASES = [
    (name, param, rules.get(name).factory.__kwdefaults__[param])
    for name in rules.names()
    for param in rules.sweepable(name)
]


def test_every_rule_taking_a_learning_rate_declares_it_sweepable():
    for name in rules.names():
        if "learning_rate" in (rules.get(name).factory.__kwdefaults__ or {}):
            assert "learning_rate" in rules.sweepable(name), name


def test_concrete():
    assert concrete(1.0, (2, 3.0), None)
    seen = []
    jax.vmap(lambda x: seen.append(concrete(1.0, {"a": x})) or x)(jnp.ones(2))
    assert seen == [False]


@functools.cache
def _problem(dataset: str):
    if dataset == "language_model":
        net, variables, stream = tiny_lm_problem(trained=False)
        batch = {"forget": lm_batch(stream, "forget"), "retain": lm_batch(stream, "retain", 8)}
        return None, net, variables, batch
    ds = data.load(dataset)
    net = models.make_network(
        "mlp", input_shape=ds.input_shape, num_outputs=ds.num_outputs, hidden=(8,)
    )
    part = {
        "x": jnp.asarray(ds.x_train[:8]),
        "y": jnp.asarray(ds.y_train[:8]),
        "index": jnp.arange(8),
    }
    return ds, net, net.init(jax.random.key(0)), {"forget": part, "retain": part}


@pytest.mark.parametrize("name,param,default", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_float_hyperparameter_traces_under_vmap(name, param, default):
    info = registry.get(name)
    dataset = {"regression": "diabetes", "language_model": "language_model"}
    ds, net, variables, batch = _problem(dataset.get(info.task, "digits"))

    def first_update(value):
        rule = registry.make(
            name,
            net,
            num_steps=20,  # two SCRUB epochs of the reference: 2 * 5 + 2 * 5
            steps_per_epoch=5,
            forget_steps_per_epoch=5,
            forget_fraction=0.1,
            **{param: value},
        )
        state = rule.init(variables, key=jax.random.key(1))
        return rule.update(variables, state, batch, key=jax.random.key(2))[2]

    grid = jnp.asarray([default, 0.5 * default + 0.1])
    metrics = jax.eval_shape(jax.vmap(first_update), grid)
    assert all(m.shape[:1] == (2,) for m in jax.tree.leaves(metrics))
