"""Corpus variants: forms, the PISTOL-style knowledge graph, WaterDrum-style watermarked owners."""

import re

import numpy as np
import pytest

from jaxunlearn.core.losses import IGNORE_INDEX
from jaxunlearn.data import fictitious_authors as fa
from jaxunlearn.data import fictitious_variants as fv


@pytest.fixture(scope="module")
def corpus():
    return fa.FictitiousAuthors(num_authors=10, qa_per_author=20, num_utility=10, seed=3)


@pytest.fixture(scope="module")
def forms(corpus):
    return fv.FormsCorpus(corpus, seed=1)


@pytest.fixture(scope="module")
def tok(corpus):
    return corpus.train_tokenizer(vocab_size=600)


# ------------------------------------------------------------------------------------- forms


def test_wrong_values_are_read_back_from_the_perturbed_answers(corpus, forms):
    for r in corpus.records:
        fact = forms.fact(r)
        assert len(fact.wrong_values) == fa.NUM_PERTURBED and fact.value == r.key_fact
        assert fact.value not in fact.wrong_values
        for value, answer in zip(fact.wrong_values, r.perturbed_answers, strict=True):
            assert fa.contains_fact(answer, value)


def test_every_form_of_a_known_record(corpus, forms):
    author = corpus.authors[0]
    record = corpus.records[0]  # birthplace
    assert record.attribute == "birthplace"
    items = {i.form: i for i in forms.render([record])}
    city = author.profile["birthplace"]
    assert items["qa"].question == record.question and items["qa"].answer == record.answer
    assert items["cloze"].question == f"Fill in the blank: {author.name} was born in ____."
    assert items["cloze"].answer == city
    assert items["narrative"].question == f"{author.name} was born in"
    assert items["narrative"].answer == f"{city}."
    mc = items["multiple_choice"]
    assert len(mc.options) == 4 and mc.options[mc.correct] == city == mc.answer
    assert set(mc.options) - {city} <= set(forms.fact(record).wrong_values)
    assert mc.question.endswith("Options: " + "; ".join(mc.options) + ".")
    tf = items["true_false"]
    shown = city if tf.correct == 0 else forms.fact(record).wrong_values[0]
    assert tf.question == f"True or false: {author.name} was born in {shown}."
    assert tf.answer == fv.TRUE_FALSE[tf.correct] and tf.options == fv.TRUE_FALSE


def test_forms_are_deterministic_and_carry_the_key_fact(corpus, forms):
    again = fv.FormsCorpus(corpus, seed=1).render(corpus.records)
    items = forms.render(corpus.records)
    assert again == items and len(items) == len(corpus.records) * len(fv.FORMS)
    for item in items:
        assert item.key_fact in item.answer
        if item.form != "true_false":
            assert fa.contains_fact(item.answer, corpus.records[item.record].key_fact)
        if item.form in ("cloze", "narrative"):  # the prompt does not give the fact away
            assert not fa.contains_fact(item.question, item.key_fact)
    truths = [i.correct == 0 for i in items if i.form == "true_false"]
    assert 0.3 < np.mean(truths) < 0.7  # a seeded coin, both answers occur
    # Utility facts get their own narrative sentences.
    utility = [i for i in items if corpus.records[i.record].is_utility and i.form == "cloze"]
    assert all("____" in i.question for i in utility) and utility


def test_encode_every_form(corpus, forms, tok):
    records = corpus.split("forget10").records
    max_len = forms.fit_max_len(tok)
    for form in fv.FORMS:
        out = forms.encode(tok, records, form, max_len)
        n = len(records)
        assert out["tokens"].shape == out["labels"].shape == out["key_mask"].shape == (n, max_len)
        assert np.all(out["key_mask"].any(1)) and np.all(out["labels"][out["key_mask"]] >= 0)
        assert np.all(out["labels"][out["key_mask"]] != IGNORE_INDEX)
        if form in fv.CHOICE_FORMS:
            k = out["options_x"].shape[1]
            assert out["options_y"].shape == (n, k, max_len) and out["correct"].shape == (n,)
            rows = np.arange(n)
            assert np.array_equal(out["options_x"][rows, out["correct"]], out["tokens"])
        else:
            assert "options_x" not in out
        answers = [tok.decode_answer(y) for y in out["labels"]]
        assert answers == [i.answer for i in forms.render(records, form)]


def test_bad_forms(corpus, forms, tok):
    with pytest.raises(ValueError, match="not rendered"):
        forms.encode(tok, corpus.records[:2], "essay", 64)
    with pytest.raises(ValueError, match="not rendered"):
        forms.render(corpus.records[:2], ["qa", "haiku"])
    with pytest.raises(ValueError, match="num_options"):
        fv.FormsCorpus(corpus, num_options=7)
    with pytest.raises(ValueError, match="max_len"):
        forms.encode(tok, corpus.records[:2], "multiple_choice", 12)


# ----------------------------------------------------------------------------------- graph


@pytest.fixture(scope="module")
def graph(corpus):
    return fv.KnowledgeGraph(corpus, co_authors=2, contracts=1, seed=0)


def test_graph_structure(corpus, graph):
    authors = [e for e in graph.entities if e.kind == "author"]
    assert len(authors) == corpus.num_authors
    relations = [e.relation for e in graph.edges]
    assert relations.count("published_by") == corpus.num_authors
    assert relations.count("contract") == corpus.num_authors
    assert len(graph.facts) == 2 * len(graph.edges)
    # Each author's published_by edge points at the publisher of their profile.
    for edge in graph.edges[: corpus.num_authors]:
        publisher = graph.entities[edge.target].name
        assert publisher == corpus.authors[edge.source].profile["publisher"]
    for fact in graph.facts:
        assert fact.key_fact in fact.answer
        assert all(not fa.contains_fact(p, fact.key_fact) for p in fact.perturbed_answers)
    questions = [f.question for f in graph.facts]
    assert len(set(questions)) == len(questions)  # every question has one answer
    again = fv.KnowledgeGraph(corpus, co_authors=2, contracts=1, seed=0)
    assert again.facts == graph.facts


