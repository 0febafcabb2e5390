"""The rule interface and the foundation rules (retrain, FT, GA, NegGrad+, RL)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from rule_testing import forget_accuracy, run_rule, tiny_problem

from jaxunlearn import rules
from jaxunlearn.core import losses
from jaxunlearn.core.rule import rule_from_loss
from jaxunlearn.core.types import UnlearningRule


def test_rule_update_is_jittable_and_vmappable_over_seeds():
    ds, split, net, variables = tiny_problem()
    rule = rules.make("random_label", net)
    assert isinstance(rule, UnlearningRule)
    batch = {
        "forget": {
            "x": jnp.asarray(ds.x_train[split.forget[:8]]),
            "y": jnp.asarray(ds.y_train[split.forget[:8]]),
        },
        "retain": {
            "x": jnp.asarray(ds.x_train[split.retain[:8]]),
            "y": jnp.asarray(ds.y_train[split.retain[:8]]),
        },
    }
    state = rule.init(variables, key=jax.random.key(0))
    v1, _, metrics = jax.jit(rule.update)(variables, state, batch, key=jax.random.key(0))
    assert set(metrics) >= {"loss", "forget_acc"}

    def one_seed(key):
        s = rule.init(variables, key=key)
        return rule.update(variables, s, batch, key=key)[0]

    keys = jax.random.split(jax.random.key(0), 4)
    many = jax.jit(jax.vmap(one_seed))(keys)
    heads = np.asarray(many["params"]["head"]["kernel"])
    assert heads.shape[0] == 4 and not np.allclose(heads[0], heads[1])  # random labels differ


def test_rule_from_loss_takes_one_optimizer_step():
    _, _, net, variables = tiny_problem()
    x = jnp.ones((4, 8, 8, 1))

    def loss_fn(v, batch, *, reference, step, key):
        return jnp.sum(net.apply(v, batch["forget"]["x"]).logits), {"step": step}

    rule = rule_from_loss(loss_fn, optax.sgd(0.1))
    state = rule.init(variables)
    new, state2, m = rule.update(variables, state, {"forget": {"x": x}}, key=jax.random.key(0))
    grads = jax.grad(
        lambda p: loss_fn(
            {**variables, "params": p}, {"forget": {"x": x}}, reference=None, step=0, key=None
        )[0]
    )(variables["params"])
    expected = jax.tree.map(lambda p, g: p - 0.1 * g, variables["params"], grads)
    for a, b in zip(jax.tree.leaves(new["params"]), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert int(state2.step.count) == 1 and state2.reference is variables and float(m["loss"]) != 0


def test_gradient_ascent_raises_forget_loss_and_random_label_forgets_a_class():
    _, res = run_rule("gradient_ascent", steps=20, learning_rate=0.01)
    assert res.metrics["forget_loss"][:, -1].mean() > res.metrics["forget_loss"][:, 0].mean()
    _, res = run_rule("random_label", steps=60, seeds=1, learning_rate=0.02)
    assert forget_accuracy(jax.tree.map(lambda x: x[0], res.variables)) < 0.5


def test_retrain_starts_from_fresh_weights():
    ds, split, net, variables = tiny_problem()
    _, res = run_rule("retrain", steps=1, seeds=1, optimizer=optax.sgd(0.0))
    fresh = jax.tree.map(lambda x: x[0], res.variables)
    logits = net.apply(fresh, jnp.asarray(ds.x_test)).logits
    assert float(losses.accuracy(logits, ds.y_test)) < 0.5  # an untrained model


def test_registry_errors_list_valid_names():
    with pytest.raises(ValueError, match="finetune"):
        rules.get("forget_everything")
    _, _, net, _ = tiny_problem()
    with pytest.raises(ValueError, match="learning_rate"):
        rules.make("finetune", net, lr=0.1)
    with pytest.raises(ValueError, match="beta"):
        rules.make("neggrad_plus", net, beta=1.5)


def test_registry_fills_context_from_network_and_scenario():
    _, _, net, _ = tiny_problem()
    assert net.input_shape == (8, 8, 1)
    # UNSIR sizes its noise from the network's input shape; SSD weighs by the forget share.
    rules.make("unsir", net, steps_per_epoch=4)
    with pytest.raises(ValueError, match="needs `forget_fraction`"):
        rules.make("ssd", net)
    rules.make("ssd", net, forget_fraction=0.1)
    # Optional context: Fisher forgetting's class-wise edit only when classes are forgotten.
    rules.make("fisher_forgetting", net)
    rules.make("fisher_forgetting", net, forget_classes=(0,))
    with pytest.raises(ValueError, match="forget_classes"):
        rules.make("fisher_forgetting", net, forget_classes=(10,))
    # Context is not a hyperparameter: a config that sets it is rejected before any compute.
    for name, hparams in [
        ("unsir", {"input_shape": (8, 8, 1)}),
        ("ssd", {"forget_fraction": 0.1}),
        ("fisher_forgetting", {"forget_classes": (0,)}),
    ]:
        with pytest.raises(ValueError, match="come from the network"):
            rules.registry.check_hparams(name, hparams)
