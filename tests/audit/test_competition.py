"""Tests of the NeurIPS 2023 competition metric (jaxunlearn.audit.competition)."""

import math

import numpy as np
import pytest

from jaxunlearn.audit import competition
from jaxunlearn.audit.competition import (
    _epsilon_direct,
    competition_score,
    epsilon_per_example,
    forgetting_score,
    logit_scaled_confidence,
)

# ------------------------------------------------------------------------------------------------
# logit_scaled_confidence


def _appendix_confidence(logits, labels):
    """The reference definition, written out: float64 softmax, log(p + 1e-45) terms."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    rows = np.arange(z.shape[0])
    p_true = p[rows, labels]
    p_wrong = p.sum(-1) - p_true
    return np.log(p_true + 1e-45) - np.log(p_wrong + 1e-45)


def test_confidence_matches_reference_definition_on_normal_logits():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (50, 10))
    labels = rng.integers(0, 10, 50)
    np.testing.assert_allclose(
        logit_scaled_confidence(logits, labels),
        _appendix_confidence(logits, labels),
        rtol=1e-9,
        atol=1e-9,
    )


def test_confidence_hand_value_and_shapes():
    # p = softmax([2, 1, 0]); log p_0 - log(p_1 + p_2) = 2 - log(e + 1).
    conf = logit_scaled_confidence(np.array([[2.0, 1.0, 0.0]]), np.array([0]))
    assert conf.shape == (1,)
    assert conf[0] == pytest.approx(2.0 - math.log(math.e + 1.0), abs=1e-12)
    ensemble = np.random.default_rng(1).normal(size=(4, 6, 5))
    labels = np.arange(6) % 5
    out = logit_scaled_confidence(ensemble, labels)
    assert out.shape == (4, 6)
    np.testing.assert_allclose(out[2], logit_scaled_confidence(ensemble[2], labels))


def test_confidence_is_finite_for_extremely_confident_logits():
    logits = np.array([[1000.0, 0.0, 0.0], [0.0, 800.0, -800.0], [-900.0, 900.0, 0.0]])
    conf = logit_scaled_confidence(logits, np.array([0, 0, 0]))
    assert np.all(np.isfinite(conf))
    assert conf[0] == pytest.approx(1000.0 - math.log(2.0))
    assert conf[1] == pytest.approx(-800.0)
    assert conf[2] == pytest.approx(-1800.0)


@pytest.mark.parametrize(
    "logits, labels, match",
    [
        (np.zeros((3, 1)), np.zeros(3, int), "C >= 2"),
        (np.array([[np.nan, 1.0]]), np.array([0]), "finite"),
        (np.zeros((2, 3)), np.array([0, 3]), "labels"),
        (np.zeros((2, 3)), np.array([0.0, 1.0]), "labels"),
    ],
)
def test_confidence_bad_input(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        logit_scaled_confidence(logits, labels)


# ------------------------------------------------------------------------------------------------
# epsilon_per_example: fast == direct


def _edge_case_ensembles(seed: int, n_models: int = 12):
    rng = np.random.default_rng(seed)
    n_examples = 10
    u = rng.normal(0.0, 1.0, (n_models, n_examples))
    r = rng.normal(rng.uniform(-1, 1), rng.uniform(0.5, 2.0), (n_models, n_examples))
    u[:, 0] = 1.5  # Identical constant samples.
    r[:, 0] = 1.5
    u[:, 1] = 0.0  # Two different constants.
    r[:, 1] = 3.0
    u[:, 2] = np.round(u[:, 2], 1)  # Heavy ties, within and across samples.
    r[:, 2] = np.round(r[:, 2] * 0.5, 1)
    u[:, 3] = r[:, 3] + 8.0  # Perfectly separated, same shape.
    u[:, 4] = 2.0  # One constant sample, the other spread: peaky.
    u[:, 5] = r[:, 5]  # Identical (non-constant) samples.
    u[:, 6] = rng.permutation(r[:, 6]) * 0.3  # Ranges in ratio 0.3.
    u[:, 7] = np.where(np.arange(n_models) % 2 == 0, 0.2, 0.25)  # Two-valued, tiny range.
    r[:, 7] = np.where(np.arange(n_models) % 3 == 0, 0.2, 0.3)
    return u, r


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fast_epsilon_equals_direct_on_edge_cases(seed):
    u, r = _edge_case_ensembles(seed)
    fast = epsilon_per_example(u, r)
    direct = _epsilon_direct(u, r)
    np.testing.assert_array_equal(fast, direct)
    assert fast[0] == 0.0  # Identical constants: indistinguishable.
    assert fast[1] == 50.0  # Different constants: perfectly separated.
    assert fast[3] == 50.0  # Separated.
    assert fast[4] == 50.0  # Peaky.
    assert fast[5] == 0.0  # Identical samples.


@pytest.mark.parametrize("n_models, seed", [(2, 10), (3, 11), (7, 12), (25, 13)])
def test_fast_epsilon_equals_direct_on_random_inputs(n_models, seed):
    rng = np.random.default_rng(seed)
    u = rng.normal(0.0, 1.0, (n_models, 6))
    r = rng.normal(0.7, 1.3, (n_models, 6))
    r[:, 0] = np.round(r[:, 0], 0)
    np.testing.assert_array_equal(epsilon_per_example(u, r), _epsilon_direct(u, r))


def test_fast_epsilon_thread_count_and_lookup_path_do_not_change_results(monkeypatch):
    u, r = _edge_case_ensembles(5, n_models=9)
    reference = epsilon_per_example(u, r, num_threads=1)
    np.testing.assert_array_equal(epsilon_per_example(u, r, num_threads=3), reference)
    monkeypatch.setattr(competition, "_MAX_TABLE_MODELS", 4)  # Force on-the-fly epsilons.
    np.testing.assert_array_equal(epsilon_per_example(u, r), reference)


def test_blocked_single_thresholds_equal_linspace(monkeypatch):
    monkeypatch.setattr(competition, "_THRESHOLD_BLOCK", 64)
    for lo, hi in [(-1.2345, 3.3), (0.1, 0.1 + 1e-9), (5.0, 5.0), (-7.77, 11.0)]:
        num = max(math.ceil((hi - lo) * 100), 0)
        blocks = list(competition._single_thresholds(lo, hi))
        joined = np.concatenate(blocks) if blocks else np.zeros(0)
        np.testing.assert_array_equal(joined, np.linspace(lo, hi, num))
    u, r = _edge_case_ensembles(6)
    np.testing.assert_array_equal(epsilon_per_example(u, r), _epsilon_direct(u, r))


def test_epsilon_hand_computed_case():
    # retrained (larger median) is positive. The best rule is a threshold in (2, 3]: TPR 3/4 and
    # FPR 1/4, so eps = log(1 - delta - 1/4) - log(1/4); every rule with FPR or FNR = 0 is dropped.
    u = np.array([[0.0], [1.0], [2.0], [3.0]])
    r = np.array([[2.0], [3.0], [4.0], [5.0]])
    expected = math.log(0.75 - 1e-5) - math.log(0.25)
    assert epsilon_per_example(u, r)[0] == pytest.approx(expected, rel=1e-12)
    assert _epsilon_direct(u, r)[0] == pytest.approx(expected, rel=1e-12)


def test_epsilon_is_symmetric_in_the_two_ensembles_when_medians_differ():
    rng = np.random.default_rng(4)
    u = rng.normal(0, 1, (20, 5))
    r = rng.normal(1, 1, (20, 5))
    np.testing.assert_array_equal(epsilon_per_example(u, r), epsilon_per_example(r, u))


def test_identical_ensembles_give_zero_epsilon_and_full_points():
    r = np.random.default_rng(5).normal(0, 1, (64, 8))
    eps = epsilon_per_example(r.copy(), r)
    np.testing.assert_array_equal(eps, 0.0)
    assert forgetting_score(eps, num_models=64) == 1.0


def test_same_distribution_gives_moderate_epsilon():
    # Independent draws from one distribution are not scored as identical: tail thresholds such as
    # TPR = 4/512 vs FPR = 1/512 already give eps ~ log 4, a property of the definition (the public
    # code agrees), so F is well below 1 even for a perfect unlearning algorithm.
    rng = np.random.default_rng(6)
    u = rng.normal(0, 1, (512, 12))
    r = rng.normal(0, 1, (512, 12))
    eps = epsilon_per_example(u, r)
    assert 0.5 < eps.mean() < 3.0
    assert eps.max() < 4.0
    assert 0.0 < forgetting_score(eps, num_models=512) < 1.0


def test_separated_ensembles_give_capped_epsilon_and_zero_score():
    rng = np.random.default_rng(7)
    u = rng.normal(0, 1, (64, 5))
    r = rng.normal(20, 1, (64, 5))
    eps = epsilon_per_example(u, r)
    np.testing.assert_array_equal(eps, 50.0)
    assert forgetting_score(eps, num_models=64) == 0.0


def test_constant_ensembles_do_not_crash():
    const = np.full((5, 3), 2.0)
    np.testing.assert_array_equal(epsilon_per_example(const, const.copy()), 0.0)
    np.testing.assert_array_equal(_epsilon_direct(const, const.copy()), 0.0)


@pytest.mark.parametrize(
    "unlearned, retrained, match",
    [
        (np.zeros((1, 4)), np.zeros((1, 4)), "at least 2 models"),
        (np.zeros((3, 4)), np.zeros((3, 5)), "same shape"),
        (np.zeros((3, 4)), np.zeros((4, 4)), "same shape"),
        (np.zeros(4), np.zeros(4), "n_models, n_examples"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), np.zeros((2, 2)), "unlearned contains NaN"),
        (np.zeros((2, 2)), np.array([[0.0, np.inf], [1.0, 2.0]]), "retrained contains infinite"),
    ],
)
def test_epsilon_bad_input(unlearned, retrained, match):
    with pytest.raises(ValueError, match=match):
        epsilon_per_example(unlearned, retrained)


def test_epsilon_bad_delta():
    with pytest.raises(ValueError, match="delta"):
        epsilon_per_example(np.zeros((2, 2)), np.ones((2, 2)), delta=1.0)


# ------------------------------------------------------------------------------------------------
# forgetting_score / competition_score


def test_forgetting_score_buckets_for_512_models():
    # ceil(ln 511) = 7: 14 buckets [0, 0.5), ..., [6.5, 7) worth 1, 1/2, ..., 2^-13; eps >= 7 earns
    # 0.
    cases = {
        0.0: 1.0,
        0.49: 1.0,
        0.5: 0.5,
        1.2: 0.25,
        6.99: 2.0**-13,
        7.0: 0.0,
        50.0: 0.0,
        math.inf: 0.0,
    }
    for eps, points in cases.items():
        assert forgetting_score([eps], num_models=512) == points, eps
    assert forgetting_score(list(cases), num_models=512) == pytest.approx(
        sum(cases.values()) / len(cases)
    )


def test_forgetting_score_small_ensembles():
    # ceil(ln 3) = 2: buckets up to 2.0.
    assert forgetting_score([1.9, 2.0], num_models=4) == pytest.approx((2.0**-3 + 0.0) / 2)
    assert forgetting_score([0.0], num_models=2) == 0.0  # ceil(ln 1) = 0: no buckets.


@pytest.mark.parametrize(
    "eps, num_models, match",
    [([0.1], 1, "num_models"), ([], 10, "empty"), ([np.nan], 10, "NaN"), ([-1.0], 10, "negative")],
)
def test_forgetting_score_bad_input(eps, num_models, match):
    with pytest.raises(ValueError, match=match):
        forgetting_score(eps, num_models=num_models)


def test_competition_score_identical_models_is_accuracy_ratio():
    logits = np.random.default_rng(8).normal(0, 2, (16, 5, 4))
    labels = np.array([0, 1, 2, 3, 0])
    score = competition_score(
        logits,
        logits.copy(),
        labels,
        ra_unlearned=0.9,
        ra_retrained=1.0,
        ta_unlearned=np.array([0.7, 0.9]),
        ta_retrained=0.9,
    )
    assert score == pytest.approx(1.0 * 0.9 * (0.8 / 0.9))


def test_competition_score_separated_models_is_zero():
    rng = np.random.default_rng(9)
    unlearned = rng.normal(0, 0.1, (16, 3, 2))
    retrained = unlearned.copy()
    retrained[..., 0] += 10.0  # Retrained models are far more confident in class 0.
    score = competition_score(
        unlearned,
        retrained,
        np.zeros(3, int),
        ra_unlearned=1.0,
        ra_retrained=1.0,
        ta_unlearned=1.0,
        ta_retrained=1.0,
    )
    assert score == 0.0


def test_competition_score_bad_input():
    logits = np.zeros((4, 3, 2))
    with pytest.raises(ValueError, match="same shape"):
        competition_score(
            logits,
            np.zeros((4, 3, 3)),
            np.zeros(3, int),
            ra_unlearned=1,
            ra_retrained=1,
            ta_unlearned=1,
            ta_retrained=1,
        )
    with pytest.raises(ValueError, match="ra_retrained"):
        competition_score(
            logits,
            logits,
            np.zeros(3, int),
            ra_unlearned=1,
            ra_retrained=0,
            ta_unlearned=1,
            ta_retrained=1,
        )
    with pytest.raises(ValueError, match="labels"):
        competition_score(
            logits,
            logits,
            np.zeros(4, int),
            ra_unlearned=1,
            ra_retrained=1,
            ta_unlearned=1,
            ta_retrained=1,
        )
