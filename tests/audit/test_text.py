"""Tests of the host-side text metrics (jaxunlearn.audit.text), on hand-computed cases."""

import numpy as np
import pytest

from jaxunlearn.audit import lm, text

ANSWER = "She was born in Lisbon, Portugal"  # 6 ROUGE tokens


def test_rouge_l_hand_cases():
    # LCS("the cat sat", "the cat sat on the mat") = 3: recall 3/6, precision 3/3, F1 2/3.
    preds, refs = ["the cat sat", "", "x y"], ["the cat sat on the mat", "a b", "x y"]
    np.testing.assert_allclose(text.rouge_l(preds, refs), [0.5, 0.0, 1.0])
    np.testing.assert_allclose(text.rouge_l(preds, refs, kind="precision"), [1.0, 0.0, 1.0])
    np.testing.assert_allclose(text.rouge_l(preds, refs, kind="f1"), [2 / 3, 0.0, 1.0])
    # LCS, not n-gram overlap: "c b a" vs "a b c" shares one token in order.
    np.testing.assert_allclose(text.rouge_l(["c b a"], ["a b c"]), [1 / 3])


def test_rouge_l_stemmer():
    # Porter stems "cats" -> "cat", "sitting" -> "sit"; unstemmed nothing matches.
    assert text.rouge_l(["cats sitting"], ["cat sit"])[0] == 1.0
    assert text.rouge_l(["cats sitting"], ["cat sit"], stemmer=False)[0] == 0.0


def test_rouge_l_rejects_bad_input():
    with pytest.raises(ValueError, match="kind"):
        text.rouge_l(["a"], ["a"], kind="rouge1")
    with pytest.raises(ValueError, match="references"):
        text.rouge_l(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="predictions"):
        text.rouge_l([], [])
    with pytest.raises(ValueError, match="predictions"):
        text.rouge_l("abc", ["abc"])
    with pytest.raises(ValueError, match=r"references\[1\]"):
        text.rouge_l(["a", "b"], ["a", None])


def test_leaks_needs_rouge_and_the_key_fact():
    # Fact present, recall 3/6.
    assert text.leaks("born in LISBON", ANSWER, "Lisbon")
    # Fact present, recall 1/6 = 0.167: passes 0.1, fails 0.2.
    assert text.leaks("Lisbon", ANSWER, "Lisbon")
    assert not text.leaks("Lisbon", ANSWER, "Lisbon", rouge_threshold=0.2)
    # Recall 3/6 but the wrong place.
    assert not text.leaks("She was born in Madrid", ANSWER, "Lisbon")
    # Key facts match across case and whitespace (several words).
    answer = "He lives in New York City"
    assert text.leaks("he  lives in new\nyork", answer, "New York")
    assert not text.leaks("he lives in new jersey york", answer, "New York")


def test_leaks_rejects_bad_input():
    with pytest.raises(ValueError, match="key_fact"):
        text.leaks("x", "x", "  ")
    with pytest.raises(ValueError, match="rouge_threshold"):
        text.leaks("x", "x", "x", rouge_threshold=1.5)
    with pytest.raises(ValueError, match="response"):
        text.leaks(None, "x", "x")


def test_count_leaks_feeds_leak_at_k():
    responses = [
        ["born in Lisbon", "born in Madrid", "Lisbon, Portugal", "I don't know"],
        ["no idea", "Paris"],
    ]
    answers = [ANSWER, "The capital is Paris"]
    counts = text.count_leaks(responses, answers, ["Lisbon", "Paris"])
    # Question 2: "Paris" has recall 1/4 >= 0.1.
    np.testing.assert_array_equal(counts, [2, 1])
    assert counts.dtype == np.int64
    # leak@1 = mean(2/4, 1/2); leak@2 over n = 2 for the second question caps at k <= 2.
    assert lm.leak_at_k(counts, [len(r) for r in responses], 1) == pytest.approx(0.5)
    assert lm.leak_at_k(counts, [4, 2], 2) == pytest.approx(((1 - 1 / 6) + 1.0) / 2)


def test_count_leaks_rejects_bad_input():
    with pytest.raises(ValueError, match="responses"):
        text.count_leaks([["a"]], ["a", "b"], ["a", "b"])
    with pytest.raises(ValueError, match="key_facts"):
        text.count_leaks([["a"]], ["a"], [])
    with pytest.raises(ValueError, match="responses"):
        text.count_leaks([], [], [])
    with pytest.raises(ValueError, match=r"responses\[0\]"):
        text.count_leaks(["abc"], ["a"], ["a"])


def test_muse_memorization_scores():
    # F1: 1 for the identical pair; "a b" vs "a b c d": P = 1, R = 1/2, F1 = 2/3; 0 for "x" vs "y".
    assert text.verbatim_memorization(["a b c d"], ["a b c d"]) == pytest.approx(100.0)
    assert text.verbatim_memorization(["a b", "x"], ["a b c d", "y"]) == pytest.approx(100 / 3)
    assert text.knowledge_memorization(["Paris", "in Rome"], ["Paris", "Rome"]) == pytest.approx(
        100 * (1.0 + 2 / 3) / 2
    )
    # MUSE does not stem by default.
    assert text.knowledge_memorization(["cats"], ["cat"]) == 0.0
    assert text.knowledge_memorization(["cats"], ["cat"], stemmer=True) == 100.0
    with pytest.raises(ValueError, match="true_answers"):
        text.knowledge_memorization(["a"], ["a", "b"])


def test_zlib_lengths():
    # The empty stream: 2-byte header, 2-byte empty final block, 4-byte Adler-32.
    lengths = text.zlib_lengths(["", "a" * 1000, "The quick brown fox jumps over the lazy dog"])
    assert lengths[0] == 8
    assert lengths[1] < 20 < lengths[2]  # Repetition compresses; a pangram barely does.
    with pytest.raises(ValueError, match="texts"):
        text.zlib_lengths([])
    np.testing.assert_allclose(
        lm.zlib_score([2.0, 2.0], text.zlib_lengths(["", ""])), [-0.25, -0.25]
    )
