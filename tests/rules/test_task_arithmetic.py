"""Weight-space editors: task-vector negation, NegMerge and TIES-merging (jitted, no training).

The merge arithmetic on hand-made task vectors; the rules on a tiny untrained MLP.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn import models, rules
from jaxunlearn.core import losses
from jaxunlearn.rules import task_arithmetic

NET = models.make_network("mlp", input_shape=(5,), num_outputs=3, hidden=(6,))
VARIABLES = NET.init(jax.random.key(0))


def _batches(num: int):
    rng = np.random.default_rng(0)
    return [
        {
            part: {
                "x": jnp.asarray(rng.normal(size=(8, 5)), jnp.float32),
                "y": jnp.asarray(rng.integers(0, 3, 8), jnp.int32),
            }
            for part in ("forget", "retain")
        }
        for _ in range(num)
    ]


def _run(rule, batches):
    state = rule.init(VARIABLES, key=jax.random.key(1))
    update = jax.jit(rule.update)
    for i, batch in enumerate(batches):
        variables, state, metrics = update(VARIABLES, state, batch, key=jax.random.key(i))
    return variables, state, metrics


def test_sign_consensus_mask_on_hand_made_vectors():
    stacked = {"w": jnp.array([[1.0, -2.0, 3.0, 0.0], [2.0, -1.0, -1.0, 5.0]])}
    merged = jax.jit(task_arithmetic.sign_consensus_merge)(stacked)
    # Agreeing signs keep the mean; a sign conflict or a zero member drops the coordinate.
    np.testing.assert_allclose(merged["w"], [1.5, -1.5, 0.0, 0.0])


def test_ties_trim_elect_and_disjoint_merge_on_hand_made_vectors():
    stacked = {
        "a": jnp.array([[4.0, -1.0, 0.5], [-2.0, 3.0, 0.1]]),
        "b": jnp.array([[[-3.0, 2.0]], [[1.0, -0.2]]]),
    }
    trimmed = jax.jit(task_arithmetic.ties_trim, static_argnums=1)(stacked, 0.4)  # 2 of 5 each
    np.testing.assert_allclose(trimmed["a"], [[4.0, 0.0, 0.0], [-2.0, 3.0, 0.0]])
    np.testing.assert_allclose(trimmed["b"], [[[-3.0, 0.0]], [[0.0, 0.0]]])
    sign = jax.jit(task_arithmetic.ties_elect_sign)(trimmed)
    # Totals a = [2, 3, 0], b = [-3, 0]; zero totals take the majority sign (+).
    np.testing.assert_allclose(sign["a"], [1.0, 1.0, 1.0])
    np.testing.assert_allclose(sign["b"], [[-1.0, 1.0]])
    merged = jax.jit(task_arithmetic.ties_disjoint_mean)(trimmed, sign)
    np.testing.assert_allclose(merged["a"], [4.0, 3.0, 0.0])
    np.testing.assert_allclose(merged["b"], [[-3.0, 0.0]])
    full = jax.jit(task_arithmetic.ties_merge_vectors, static_argnums=1)(stacked, 1.0)
    np.testing.assert_allclose(full["a"], [4.0, 3.0, 0.3])


def test_task_vector_negation_first_update_negates_one_sgd_step():
    lr, lam = 0.1, 2.0
    rule = rules.make("task_vector_negation", NET, learning_rate=lr, scaling_coef=lam)
    batch = _batches(1)[0]
    new, state, metrics = _run(rule, [batch])
    assert int(state.step.count) == 1

    def loss(params):
        logits = NET.apply({**VARIABLES, "params": params}, batch["forget"]["x"]).logits
        return losses.cross_entropy(logits, batch["forget"]["y"])

    # The copy takes one SGD step (momentum has nothing to carry yet): tau = -lr * grad.
    g = jax.grad(loss)(VARIABLES["params"])
    expected = jax.tree.map(lambda p, g_: p + lam * lr * g_, VARIABLES["params"], g)
    for a, b in zip(jax.tree.leaves(new["params"]), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert float(metrics["finetune_loss"]) == pytest.approx(float(loss(VARIABLES["params"])))


def test_task_vector_negation_at_zero_scale_returns_the_original():
    rule = rules.make("task_vector_negation", NET, scaling_coef=0.0)
    new, state, _ = _run(rule, _batches(2))
    for a, b in zip(
        jax.tree.leaves(new["params"]), jax.tree.leaves(VARIABLES["params"]), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    tau = optax.tree.sub(state.members, jax.tree.map(lambda x: x[None], VARIABLES["params"]))
    assert float(optax.tree.norm(tau)) > 0  # the copy did fine-tune


def test_negmerge_of_one_copy_is_task_vector_negation():
    # NegMerge runs its copies at unit rate and scales each one's updates by its learning rate;
    # with one copy the consensus keeps every moved weight.
    batches = _batches(3)
    negmerge = rules.make("negmerge", NET, learning_rates=(0.05,), scaling_coef=1.5)
    negation = rules.make("task_vector_negation", NET, learning_rate=0.05, scaling_coef=1.5)
    a, _, metrics = _run(negmerge, batches)
    b, _, _ = _run(negation, batches)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    assert 0 < float(metrics["consensus_fraction"]) <= 1


def test_ties_merge_runs_each_model_at_its_own_rate():
    rule = rules.make("ties_merge", NET, learning_rates=(0.05, 0.0005), density=1.0)
    _, state, metrics = _run(rule, _batches(2))
    tau = optax.tree.sub(state.members, jax.tree.map(lambda x: x[None], VARIABLES["params"]))
    norms = np.sqrt(
        sum(np.sum(np.square(t), axis=tuple(range(1, t.ndim))) for t in jax.tree.leaves(tau))
    )
    assert norms[0] > 20 * norms[1] > 0
    assert set(metrics) >= {"member_loss", "npo_loss", "retain_kl", "retain_ce"}


def test_factories_reject_bad_hyperparameters():
    with pytest.raises(ValueError, match="density"):
        rules.make("ties_merge", NET, density=0.0)
    with pytest.raises(ValueError, match="forget_weights"):
        rules.make("ties_merge", NET, forget_weights=(1.0,))
    with pytest.raises(ValueError, match="subsample"):
        rules.make("negmerge", NET, subsample=1.5)
    with pytest.raises(ValueError, match="learning rates"):
        rules.make("negmerge", NET, learning_rates=(0.1, -0.1))
    with pytest.raises(ValueError, match="scaling_coef"):
        rules.make("task_vector_negation", NET, scaling_coef=float("inf"))
    for name in ("task_vector_negation", "negmerge", "ties_merge"):
        with pytest.raises(ValueError, match="no hyperparameter"):
            rules.make(name, NET, momentum=0.5)
        rules.make(name, NET, optimizer={"momentum": 0.5, "weight_decay": 1e-4})


def test_choose_scaling_coef_is_the_references_criterion():
    choose = jax.jit(task_arithmetic.choose_scaling_coef)
    forget = jnp.array([0.9, 0.5, 0.2, 0.2, 0.1])
    control = jnp.array([1.0, 0.97, 0.96, 0.96, 0.8])
    # Lowest forget accuracy with control >= 0.95: index 2 (the first of the tie), not 4.
    assert int(choose(forget, control, 0.95)) == 2
    # No candidate keeps the control accuracy: the one that keeps it best.
    assert int(choose(forget, control, 0.99)) == 0


def test_candidate_accuracies_on_a_hand_built_linear_model():
    def apply(variables, x, *, train=False):
        del train
        logits = x @ variables["params"]["w"]
        return type("O", (), {"logits": logits})()

    variables = {"params": {"w": jnp.eye(2)}, "batch_stats": {}}
    # lambda moves class-0 examples to class 1 once it passes 0.5; class 1 is untouched.
    direction = {"w": jnp.array([[-1.0, 1.0], [0.0, 0.0]])}
    forget = {"x": jnp.array([[1.0, 0.0]] * 3), "y": jnp.zeros(3, jnp.int32)}
    control = {"x": jnp.array([[0.0, 1.0]] * 2), "y": jnp.ones(2, jnp.int32)}
    coefs = jnp.array([0.0, 0.25, 0.75, 1.0])
    fa, ca = jax.jit(task_arithmetic.candidate_accuracies, static_argnums=0)(
        apply, variables, direction, coefs, forget, control
    )
    np.testing.assert_allclose(fa, [1.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(ca, [1.0, 1.0, 1.0, 1.0])
    assert int(task_arithmetic.choose_scaling_coef(fa, ca, 0.95)) == 2


def _with_validation(batch):
    return {**batch, "val_forget": batch["forget"], "val_control": batch["retain"]}


@pytest.mark.parametrize("name", ["task_vector_negation", "negmerge", "ties_merge"])
def test_merging_rules_choose_lambda_on_the_validation_parts(name):
    coefs = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0)
    batches = [_with_validation(b) for b in _batches(2)]
    rule = rules.make(name, NET, scaling_coefs=coefs)
    new, state, metrics = _run(rule, batches)
    chosen = float(metrics["scaling_coef"])
    assert chosen in coefs
    # The rule's model is the edit at the chosen lambda, and that lambda is the criterion's
    # choice on the last update's validation batches.
    fixed = rules.make(name, NET, scaling_coef=chosen)
    want, _, _ = _run(fixed, batches)
    for a, b in zip(jax.tree.leaves(new["params"]), jax.tree.leaves(want["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    base = state.reference["params"]
    direction = jax.tree.map(lambda n, b: (n - b) / chosen, new["params"], base) if chosen else None
    if direction is not None:
        val = batches[-1]
        fa, ca = task_arithmetic.candidate_accuracies(
            NET.apply,
            state.reference,
            direction,
            jnp.asarray(coefs),
            val["val_forget"],
            val["val_control"],
        )
        threshold = 0.95 * float(ca[0])  # coefs[0] = 0 is the original
        assert int(task_arithmetic.choose_scaling_coef(fa, ca, threshold)) == coefs.index(chosen)
    # Without validation parts: lambda = 1, the earlier fixed default, bit for bit.
    plain, _, metrics = _run(rules.make(name, NET), _batches(2))
    one, _, _ = _run(rules.make(name, NET, scaling_coef=1.0), _batches(2))
    assert float(metrics["scaling_coef"]) == 1.0
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(one), strict=True):
        np.testing.assert_array_equal(a, b)
