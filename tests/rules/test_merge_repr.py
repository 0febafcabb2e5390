"""Weight-space editors: task vectors, NegMerge, TIES."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from rule_testing import smoke_test_rule, tiny_problem

from jaxunlearn import rules
from jaxunlearn.rules import task_arithmetic


@pytest.mark.parametrize(
    "name, hparams",
    [
        ("task_vector_negation", {}),
        ("negmerge", {}),
        ("ties_merge", {}),
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


def test_factories_reject_bad_hyperparameters():
    _, _, net, _ = tiny_problem()
    with pytest.raises(ValueError, match="density"):
        rules.make("ties_merge", net, density=0.0)
    with pytest.raises(ValueError, match="subsample"):
        rules.make("negmerge", net, subsample=1.5)
