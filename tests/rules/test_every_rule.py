"""Every registered rule, by construction: a new rule module is covered without editing a list.

Each rule is built through the registry for a tiny *untrained* MLP (no training inside the test),
or for a rule of ``task="language_model"`` a tiny untrained causal language model on token data
(:func:`rule_testing.tiny_lm_problem`), run jitted through :func:`jaxunlearn.train.fit` for a few
updates on two models at once (vmapped over seeds, with the rule's step counters kept unbatched),
and must return finite parameters, finite metrics of the expected shape, and parameters that
moved. Every ``task="any"`` rule also runs on the language model. A rule that is a no-op on this
input is listed in ``NO_OP`` (``LM_NO_OP``) with the reason.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rule_testing import tiny_lm_problem

from jaxunlearn import data, models, rules
from jaxunlearn.train import fit, make_stream

STEPS = 12  # salun and weight_attribution_mask score their mask for 8 of them

# Rules that leave these parameters unchanged on this input, and why.
NO_OP: dict[str, str] = {"unsir": "its 25 noise-learning updates outlast the 12 of the test"}
# The same on the untrained language model.
LM_NO_OP: dict[str, str] = {
    "ssd": "no weight's forget importance exceeds alpha times its retain importance on the "
    "untrained model, so nothing is dampened",
}
# Settings an "any" rule needs on the language model, and why.
LM_HPARAMS: dict[str, dict] = {
    "label_agnostic_forgetting": {"head_key": "lm_head"},  # the head it leaves to the repair
}
# The forget set of the LM problem has 8 rows.
LM_BATCH = 8


@functools.cache
def _problem(task: str):
    if task == "language_model":
        net, _, stream = tiny_lm_problem(trained=False)
        n_forget, n_retain = (len(stream.index[p]) for p in ("forget", "retain"))
        return net, None, stream, n_forget / (n_forget + n_retain)
    ds = data.load("diabetes" if task == "regression" else "digits")
    spec = (
        data.ForgetSpec("random", fraction=0.1)
        if task == "regression"
        else data.ForgetSpec("class", classes=(0,))
    )
    split = data.make_split(ds, spec, seed=0)
    net = models.make_network(
        "mlp", input_shape=ds.input_shape, num_outputs=ds.num_outputs, hidden=(8,)
    )
    stream = make_stream(ds.x_train, ds.y_train, {"forget": split.forget, "retain": split.retain})
    fraction = len(split.forget) / (len(split.forget) + len(split.retain))
    return net, split, stream, fraction


@pytest.mark.parametrize("name", rules.names())
def test_rule_runs_jitted_and_vmapped_over_seeds(name):
    _check_runs(name, rules.get(name).task, NO_OP)


LM_RULES = [n for n in rules.names() if rules.get(n).task == "any"]


@pytest.mark.parametrize("name", LM_RULES)
def test_any_task_rule_runs_on_a_language_model(name):
    _check_runs(name, "language_model", LM_NO_OP, **LM_HPARAMS.get(name, {}))


def _check_runs(name: str, task: str, no_op: dict[str, str], **hparams):
    info = rules.get(name)
    net, split, stream, fraction = _problem(task)
    rule = rules.make(
        name,
        net,
        num_steps=STEPS,
        steps_per_epoch=4,
        forget_steps_per_epoch=2,  # SCRUB's reference epochs: 2 * 4 + 2 * 2 = STEPS updates
        forget_fraction=fraction,
        forget_classes=(split.classes or None) if split is not None else None,
        **hparams,
    )
    keys = jax.vmap(jax.random.key)(jnp.arange(2))
    start = jax.vmap(net.init)(keys)
    batch = LM_BATCH if task == "language_model" else 16
    res = fit(
        rule,
        start,
        stream,
        batch_sizes={part: batch for part in info.parts},
        num_steps=STEPS,
        key=keys,
        ensemble=True,
    )
    assert res.steps == STEPS and not np.any(res.diverged), f"{name} diverged"
    for leaf in jax.tree.leaves(res.variables):
        assert leaf.shape[0] == 2 and np.all(np.isfinite(leaf)), f"{name}: non-finite parameters"
    assert res.metrics, f"{name} reports no metrics"
    for key, values in res.metrics.items():
        assert values.shape == (2, STEPS), (name, key, values.shape)
        assert np.all(np.isfinite(values)), f"{name} metric {key} is not finite"
    moved = [
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(
            jax.tree.leaves(res.variables["params"]), jax.tree.leaves(start["params"]), strict=True
        )
    ]
    if name in no_op:
        assert max(moved) == 0.0, f"{name} is listed as a no-op ({no_op[name]}) but moved"
    else:
        assert max(moved) > 0.0, f"{name} did not change the parameters"


def test_every_sweepable_hyperparameter_is_a_float_keyword():
    for name in rules.names():
        params = rules.get(name).factory.__kwdefaults__ or {}
        for hp in rules.sweepable(name):
            assert isinstance(params.get(hp), float), (name, hp, params.get(hp))
