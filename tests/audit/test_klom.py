"""Tests of KLoM and margins (jaxunlearn.audit.klom)."""

import math

import numpy as np
import pytest
import scipy.stats

from jaxunlearn.audit.klom import _edges, _histogram_counts, klom, margins


def _direct_klom(unlearned, oracle, bins=20, clip=100.0, floor=1e-5):
    """Per-example np.histogram + scipy.stats.entropy: the definition, one example at a time."""
    out = []
    for i in range(unlearned.shape[1]):
        a = np.clip(unlearned[:, i], -clip, clip)
        b = np.clip(oracle[:, i], -clip, clip)
        lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
        if hi <= lo:
            hi = lo + 1.0
        p = np.histogram(a, bins=bins, range=(lo, hi))[0] / a.size
        q = np.histogram(b, bins=bins, range=(lo, hi))[0] / b.size
        q = np.where(p > 0, np.maximum(q, floor), q)
        out.append(scipy.stats.entropy(p, q))
    return np.array(out)


def _awkward_margins(seed):
    rng = np.random.default_rng(seed)
    u = rng.normal(0, 1, (40, 12))
    o = rng.normal(0.5, 1.5, (55, 12))
    u[:, 0] = 3.0  # Both constant and equal: range [3, 4].
    o[:, 0] = 3.0
    u[:, 1] = np.round(u[:, 1], 1)  # Ties, values on bin edges.
    o[:, 1] = np.round(o[:, 1], 1)
    u[:4, 2] = 250.0  # Clipped.
    o[:, 3] = -np.inf  # Clipped to -100.
    u[:, 4] = np.linspace(-1, 1, 40)  # Exactly on a regular grid, including the max.
    o[:, 4] = np.linspace(-1, 1, 55)
    u[:, 5] = 0.0  # One constant sample.
    return u, o


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_klom_matches_direct_histogram_computation(seed):
    u, o = _awkward_margins(seed)
    np.testing.assert_allclose(klom(u, o), _direct_klom(u, o), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        klom(u, o, bins=7, clip=2.0), _direct_klom(u, o, bins=7, clip=2.0), rtol=1e-12, atol=1e-14
    )


@pytest.mark.parametrize("seed", [3, 4])
def test_vectorised_histogram_counts_equal_np_histogram(seed):
    u, o = _awkward_margins(seed)
    values = np.clip(np.concatenate([u[:40], o[:40]], axis=0), -100, 100)
    lo, hi = values.min(axis=0), values.max(axis=0)
    hi = np.where(hi > lo, hi, lo + 1.0)
    edges = _edges(lo, hi, 20)
    counts = _histogram_counts(values, lo, hi, edges, 20)
    for i in range(values.shape[1]):
        hist, hist_edges = np.histogram(values[:, i], bins=20, range=(lo[i], hi[i]))
        np.testing.assert_array_equal(edges[i], hist_edges)
        np.testing.assert_array_equal(counts[i], hist)


def test_klom_of_identical_samples_is_zero():
    m = np.random.default_rng(5).normal(0, 3, (30, 8))
    np.testing.assert_array_equal(klom(m, m.copy()), 0.0)
    const = np.full((4, 2), -7.0)
    np.testing.assert_array_equal(klom(const, const.copy()), 0.0)


def test_klom_keeps_the_maximum_and_floors_q():
    # Unlearned margins {0, 1}, oracle margins {0, 0}: range [0, 1], 20 bins. p = (1/2 in the first
    # bin, 1/2 in the last, closed, bin); q = (1 in the first bin), floored to 1e-5 in the last bin
    # and renormalised.
    u = np.array([[0.0], [1.0]])
    o = np.array([[0.0], [0.0]])
    z = 1.0 + 1e-5
    expected = 0.5 * math.log(0.5 / (1.0 / z)) + 0.5 * math.log(0.5 / (1e-5 / z))
    assert klom(u, o)[0] == pytest.approx(expected, rel=1e-12)


