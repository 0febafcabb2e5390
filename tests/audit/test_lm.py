"""Tests of the language-model array metrics (jaxunlearn.audit.lm), on hand-computed cases."""

import functools
import math
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import roc_auc_score

from jaxunlearn import audit
from jaxunlearn.audit import lm
from jaxunlearn.core import losses

IGNORE = losses.IGNORE_INDEX
LN2, LN3, LN4 = math.log(2.0), math.log(3.0), math.log(4.0)

# ------------------------------------------------------------------------------------------------
# TOFU: probability, truth ratio, forget quality, model utility.


def test_probabilities_hand_cases():
    np.testing.assert_allclose(lm.probability([0.0, LN2]), [1.0, 0.5], rtol=1e-6)
    # p_true = 0.5, each perturbed 0.25: 0.5 / (0.5 + 0.25 + 0.25).
    # p_true = 1, perturbed 0.5 and 0.25: 1 / 1.75.
    got = jax.jit(lm.normalised_probability)([LN2, 0.0], [[LN4, LN4], [LN2, LN4]])
    np.testing.assert_allclose(got, [0.5, 4.0 / 7.0], rtol=1e-6)


def test_truth_ratio_and_its_aggregates():
    tr = jax.jit(lm.truth_ratio)([1.0, 2.0, 0.0], [[1.0, 3.0], [2.0, 2.0], [LN2, LN2]])
    # exp(1 - 2), exp(2 - 2), exp(0 - ln 2).
    np.testing.assert_allclose(tr, [math.exp(-1.0), 1.0, 0.5], rtol=1e-6)
    # Forget: mean min(TR, 1/TR) = (0.5 + 0.5 + 1) / 3.
    assert float(lm.forget_truth_ratio([0.5, 2.0, 1.0])) == pytest.approx(2.0 / 3.0)
    # Others: mean max(0, 1 - TR) = (0.5 + 0 + 0.75) / 3.
    assert float(lm.retain_truth_ratio([0.5, 2.0, 0.25])) == pytest.approx(5.0 / 12.0)
    assert float(lm.forget_truth_ratio([0.0, 1.0])) == pytest.approx(0.5)  # TR = 0 scores 0.


