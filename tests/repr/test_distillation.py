"""DINO's reference mechanics: multi-crop (local views through the student only), the teacher
temperature warm-up, the frozen last layer, and the gradient freezing they share with SwAV."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn import models
from jaxunlearn import repr as R
from jaxunlearn.repr import common, losses


@functools.cache
def _net():
    backbone = models.make_network("mlp", input_shape=(8, 8, 1), num_outputs=10, hidden=(16,))
    return R.encoder("dino", backbone, width=16)


def _x():
    return jax.random.uniform(jax.random.key(2), (6, 8, 8, 1))


def test_frozen_until_zeroes_the_masked_gradients_for_the_first_steps():
    opt = optax.chain(common.frozen_until(2, lambda p: {"a": True, "b": False}), optax.sgd(1.0))
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    grads = {"a": jnp.full(2, 0.5), "b": jnp.full(2, 0.25)}
    state = opt.init(params)
    seen = []
    for _ in range(3):
        updates, state = opt.update(grads, state, params)
        seen.append((float(updates["a"][0]), float(updates["b"][0])))
    assert seen == [(0.0, -0.25), (0.0, -0.25), (-0.5, -0.25)]
    with pytest.raises(ValueError, match="`steps`"):
        common.frozen_until(-1, lambda p: p)


def test_teacher_temperature_warms_up_linearly_and_the_last_layer_waits():
    net = _net()
    rule = R.make(
        "dino",
        net,
        warmup_teacher_temperature=0.04,
        teacher_temperature=0.07,
        warmup_teacher_temperature_steps=3,
        freeze_last_layer_steps=2,
        views="identity",
        local_views="identity",
        num_local_views=1,
    )
    v = net.init(jax.random.key(0))
    s = rule.init(v, key=jax.random.key(0))
    update = jax.jit(lambda v, s, k: rule.update(v, s, {"retain": {"x": _x()}}, key=k))
    last = str(len(v["params"]["projector"]) - 1)
    temps, heads, first = [], [v["params"]["projector"][last]["kernel"]], []
    for i in range(5):
        v, s, m = update(v, s, jax.random.key(i))
        temps.append(float(m["teacher_temperature"]))
        heads.append(v["params"]["projector"][last]["kernel"])
        first.append(v["params"]["projector"]["0"]["kernel"])
    np.testing.assert_allclose(temps, [0.04, 0.05, 0.06, 0.07, 0.07], rtol=1e-5)
    np.testing.assert_array_equal(heads[0], heads[1])
    np.testing.assert_array_equal(heads[1], heads[2])
    assert float(jnp.abs(heads[3] - heads[2]).max()) > 0  # released at the third update
    assert float(jnp.abs(first[1] - first[0]).max()) > 0  # the rest of the head trains at once


def test_local_views_reach_the_student_but_not_the_teacher():
    """With identical global and local views the loss is the cross-entropy of every
    (teacher view, other student view) pair: 2 x (2 - 1 + L) pairs of the same value."""
    net = _net()
    v = net.init(jax.random.key(0))
    x = _x()
    out = net.apply(v, x)
    center = jnp.zeros(out.projection.shape[-1])
    q = jax.nn.softmax(out.projection / 0.04, -1)
    one_pair = float(jnp.mean(jnp.sum(-q * jax.nn.log_softmax(out.projection / 0.1, -1), -1)))
    for local in (0, 2):
        rule = R.make(
            "dino",
            net,
            views="identity",
            local_views="identity",
            num_local_views=local,
            train_mode=False,
        )
        s = rule.init(v, key=jax.random.key(0))
        _, s1, m = jax.jit(
            lambda v, s, rule=rule: rule.update(v, s, {"retain": {"x": x}}, key=jax.random.key(1))
        )(v, s)
        assert float(m["loss"]) == pytest.approx(one_pair, rel=1e-4)
        # The centre moves toward the mean of the two global teacher outputs only.
        expected = losses.dino_center(center, jnp.stack([out.projection] * 2), 0.9)
        np.testing.assert_allclose(s1.extra, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    "setting, value",
    [
        ("warmup_teacher_temperature", 0.0),
        ("warmup_teacher_temperature_steps", -1),
        ("freeze_last_layer_steps", -2),
        ("num_local_views", -1),
    ],
)
def test_bad_dino_settings_name_the_setting(setting, value):
    with pytest.raises(ValueError, match=f"`{setting}`"):
        R.make("dino", _net(), **{setting: value})