def test_klom_is_kl_of_unlearned_from_oracle():
    # Unlearned all in one bin, oracle split: KL(p || q) = log 2; the reverse would be much larger.
    u = np.array([[0.0], [0.0], [0.0], [0.0]])
    o = np.array([[0.0], [0.0], [1.0], [1.0]])
    assert klom(u, o)[0] == pytest.approx(math.log(2.0), rel=1e-12)
    assert klom(o, u)[0] > 5.0


def test_klom_direction_published_is_kl_of_oracle_from_unlearned():
    # Hand case: unlearned margins all in the first of 20 bins over [0, 1], oracle margins half in
    # the first and half in the last bin.
    u = np.array([[0.0], [0.0], [0.0], [0.0]])
    o = np.array([[0.0], [0.0], [1.0], [1.0]])
    # KL(unlearned || oracle) = 1 * log(1 / 0.5).
    assert klom(u, o, direction="unlearned_vs_oracle")[0] == pytest.approx(math.log(2.0))
    # data-unlearning-bench's published KL(oracle || unlearned): the unlearned histogram is
    # floored at 1e-5 in the last bin and renormalised by z = 1 + 1e-5.
    z = 1.0 + 1e-5
    published = 0.5 * math.log(0.5 / (1.0 / z)) + 0.5 * math.log(0.5 / (1e-5 / z))
    assert klom(u, o, direction="oracle_vs_unlearned")[0] == pytest.approx(published, rel=1e-12)
    assert published > 5.0 > math.log(2.0)  # the two directions differ
    # On awkward samples, each direction is the definition with its arguments in that order
    # (the reference's compute_binned_KL_div(oracle, unlearned), as its run.py calls it).
    u, o = _awkward_margins(3)
    forward, reverse = klom(u, o), klom(u, o, direction="oracle_vs_unlearned")
    np.testing.assert_allclose(forward, _direct_klom(u, o), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(reverse, _direct_klom(o, u), rtol=1e-10, atol=1e-12)
    assert not np.allclose(forward, reverse)
    with pytest.raises(ValueError, match="direction must be one of"):
        klom(u, o, direction="symmetric")


def test_margins_shapes_and_value():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    labels = np.array([0, 2])
    expected = np.array([2.0 - math.log(math.e + 1.0), 3.0 - math.log(2.0)])
    np.testing.assert_allclose(margins(logits, labels), expected, rtol=1e-12)
    ensemble = np.stack([logits, logits + 1.0, 2 * logits])
    out = margins(ensemble, labels)
    assert out.shape == (3, 2)
    np.testing.assert_allclose(out[1], expected, rtol=1e-12)  # Shift invariant.


@pytest.mark.parametrize(
    "u, o, kwargs, match",
    [
        (np.zeros((1, 3)), np.zeros((4, 3)), {}, "unlearned_margins must hold at least 2"),
        (np.zeros((4, 3)), np.zeros((1, 3)), {}, "oracle_margins must hold at least 2"),
        (np.zeros((4, 3)), np.zeros((4, 2)), {}, "same number of examples"),
        (np.array([[np.nan], [0.0]]), np.zeros((2, 1)), {}, "unlearned_margins contains NaN"),
        (np.zeros((2, 1)), np.array([[np.nan], [0.0]]), {}, "oracle_margins contains NaN"),
        (np.zeros(3), np.zeros(3), {}, "n_models, n_examples"),
        (np.zeros((2, 1)), np.zeros((2, 1)), {"bins": 0}, "bins"),
        (np.zeros((2, 1)), np.zeros((2, 1)), {"clip": 0.0}, "clip"),
    ],
)
def test_klom_bad_input(u, o, kwargs, match):
    with pytest.raises(ValueError, match=match):
        klom(u, o, **kwargs)


def test_margins_bad_input():
    with pytest.raises(ValueError, match="finite"):
        margins(np.array([[np.nan, 0.0]]), np.array([0]))
