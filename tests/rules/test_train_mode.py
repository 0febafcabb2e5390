"""Every rule that takes ``train_mode``: BatchNorm statistics move in training mode, not otherwise.

The PyTorch references run their unlearning loops under ``model.train()``: BatchNorm normalises
with the batch's statistics and updates its running averages. A rule with ``train_mode=True``
must hand the refreshed statistics back (through ``rule_from_grads``' ``"batch_stats"`` metric or
its own update); with ``train_mode=False`` they stay bit-identical. The rules are found by their
factory's signature, so a rule that gains the option is covered without editing this file.
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxunlearn import rules
from jaxunlearn.models.functional import from_nnx
from jaxunlearn.rules.scrub import scrub_num_steps
from jaxunlearn.train import fit, make_stream

IN_DIM, HIDDEN, NUM_CLASSES = 5, 8, 3
SPE, FSPE = 2, 1  # updates per pass over the retain set and over the forget set
STEPS = scrub_num_steps(13, SPE, FSPE, msteps=3)  # 29: whole SCRUB epochs, past UNSIR's noise


class _BatchNormMLP(nnx.Module):
    """Dense -> BatchNorm -> ReLU (the features) -> Dense head: the smallest BatchNorm model."""

    def __init__(self, num_outputs: int, rngs: nnx.Rngs):
        self.dense = nnx.Linear(IN_DIM, HIDDEN, rngs=rngs)
        self.norm = nnx.BatchNorm(HIDDEN, momentum=0.9, rngs=rngs)
        self.head = nnx.Linear(HIDDEN, num_outputs, rngs=rngs)

    def __call__(self, x):
        features = jax.nn.relu(self.norm(self.dense(x.reshape(x.shape[0], -1))))
        return self.head(features), features


def _network(num_outputs: int):
    return from_nnx(
        lambda rngs: _BatchNormMLP(num_outputs, rngs),
        name="bn_mlp",
        num_outputs=num_outputs,
        input_shape=(IN_DIM,),
    )


# A classifier and a regressor (one output, float targets).
NETS = {"classification": _network(NUM_CLASSES), "regression": _network(1)}


def _takes_train_mode(name: str) -> bool:
    return "train_mode" in inspect.signature(rules.get(name).factory).parameters


TRAIN_MODE_RULES = [n for n in rules.names() if _takes_train_mode(n)]


@functools.cache
def _stream(task: str):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, IN_DIM)).astype(np.float32)
    y = rng.integers(0, NUM_CLASSES, 48).astype(np.int32)
    y[:12] = 0
    x[:12] += 1.5  # a forget class the model can tell apart
    if task == "regression":
        y = (x.sum(-1, keepdims=True) + 0.1 * rng.normal(size=(48, 1))).astype(np.float32)
    return make_stream(x, y, {"forget": np.arange(12), "retain": np.arange(12, 48)})


def _run(name: str, train_mode: bool):
    info = rules.get(name)
    task = "regression" if info.task == "regression" else "classification"
    net = NETS[task]
    rule = rules.make(
        name,
        net,
        num_steps=STEPS,
        steps_per_epoch=SPE,
        forget_steps_per_epoch=FSPE,
        forget_fraction=0.25,
        forget_classes=(0,) if task == "classification" else None,
        train_mode=train_mode,
    )
    start = net.init(jax.random.key(0))
    res = fit(
        rule,
        start,
        _stream(task),
        batch_sizes={part: 8 for part in info.parts},
        num_steps=STEPS,
        key=jax.random.key(1),
    )
    return start, res


def _stats_moved(a, b) -> float:
    return max(
        float(jnp.max(jnp.abs(x - y)))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_the_rules_of_the_references_that_train_in_train_mode_take_the_option():
    # model.train() in the references: SCRUB, RL, GA, FT, l1-sparse, boundary shrink/expand,
    # amnesiac (SSD's code), UNSIR, Adapt-then-Unlearn, the regression methods, UNO; SalUn and
    # WAGLE pass it to their default inner rule. Bad teaching and LAF never call model.train().
    for name in ("scrub", "random_label", "gradient_ascent", "neggrad_plus", "grad_diff",
                 "finetune", "retrain", "l1_sparse", "boundary_shrink", "boundary_expand",
                 "salun", "weight_attribution_mask", "amnesiac", "unsir", "adapt_then_unlearn",
                 "gaussian_amnesiac", "blindspot", "gradient_orthogonalization"):  # fmt: skip
        assert name in TRAIN_MODE_RULES, name
        default = inspect.signature(rules.get(name).factory).parameters["train_mode"].default
        assert default in (True, None), f"{name} must default to the reference's train mode"
    for name in ("bad_teacher", "label_agnostic_forgetting"):
        default = inspect.signature(rules.get(name).factory).parameters["train_mode"].default
        assert default is False, f"{name}: its reference never switches to train mode"


@pytest.mark.parametrize("name", TRAIN_MODE_RULES)
def test_batch_norm_statistics_move_in_train_mode_and_stay_fixed_otherwise(name):
    start, trained = _run(name, True)
    assert np.all([np.all(np.isfinite(x)) for x in jax.tree.leaves(trained.variables)])
    assert _stats_moved(trained.variables["batch_stats"], start["batch_stats"]) > 0, name
    start, frozen = _run(name, False)
    assert _stats_moved(frozen.variables["batch_stats"], start["batch_stats"]) == 0, name
    changed = [np.any(np.asarray(a) != np.asarray(b)) for a, b in zip(
        jax.tree.leaves(frozen.variables["params"]), jax.tree.leaves(start["params"]), strict=True
    )]  # fmt: skip
    assert any(changed), f"{name} did not train"
