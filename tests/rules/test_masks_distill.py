"""Tests of the mask wrapper, SalUn/WAGLE, l1-sparse and bad teaching (SCRUB: test_scrub.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rule_testing import forget_accuracy, smoke_test_rule, tiny_problem

from jaxunlearn import rules
from jaxunlearn.rules import masking
from jaxunlearn.train import make_stream
from jaxunlearn.train.loop import sample_batch


def test_wagle():
    smoke_test_rule("weight_attribution_mask", mask_steps=2)


def test_l1_sparse():
    smoke_test_rule("l1_sparse")


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


@pytest.mark.parametrize(
    "inner, inner_hparams",
    [
        ("finetune", {"learning_rate": 0.05, "momentum": 0.9, "weight_decay": 5e-4}),
        ("scrub", {"learning_rate": 1e-2, "weight_decay": 5e-4}),  # Adam with (coupled) decay
    ],
)
def test_salun_holds_masked_weights_bit_identical(inner, inner_hparams):
    # Also SalUn's smoke test: 3 scoring steps, then 30 masked steps.
    res = smoke_test_rule(
        "salun", steps=33, mask_steps=3, mask_fraction=0.3, inner=inner, inner_hparams=inner_hparams
    )
    start = jax.tree.map(lambda x: jnp.stack([x] * 2), tiny_problem()[3])
    mask = _leaves(res.state.mask)
    assert 0.25 < sum(m.sum() for m in mask) / sum(m.size for m in mask) < 0.35
    for m, before, after in zip(
        mask, _leaves(start["params"]), _leaves(res.variables["params"]), strict=True
    ):
        assert np.array_equal(before[~m], after[~m])
        assert np.any(before[m] != after[m])
    # Momentum / Adam moments (params-shaped trees in the optimizer state) are zeroed where the
    # mask holds the weights.
    mask_def = jax.tree.structure(res.state.mask)
    params_like = [
        n
        for n in jax.tree.leaves(
            res.state.inner.opt_state, is_leaf=lambda n: jax.tree.structure(n) == mask_def
        )
        if jax.tree.structure(n) == mask_def
    ]
    assert params_like
    for trace in params_like:
        for m, leaf in zip(mask, _leaves(trace), strict=True):
            assert np.all(leaf[~m] == 0)


def test_mask_fraction_out_of_range_is_rejected():
    _, _, net, _ = tiny_problem()
    for fraction in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="mask_fraction"):
            rules.make("salun", net, num_steps=10, steps_per_epoch=5, mask_fraction=fraction)
        with pytest.raises(ValueError, match="mask_fraction"):
            masking.top_fraction_mask({"w": jnp.ones(3)}, fraction)
    with pytest.raises(ValueError, match="mask_steps"):
        rules.make("salun", net, num_steps=4, steps_per_epoch=4, mask_steps=4)


def test_top_fraction_mask_counts_globally():
    scores = {"a": jnp.array([[0.1, 5.0], [3.0, 0.2]]), "b": jnp.array([4.0, 0.0, 1.0])}
    mask = masking.top_fraction_mask(scores, 3 / 7)
    np.testing.assert_array_equal(mask["a"], [[False, True], [True, False]])
    np.testing.assert_array_equal(mask["b"], [True, False, False])
    # Ties, infinities, NaN and -0.0: the same pick as a stable descending sort.
    values = np.random.default_rng(0).choice(
        np.array([0.0, -0.0, 1.0, -2.0, 3.5, np.nan, np.inf, -np.inf, 1e-30], np.float32), 97
    )
    for fraction in (0.05, 0.3, 0.77):
        k = max(1, int(values.size * fraction))
        order = np.argsort(-np.where(np.isnan(values), -np.inf, values), kind="stable")
        expected = np.zeros(values.size, bool)
        expected[order[:k]] = True
        got = masking.top_fraction_mask({"v": jnp.asarray(values)}, fraction)["v"]
        np.testing.assert_array_equal(got, expected)


def test_salun_with_full_mask_equals_inner_rule():
    ds, split, net, variables = tiny_problem()
    stream = make_stream(ds.x_train, ds.y_train, {"forget": split.forget, "retain": split.retain})
    salun = rules.make(
        "salun", net, num_steps=12, steps_per_epoch=10, mask_fraction=1.0, mask_steps=2
    )
    plain = rules.make("random_label", net, learning_rate=0.013)
    key = jax.random.key(3)

    def batch(step):
        return sample_batch(stream, {"forget": 16, "retain": 32}, key, jnp.asarray(step))

    s_update, p_update = jax.jit(salun.update), jax.jit(plain.update)
    s_vars, s_state = variables, salun.init(variables, key=key)
    for step in range(2):  # the scoring updates leave the model alone
        s_vars, s_state, _ = s_update(s_vars, s_state, batch(100 + step), key=key)
    for a, b in zip(_leaves(s_vars), _leaves(variables), strict=True):
        assert np.array_equal(a, b)
    p_vars, p_state = variables, plain.init(variables, key=key)
    for step in range(10):
        k = jax.random.fold_in(key, step)
        s_vars, s_state, _ = s_update(s_vars, s_state, batch(step), key=k)
        p_vars, p_state, _ = p_update(p_vars, p_state, batch(step), key=k)
    for a, b in zip(_leaves(s_vars["params"]), _leaves(p_vars["params"]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_fixed_mask_from_batches_matches_streamed_mask():
    ds, split, net, variables = tiny_problem()
    stream = make_stream(ds.x_train, ds.y_train, {"forget": split.forget, "retain": split.retain})
    key = jax.random.key(0)
    batches = [
        sample_batch(stream, {"forget": 16, "retain": 16}, key, jnp.asarray(i)) for i in range(3)
    ]
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *batches)
    score = masking.forget_saliency(net.apply)
    offline = masking.mask_from_batches(score, variables, stacked, fraction=0.2)
    rule = masking.hold_masked(
        rules.make("finetune", net), score=score, mask_fraction=0.2, mask_steps=3
    )
    state = rule.init(variables, key=key)
    update = jax.jit(rule.update)
    for b in batches:
        _, state, _ = update(variables, state, b, key=key)
    for a, b in zip(_leaves(offline), _leaves(state.mask), strict=True):
        np.testing.assert_array_equal(a, b)


def test_l1_sparse_alpha_decays_per_epoch():
    ds, split, net, variables = tiny_problem()
    rule = rules.l1_sparse(net.apply, num_steps=6, steps_per_epoch=2, alpha=0.3)
    stream = make_stream(ds.x_train, ds.y_train, {"retain": split.retain})
    update = jax.jit(rule.update)
    state, alphas = rule.init(variables, key=None), []
    for step in range(6):
        b = sample_batch(stream, {"retain": 16}, jax.random.key(0), jnp.asarray(step))
        variables, state, m = update(variables, state, b, key=jax.random.key(0))
        alphas.append(float(m["alpha"]))
    np.testing.assert_allclose(alphas, [0.3, 0.3, 0.2, 0.2, 0.1, 0.1], rtol=1e-6)


@pytest.mark.parametrize(
    "name, hparams",
    [
        ("bad_teacher", {"learning_rate": 5e-3}),
    ],
)
def test_distillation_rules_run_and_reduce_forget_accuracy(name, hparams):
    res = smoke_test_rule(name, steps=40, **hparams)
    before = forget_accuracy(tiny_problem()[3])
    for seed in range(2):
        after = forget_accuracy(jax.tree.map(lambda x, s=seed: x[s], res.variables))
        assert after < before - 0.5, f"{name} seed {seed}: forget acc {before} -> {after}"
