"""Tests of membership audits (jaxunlearn.audit.membership)."""

import math

import numpy as np
import pytest
import scipy.spatial.distance
from sklearn.metrics import roc_auc_score

from jaxunlearn.audit.membership import roc_auc, tpr_at_fpr, ulira, zrf_score

# ------------------------------------------------------------------------------------------------
# ROC helpers


def test_roc_auc_hand_cases():
    assert roc_auc([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0, 1, 2, 3], [1, 1, 0, 0]) == 0.0
    assert roc_auc([1, 1, 1, 1], [1, 0, 1, 0]) == 0.5  # All tied.
    # One member above both non-members, one member tied with one of them: (2 + 0.5 + 0) / 4.
    assert roc_auc([5, 1, 1, 0], [True, True, False, False]) == pytest.approx(0.875)


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(0, 1, 500), 1)
    labels = rng.random(500) < 0.3
    scores[labels] += 0.4
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert roc_auc(np.r_[-np.inf, np.inf, 0.0], [0, 1, 1]) == 1.0  # Infinite scores are ranked.
    assert tpr_at_fpr(np.r_[np.inf, np.inf, -np.inf], [1, 0, 0], 0.0) == 0.0


def test_tpr_at_fpr_hand_cases():
    scores = [4.0, 3.0, 2.0, 1.0]
    labels = [1, 0, 1, 0]
    assert tpr_at_fpr(scores, labels, 0.0) == 0.5
    assert tpr_at_fpr(scores, labels, 0.49) == 0.5
    assert tpr_at_fpr(scores, labels, 0.5) == 1.0
    # Tied scores cannot be split: the only rule with FPR 0 admits nobody.
    assert tpr_at_fpr([1.0, 1.0], [1, 0], 0.0) == 0.0
    assert tpr_at_fpr([1.0, 1.0], [1, 0], 1.0) == 1.0


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        ([1.0, 2.0], [1, 1], "both"),
        ([1.0, 2.0], [1, 2], "boolean or 0/1"),
        ([1.0, np.nan], [1, 0], "NaN"),
        ([1.0, 2.0, 3.0], [1, 0], "same size"),
    ],
)
def test_roc_bad_input(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        roc_auc(scores, labels)


def test_tpr_at_fpr_bad_fpr():
    with pytest.raises(ValueError, match="fpr"):
        tpr_at_fpr([1.0, 0.0], [1, 0], 1.5)


# ------------------------------------------------------------------------------------------------
# ZRF


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_zrf_matches_jensen_shannon_from_scipy():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 2, (30, 10))
    b = rng.normal(0, 2, (30, 10))
    # scipy returns the Jensen-Shannon *distance*, the square root of the divergence (natural log).
    js = scipy.spatial.distance.jensenshannon(_softmax(a), _softmax(b), axis=1) ** 2
    assert zrf_score(a, b) == pytest.approx(1.0 - js.mean(), rel=1e-10)


def test_zrf_bounds():
    a = np.random.default_rng(2).normal(0, 1, (8, 5))
    assert zrf_score(a, a.copy()) == 1.0  # Same outputs as the random teacher.
    # Disjoint supports (up to exp(-1000)): JS = ln 2, the minimum ZRF.
    confident = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    assert zrf_score(confident, confident[::-1]) == pytest.approx(1.0 - math.log(2.0), abs=1e-12)


def test_zrf_reference_code_reduction():
    rng = np.random.default_rng(3)
    a = rng.normal(0, 1, (6, 4))
    b = rng.normal(0, 1, (6, 4))
    p, q = _softmax(a), _softmax(b)
    m = (p + q) / 2
    # KL(m || p) and KL(m || q), averaged over every (example, class) entry.
    expected = 1.0 - (0.5 * np.mean(m * np.log(m / p)) + 0.5 * np.mean(m * np.log(m / q)))
    assert zrf_score(a, b, match_reference_code=True) == pytest.approx(expected, rel=1e-10)


def test_zrf_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        zrf_score(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="unlearned_logits must be finite"):
        zrf_score(np.full((2, 3), np.nan), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="C >= 2"):
        zrf_score(np.zeros((3, 1)), np.zeros((3, 1)))


# ------------------------------------------------------------------------------------------------
# U-LiRA


