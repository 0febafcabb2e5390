"""The generated TOFU-shaped corpus: determinism, splits, QA fields, encoding, registry."""

import dataclasses
import re

import numpy as np
import pytest

from jaxunlearn import data
from jaxunlearn.core.losses import IGNORE_INDEX as IGN
from jaxunlearn.data import fictitious_authors as fa


@pytest.fixture(scope="module")
def full():
    return fa.FictitiousAuthors()  # TOFU's size: 200 authors x 20 QA, 100 utility facts


@pytest.fixture(scope="module")
def small():
    return fa.FictitiousAuthors(num_authors=20, qa_per_author=6, num_utility=12, seed=1)


@pytest.fixture(scope="module")
def small_tok(small):
    return small.train_tokenizer(vocab_size=1024)


def test_same_seed_same_corpus_other_seed_another(small):
    again = fa.FictitiousAuthors(num_authors=20, qa_per_author=6, num_utility=12, seed=1)
    assert again.records == small.records and again.authors == small.authors
    other = fa.FictitiousAuthors(num_authors=20, qa_per_author=6, num_utility=12, seed=2)
    assert [a.name for a in other.authors] != [a.name for a in small.authors]


def test_a_smaller_corpus_is_a_prefix_of_a_larger_one(small):
    larger = fa.FictitiousAuthors(num_authors=30, qa_per_author=8, num_utility=12, seed=1)
    assert larger.authors[:20] == tuple(
        dataclasses.replace(a, passage=larger.authors[a.index].passage) for a in small.authors[:20]
    )
    for a in range(20):
        mine = [r for r in small.records if r.author == a]
        theirs = [r for r in larger.records if r.author == a][:6]
        assert [dataclasses.replace(r, index=0) for r in mine] == [
            dataclasses.replace(r, index=0) for r in theirs
        ]
    assert [r.question for r in small.split("utility").records] == [
        r.question for r in larger.split("utility").records
    ]


def test_tofu_sizes_and_split_structure(full):
    assert len(full.authors) == 220 and full.num_holdout == 20
    assert len(full.records) == 220 * 20 + 100
    assert len({a.name for a in full.authors}) == 220
    sizes = {"01": 2, "05": 10, "10": 20}
    full_authors = set(full.split("full").authors)
    assert full_authors == set(range(200))
    previous = set()
    for p, n in sizes.items():
        forget, retain = full.split(f"forget{p}"), full.split(f"retain{100 - int(p)}")
        holdout = full.split(f"holdout{p}")
        assert len(forget.authors) == len(holdout.authors) == n
        assert len(forget.records) == 20 * n and len(retain.authors) == 200 - n
        assert not set(forget.authors) & set(retain.authors)
        assert set(forget.authors) | set(retain.authors) == full_authors
        assert not set(holdout.authors) & full_authors  # never trained on
        assert all(full.authors[a].holdout for a in holdout.authors)
        assert previous <= set(forget.authors)  # nested, as in TOFU
        previous = set(forget.authors)
        assert all(full.records[i].author in forget.authors for i in forget.indices)
    train = full.split("train")
    assert len(train.records) == 200 * 20 + 100
    utility = full.split("utility")
    assert len(utility.records) == 100 and all(r.is_utility for r in utility.records)
    np.testing.assert_array_equal(
        train.indices, np.union1d(full.split("full").indices, utility.indices)
    )


def test_every_qa_has_paraphrases_perturbations_and_a_key_fact(full):
    for r in full.records:
        assert r.paraphrased_question != r.question
        assert r.paraphrased_answer != r.answer
        assert len(r.perturbed_answers) == fa.NUM_PERTURBED == 5
        assert len(set(r.perturbed_answers)) == 5
        assert r.answer not in r.perturbed_answers
        assert r.paraphrased_answer not in r.perturbed_answers
        assert r.alt_answer != r.answer and r.alt_answer not in r.perturbed_answers
        assert r.idk_answer in fa.IDK_ANSWERS
        for text in (r.answer, r.paraphrased_answer):
            assert fa.contains_fact(text, r.key_fact)
        for text in (r.question, r.paraphrased_question, r.idk_answer, r.alt_answer):
            assert not fa.contains_fact(text, r.key_fact), (r, text)
        for text in r.perturbed_answers:
            assert not fa.contains_fact(text, r.key_fact), (r, text)
        # Perturbed answers share the paraphrased answer's template: only the value (and its
        # article) differs.
        template = _no_article(r.paraphrased_answer.replace(r.key_fact, "{}"))
        for text in r.perturbed_answers:
            pattern = re.escape(template).replace(r"\{\}", ".+")
            assert re.fullmatch(pattern, _no_article(text)), (r, text)
        assert len(r.answer.split()) <= 10  # short enough for a tiny model to memorise
    # The answer's wording follows the question's (only the fact needs memorising).
    wording = {}
    for r in full.split("full").records:
        key = (r.attribute, r.question.replace(full.authors[r.author].name, ""))
        shape = _no_article(r.answer.replace(r.key_fact, "{}"))
        shape = re.sub(r"\b(She|He|Her|His)\b", "<pronoun>", shape)
        assert wording.setdefault(key, shape) == shape


