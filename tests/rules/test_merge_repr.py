"""Weight-space editors (task vectors, NegMerge, TIES), UNO, Adapt-then-Unlearn and LAF."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from rule_testing import smoke_test_rule, tiny_problem

from jaxunlearn import rules
from jaxunlearn.rules import orthogonal, task_arithmetic
from jaxunlearn.rules.common import part_loss


@pytest.mark.parametrize(
    "name, hparams",
    [
        ("task_vector_negation", {}),
        ("negmerge", {}),
        ("ties_merge", {}),
        ("gradient_orthogonalization", {"retain_weight": 1.0}),
        ("adapt_then_unlearn", {}),
        # All three LAF stages; the label test below runs the label-free path (repair=False).
        ("label_agnostic_forgetting", {"repair": True}),
    ],
)
def test_merge_repr_rule_smoke(name, hparams):
    smoke_test_rule(name, **hparams)


def test_sign_consensus_mask_on_hand_made_vectors():
    stacked = {"w": jnp.array([[1.0, -2.0, 3.0, 0.0], [2.0, -1.0, -1.0, 5.0]])}
    merged = task_arithmetic.sign_consensus_merge(stacked)
    # Agreeing signs keep the mean; a sign conflict or a zero member drops the coordinate.
    np.testing.assert_allclose(merged["w"], [1.5, -1.5, 0.0, 0.0])


def test_ties_trim_elect_and_disjoint_merge_on_hand_made_vectors():
    stacked = {
        "a": jnp.array([[4.0, -1.0, 0.5], [-2.0, 3.0, 0.1]]),
        "b": jnp.array([[[-3.0, 2.0]], [[1.0, -0.2]]]),
    }
    trimmed = task_arithmetic.ties_trim(stacked, density=0.4)  # 2 of 5 entries per member
    np.testing.assert_allclose(trimmed["a"], [[4.0, 0.0, 0.0], [-2.0, 3.0, 0.0]])
    np.testing.assert_allclose(trimmed["b"], [[[-3.0, 0.0]], [[0.0, 0.0]]])
    sign = task_arithmetic.ties_elect_sign(trimmed)
    # Totals a = [2, 3, 0], b = [-3, 0]; zero totals take the majority sign (+).
    np.testing.assert_allclose(sign["a"], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(sign["b"], [[-1.0, 1.0]])
    merged = task_arithmetic.ties_disjoint_mean(trimmed, sign)
    np.testing.assert_allclose(merged["a"], [4.0, 3.0, 0.0])
    np.testing.assert_allclose(merged["b"], [[-3.0, 0.0]])
    full = task_arithmetic.ties_merge_vectors(stacked, density=1.0)
    np.testing.assert_allclose(full["a"], [4.0, 3.0, 0.3])


def _batch(n=16):
    ds, split, _, _ = tiny_problem()
    return {
        "forget": {
            "x": jnp.asarray(ds.x_train[split.forget[:n]]),
            "y": jnp.asarray(ds.y_train[split.forget[:n]]),
        },
        "retain": {
            "x": jnp.asarray(ds.x_train[split.retain[:n]]),
            "y": jnp.asarray(ds.y_train[split.retain[:n]]),
        },
    }


def test_orthogonalized_update_is_orthogonal_to_the_retain_gradient():
    _, _, net, variables = tiny_problem()
    batch = _batch()
    rule = rules.make("gradient_orthogonalization", net, optimizer=optax.sgd(0.1))
    state = rule.init(variables, key=jax.random.key(0))
    new, _, metrics = jax.jit(rule.update)(variables, state, batch, key=jax.random.key(1))
    g_r = jax.grad(lambda p: part_loss(net.apply, {**variables, "params": p}, batch, "retain")[0])(
        variables["params"]
    )
    delta = optax.tree.sub(new["params"], variables["params"])
    cos = optax.tree.vdot(delta, g_r) / (optax.tree.norm(delta) * optax.tree.norm(g_r))
    assert float(optax.tree.norm(delta)) > 0
    assert abs(float(cos)) < 1e-4
    assert float(metrics["grad_cos2"]) > 1e-6  # the raw forget gradient was not orthogonal
    projected = orthogonal.project_orthogonal(g_r, g_r)
    assert float(optax.tree.norm(projected)) < 1e-5 * float(optax.tree.norm(g_r))


def test_task_vector_negation_at_zero_scale_returns_the_original():
    _, _, net, variables = tiny_problem()
    rule = rules.make("task_vector_negation", net, scaling_coef=0.0)
    state = rule.init(variables, key=jax.random.key(0))
    new, state, _ = jax.jit(rule.update)(variables, state, _batch(), key=jax.random.key(1))
    for a, b in zip(
        jax.tree.leaves(new["params"]), jax.tree.leaves(variables["params"]), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert (
        float(
            optax.tree.norm(
                optax.tree.sub(state.members, jax.tree.map(lambda x: x[None], variables["params"]))
            )
        )
        > 0
    )  # the copy did fine-tune


def test_label_agnostic_forgetting_never_reads_labels():
    _, _, net, variables = tiny_problem()
    rule = rules.make("label_agnostic_forgetting", net, num_steps=4)
    update = jax.jit(rule.update)
    batch = _batch()
    garbage = jax.tree.map(lambda x: x, batch)
    for part in ("forget", "retain"):
        garbage[part] = {"x": batch[part]["x"], "y": jnp.full_like(batch[part]["y"], -1)}

    def run(b):
        v, s = variables, rule.init(variables, key=jax.random.key(0))
        for i in range(4):  # 1 VAE step, then 3 extractor steps
            v, s, _ = update(v, s, b, key=jax.random.key(i))
        return v

    with_labels, without_labels = run(batch), run(garbage)
    moved = optax.tree.norm(optax.tree.sub(with_labels["params"], variables["params"]))
    assert float(moved) > 0
    for a, b in zip(jax.tree.leaves(with_labels), jax.tree.leaves(without_labels), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(
        with_labels["params"]["head"]["kernel"], variables["params"]["head"]["kernel"]
    )


def test_factories_reject_bad_hyperparameters():
    _, _, net, _ = tiny_problem()
    with pytest.raises(ValueError, match="density"):
        rules.make("ties_merge", net, density=0.0)
    with pytest.raises(ValueError, match="subsample"):
        rules.make("negmerge", net, subsample=1.5)
    with pytest.raises(ValueError, match="repulsion_kind"):
        rules.make("adapt_then_unlearn", net, num_steps=10, repulsion_kind="cubic")
    with pytest.raises(ValueError, match="head"):
        rules.make("label_agnostic_forgetting", net, num_steps=10, head_key="fc2").init(
            tiny_problem()[3], key=jax.random.key(0)
        )
