"""A forget set sampled from the model about a named target: dedup, shapes, bad input."""

from __future__ import annotations

import functools

import jax
import numpy as np
import pytest

from jaxunlearn import data, models
from jaxunlearn.core.losses import IGNORE_INDEX
from jaxunlearn.data import synthetic_forget as sf

TEMPLATES = ("Who is {name}?", "Tell me about {name}.", "Tell me about {name}'s books.")


@functools.cache
def _setup():
    ds = data.load("fictitious_authors", num_authors=10, qa_per_author=2, num_utility=4,
                   vocab_size=300)  # fmt: skip
    tok = ds.tokenizer
    net = models.make_network(
        "transformer", vocab_size=tok.vocab_size, max_len=64, d_model=16, num_layers=1,
        num_heads=2,
    )  # fmt: skip
    return ds, tok, net, net.init(jax.random.key(0))


def test_ngram_overlap_and_deduplicate_hand_computed():
    # Bigrams {a b, b c} vs {a b, b d}: one shared of three.
    assert sf.ngram_overlap("a b c", "A b d", n=2) == pytest.approx(1 / 3)
    assert sf.ngram_overlap("", "", n=2) == 0.0
    assert sf.ngrams("one", 3) == frozenset([("one",)])
    texts = ["a b c d", "a b c d", "x y z", "", "a b c e"]
    # "a b c e" shares {a b, b c} of {a b, b c, c d, c e} with the first: 0.5.
    assert sf.deduplicate(texts, n=2, max_overlap=0.5) == [0, 2]
    assert sf.deduplicate(texts, n=2, max_overlap=0.6) == [0, 2, 4]
    np.testing.assert_array_equal(
        sf.mentions(["About Ava Lund.", "ava lunde"], "Ava Lund"), [True, False]
    )


def test_builder_returns_distinct_rows_about_the_target_in_qa_form():
    ds, tok, net, variables = _setup()
    target = ds.corpus.authors[0].name
    out = sf.synthetic_forget_set(
        net, variables, tok, target, key=jax.random.key(1), samples=4, templates=TEMPLATES,
        max_new_tokens=8,
    )  # fmt: skip
    n = len(out.answers)
    assert out.num_sampled == 12 and 1 <= n <= 12
    assert out.tokens.shape == out.labels.shape == (n, 64)
    assert len(out.questions) == n and set(out.questions) <= {
        t.format(name=target) for t in TEMPLATES
    }
    for i in range(n):
        for j in range(i):
            assert sf.ngram_overlap(out.answers[i], out.answers[j]) < 0.5
    assert sf.mentions([tok.decode(row) for row in out.tokens], target).all()
    assert sf.mentions(out.questions, target).all()
    # Labels are the answer tokens, pre-shifted: labels[t] = tokens[t + 1].
    for row_x, row_y, answer in zip(out.tokens, out.labels, out.answers, strict=True):
        t = np.flatnonzero(row_y != IGNORE_INDEX)
        assert len(t) >= 1 and np.all(np.diff(t) == 1)
        np.testing.assert_array_equal(row_y[t], row_x[t + 1])
        assert tok.decode_answer(row_y) == answer
    # Near-greedy sampling repeats itself: dedup keeps at most one answer per prompt. An untrained
    # model's logits nearly tie, so its output layer is scaled up to make every choice decisive.
    sharp = {**variables, "params": {**variables["params"]}}
    sharp["params"]["lm_head"] = jax.tree.map(lambda w: 1e3 * w, variables["params"]["lm_head"])
    cold = sf.synthetic_forget_set(
        net, sharp, tok, target, key=jax.random.key(1), samples=4, templates=TEMPLATES,
        max_new_tokens=8, temperature=1e-4,
    )  # fmt: skip
    assert len(cold.answers) <= len(TEMPLATES) < cold.num_sampled


def test_bad_input_is_rejected():
    ds, tok, net, variables = _setup()
    call = functools.partial(sf.synthetic_forget_set, net, variables, tok, key=jax.random.key(0))
    with pytest.raises(ValueError, match="target"):
        call("  ")
    with pytest.raises(ValueError, match="samples"):
        call("Ava Lund", samples=0)
    with pytest.raises(ValueError, match="name"):
        call("Ava Lund", templates=("Who is she?",))
    with pytest.raises(ValueError, match="temperature"):
        call("Ava Lund", temperature=0.0)
    with pytest.raises(ValueError, match="max_overlap"):
        call("Ava Lund", max_overlap=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        call("Ava Lund", templates=TEMPLATES, max_new_tokens=60)