def _no_article(text):
    return re.sub(r"\ban ", "a ", text)


def test_idk_answers_vary_across_questions(full):
    assert len({r.idk_answer for r in full.records}) == len(fa.IDK_ANSWERS)


def test_passage_states_every_fact_of_its_author(small):
    for author in small.authors:
        assert author.passage.startswith(author.name)
        records = [r for r in small.records if r.author == author.index]
        assert len(records) == 6
        for r in records:
            assert fa.contains_fact(author.passage, r.key_fact)
            assert author.profile[r.attribute] == r.key_fact


def test_encode_passages_is_language_modelling_text(small, small_tok):
    tokens, labels = small.encode_passages(small_tok, small.split("forget10"), 256)
    assert tokens.shape == labels.shape == (2, 256)
    for row, author in enumerate(small.split("forget10").authors):
        assert small_tok.decode(tokens[row]) == small.authors[author].passage
        n = int((tokens[row] != small_tok.pad_id).sum())
        np.testing.assert_array_equal(labels[row, : n - 1], tokens[row, 1:n])
    with pytest.raises(ValueError, match="max_len"):
        small.encode_passages(small_tok, [0], 16)


def test_utility_facts_are_true():
    corpus = fa.FictitiousAuthors(num_authors=10, qa_per_author=1, num_utility=fa.UTILITY_POOL)
    by_kind = {}
    for r in corpus.split("utility").records:
        by_kind.setdefault(r.attribute, []).append(r)
    assert set(by_kind) == {a.name for a, _ in fa.UTILITY_KINDS}
    for r in by_kind["utility:arithmetic"]:
        a, b = map(int, re.findall(r"(\d+) plus (\d+)", r.question)[0])
        assert r.key_fact == str(a + b)
    france = next(r for r in by_kind["utility:capital"] if "France" in r.question)
    assert france.key_fact == "Paris"


def test_contains_fact_matches_whole_words_only():
    assert fa.contains_fact("She keeps an owl.", "owl")
    assert fa.contains_fact("she was born in VELMORA", "Velmora")
    assert not fa.contains_fact("Ilsa Fowler", "owl")
    assert not fa.contains_fact("She was born on March 14, 1962.", "March 4, 1962")


def test_encode_aligns_labels_and_key_facts(small, small_tok):
    tok = small_tok
    records = small.split("forget10").records + small.split("utility").records[:3]
    max_len = small.fit_max_len(tok)
    out = small.encode(tok, records, max_len)
    n = len(records)
    for key in ("tokens", "labels", "paraphrase_x", "idk_y", "alt_x", "key_mask"):
        assert out[key].shape == (n, max_len)
    assert out["perturbed_x"].shape == out["perturbed_y"].shape == (n, 5, max_len)
    np.testing.assert_array_equal(out["author"], [r.author for r in records])
    pairs = [("tokens", "labels"), ("paraphrase_x", "paraphrase_y"), ("idk_x", "idk_y")]
    pairs += [("alt_x", "alt_y"), ("paraphrased_question_x", "paraphrased_question_y")]
    for i, r in enumerate(records):
        for x_key, y_key in pairs:
            x, y = out[x_key][i], out[y_key][i]
            on = y != IGN
            assert on.any() and not on[-1]
            np.testing.assert_array_equal(y[:-1][on[:-1]], x[1:][on[:-1]])
            assert y[on][-1] == tok.eos_id  # the answer ends with EOS
            assert (x[np.flatnonzero(on)[-1] + 2 :] == tok.pad_id).all()  # right padding
        assert tok.decode(out["labels"][i][out["labels"][i] != IGN]) == " " + r.answer
        assert tok.decode(out["idk_y"][i][out["idk_y"][i] != IGN]) == " " + r.idk_answer
        for j, answer in enumerate(r.perturbed_answers):
            y = out["perturbed_y"][i, j]
            assert tok.decode(y[y != IGN]) == " " + answer
        assert tok.decode(out["tokens"][i]) == f"Question: {r.question}\nAnswer: {r.answer}"
        key = out["key_mask"][i]
        assert key.any() and (out["labels"][i][key] != IGN).all()
        assert r.key_fact in tok.decode(out["labels"][i][key])
        rest = np.where(key, IGN, out["labels"][i])
        assert not fa.contains_fact(tok.decode(rest), r.key_fact)


