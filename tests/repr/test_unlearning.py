"""Self-supervised unlearning: the SSL loss turned around, label-free rules on an encoder."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn import models
from jaxunlearn import repr as R
from jaxunlearn.core.rule import rule_from_loss
from jaxunlearn.repr import unlearning as U
from jaxunlearn.repr.common import rule_with_target
from jaxunlearn.train import fit, make_stream

X_F = jnp.array([[1.0, 2.0], [3.0, 4.0]])  # forget inputs: column means (2, 3)
X_R = jnp.array([[0.5, -1.0], [1.5, 1.0], [1.0, 3.0]])  # retain inputs: column means (1, 1)
BATCH = {"forget": {"x": X_F}, "retain": {"x": X_R}}
W0 = {"params": {"w": jnp.array([0.25, -0.5])}}


def linear_rule():
    """A 'representation rule' whose loss on a part is mean(x @ w): its gradient is mean(x)."""

    def loss_fn(variables, batch, *, reference, step, key):
        del reference, step, key
        return jnp.mean(batch["retain"]["x"] @ variables["params"]["w"]), {}

    return rule_from_loss(loss_fn, optax.sgd(0.0), keep_reference=False)


def test_ascent_steps_along_retain_minus_forget_gradient():
    # SGD(lr 1): w - (w_r * mean x_r - w_f * mean x_f) = w - (2*(1, 1) - 0.5*(2, 3)).
    rule = U.self_supervised_ascent(
        linear_rule(), forget_weight=0.5, retain_weight=2.0, optimizer=optax.sgd(1.0)
    )
    state = rule.init(W0, key=jax.random.key(0))
    new, _, metrics = jax.jit(rule.update)(W0, state, BATCH, key=jax.random.key(1))
    np.testing.assert_allclose(new["params"]["w"], [0.25 - 1.0, -0.5 - 0.5], rtol=1e-6)
    # L_f = mean(x_f @ w) = (0.25 - 1 + 0.75 - 2) / 2 = -1; L_r = (0.625 - 0.125 - 1.25) / 3
    np.testing.assert_allclose(metrics["forget_loss"], -1.0, rtol=1e-6)
    np.testing.assert_allclose(metrics["retain_loss"], -0.25, rtol=1e-6)
    np.testing.assert_allclose(metrics["loss"], 2.0 * metrics["retain_loss"] + 0.5, rtol=1e-6)


def test_forget_bound_stops_the_ascent_on_a_batch_above_it():
    # L_f = -1 < bound: the ascent runs, w - (1, 1) + (2, 3).
    rule = U.self_supervised_ascent(linear_rule(), forget_bound=1e-3, optimizer=optax.sgd(1.0))
    state = rule.init(W0, key=jax.random.key(0))
    new, _, m = rule.update(W0, state, BATCH, key=jax.random.key(1))
    np.testing.assert_allclose(new["params"]["w"], [0.25 - 1.0 + 2.0, -0.5 - 1.0 + 3.0])
    assert float(m["ascending"]) == 1.0
    shifted = {"forget": {"x": X_F + 10.0}, "retain": {"x": X_R}}
    rule = U.self_supervised_ascent(linear_rule(), forget_bound=1.0, optimizer=optax.sgd(1.0))
    w = {"params": {"w": jnp.array([1.0, 1.0])}}  # L_f on x_f + 10 = 25 > 1: no ascent
    new, _, m = rule.update(w, rule.init(w, key=jax.random.key(0)), shifted, key=jax.random.key(1))
    assert float(m["ascending"]) == 0.0
    np.testing.assert_allclose(new["params"]["w"], [0.0, 0.0])  # retain descent only


def test_a_target_rule_reads_its_target_at_init_held_fixed():
    # loss = mean(x) . (w - target_w): the gradient is mean(x) whatever the target, and the
    # loss value shows which target is read.
    def loss_fn(variables, batch, *, target, extra, step, key):
        del step, key
        diff = variables["params"]["w"] - target["params"]["w"]
        return jnp.mean(batch["retain"]["x"], 0) @ diff, ({}, extra)

    inner = rule_with_target(loss_fn, optax.sgd(0.0), base_rate=0.5, num_steps=None)
    rule = U.self_supervised_ascent(inner, optimizer=optax.sgd(1.0))
    state = rule.init(W0, key=jax.random.key(0))
    v, state, m = rule.update(W0, state, BATCH, key=jax.random.key(1))
    np.testing.assert_allclose(m["forget_loss"], 0.0)  # w == target at the start
    np.testing.assert_allclose(v["params"]["w"], [0.25 - 1.0 + 2.0, -0.5 - 1.0 + 3.0])
    v2, _, m = rule.update(v, state, BATCH, key=jax.random.key(2))
    # target still W0: L_f = (2, 3) . (1, 2) = 8
    np.testing.assert_allclose(m["forget_loss"], 8.0)
    np.testing.assert_allclose(state.reference.target["params"]["w"], W0["params"]["w"])


def test_every_self_supervised_rule_exposes_its_loss():
    backbone = models.make_network("mlp", input_shape=(8, 8, 1), num_outputs=10, hidden=(8,))
    exposed, refused = set(), set()
    for name in R.names():
        if R.get(name).needs_labels:
            continue
        net = R.encoder(name, backbone, width=8)
        data = {"num_examples": 64} if name == "deepcluster" else {}  # its bank's rows
        try:
            U.ssl_objective(R.make(name, net, num_steps=4, **data), name=name)
            exposed.add(name)
        except ValueError as err:
            assert f"{name} exposes no loss" in str(err)
            refused.add(name)
    assert {"simclr", "byol", "vicreg", "barlow_twins", "simsiam", "dino", "rotation"} <= exposed
    assert refused <= {"learned_unsupervised_rule"}  # a learned update, not a loss's gradient


def test_a_rule_without_a_loss_is_rejected_by_name():
    backbone = models.make_network("mlp", input_shape=(8, 8, 1), num_outputs=10, hidden=(8,))
    net = R.encoder("lwf", backbone)
    phased = R.make("lwf", net, num_steps=4, warmup_steps=2)
    with pytest.raises(ValueError, match="lwf exposes no loss"):
        U.self_supervised_ascent(phased, name="lwf")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"forget_weight": -1.0}, "forget_weight"),
        ({"retain_weight": float("nan")}, "retain_weight"),
        ({"forget_bound": 0.0}, "forget_bound"),
    ],
)
def test_bad_settings_name_themselves(kwargs, match):
    with pytest.raises(ValueError, match=match):
        U.self_supervised_ascent(linear_rule(), **kwargs)


@pytest.fixture(scope="module")
def digits_encoder():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(48, 8, 8, 1)).astype(np.float32)
    y = np.repeat(np.arange(4), 12).astype(np.int32)
    backbone = models.make_network("mlp", input_shape=(8, 8, 1), num_outputs=4, hidden=(8,))
    return x, y, backbone


@pytest.mark.parametrize("name", ["simclr", "byol"])
def test_ascent_on_a_real_rule_runs_fused_and_finite(digits_encoder, name):
    x, y, backbone = digits_encoder
    net = R.encoder(name, backbone, width=8)
    rule = U.self_supervised_ascent(R.make(name, net, num_steps=3), learning_rate=1e-2, name=name)
    stream = make_stream(x, y, {"forget": np.arange(12), "retain": np.arange(12, 48)})
    v0 = net.init(jax.random.key(0))
    res = fit(
        rule,
        v0,
        stream,
        batch_sizes={"forget": 6, "retain": 12},
        num_steps=3,
        key=jax.random.key(1),
    )
    assert not res.diverged
    assert all(np.all(np.isfinite(m)) for m in res.metrics.values())
    moved = jax.tree.map(
        lambda a, b: float(jnp.abs(a - b).max()), res.variables["params"], v0["params"]
    )
    assert max(jax.tree.leaves(moved)) > 0


def test_projection_view_reads_the_projection_as_logits(digits_encoder):
    x, _, backbone = digits_encoder
    net = R.encoder("simclr", backbone, width=8)
    v = net.init(jax.random.key(0))
    view = U.projection_view(net)
    out, ref = view.apply(v, x[:5]), net.apply(v, x[:5])
    np.testing.assert_array_equal(out.logits, ref.projection)
    np.testing.assert_array_equal(out.features, ref.features)
    with pytest.raises(ValueError, match="no projection head"):
        U.projection_view(backbone).apply(backbone.init(jax.random.key(0)), x[:2])


def test_label_free_rules_ignore_labels_and_label_reading_ones_are_refused(digits_encoder):
    x, y, backbone = digits_encoder
    net = R.encoder("simclr", backbone, width=8)
    v0 = net.init(jax.random.key(0))
    index = {"forget": np.arange(12), "retain": np.arange(12, 48)}
    # Every rule the registry declares label-free (RuleInfo.needs_labels / retain_labels) really
    # ignores the labels: the same run with the true labels and with none.
    assert {"label_agnostic_forgetting", "bad_teacher", "fisher_forgetting"} <= set(
        U.label_free_names()
    )
    for name in U.label_free_names():
        view, rule = U.label_free_rule(name, net, num_steps=4, forget_fraction=0.25)
        runs = [
            fit(
                rule,
                v0,
                make_stream(x, labels, index),
                batch_sizes={"forget": 6, "retain": 12},
                num_steps=4,
                key=jax.random.key(2),
            ).variables
            for labels in (y, np.asarray(U.withheld_labels(y)))
        ]
        same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), *runs)
        assert all(jax.tree.leaves(same)), name
    assert "label_agnostic_forgetting" in U.label_free_names()
    with pytest.raises(ValueError, match="reads forget labels"):
        U.label_free_rule("gradient_ascent", net, num_steps=4)
    for name in ("scrub", "l1_sparse"):  # cross-entropy on the retain set's labels
        assert name not in U.label_free_names()
        with pytest.raises(ValueError, match="reads retain-set labels"):
            U.label_free_rule(name, net, num_steps=4, steps_per_epoch=2)
    assert np.asarray(U.withheld_labels(y)).sum() == 0
