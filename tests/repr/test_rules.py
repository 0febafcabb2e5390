"""Every representation rule, parametrised over ``repr.names()``: it jits, vmaps over seeds,
stays finite, lowers its loss on digits views with a tiny MLP, and rejects bad settings before
any compute."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import data, models
from jaxunlearn import repr as R
from jaxunlearn.core.tree import all_finite
from jaxunlearn.train import fit, make_stream

STEPS = 30
BATCH = 64
WIDTH = 32
# The metric a rule's update is expected to lower: its loss, except DINO, whose cross-entropy
# H(q) + KL(q || p) rises early while centring spreads the teacher; the student lowers the KL.
PROGRESS = {"dino": "kl"}
# Rules without a loss of their own to lower: the learned rule's updates come from its
# meta-trained network (tests/repr/test_learned.py, tests/repr/test_meta.py).
WITH_LOSS = [n for n in R.names() if n != "learned_unsupervised_rule"]


@functools.cache
def digits():
    ds = data.load("digits")
    return jnp.asarray(ds.x_train), jnp.asarray(ds.y_train)


@functools.cache
def backbone():
    return models.make_network("mlp", input_shape=(8, 8, 1), num_outputs=10, hidden=(32,))


def build(name, **hparams):
    net = R.encoder(name, backbone(), width=WIDTH)
    return net, R.make(name, net, num_steps=STEPS, **hparams)


@pytest.mark.parametrize("name", WITH_LOSS)
def test_rule_lowers_its_loss_jitted_and_vmapped_over_seeds(name):
    x, y = digits()
    net, rule = build(name)
    keys = jax.random.split(jax.random.key(0), 2)
    variables = jax.vmap(net.init)(keys)
    state = jax.vmap(lambda v, k: rule.init(v, key=k))(variables, keys)
    update = jax.jit(
        jax.vmap(lambda v, s, b, k: rule.update(v, s, b, key=k), in_axes=(0, 0, None, 0))
    )
    fixed = {"retain": {"x": x[:BATCH], "y": y[:BATCH]}}
    fixed_keys = jax.random.split(jax.random.key(99), 2)
    metric = PROGRESS.get(name, "loss")
    before = np.asarray(update(variables, state, fixed, fixed_keys)[2][metric])
    start = variables
    rng = np.random.default_rng(0)
    for step in range(STEPS):
        idx = rng.choice(len(x), BATCH, replace=False)
        batch = {"retain": {"x": x[idx], "y": y[idx]}}
        variables, state, metrics = update(
            variables, state, batch, jax.random.split(jax.random.key(step + 1), 2)
        )
        assert all(np.all(np.isfinite(np.asarray(m))) for m in metrics.values()), metrics
    after = np.asarray(update(variables, state, fixed, fixed_keys)[2][metric])
    assert bool(all_finite(variables["params"]))
    assert np.all(after < before), (before, after)
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), start, variables)
    assert max(jax.tree.leaves(moved)) > 0
    # The two seeds are two models, not one computed twice.
    gaps = [float(jnp.abs(a[0] - a[1]).max()) for a in jax.tree.leaves(variables["params"])]
    assert max(gaps) > 0


@pytest.mark.parametrize("name", WITH_LOSS)
def test_sweepable_hyperparameters_trace(name):
    """Every declared sweepable hyperparameter may be a traced value (a vmapped sweep)."""
    x, y = digits()
    net = R.encoder(name, backbone(), width=WIDTH)
    variables = net.init(jax.random.key(0))
    batch = {"retain": {"x": x[:8], "y": y[:8]}}
    defaults = R.get(name).factory.__kwdefaults__

    def run(values):
        rule = R.make(name, net, num_steps=STEPS, **values)
        state = rule.init(variables, key=jax.random.key(0))
        return rule.update(variables, state, batch, key=jax.random.key(1))[2]["loss"]

    grid = {k: jnp.asarray([defaults[k], defaults[k]], jnp.float32) for k in R.sweepable(name)}
    assert jax.eval_shape(jax.vmap(run), grid).shape == (2,)


def test_registry_and_encoder_heads():
    assert set(R.names()) >= {
        "simclr",
        "byol",
        "vicreg",
        "barlow_twins",
        "simsiam",
        "dino",
        "rotation",
        "lwf",
        "representational_alignment",
    }
    with pytest.raises(ValueError, match="Unknown representation rule 'nope'"):
        R.make("nope", backbone())
    with pytest.raises(ValueError, match="has no hyperparameter"):
        R.make("simclr", R.encoder("simclr", backbone()), tau=0.1)
    net = R.encoder("byol", backbone(), width=WIDTH)
    out = net.apply(net.init(jax.random.key(0)), jnp.zeros((3, 8, 8, 1)))
    assert out.features.shape == (3, 32) and out.logits.shape == (3, 10)
    assert out.projection.shape == (3, 128) and out.prediction.shape == (3, 128)
    assert R.encoder("representational_alignment", backbone()) is backbone()
    with pytest.raises(ValueError, match="reads a projection head"):
        rule = R.make("simclr", backbone())
        v = backbone().init(jax.random.key(0))
        batch = {"retain": {"x": jnp.zeros((4, 8, 8, 1))}}
        jax.eval_shape(
            lambda v: rule.update(
                v, rule.init(v, key=jax.random.key(0)), batch, key=jax.random.key(0)
            ),
            v,
        )


def test_backbone_variables_give_the_bare_network():
    net = R.encoder("simclr", backbone(), width=WIDTH)
    variables = net.init(jax.random.key(3))
    x = digits()[0][:5]
    bare = backbone().apply(R.backbone_variables(variables), x)
    np.testing.assert_allclose(bare.features, net.apply(variables, x).features, rtol=1e-6)


# ------------------------------------------------------------------------------- bad input


def _one_update(name, batch, **hparams):
    """Traces one update (the checks run while tracing, so nothing is computed)."""
    net, rule = build(name, **hparams)

    def step(v):
        return rule.update(v, rule.init(v, key=jax.random.key(0)), batch, key=jax.random.key(1))

    return jax.eval_shape(step, jax.eval_shape(net.init, jax.random.key(0)))


@pytest.mark.parametrize("name", [n for n in R.names() if R.get(n).num_views >= 2])
def test_one_view_for_a_two_view_rule_is_rejected(name):
    x = digits()[0][:8]
    with pytest.raises(ValueError, match=r"1 view\(s\) per example"):
        _one_update(name, {"retain": {"x": x, "views": x[:, None]}})
    # Precomputed views, [batch, views, ...] as a Stream extra field gathers them, are accepted.
    _one_update(name, {"retain": {"x": x, "views": jnp.stack([x, x], 1)}})
    if "num_views" in R.get(name).factory.__kwdefaults__:
        with pytest.raises(ValueError, match="`num_views` must be an integer >= 2"):
            build(name, num_views=1)


@pytest.mark.parametrize("name", ["vicreg", "barlow_twins", "simclr"])
def test_a_batch_of_one_is_rejected_before_compute(name):
    x = digits()[0][:1]
    with pytest.raises(ValueError, match="batch size 1 is too small"):
        _one_update(name, {"retain": {"x": x}})


@pytest.mark.parametrize(
    "name, setting, value",
    [
        ("simclr", "temperature", 0.0),
        ("simclr", "temperature", -1.0),
        ("dino", "student_temperature", 0.0),
        ("dino", "teacher_temperature", -0.04),
        ("lwf", "temperature", 0.0),
        ("byol", "ema_rate", 1.5),
        ("byol", "ema_rate", -0.1),
        ("dino", "ema_rate", 1.01),
        ("dino", "center_momentum", 2.0),
    ],
)
def test_bad_temperature_or_ema_rate_names_the_setting(name, setting, value):
    with pytest.raises(ValueError, match=f"`{setting}`"):
        build(name, **{setting: value})


# ------------------------------------------------------------------------- rule mechanics


def test_byol_target_is_the_ema_of_the_online_params():
    x = digits()[0][:16]
    net, rule = build("byol", ema_rate=0.9)
    v0 = net.init(jax.random.key(0))
    s0 = rule.init(v0, key=jax.random.key(0))
    v1, s1, m = jax.jit(lambda v, s, b: rule.update(v, s, b, key=jax.random.key(1)))(
        v0, s0, {"retain": {"x": x}}
    )
    assert float(m["ema_rate"]) == pytest.approx(0.9)  # step 0 of the cosine schedule
    expected = jax.tree.map(lambda t, o: 0.9 * t + 0.1 * o, v0["params"], v1["params"])
    for a, b in zip(jax.tree.leaves(s1.target["params"]), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_lwf_warm_up_trains_only_the_new_head_then_everything_in_fit():
    x, y = digits()
    net, rule = build("lwf", warmup_steps=3)
    stream = make_stream(np.asarray(x), np.asarray(y), {"retain": np.arange(len(y))})
    keys = jax.random.split(jax.random.key(0), 2)
    start = jax.vmap(net.init)(keys)
    warm = fit(
        rule, start, stream, batch_sizes={"retain": 32}, num_steps=3, key=keys, ensemble=True
    )
    changed = jax.tree.map(
        lambda a, b: bool(jnp.any(a != b)), start["params"], warm.variables["params"]
    )
    assert not any(jax.tree.leaves(changed["backbone"]))
    assert all(jax.tree.leaves(changed["projector"]))
    # Three more updates from the warm-up's state (the same compiled program): the joint phase.
    joint = fit(
        rule,
        warm.variables,
        stream,
        batch_sizes={"retain": 32},
        num_steps=3,
        key=keys,
        state=warm.state,
        ensemble=True,
    )
    changed = jax.tree.map(
        lambda a, b: bool(jnp.any(a != b)), warm.variables["params"], joint.variables["params"]
    )
    assert all(jax.tree.leaves(changed["backbone"]))
    assert np.all(np.isfinite(joint.metrics["old_loss"]))


def test_representational_alignment_uses_the_given_guide():
    x, y = digits()
    guide = models.make_network(
        "cnn", input_shape=(8, 8, 1), num_outputs=10, channels=(4,), hidden=8
    )
    guide_vars = guide.init(jax.random.key(5))
    rule = R.make(
        "representational_alignment",
        backbone(),
        guide_apply=guide.apply,
        guide_variables=guide_vars,
        task_weight=0.0,
    )
    v = backbone().init(jax.random.key(0))
    state = rule.init(v, key=jax.random.key(0))
    assert state.reference is guide_vars
    _, _, m = jax.jit(lambda v, s, b: rule.update(v, s, b, key=jax.random.key(1)))(
        v, state, {"retain": {"x": x[:32], "y": y[:32]}}
    )
    assert float(m["loss"]) == pytest.approx(float(m["alignment"]))
    assert 0.0 < float(m["alignment"]) < 1.0


def test_readme_lists_every_rule_in_a_table_generated_from_the_registry():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    readme = open(os.path.join(root, "README.md")).read()
    section = readme.split("## Representation-learning rules", 1)[1].split("\n## ", 1)[0]
    assert R.markdown_table() in section, "regenerate the table from repr.markdown_table()"
    for name in R.names():
        assert f"`{name}`" in section
