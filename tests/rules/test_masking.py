"""Weight scores for mask-guided unlearning (SalUn's saliency, WAGLE's attribution) and masks.

Hand-built linear models and batches; everything jitted.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxunlearn.core import losses, rule_from_loss, saliency_masked, top_fraction_mask
from jaxunlearn.core.types import Outputs
from jaxunlearn.rules import masking


def _apply(variables, x, *, train=False):
    del train
    p = variables["params"]
    return Outputs(logits=x @ p["w"] + p["b"], features=x)


VARIABLES = {
    "params": {"w": jax.random.normal(jax.random.key(0), (3, 4)), "b": jnp.arange(4.0) / 10}
}


def _batches(num: int):
    rng = np.random.default_rng(0)
    return [
        {
            part: {
                "x": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
                "y": jnp.asarray(rng.integers(0, 4, 5), jnp.int32),
            }
            for part in ("forget", "retain")
        }
        for _ in range(num)
    ]


def _grad(batch, part):
    def loss(params):
        return losses.cross_entropy(
            _apply({"params": params}, batch[part]["x"]).logits, batch[part]["y"]
        )

    return jax.grad(loss)(VARIABLES["params"])


def _scores(score, batches):
    @jax.jit
    def run(batches):
        total = score.init(VARIABLES["params"])
        for b in batches:
            inc = score.accumulate(VARIABLES, b, key=jax.random.key(0))
            total = jax.tree.map(jnp.add, total, inc)
        return score.finalize(total, VARIABLES["params"])

    return run(batches)


def test_forget_saliency_is_the_magnitude_of_the_summed_forget_gradient():
    batches = _batches(3)
    got = _scores(masking.forget_saliency(_apply), batches)
    total = jax.tree.map(lambda *g: sum(g), *[_grad(b, "forget") for b in batches])
    for name in ("w", "b"):
        np.testing.assert_allclose(got[name], np.abs(total[name]), rtol=1e-5, atol=1e-7)


def test_weight_attribution_is_wagles_implicit_gradient_score():
    batches, mu = _batches(2), 0.5
    got = _scores(masking.weight_attribution(_apply, hessian_scale=mu), batches)
    g_f = jax.tree.map(lambda *g: sum(g), *[_grad(b, "forget") for b in batches])
    g_r = jax.tree.map(lambda *g: sum(g), *[_grad(b, "retain") for b in batches])
    for name in ("w", "b"):
        p = np.asarray(VARIABLES["params"][name])
        expected = np.abs((p - np.asarray(g_r[name]) / mu) * np.asarray(g_f[name]))
        np.testing.assert_allclose(got[name], expected, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="hessian_scale"):
        masking.weight_attribution(_apply, hessian_scale=0.0)


def test_mask_from_batches_matches_the_mask_scored_during_a_run():
    batches = _batches(3)
    score = masking.forget_saliency(_apply)
    stacked = jax.tree.map(lambda *x: jnp.stack(x), *batches)
    offline = jax.jit(lambda s: masking.mask_from_batches(score, VARIABLES, s, fraction=0.25))(
        stacked
    )
    assert sum(int(m.sum()) for m in jax.tree.leaves(offline)) == 4  # 25% of 16 weights

    def still(variables, batch, *, reference, step, key):
        return 0.0 * jnp.sum(variables["params"]["w"]), {}

    rule = saliency_masked(
        rule_from_loss(still, optax.sgd(0.1)), score=score, fraction=0.25, score_steps=3
    )
    state = rule.init(VARIABLES, key=jax.random.key(0))
    update = jax.jit(rule.update)
    for b in [*batches, batches[0]]:  # the mask is set when the fourth update starts
        _, state, _ = update(VARIABLES, state, b, key=jax.random.key(0))
    for a, b in zip(jax.tree.leaves(offline), jax.tree.leaves(state.phases[1].mask), strict=True):
        np.testing.assert_array_equal(a, b)


def test_top_fraction_mask_counts_globally_like_a_stable_sort():
    scores = {"a": jnp.array([[0.1, 5.0], [3.0, 0.2]]), "b": jnp.array([4.0, 0.0, 1.0])}
    mask = jax.jit(top_fraction_mask, static_argnums=1)(scores, 3 / 7)
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
        got = jax.jit(top_fraction_mask, static_argnums=1)({"v": jnp.asarray(values)}, fraction)
        np.testing.assert_array_equal(got["v"], expected)
    for fraction in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="mask_fraction"):
            top_fraction_mask({"w": jnp.ones(3)}, fraction)
