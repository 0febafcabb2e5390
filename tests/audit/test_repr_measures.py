"""RankMe, uniformity and alignment on hand-computed cases; CKA between encoders."""

import math

import numpy as np
import pytest

from jaxunlearn import audit


def test_effective_rank_hand_computed():
    # Singular values (3, 1): p = (3/4, 1/4) (+1e-7) -> exp(H(p)).
    x = np.array([[3.0, 0.0], [0.0, 1.0]])
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert audit.effective_rank(x) == pytest.approx(math.exp(h), rel=1e-5)
    # Equal singular values: rank = dimension; rank one: 1.
    assert audit.effective_rank(np.eye(4) * 2.5) == pytest.approx(4.0, rel=1e-5)
    ones = np.outer(np.arange(1, 6), [1.0, 2.0, 3.0])
    assert audit.effective_rank(ones) == pytest.approx(1.0, abs=1e-4)
    assert audit.effective_rank(np.zeros((3, 2))) == 0.0


def test_effective_rank_matches_the_formula_on_random_features():
    x = np.random.default_rng(0).normal(size=(20, 6))
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum() + 1e-7
    assert audit.effective_rank(x) == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-4)


def test_uniformity_hand_computed():
    # Two antipodal points: ||a - b||^2 = 4 -> log exp(-2 * 4) = -8.
    assert audit.uniformity(np.array([[1.0, 0.0], [-3.0, 0.0]])) == pytest.approx(-8.0)
    # Three points at 120 degrees: ||a - b||^2 = 3 for every pair -> -6.
    angles = np.array([0, 2, 4]) * np.pi / 3
    pts = np.stack([np.cos(angles), np.sin(angles)], 1)
    assert audit.uniformity(pts) == pytest.approx(-6.0, rel=1e-5)
    # A collapsed embedding: every distance 0 -> log 1 = 0 (the worst score).
    assert audit.uniformity(np.ones((4, 3))) == pytest.approx(0.0, abs=1e-6)
    assert audit.uniformity(pts, t=1.0) == pytest.approx(-3.0, rel=1e-5)


def test_alignment_hand_computed():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    b = np.array([[0.0, 5.0], [0.0, 1.0]])
    # Pair 1 orthogonal: ||e1 - e2||^2 = 2; pair 2 identical directions: 0 -> mean 1.
    assert audit.alignment(a, b) == pytest.approx(1.0)
    assert audit.alignment(a, b, alpha=1.0) == pytest.approx(math.sqrt(2) / 2)
    assert audit.alignment(a, 3 * a) == pytest.approx(0.0, abs=1e-7)


def test_linear_cka_compares_two_encoders():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(30, 5))
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    assert audit.linear_cka(x, 2.0 * x @ q) == pytest.approx(1.0, abs=1e-5)
    assert audit.linear_cka(x, rng.normal(size=(30, 5))) < 0.5


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="at least 2 rows"):
        audit.uniformity(np.ones((1, 3)))
    with pytest.raises(ValueError, match="`t`"):
        audit.uniformity(np.eye(2), t=0.0)
    with pytest.raises(ValueError, match="one shape"):
        audit.alignment(np.eye(2), np.eye(3))
    with pytest.raises(ValueError, match="`alpha`"):
        audit.alignment(np.eye(2), np.eye(2), alpha=0)
    with pytest.raises(ValueError, match="finite"):
        audit.effective_rank(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match=r"\[n, d\]"):
        audit.effective_rank(np.ones(3))
