"""Regression unlearning: blindspot, Gaussian amnesiac, the task-agnostic rules on `diabetes`,
the regression audit, the MLP's hidden activations and attention transfer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from rule_testing import smoke_test_rule, tiny_problem

from jaxunlearn import audit, rules
from jaxunlearn.audit import regression as reg_audit
from jaxunlearn.core import losses
from jaxunlearn.models import from_nnx
from jaxunlearn.train import make_stream, sample_batch

DIABETES = {"kind": "random", "dataset": "diabetes"}


def test_blindspot_smoke():
    smoke_test_rule("blindspot", proxy_epochs=0.5, **DIABETES)


def test_gaussian_amnesiac_smoke():
    smoke_test_rule("gaussian_amnesiac", **DIABETES)


# retrain shares finetune's loss; the regression experiment runs it as the oracle.
@pytest.mark.parametrize("name", ["finetune", "gradient_ascent", "neggrad_plus"])
def test_task_agnostic_rules_run_on_regression(name):
    smoke_test_rule(name, steps=4, seeds=1, **DIABETES)


def _diabetes_run(name, steps, *, snapshot_at=None, **hparams):
    """Runs ``name`` step by step (one compiled update); returns the final and a snapshot."""
    ds, split, net, variables = tiny_problem("random", "diabetes")
    rule = rules.make(name, net, num_steps=steps, steps_per_epoch=4, **hparams)
    stream = make_stream(ds.x_train, ds.y_train, {"forget": split.forget, "retain": split.retain})
    update = jax.jit(rule.update)
    key = jax.random.key(0)
    out, state, snapshot, metrics = variables, rule.init(variables, key=key), None, []
    for step in range(steps):
        if step == snapshot_at:
            snapshot = out
        batch = sample_batch(stream, {"forget": 16, "retain": 32}, key, jnp.asarray(step))
        out, state, m = update(out, state, batch, key=jax.random.fold_in(key, step))
        metrics.append(m)
    metrics = {k: np.array([m[k] for m in metrics]) for k in metrics[0]}
    return ds, split, net, variables, out, state, metrics, snapshot


def test_blindspot_trains_proxy_first_then_pulls_the_model_towards_it():
    ds, split, net, original, out, state, metrics, snapshot = _diabetes_run(
        "blindspot", 20, snapshot_at=8, proxy_epochs=2.0, learning_rate=3e-3
    )
    # Phase 1 (8 steps): the proxy learns, the model is untouched.
    assert metrics["proxy_loss"][7] < metrics["proxy_loss"][0]
    assert np.all(metrics["proxy_loss"][8:] == 0) and np.all(metrics["forget_loss"][:8] == 0)
    for a, b in zip(jax.tree.leaves(original), jax.tree.leaves(snapshot), strict=True):
        np.testing.assert_array_equal(a, b)
    # Phase 2: the model's forget-set outputs move towards the proxy's.
    proxy, unlearning = state.phases
    assert int(state.step.count) == 20 and int(unlearning.step.count) == 12
    # The unlearning phase received the trained proxy (not the one drawn at init) as reference.
    for a, b in zip(
        jax.tree.leaves(unlearning.reference), jax.tree.leaves(proxy.proxy), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert int(proxy.inner.step.count) == 8
    x_f = jnp.asarray(ds.x_train[split.forget])
    proxy_pred = net.apply(proxy.proxy, x_f).logits
    before = float(jnp.mean(jnp.abs(net.apply(original, x_f).logits - proxy_pred)))
    after = float(jnp.mean(jnp.abs(net.apply(out, x_f).logits - proxy_pred)))
    assert after < before


def test_gaussian_amnesiac_running_target_moments_noise_and_forgetting():
    # fixed_targets=False: the earlier mode, fresh draws from running retain statistics.
    ds, split, net, original, out, state, metrics, _ = _diabetes_run(
        "gaussian_amnesiac", 12, fixed_targets=False
    )
    np.testing.assert_array_equal(state.target_count, [12 * 16, 12 * 32])
    seen_mean = float(state.target_sum[1] / state.target_count[1])
    assert abs(seen_mean - float(np.mean(ds.y_train[split.retain]))) < 0.3
    assert 0.6 < float(metrics["target_std"][-1]) < 1.4
    x_f, y_f = ds.x_train[split.forget], ds.y_train[split.forget]
    forget_error = lambda v: reg_audit.mse(net.apply(v, x_f).logits, y_f)
    assert forget_error(out) > forget_error(original)
    *_, fixed, _ = _diabetes_run("gaussian_amnesiac", 2, target_mean=3.0, target_std=0.0)
    np.testing.assert_allclose(fixed["target_mean"], 3.0)
    assert int(state.inner.step.count) == 12


def test_gaussian_amnesiac_step_fits_the_pooled_relabelled_batch():
    _, _, net, variables = tiny_problem("random", "diabetes")
    rng = np.random.default_rng(0)
    batch = {
        part: {
            "x": jnp.asarray(rng.normal(size=(n, 10)), jnp.float32),
            "y": jnp.asarray(rng.normal(size=(n,)), jnp.float32),
            "index": jnp.arange(start, start + n),  # the rows fit's batches carry
        }
        for part, n, start in (("forget", 4, 0), ("retain", 8, 4))
    }
    rule = rules.make(
        "gaussian_amnesiac", net, target_mean=2.0, target_std=0.0, optimizer=optax.sgd(0.1)
    )
    new, _, metrics = jax.jit(rule.update)(
        variables, rule.init(variables, key=jax.random.key(1)), batch, key=jax.random.key(0)
    )
    x = jnp.concatenate([batch["forget"]["x"], batch["retain"]["x"]])
    y = jnp.concatenate([jnp.full((4,), 2.0), batch["retain"]["y"]])

    def loss(params):
        return losses.mean_absolute_error(net.apply({**variables, "params": params}, x).logits, y)

    want = jax.tree.map(
        lambda p, g: p - 0.1 * g, variables["params"], jax.grad(loss)(variables["params"])
    )
    np.testing.assert_allclose(metrics["loss"], loss(variables["params"]), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(new["params"]), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def _hand_batch(y_forget, y_retain, seed=0):
    rng = np.random.default_rng(seed)
    return {
        part: {
            "x": jnp.asarray(rng.normal(size=(len(y), 10)), jnp.float32),
            "y": jnp.asarray(y, jnp.float32),
            "index": jnp.arange(start, start + len(y)),  # the rows fit's batches carry
        }
        for part, y, start in (("forget", y_forget, 0), ("retain", y_retain, len(y_forget)))
    }


def test_gaussian_amnesiac_draws_each_forget_target_once():
    # The same forget examples at two updates (other update keys, another order) get the same
    # targets, so the same loss; before, the targets were redrawn from the update key.
    _, _, net, variables = tiny_problem("random", "diabetes")
    batch = _hand_batch(np.zeros(4), np.zeros(8))
    perm = jnp.asarray([2, 0, 3, 1])
    shuffled = {**batch, "forget": jax.tree.map(lambda a: a[perm], batch["forget"])}
    rule = rules.make("gaussian_amnesiac", net, target_mean=0.0, target_std=1.0)
    state = rule.init(variables, key=jax.random.key(5))
    update = jax.jit(rule.update)
    _, _, a = update(variables, state, batch, key=jax.random.key(1))
    _, _, b = update(variables, state, shuffled, key=jax.random.key(2))
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-6)
    old = rules.make("gaussian_amnesiac", net, target_mean=0.0, target_std=1.0, fixed_targets=False)
    old_state = old.init(variables, key=jax.random.key(5))
    _, _, c = jax.jit(old.update)(variables, old_state, batch, key=jax.random.key(1))
    _, _, d = jax.jit(old.update)(variables, old_state, batch, key=jax.random.key(2))
    assert abs(float(c["loss"]) - float(d["loss"])) > 1e-4


def test_gaussian_amnesiac_statistics_cover_all_training_targets():
    # Forget targets 10 and retain targets 0 in a training set that is half forget: the targets
    # of all training data have mean 5 and std 5 (before: the retain targets alone, 0 and 0).
    _, _, net, variables = tiny_problem("random", "diabetes")
    batch = _hand_batch(np.full(4, 10.0), np.zeros(8))
    rule = rules.make("gaussian_amnesiac", net, forget_fraction=0.5)
    state = rule.init(variables, key=jax.random.key(0))
    _, _, metrics = jax.jit(rule.update)(variables, state, batch, key=jax.random.key(1))
    np.testing.assert_allclose(metrics["target_mean"], 5.0, rtol=1e-6)
    np.testing.assert_allclose(metrics["target_std"], 5.0, rtol=1e-6)


def test_regression_rules_take_adam_settings():
    _, _, net, _ = tiny_problem("random", "diabetes")
    rules.make("gaussian_amnesiac", net, optimizer={"weight_decay": 1e-4})
    rules.make("blindspot", net, num_steps=8, steps_per_epoch=2, proxy_optimizer={"name": "sgd"})
    with pytest.raises(ValueError, match="no setting"):
        rules.make("gaussian_amnesiac", net, optimizer={"momentum": 0.9})


@pytest.mark.parametrize(
    "hparams, match",
    [
        ({"proxy_epochs": 4.0}, "num_steps"),
        ({"forget_weight": 1.5}, "forget_weight"),
        ({"at_weight": -1.0}, "at_weight"),
        ({"loss": "huber"}, "loss"),
        ({"learning_rate": 0.0}, "learning_rate"),
    ],
)
def test_blindspot_rejects_bad_settings(hparams, match):
    _, _, net, _ = tiny_problem("random", "diabetes")
    with pytest.raises(ValueError, match=match):
        rules.make("blindspot", net, num_steps=8, steps_per_epoch=2, **hparams)


def test_gaussian_amnesiac_rejects_bad_settings():
    _, _, net, _ = tiny_problem("random", "diabetes")
    with pytest.raises(ValueError, match="target_std"):
        rules.make("gaussian_amnesiac", net, target_std=-1.0)


def test_regression_rules_are_registered_for_regression_only():
    for name in ("blindspot", "gaussian_amnesiac"):
        assert rules.get(name).task == "regression"
    for name in ("finetune", "gradient_ascent", "neggrad_plus", "retrain"):
        assert rules.get(name).task == "any"


def test_mlp_exposes_hidden_activations_and_two_tuple_modules_still_work():
    _, _, net, variables = tiny_problem("random", "diabetes")
    out = net.apply(variables, jnp.zeros((3, 10)))
    assert len(out.hidden) == 1 and out.hidden[0].shape == (3, 64)
    np.testing.assert_array_equal(out.hidden[-1], out.features)

    class TwoTuple(nnx.Module):
        def __init__(self, rngs):
            self.dense = nnx.Linear(4, 2, rngs=rngs)

        def __call__(self, x):
            return self.dense(x), x

    plain = from_nnx(TwoTuple, name="two", num_outputs=2)
    assert plain.apply(plain.init(jax.random.key(0)), jnp.ones((1, 4))).hidden == ()


def test_attention_transfer():
    dense = jnp.array([[1.0, -2.0, 2.0]])
    np.testing.assert_allclose(
        losses.attention_map(dense),
        [[1 / 9, 4 / 9, 4 / 9] / np.linalg.norm([1 / 9, 4 / 9, 4 / 9])],
        rtol=1e-6,
    )
    image = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
    amap = losses.attention_map(image)
    assert amap.shape == (2, 16)
    np.testing.assert_allclose(jnp.linalg.norm(amap, axis=-1), 1.0, rtol=1e-6)
    assert float(losses.attention_transfer(image, image)) == 0.0
    assert float(losses.attention_transfer(image, image[::-1])) > 0.0


def test_regression_audit():
    assert reg_audit.mse([[1.0], [3.0]], [0.0, 1.0]) == pytest.approx(2.5)
    assert reg_audit.mae([[1.0], [3.0]], [0.0, 1.0]) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="size"):
        reg_audit.mse(np.zeros((2, 2)), np.zeros(2))
    ds, split, net, variables = tiny_problem("random", "diabetes")
    ctx = audit.AuditContext(network=net, dataset=ds, split=split, variables=variables)
    metrics = audit.run(("regression_error", "mia_auc"), ctx)
    assert set(metrics) == {"forget_mse", "retain_mse", "test_mse", "MIA_AUC"}
    assert 0.0 < metrics["retain_mse"] < 1.0 and 0.0 < metrics["test_mse"] < 1.5
    with pytest.raises(ValueError, match="regression"):
        audit.check_names(("regression_error",), "classification")
    assert set(audit.gap_metrics("regression")) <= set(metrics)


def test_regression_report_plots_errors(tmp_path):
    from jaxunlearn.scenarios import Record, plot, table

    records = [
        Record(
            "random_10pct",
            m,
            s,
            "ok",
            {"forget_mse": 0.5 + s, "retain_mse": 0.3, "test_mse": 0.6, "MIA_AUC": 50.0},
        )
        for m in ("original", "retrain")
        for s in range(2)
    ]
    assert "forget_mse" in table(records).splitlines()[0]
    path = plot(records, str(tmp_path / "r.png"))
    assert (tmp_path / "r.png").stat().st_size > 0 and path.endswith("r.png")