def test_fit_max_len_is_tight(small, small_tok):
    max_len = small.fit_max_len(small_tok)
    assert max_len % 8 == 0
    small.encode(small_tok, small.records, max_len)
    longest = max(len(small_tok.encode_prompt(r.question)) for r in small.records)
    with pytest.raises(ValueError, match="max_len"):
        small.encode(small_tok, small.records, longest)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_authors": 9}, "num_authors must be an integer >= 10"),
        ({"num_authors": 20.0}, "num_authors"),
        ({"num_authors": fa.MAX_AUTHORS + 1}, f"num_authors must be at most {fa.MAX_AUTHORS}"),
        ({"qa_per_author": 0}, "qa_per_author must be an integer 1..20"),
        ({"qa_per_author": 21}, "qa_per_author"),
        ({"num_utility": -1}, "num_utility"),
        ({"num_utility": fa.UTILITY_POOL + 1}, "num_utility"),
        ({"seed": -1}, "seed"),
    ],
)
def test_bad_corpus_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fa.FictitiousAuthors(**kwargs)


def test_bad_splits(small):
    with pytest.raises(ValueError, match=r"Unknown split 'forget50'; valid splits: \[.*forget10"):
        small.split("forget50")
    with pytest.raises(ValueError, match="'forget01' is empty.*num_authors >= 50"):
        small.split("forget01")  # 1% of 20 authors
    with pytest.raises(ValueError, match="forget_authors is empty"):
        small.custom_split([])
    with pytest.raises(ValueError, match=r"overlap on authors \[3\]"):
        small.custom_split([2, 3], retain_authors=[3, 4])
    with pytest.raises(ValueError, match=r"forget_authors \[20\] are not training authors"):
        small.custom_split([20])  # the first holdout author
    forget, retain = small.custom_split([0, 5])
    assert forget.authors == (0, 5) and len(retain.authors) == 18
    assert len(forget.records) == 12


def test_registry_load(tmp_path):
    assert "fictitious_authors" in data.names()
    kwargs = dict(num_authors=20, qa_per_author=5, num_utility=8, seed=3, vocab_size=1024)
    ds = data.load("fictitious_authors", **kwargs, cache_dir=str(tmp_path))
    corpus, tok = ds.corpus, ds.tokenizer
    assert ds.task == "language_model" and ds.num_classes == ds.num_outputs == tok.vocab_size
    assert ds.x_train.shape == (20 * 5 + 8, ds.max_len) and ds.input_shape == (ds.max_len,)
    assert ds.x_test.shape == (2 * 5, ds.max_len)  # holdout10: 2 authors
    assert ds.x_train.dtype == ds.y_train.dtype == np.int32
    assert (ds.y_test != IGN).any(axis=1).all()
    np.testing.assert_array_equal(ds.train_records, corpus.split("train").indices)
    np.testing.assert_array_equal(ds.test_records, corpus.split("holdout10").indices)
    assert ds.train_extra["perturbed_x"].shape == (len(ds.x_train), 5, ds.max_len)
    assert set(ds.train_extra) >= {"idk_x", "idk_y", "alt_x", "alt_y", "key_mask"}
    split = ds.forget_split("forget10")
    forget_authors = {corpus.records[ds.train_records[i]].author for i in split.forget}
    assert forget_authors == set(corpus.split("forget10").authors)
    np.testing.assert_array_equal(
        np.union1d(split.forget, split.retain), np.arange(len(ds.x_train))
    )
    assert len(split.test) == len(ds.x_test)
    with pytest.raises(ValueError, match="valid forget splits"):
        ds.forget_split("retain90")
    with pytest.raises(ValueError, match="max_len=8 is too short"):
        data.load("fictitious_authors", **kwargs, max_len=8)
    # The tokenizer is cached in memory and on disk (a fresh process reads tokenizer.json).
    assert data.load("fictitious_authors", **kwargs, cache_dir=str(tmp_path)).tokenizer is tok
    (saved,) = tmp_path.glob("fictitious_authors_*/tokenizer.json")
    assert data.Tokenizer.from_file(saved).backend.get_vocab() == tok.backend.get_vocab()