def test_truth_ratio_rejects_bad_shapes():
    with pytest.raises(ValueError, match="nll_perturbed"):
        lm.truth_ratio([1.0, 2.0], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="nll_perturbed"):
        lm.truth_ratio([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="nll_correct"):
        lm.truth_ratio([], np.zeros((0, 5)))
    with pytest.raises(ValueError, match="nll_true"):
        lm.normalised_probability([[1.0]], [[1.0]])
    with pytest.raises(ValueError, match="tr"):
        lm.forget_truth_ratio([])


def test_forget_quality_is_the_ks_p_value():
    # Disjoint samples of 3 and 3: D = 1, exact p = 2 / C(6, 3) = 0.1.
    assert lm.forget_quality([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.1)
    assert lm.forget_quality([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(size=40), rng.lognormal(0.3, size=60)
    assert lm.forget_quality(a, b) == pytest.approx(scipy.stats.ks_2samp(a, b).pvalue)
    with pytest.raises(ValueError, match="tr_retain"):
        lm.forget_quality([1.0], [])
    with pytest.raises(ValueError, match="tr_unlearned"):
        lm.forget_quality([1.0, np.nan], [1.0])


def test_model_utility_is_the_harmonic_mean():
    assert lm.model_utility([1.0, 0.5, 0.25]) == pytest.approx(3.0 / 7.0)
    assert lm.model_utility({"prob": 0.5, "rouge": 0.5}) == pytest.approx(0.5)
    assert lm.model_utility([0.9, 0.0, 0.4]) == 0.0
    values = np.random.default_rng(1).uniform(0.05, 1.0, 9)
    assert lm.model_utility(values) == pytest.approx(scipy.stats.hmean(values))
    with pytest.raises(ValueError, match="values"):
        lm.model_utility([])
    with pytest.raises(ValueError, match="values"):
        lm.model_utility([0.5, -0.1])


# ------------------------------------------------------------------------------------------------
# Exact memorisation and extraction strength.


def _logits_with_argmax(preds, vocab=5):
    return 3.0 * jax.nn.one_hot(jnp.asarray(preds), vocab)


# Answer tokens anywhere in [B, T]: contiguous, everywhere, scattered, absent, a miss at the start.
LABELS = np.array(
    [
        [IGNORE, IGNORE, 1, 2, 3, IGNORE],
        [2, 2, 2, 2, IGNORE, IGNORE],
        [IGNORE, 4, IGNORE, 1, IGNORE, 0],
        [IGNORE] * 6,
        [IGNORE, 1, 2, 3, 4, 0],
    ]
)
PREDS = np.array(
    [
        [0, 0, 1, 4, 3, 0],  # answer (1, 2, 3), argmax (1, 4, 3)
        [2, 2, 2, 2, 1, 1],  # all right
        [0, 0, 2, 1, 4, 3],  # answer (4, 1, 0), argmax (0, 1, 3)
        [0, 0, 0, 0, 0, 0],
        [0, 0, 2, 3, 4, 0],  # answer (1, 2, 3, 4, 0), argmax (0, 2, 3, 4, 0)
    ]
)


def test_exact_memorization_hand_cases():
    em = np.asarray(jax.jit(lm.exact_memorization)(_logits_with_argmax(PREDS), LABELS))
    np.testing.assert_allclose(em[[0, 1, 2, 4]], [2 / 3, 1.0, 1 / 3, 4 / 5], rtol=1e-6)
    assert np.isnan(em[3])  # No answer tokens.


def test_extraction_strength_hand_cases():
    es = np.asarray(jax.jit(lm.extraction_strength)(_logits_with_argmax(PREDS), LABELS))
    # Row 0: last miss at rank 1 -> k* = 2 -> 1 - 2/3. Row 1: k* = 0. Row 2: last miss at rank 2,
    # so no suffix matches -> k* = n - 1 = 2 -> 1/3. Row 4: miss at rank 0 -> k* = 1 -> 4/5.
    np.testing.assert_allclose(es[[0, 1, 2, 4]], [1 / 3, 1.0, 1 / 3, 4 / 5], rtol=1e-6)
    assert np.isnan(es[3])


def test_memorization_mask_drops_tokens():
    # Dropping row 0's last answer token (an EOS): answer (1, 2), argmax (1, 4).
    mask = (LABELS != IGNORE).astype(np.int32)
    mask[0, 4] = 0
    logits = _logits_with_argmax(PREDS)
    assert float(lm.exact_memorization(logits, LABELS, mask)[0]) == pytest.approx(0.5)
    assert float(lm.extraction_strength(logits, LABELS, mask)[0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="mask"):
        lm.exact_memorization(logits, LABELS, mask[:, :3])
    with pytest.raises(ValueError, match="labels"):
        lm.extraction_strength(logits, LABELS[:, :3])
    with pytest.raises(ValueError, match="logits"):
        lm.extraction_strength(logits[0], LABELS[0])


def _extraction_strength_loop(preds, labels):
    # open-unlearning's loop on the answer tokens of one row.
    keep = labels != IGNORE
    a, y = preds[keep], labels[keep]
    n = len(y)
    for k in range(n):
        if np.array_equal(a[k:], y[k:]):
            break
    return 1.0 - k / n


def test_extraction_strength_matches_the_reference_loop():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, (64, 12))
    labels[rng.random((64, 12)) < 0.4] = IGNORE
    labels[:, 0] = 1  # At least one answer token per row.
    preds = np.where(
        rng.random((64, 12)) < 0.8, np.maximum(labels, 0), rng.integers(0, 3, (64, 12))
    )
    es = lm.extraction_strength(_logits_with_argmax(preds, 3), labels)
    want = [_extraction_strength_loop(p, y) for p, y in zip(preds, labels, strict=True)]
    np.testing.assert_allclose(es, want, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Membership scores.


def test_min_k_score_hand_cases():
    lp = np.array(
        [
            [-1.0, -5.0, -2.0, -4.0, 0.0],  # 4 valid tokens
            [0.0, -3.0, 0.0, 0.0, 0.0],  # 1 valid token, in the middle
            [0.0, 0.0, 0.0, 0.0, 0.0],  # none
        ]
    )
    mask = np.array([[1, 1, 1, 1, 0], [0, 1, 0, 0, 0], [0, 0, 0, 0, 0]])
    score = jax.jit(functools.partial(lm.min_k_score, k=0.5))
    np.testing.assert_allclose(score(lp, mask)[:2], [-4.5, -3.0])  # lowest 2 of 4; max(1, 0)
    assert np.isnan(score(lp, mask)[2])
    np.testing.assert_allclose(lm.min_k_score(lp, mask)[:2], [-5.0, -3.0])  # floor(1.6) = 1
    np.testing.assert_allclose(lm.min_k_score(lp, mask, k=1.0)[:2], [-3.0, -3.0])  # the mean


def test_min_k_count_is_floor_of_k_n_in_float64():
    # 0.7 * 10 = 7.000000000000001 in float64 (open-unlearning's int(n * k) = 7), 6.9999998 in
    # float32: the lowest 7 of -1 .. -10 are -10 .. -4.
    lp = -np.arange(1.0, 11.0)[None]
    assert float(lm.min_k_score(lp, np.ones_like(lp), k=0.7)[0]) == pytest.approx(-7.0)


def test_min_k_rejects_bad_input():
    lp, mask = np.zeros((2, 3)), np.ones((2, 3))
    for k in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="`k`"):
            lm.min_k_score(lp, mask, k=k)
    with pytest.raises(ValueError, match="mask"):
        lm.min_k_score(lp, mask[:, :2])
    with pytest.raises(ValueError, match="token_logprobs"):
        lm.min_k_score(np.zeros((0, 3)), np.zeros((0, 3)))
    with pytest.raises(ValueError, match="token_std"):
        lm.min_k_plus_plus_score(lp, lp, lp[:, :2], mask)


def test_log_prob_moments_hand_cases():
    # Uniform over 4: mu = -ln 4, sigma = 0. Bernoulli (1/4, 3/4): sigma = sqrt(pq) |ln(p/q)|.
    # Tokens of probability 0 (logit -inf) are skipped, not NaN.
    logits = jnp.array([[[0.0, 0.0, 0.0, 0.0], [0.0, LN3, -jnp.inf, -jnp.inf]]])
    mu, sigma = jax.jit(lm.log_prob_moments)(logits)
    want_mu = 0.25 * math.log(0.25) + 0.75 * math.log(0.75)
    np.testing.assert_allclose(mu[0], [-LN4, want_mu], rtol=1e-5)
    np.testing.assert_allclose(sigma[0], [0.0, math.sqrt(3.0) / 4.0 * LN3], rtol=1e-5, atol=1e-7)
    # Against the definition in float64 on random logits.
    z = np.random.default_rng(5).normal(size=(2, 3, 7)) * 3
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    p = np.exp(logp)
    want_mu = (p * logp).sum(-1)
    mu, sigma = lm.log_prob_moments(z)
    np.testing.assert_allclose(mu, want_mu, rtol=1e-5)
    np.testing.assert_allclose(sigma**2, (p * logp**2).sum(-1) - want_mu**2, rtol=1e-4)


def test_min_k_plus_plus_hand_case():
    # z = ((-1 + 2) / 1, (-3 + 2) / 2) = (1, -0.5); the lowest 1 of 2 is -0.5. sigma = 0 -> z = 0.
    lp, mean, std = [[-1.0, -3.0]], [[-2.0, -2.0]], [[1.0, 2.0]]
    got = jax.jit(lm.min_k_plus_plus_score, static_argnames="k")(lp, mean, std, [[1, 1]], k=0.5)
    assert float(got[0]) == pytest.approx(-0.5)
    got = lm.min_k_plus_plus_score([[-1.0, -3.0]], [[-2.0, -2.0]], [[0.0, 2.0]], [[1, 1]], k=1.0)
    assert float(got[0]) == pytest.approx(-0.25)


def test_loss_and_zlib_scores():
    np.testing.assert_allclose(lm.loss_score([1.0, 2.0]), [-1.0, -2.0])
    np.testing.assert_allclose(lm.zlib_score([2.0, 3.0], [4, 12]), [-0.5, -0.25])
    with pytest.raises(ValueError, match="zlib_lengths"):
        lm.zlib_score([2.0, 3.0], [4])
    with pytest.raises(ValueError, match="nll_avg"):
        lm.loss_score([])


def test_membership_auc_hand_cases_and_sklearn():
    assert lm.membership_auc([3.0, 2.0], [1.0, 0.0]) == 1.0
    assert lm.membership_auc([0.0], [1.0, 2.0]) == 0.0
    # Pairs (1 vs 1, 1 vs 0) twice: (0.5 + 1 + 0.5 + 1) / 4.
    assert lm.membership_auc([1.0, 1.0], [1.0, 0.0]) == pytest.approx(0.75)
    rng = np.random.default_rng(3)
    members, nonmembers = np.round(rng.normal(0.3, 1, 70), 1), np.round(rng.normal(0, 1, 90), 1)
    labels = np.r_[np.ones(70), np.zeros(90)]
    scores = np.r_[members, nonmembers]
    auc = lm.membership_auc(members, nonmembers)
    assert auc == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    # open-unlearning: forget = 0, holdout = 1, scores negated (higher = non-member).
    assert auc == pytest.approx(roc_auc_score(1 - labels, -scores), abs=1e-12)
    with pytest.raises(ValueError, match="nonmember_scores"):
        lm.membership_auc([1.0], [])
    with pytest.raises(ValueError, match="member_scores"):
        lm.membership_auc([np.nan], [1.0])


def test_privleak():
    assert lm.privleak(0.6, 0.5) == pytest.approx(20.0)
    assert lm.privleak(0.25, 0.5) == pytest.approx(-50.0)
    for auc in (0.1, 0.5, 0.93, 1.0):
        assert lm.privleak(auc, auc) == 0.0
    # MUSE's sign: an un-unlearned target (member AUC 0.999) against AUC_retrain = 0.5 -> -99.8.
    assert lm.privleak(1 - 0.999, 1 - 0.5) == pytest.approx(-99.8)
    with pytest.raises(ValueError, match="auc_retrained"):
        lm.privleak(0.5, 0.0)
    with pytest.raises(ValueError, match="auc_unlearned"):
        lm.privleak(1.2, 0.5)


# ------------------------------------------------------------------------------------------------
# leak@k.


def _leak_exact(num_leaked, n, k):
    terms = [1 - Fraction(math.comb(n - c, k), math.comb(n, k)) for c in num_leaked]
    return sum(terms) / len(terms)


def test_leak_at_k_small_hand_cases():
    # n = 5, c = 2, k = 2: 1 - C(3, 2) / C(5, 2) = 1 - 3/10.
    assert lm.leak_at_k([2], 5, 2) == pytest.approx(0.7)
    # c = 0 never leaks, c = n always does, n - c < k forces a leak: (0 + 1 + 1) / 3.
    assert lm.leak_at_k([0, 5, 4], 5, 2) == pytest.approx(2.0 / 3.0)
    # k = 1 is the leaking fraction: mean(1/4, 3/4).
    assert lm.leak_at_k([1, 3], 4, 1) == pytest.approx(0.5)
    # Per-question sample counts: 1 - C(1, 2)/C(3, 2) = 1 and 1 - C(4, 2)/C(6, 2) = 1 - 6/15.
    assert lm.leak_at_k([2, 2], [3, 6], 2) == pytest.approx((1.0 + 0.6) / 2.0)
    for n, k in ((5, 1), (5, 3), (7, 7), (12, 5)):
        cs = list(range(n + 1))
        assert lm.leak_at_k(cs, n, k) == pytest.approx(float(_leak_exact(cs, n, k)), rel=1e-14)


@pytest.mark.parametrize("k", [1, 4, 16, 64, 128, 200])
def test_leak_at_k_matches_exact_fractions_at_n_200(k):
    for c in (0, 1, 2, 5, 30, 72, 73, 150, 199, 200):
        want = float(_leak_exact([c], 200, k))
        assert lm.leak_at_k([c], 200, k) == pytest.approx(want, rel=1e-12, abs=1e-300)
    cs = np.random.default_rng(4).integers(0, 201, 400)
    assert lm.leak_at_k(cs, 200, k) == pytest.approx(float(_leak_exact(cs, 200, k)), rel=1e-12)


def test_leak_at_k_rises_with_k():
    cs = [0, 1, 3, 10, 50, 199]
    values = [lm.leak_at_k(cs, 200, k) for k in range(1, 201)]
    assert np.all(np.diff(values) > 0)
    assert values[0] == pytest.approx(np.mean(cs) / 200)
    assert values[-1] == pytest.approx(5 / 6)  # k = n: any leak is found; c = 0 never.


def test_leak_at_k_rejects_bad_input():
    with pytest.raises(ValueError, match="`k`"):
        lm.leak_at_k([1], 5, 6)
    with pytest.raises(ValueError, match="`k`"):
        lm.leak_at_k([1], 5, 0)
    with pytest.raises(ValueError, match="`k`"):
        lm.leak_at_k([1], 5, 1.5)
    with pytest.raises(ValueError, match="num_leaked"):
        lm.leak_at_k([6], 5, 1)
    with pytest.raises(ValueError, match="num_leaked"):
        lm.leak_at_k([-1], 5, 1)
    with pytest.raises(ValueError, match="num_leaked"):
        lm.leak_at_k([], 5, 1)
    with pytest.raises(ValueError, match="num_leaked"):
        lm.leak_at_k([0.5], 5, 1)
    with pytest.raises(ValueError, match="num_samples"):
        lm.leak_at_k([1, 2], [5, 5, 5], 1)


def test_public_names():
    for name in (
        "truth_ratio",
        "forget_quality",
        "model_utility",
        "exact_memorization",
        "extraction_strength",
        "min_k_score",
        "min_k_plus_plus_score",
        "zlib_score",
        "loss_score",
        "membership_auc",
        "privleak",
        "leak_at_k",
        "rouge_l",
        "leaks",
        "count_leaks",
    ):
        assert name in audit.__all__ and getattr(audit, name).__doc__