def _ulira_world(seed, gap, n_in=16, n_out=16, n_examples=200, n_targets=4):
    """Per-example baseline confidences; 'in' shadows and member targets are shifted by ``gap``."""
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 3, n_examples)
    shadow_in = base + gap + rng.normal(0, 1, (n_in, n_examples))
    shadow_out = base + rng.normal(0, 1, (n_out, n_examples))
    member = rng.random((n_targets, n_examples)) < 0.5
    target = base + gap * member + rng.normal(0, 1, (n_targets, n_examples))
    return target, shadow_in, shadow_out, member


def test_ulira_detects_a_trace_left_by_unlearning():
    target, shadow_in, shadow_out, member = _ulira_world(4, gap=2.0)
    out = ulira(target, shadow_in, shadow_out, target_is_member=member)
    assert out["scores"].shape == target.shape
    assert out["auc"] > 0.8
    assert out["tpr_at_1pct_fpr"] > 0.05
    per_example = ulira(
        target, shadow_in, shadow_out, target_is_member=member, fixed_variance=False, center="mean"
    )
    assert per_example["auc"] > 0.75


def test_ulira_is_at_chance_for_perfect_unlearning():
    target, shadow_in, shadow_out, member = _ulira_world(5, gap=0.0, n_targets=20)
    out = ulira(target, shadow_in, shadow_out, target_is_member=member)
    assert abs(out["auc"] - 0.5) < 0.05


def test_ulira_score_formula():
    shadow_in = np.array([[1.0], [3.0], [2.0]])  # median 2, RMS deviation sqrt(2/3)
    shadow_out = np.array([[0.0], [0.0], [0.0], [0.0]])  # median 0, spread 0 -> floored
    out = ulira(np.array([1.5]), shadow_in, shadow_out, min_std=0.5)
    s_in = math.sqrt(2.0 / 3.0)
    expected = (-0.5 * ((1.5 - 2.0) / s_in) ** 2 - math.log(s_in)) - (
        -0.5 * (1.5 / 0.5) ** 2 - math.log(0.5)
    )
    assert out["scores"].shape == (1,)
    assert out["scores"][0] == pytest.approx(expected, rel=1e-12)
    assert math.isnan(out["auc"]) and math.isnan(out["tpr_at_1pct_fpr"])


def test_ulira_nan_masks_equal_dropping_the_entries():
    target, shadow_in, shadow_out, member = _ulira_world(6, gap=1.0, n_examples=3, n_targets=6)
    masked = shadow_in.copy()
    masked[:5, 1] = np.nan  # Five shadows did not train-then-unlearn example 1.
    out = ulira(target, masked, shadow_out, fixed_variance=False)
    reference = ulira(target[:, 1:2], shadow_in[5:, 1:2], shadow_out[:, 1:2], fixed_variance=False)
    np.testing.assert_allclose(out["scores"][:, 1], reference["scores"][:, 0], rtol=1e-12)


@pytest.mark.parametrize(
    "target, shadow_in, shadow_out, kwargs, match",
    [
        (np.zeros((2, 3)), np.zeros((1, 3)), np.zeros((4, 3)), {}, "shadow_unlearned must hold"),
        (np.zeros((2, 3)), np.zeros((4, 3)), np.zeros((4, 2)), {}, "shadow_never_seen has 2"),
        (np.full((2, 3), np.nan), np.zeros((4, 3)), np.zeros((4, 3)), {}, "target_confidences"),
        (
            np.zeros((2, 3)),
            np.r_[np.full((1, 3), np.nan), np.full((1, 3), np.nan)],
            np.zeros((4, 3)),
            {},
            "shadow_unlearned has no",
        ),
        (
            np.zeros((2, 3)),
            np.r_[np.zeros((1, 3)), np.full((1, 3), np.nan)],
            np.zeros((4, 3)),
            {"fixed_variance": False},
            "at least 2 shadow models per example",
        ),
        (np.zeros((2, 3)), np.zeros((4, 3)), np.zeros((4, 3)), {"center": "mode"}, "center"),
        (
            np.zeros((2, 3)),
            np.zeros((4, 3)),
            np.zeros((4, 3)),
            {"target_is_member": np.ones((2, 2), bool)},
            "target_is_member",
        ),
    ],
)
def test_ulira_bad_input(target, shadow_in, shadow_out, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ulira(target, shadow_in, shadow_out, **kwargs)
