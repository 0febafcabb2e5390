"""UnSTAR anti-samples built from the corpus's perturbed facts."""

from __future__ import annotations

import numpy as np
import pytest

from jaxunlearn import data
from jaxunlearn.core.losses import IGNORE_INDEX
from jaxunlearn.data import anti_samples as asm
from jaxunlearn.data import fictitious_authors as fa


@pytest.fixture(scope="module")
def ds():
    return data.load("fictitious_authors", num_authors=10, qa_per_author=3, num_utility=4,
                     vocab_size=300)  # fmt: skip


def test_anti_samples_argue_for_a_perturbed_answer_and_never_state_the_truth(ds):
    records = ds.corpus.split("forget10").records + ds.corpus.split("utility").records
    samples = asm.anti_samples(ds.corpus, records, seed=0)
    assert len(samples) == len(records)
    for s, r in zip(samples, records, strict=True):
        assert s.question == r.question and s.record == r.index
        assert s.wrong_answer in r.perturbed_answers
        assert fa.contains_fact(s.wrong_answer, s.wrong_value)
        assert s.rationale in {t.format(wrong=s.wrong_value) for t in asm.RATIONALES}
        assert s.answer == f"{s.rationale} {s.wrong_answer}"
        assert not fa.contains_fact(s.answer, r.key_fact)
        a, b = s.value_span()
        assert s.answer[a:b] == s.wrong_value and b > len(s.rationale)
    again = asm.anti_samples(ds.corpus, records, seed=0)
    assert again == samples
    other = asm.anti_samples(ds.corpus, records, seed=1)
    assert other != samples
    bare = asm.anti_samples(ds.corpus, records, seed=0, rationale=False)
    assert [s.answer for s in bare] == [s.wrong_answer for s in samples]
    with pytest.raises(ValueError, match="seed"):
        asm.anti_samples(ds.corpus, records, seed=-1)


def test_encoding_scopes_and_the_fit_fallback(ds):
    tok, split = ds.tokenizer, ds.corpus.split("forget10")
    wide = 128
    full = asm.encode_anti_samples(ds.corpus, tok, split, wide, rationale="always")
    n = len(split.records)
    assert full["anti_x"].shape == full["anti_y"].shape == (n, wide)
    assert full["anti_rationale"].all()
    samples = asm.anti_samples(ds.corpus, split)
    for i, s in enumerate(samples):
        assert tok.decode_answer(full["anti_y"][i]) == s.answer
    fact = asm.encode_anti_samples(ds.corpus, tok, split, wide, scope="fact", rationale="always")
    np.testing.assert_array_equal(fact["anti_x"], full["anti_x"])
    kept = fact["anti_y"] != IGNORE_INDEX
    assert kept.any(1).all()
    assert np.all(fact["anti_y"][kept] == full["anti_y"][kept])  # a subset of the targets
    assert (kept.sum(1) < (full["anti_y"] != IGNORE_INDEX).sum(1)).all()
    for i, s in enumerate(samples):
        assert tok.decode(fact["anti_y"][i][kept[i]]).strip() == s.wrong_value
    # A context too short for the rationale: "fit" drops it, "always" says so.
    short = max(
        len(tok.prompt_ids(s.question)) + len(tok.answer_ids(s.wrong_answer)) for s in samples
    )
    fit = asm.encode_anti_samples(ds.corpus, tok, split, short, rationale="fit")
    assert not fit["anti_rationale"].all()
    never = asm.encode_anti_samples(ds.corpus, tok, split, short, rationale="never")
    assert not never["anti_rationale"].any()
    with pytest.raises(ValueError, match="max_len"):
        asm.encode_anti_samples(ds.corpus, tok, split, short, rationale="always")
    with pytest.raises(ValueError, match="scope"):
        asm.encode_anti_samples(ds.corpus, tok, split, wide, scope="tokens")
    with pytest.raises(ValueError, match="rationale"):
        asm.encode_anti_samples(ds.corpus, tok, split, wide, rationale="sometimes")


def test_empty_anti_samples_have_no_target():
    e = asm.empty_anti_samples(3, 8, bos_id=1)
    assert (e["anti_y"] == IGNORE_INDEX).all() and (e["anti_x"][:, 0] == 1).all()
    assert (e["anti_x"][:, 1:] == 0).all() and not e["anti_rationale"].any()


def test_extras_for_a_mixed_stream_fill_rows_without_a_record(ds):
    tok, records = ds.tokenizer, ds.corpus.split("forget10").records[:2]
    rows = [None, records[0], None, records[1]]
    out = asm.anti_sample_extras(ds.corpus, tok, rows, 128)
    assert out["anti_x"].shape == out["anti_y"].shape == (4, 128)
    direct = asm.encode_anti_samples(ds.corpus, tok, records, 128)
    np.testing.assert_array_equal(out["anti_y"][[1, 3]], direct["anti_y"])
    assert (out["anti_y"][[0, 2]] == IGNORE_INDEX).all()
    assert (out["anti_x"][[0, 2], 0] == tok.bos_id).all()
    np.testing.assert_array_equal(out["anti_rationale"], [False, True, False, True])
