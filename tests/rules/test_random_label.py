"""Random labelling: the concatenated step's stated weighting and the reference's sequential epoch.

Everything runs jitted on a tiny untrained MLP and hand-made batches (no training).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn import models, rules
from jaxunlearn.core import losses
from jaxunlearn.rules.random_label import random_label_num_steps

NUM_CLASSES, IN_DIM = 4, 6
NET = models.make_network("mlp", input_shape=(IN_DIM,), num_outputs=NUM_CLASSES, hidden=(8,))
VARIABLES = NET.init(jax.random.key(0))
LR = 0.5


def _batch(forget_size: int = 4, retain_size: int = 12, seed: int = 0):
    rng = np.random.default_rng(seed)
    part = lambda n, lo: {
        "x": jnp.asarray(rng.normal(size=(n, IN_DIM)), jnp.float32),
        "y": jnp.asarray(rng.integers(lo, NUM_CLASSES, n), jnp.int32),
    }
    return {"forget": part(forget_size, 0), "retain": part(retain_size, 1)}


def _sgd_step(loss):
    grads = jax.grad(loss)(VARIABLES["params"])
    return jax.tree.map(lambda p, g: p - LR * g, VARIABLES["params"], grads)


def _ce(params, part, labels=None):
    logits = NET.apply({**VARIABLES, "params": params}, part["x"]).logits
    return losses.cross_entropy(logits, part["y"] if labels is None else labels)


def _assert_close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


def _labels(key, y):
    return jax.random.randint(key, y.shape, 0, NUM_CLASSES).astype(y.dtype)


@pytest.mark.parametrize("forget_weight", [0.5, 0.1])
def test_concatenated_step_weighs_the_two_batch_means_by_forget_weight(forget_weight):
    # The old loss was the mean over the concatenation: a forget weight of 4 / 16 set by the
    # batch sizes, whatever the user meant.
    batch, key = _batch(), jax.random.key(3)
    rule = rules.random_label(
        NET.apply, num_classes=NUM_CLASSES, forget_weight=forget_weight, optimizer=optax.sgd(LR)
    )
    new, _, metrics = jax.jit(rule.update)(VARIABLES, rule.init(VARIABLES), batch, key=key)
    rand = _labels(key, batch["forget"]["y"])
    loss = lambda p: (
        forget_weight * _ce(p, batch["forget"], rand)
        + (1 - forget_weight) * _ce(p, batch["retain"])
    )
    _assert_close(new["params"], _sgd_step(loss))
    np.testing.assert_allclose(float(metrics["loss"]), float(loss(VARIABLES["params"])), rtol=1e-5)


def test_default_forget_weight_is_one_half_and_none_takes_the_forget_fraction():
    batch, key = _batch(), jax.random.key(3)
    run = lambda rule: jax.jit(rule.update)(VARIABLES, rule.init(VARIABLES), batch, key=key)[0]
    plain = dict(num_classes=NUM_CLASSES, optimizer=optax.sgd(LR))
    default = run(rules.random_label(NET.apply, **plain))
    half = run(rules.random_label(NET.apply, forget_weight=0.5, **plain))
    _assert_close(default, half)
    by_fraction = run(rules.make("random_label", NET, forget_fraction=0.2, forget_weight=None,
                                 optimizer=optax.sgd(LR)))  # fmt: skip
    explicit = run(rules.random_label(NET.apply, forget_weight=0.2, **plain))
    _assert_close(by_fraction, explicit)
    with pytest.raises(ValueError, match="forget_fraction"):
        rules.random_label(NET.apply, num_classes=NUM_CLASSES, forget_weight=None)
    with pytest.raises(ValueError, match="forget_weight"):
        rules.random_label(NET.apply, num_classes=NUM_CLASSES, forget_weight=1.5)


def test_sequential_epoch_is_a_forget_pass_with_random_labels_then_a_retain_pass():
    rule = rules.make(
        "random_label",
        NET,
        mode="sequential",
        steps_per_epoch=2,
        forget_steps_per_epoch=1,
        num_steps=random_label_num_steps(2, 2, 1),
        optimizer=optax.sgd(LR),
    )
    update = jax.jit(rule.update)
    batch, other = _batch(), _batch(seed=1)
    state, flags = rule.init(VARIABLES), []
    for i in range(6):
        key = jax.random.key(i)
        if i == 0:
            # A forget update: SGD on random labels of the forget batch; retain is not read.
            new, _, _ = update(VARIABLES, state, batch, key=key)
            rand = _labels(key, batch["forget"]["y"])
            _assert_close(new["params"], _sgd_step(lambda p, r=rand: _ce(p, batch["forget"], r)))
            same, _, _ = update(VARIABLES, state, {**batch, "retain": other["retain"]}, key=key)
            _assert_close(new, same)
        if i == 1:
            # A retain update: SGD on the retain batch's true labels; forget is not read.
            s1 = state._replace(step=state.step._replace(count=jnp.asarray(1, jnp.int32)))
            new, _, _ = update(VARIABLES, s1, batch, key=key)
            _assert_close(new["params"], _sgd_step(lambda p: _ce(p, batch["retain"])))
            same, _, _ = update(VARIABLES, s1, {**batch, "forget": other["forget"]}, key=key)
            _assert_close(new, same)
        _, state, metrics = update(VARIABLES, state, batch, key=key)
        flags.append(int(metrics["forget_pass"]))
    assert flags == [1, 0, 0, 1, 0, 0]


def test_sequential_mode_needs_its_schedule_and_whole_epochs():
    assert random_label_num_steps(10, 9, 1) == 100
    with pytest.raises(ValueError, match="forget_steps_per_epoch"):
        rules.make("random_label", NET, mode="sequential", steps_per_epoch=9)
    with pytest.raises(ValueError, match=r"9 epochs take 90, 10 take 100.*random_label_num_steps"):
        rules.make("random_label", NET, mode="sequential", num_steps=99, steps_per_epoch=9,
                   forget_steps_per_epoch=1)  # fmt: skip
    with pytest.raises(ValueError, match="mode"):
        rules.make("random_label", NET, mode="shuffled")