def test_forget_edge_node_cluster(graph):
    assert graph.edge_facts(0) == (0, 1)
    node = graph.edges[0].source
    facts = graph.node_facts(node)
    assert len(facts) == 2 * graph.degree(node)
    assert all(node in graph.facts[i].entities for i in facts)
    cluster = graph.dense_cluster(4)
    assert len(cluster) == 4
    hub = max(range(len(graph.entities)), key=lambda v: (graph.degree(v), -v))
    assert hub in cluster
    inside = graph.cluster_facts(4)
    assert inside and all(set(graph.facts[i].entities) <= set(cluster) for i in inside)
    with pytest.raises(ValueError, match="entity"):
        graph.node_facts(len(graph.entities))
    with pytest.raises(ValueError, match="edge"):
        graph.edge_facts(-1)


@pytest.mark.parametrize("dependence", [0.0, 0.5, 1.0])
def test_retain_at_set_dependence(graph, dependence):
    forget = graph.node_facts(graph.edges[0].source)
    retain = graph.retain_split(forget, num_retain=10, dependence=dependence)
    assert len(retain) == 10 and not set(retain) & set(forget)
    linked = sum(graph.dependence(i, forget) > 0 for i in retain)
    assert linked == round(10 * dependence)


def test_retain_errors(graph, tok):
    with pytest.raises(ValueError, match="dependence"):
        graph.retain_split([0], num_retain=2, dependence=1.5)
    with pytest.raises(ValueError, match="empty"):
        graph.retain_split([], num_retain=2, dependence=0.5)
    with pytest.raises(ValueError, match="dependent retain facts"):
        graph.retain_split([0], num_retain=len(graph.facts), dependence=1.0)
    out = graph.encode(tok, graph.edge_facts(3), 96)
    assert out["tokens"].shape == (2, 96) and out["perturbed_x"].shape == (2, 5, 96)
    assert [tok.decode_answer(y) for y in out["labels"]] == [
        graph.facts[i].answer for i in graph.edge_facts(3)
    ]


# ------------------------------------------------------------------------------ watermarks


def _canonical(text):
    return re.sub(
        r"[A-Za-z]+",
        lambda m: str(fv._GROUP_OF.get(m.group(0).lower(), m.group(0).lower())),
        text,
    )


def test_watermark_is_keyed_meaning_preserving_and_idempotent():
    key = bytes(range(16))
    text = "She writes poems. She won the Starling Medal. Her books explore grief."
    marked = fv.apply_watermark(text, key)
    assert _canonical(marked) == _canonical(text)  # only synonym-group words change
    assert fv.apply_watermark(marked, key) == marked
    score = fv.watermark_score(marked, key)
    assert score.slots == 4 and score.matches == 4
    # Groups of sizes 3, 2, 3, 3: expected 1/3 + 1/2 + 1/3 + 1/3, variance sum p(1 - p).
    assert score.expected == pytest.approx(1.5)
    assert score.variance == pytest.approx(3 * 2 / 9 + 0.25)
    assert score.z == pytest.approx((4 - 1.5) / np.sqrt(3 * 2 / 9 + 0.25))
    # A repeated sentence counts once; no slot gives z = 0.
    assert fv.watermark_score([marked, marked], key).slots == 4
    assert fv.watermark_score("Nothing to see.", key).z == 0.0


def test_owners_detect_their_own_key(corpus):
    owners = fv.WatermarkedOwners(corpus, num_owners=2, duplicates={0: 0.9}, seed=0)
    assert len(owners.owners) == 3
    o0, o1, dup = owners.owners
    assert o0.authors == (0, 1, 2, 3, 4) and len(o0.records) == 100
    shared = round(0.9 * 100)
    assert dup.records[:shared] == o0.records[:shared] and dup.duplicate_of == 0
    assert not set(dup.records[shared:]) & set(o0.records + o1.records)
    z = np.asarray(
        [
            [fv.watermark_score(owners.qa(i)[1] + owners.passages(i), o.key).z for i in range(3)]
            for o in owners.owners
        ]
    )
    assert np.all(np.diag(z) > 6)  # own key: strong
    assert np.all(np.abs(z[~np.eye(3, dtype=bool)]) < 3)  # anyone else's, duplicates too: chance
    # Same facts and meaning as the corpus.
    question, answer = owners.qa(0)[0][0], owners.qa(0)[1][0]
    record = corpus.records[o0.records[0]]
    assert question == record.question and fa.contains_fact(answer, record.key_fact)
    again = fv.WatermarkedOwners(corpus, num_owners=2, duplicates={0: 0.9}, seed=0)
    assert again.qa(1) == owners.qa(1)


def test_watermark_key_errors(corpus):
    with pytest.raises(ValueError, match="16 bytes"):
        fv.apply_watermark("She writes.", b"short")
    with pytest.raises(ValueError, match="16 bytes"):
        fv.watermark_score("She writes.", np.zeros(8, np.uint8))
    with pytest.raises(ValueError, match="16 bytes"):
        fv.WatermarkedOwners(corpus, num_owners=2, keys=[b"x" * 16, b"y" * 15])
    with pytest.raises(ValueError, match="similarity"):
        fv.WatermarkedOwners(corpus, num_owners=2, duplicates={0: 1.5})
