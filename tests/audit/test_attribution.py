"""UnTrac on a tiny case whose answer is known, and Spearman's rho on hand-computed ranks."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from rule_testing import LM_ANSWER, LM_PROMPT, LM_VOCAB, _qa_rows, tiny_lm_network

from jaxunlearn.audit import attribution as ut


def test_spearman_hand_computed():
    # Ranks 1,2,3,4 vs 1,3,2,4: d = (0, 1, 1, 0), rho = 1 - 6 * 2 / (4 * 15) = 0.8.
    assert ut.spearman([10, 20, 30, 40], [1, 5, 2, 9]) == pytest.approx(0.8)
    assert ut.spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # Ties take average ranks: a -> (1, 2.5, 2.5, 4), b -> (1, 2, 3, 4); Pearson of the ranks.
    ra, rb = np.array([1, 2.5, 2.5, 4]), np.array([1, 2, 3, 4.0])
    expected = np.corrcoef(ra, rb)[0, 1]
    assert ut.spearman([0, 5, 5, 9], [1, 2, 3, 4]) == pytest.approx(expected)
    assert np.isnan(ut.spearman([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match="equally long"):
        ut.spearman([1, 2], [1, 2, 3])


def test_author_groups_and_graded_rows():
    author = np.array([0, 0, 1, 1, 1, 2, 2, -1, 3, 3])
    rows = np.arange(10)
    # Authors 0..3 in two groups of two: rows {0,1,2,3,4} and {5,6,8,9}, cut to 4 rows each.
    np.testing.assert_array_equal(ut.author_groups(author, rows, 2), [[0, 1, 2, 3], [5, 6, 8, 9]])
    # Three groups of one author (author 3 is the remainder): 2 rows each.
    np.testing.assert_array_equal(ut.author_groups(author, rows, 3), [[0, 1], [2, 3], [5, 6]])
    with pytest.raises(ValueError, match="num_groups"):
        ut.author_groups(author, rows, 5)
    groups = np.array([[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(ut.graded_rows(groups, [1, 3]), [0, 3, 4, 5])
    with pytest.raises(ValueError, match="counts"):
        ut.graded_rows(groups, [1, 4])
    with pytest.raises(ValueError, match="no row"):
        ut.graded_rows(groups, [0, 0])


def test_bad_groups_are_rejected():
    with pytest.raises(ValueError, match="groups"):
        ut.check_groups([[0, 1], [2]], 4)
    with pytest.raises(ValueError, match="K >= 2"):
        ut.check_groups([[0, 1]], 4)
    with pytest.raises(ValueError, match="outside"):
        ut.check_groups([[0, 1], [2, 9]], 4)
    with pytest.raises(ValueError, match="overlap"):
        ut.check_groups([[0, 1], [1, 2]], 4)
    net = tiny_lm_network()
    x = np.ones((4, 8), np.int32)
    with pytest.raises(ValueError, match="steps"):
        ut.untrac(
            net.apply, None, x, x, [[0, 1], [2, 3]], (x, x),
            steps=0, learning_rate=1e-3, batch_size=2, key=jax.random.key(0),
        )  # fmt: skip


def test_untrac_ranks_the_dataset_the_test_set_comes_from_first():
    # Three datasets of 8 random QA rows each; the test set is dataset 1's questions, so the
    # test loss rests on dataset 1 alone (the others are unrelated random answers).
    rng = np.random.default_rng(0)
    n, k = 8, 3
    prompts = rng.integers(1, LM_VOCAB, (n * k, LM_PROMPT))
    x, y = _qa_rows(rng, prompts, rng.integers(1, LM_VOCAB, (n * k, LM_ANSWER)))
    groups = np.arange(n * k).reshape(k, n)
    test = (x[groups[1]], y[groups[1]])
    net = tiny_lm_network()
    result = ut.run_untrac(
        net.apply,
        net.init(jax.random.key(0)),
        x,
        y,
        groups,
        test,
        train_steps=40,
        train_learning_rate=0.02,
        unlearn_steps=3,
        unlearn_learning_rate=1e-3,
        batch_size=8,
        key=jax.random.key(1),
    )
    assert result.test_loss < 0.5  # the full model has memorised dataset 1
    assert int(np.argmax(result.exact)) == 1  # retraining without it loses the test set
    assert result.exact[1] > 2.0 and abs(result.exact[0]) < result.exact[1] / 4
    assert int(np.argmax(result.untrac)) == 1
    assert int(np.argmax(result.untrac_inv)) == 1
    assert result.untrac[1] > 0
    assert result.spearman_untrac == pytest.approx(ut.spearman(result.untrac, result.exact))
    # untrac alone from the same model gives the same scores (it is what run_untrac calls).
    assert result.untrac.shape == result.untrac_inv.shape == (k,)
