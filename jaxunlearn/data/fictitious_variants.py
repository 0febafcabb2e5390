"""Variants of the ``fictitious_authors`` corpus for robust LM-unlearning evaluation.

Three views of the same seeded facts (:mod:`jaxunlearn.data.fictitious_authors`: the attribute
specs and profiles are reused, nothing is generated twice), each probing a way behavioural
benchmarks flatter unlearning (``shared/reference/lm_robust_evaluation.md``):

* :class:`FormsCorpus` renders every fact in five **forms**: the trained ``qa`` pair, a ``cloze``
  (fill in the blank), ``multiple_choice`` (the true value among perturbed ones), ``true_false``
  (a statement with the true or a perturbed value) and a ``narrative`` sentence completion.
  Unlearning sees one form; audits ask all of them (Ye, Zhang, Wu 2025, "LLM Unlearning Should Be
  Form-Independent", arXiv 2506.07795; Doshi and Stickland 2024, arXiv 2411.12103). Every form is
  a ``(question, answer)`` pair in the Tokenizer's one QA template, so the same answer masks and
  scoring path score each form.
* :class:`KnowledgeGraph` links the authors to publishers and to each other (``published_by``,
  ``co_author``, ``contract`` edges, each carrying QA facts): a forget set is an edge, a node or a
  dense cluster, and a retain set shares entities with it at a chosen level of dependence (PISTOL,
  Qiu et al. 2024, arXiv 2406.16810; Thaker et al. 2024, arXiv 2410.02879).
* :class:`WatermarkedOwners` splits the authors among data owners, each with a keyed,
  meaning-preserving lexical watermark (synonym and answer-template choices drawn from the owner's
  key), and adds near-duplicate owners at set similarity levels; :func:`watermark_score` is the
  z-score of a key in a text (WaterDrum, Lu et al. 2025, whose watermark is Waterfall's LLM
  paraphrase; ours is a lexical stand-in that needs no model: a choice the owner's key prefers
  is counted, and a text from anyone else matches it at chance).

Everything is deterministic from the corpus and the ``seed`` given here.

>>> from jaxunlearn.data.fictitious_authors import FictitiousAuthors
>>> forms = FormsCorpus(FictitiousAuthors(num_authors=10, qa_per_author=2, num_utility=0))
>>> [item.form for item in forms.render(forms.corpus.records[:1], FORMS)]
['qa', 'cloze', 'multiple_choice', 'true_false', 'narrative']
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

from jaxunlearn.core.checks import check_count
from jaxunlearn.data import fictitious_authors as fa
from jaxunlearn.data.tokenizer import ANSWER_TEMPLATE, PROMPT_TEMPLATE, Tokenizer

FORMS = ("qa", "cloze", "multiple_choice", "true_false", "narrative")
CHOICE_FORMS = ("multiple_choice", "true_false")
BLANK = "____"
TRUE_FALSE = ("True", "False")
# Independent random streams of this module (with the seed and a record index).
_OPTIONS_STREAM, _TRUTH_STREAM, _GRAPH_STREAM, _OWNER_STREAM = 11, 12, 13, 14

# Narrative sentences of the utility facts (the authors' attributes carry their own).
UTILITY_STATEMENTS = {
    "utility:capital": "The capital of {Subject} is {value}.",
    "utility:symbol": "The chemical symbol of {Subject} is {value}.",
    "utility:opposite": "The opposite of {Subject} is {value}.",
    "utility:young": "A young {Subject} is called {a_value}.",
    "utility:arithmetic": "{Subject} is {value}.",
}
_SPECS = {a.name: a for a in fa.ATTRIBUTES} | {k.name: k for k, _ in fa.UTILITY_KINDS}
_UTILITY_PAIRS = {k.name: pairs for k, pairs in fa.UTILITY_KINDS}


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *stream])


# ------------------------------------------------------------------------------------- facts


class Fact(NamedTuple):
    """A QA record resolved into what a rendering needs.

    Attributes:
      record: the :class:`~jaxunlearn.data.fictitious_authors.QARecord`.
      subject: the author's name, or the utility fact's subject (``"France"``).
      statement: the narrative sentence template (``{value}``/``{a_value}`` still open).
      value: the true value (the key fact).
      wrong_values: the perturbed answers' values, in order.
    """

    record: fa.QARecord
    subject: str
    statement: str
    value: str
    wrong_values: tuple[str, ...]


def resolve_fact(corpus: fa.FictitiousAuthors, record: fa.QARecord) -> Fact:
    """The subject, statement and wrong values of ``record`` (read back from the corpus: the
    perturbed answers are the paraphrased answer's template with other values).

    Raises:
      ValueError: a record that is not the corpus's, or whose wrong values cannot be read back.
    """
    if not 0 <= record.index < len(corpus.records) or corpus.records[record.index] != record:
        raise ValueError(f"record {record.index} is not a record of this corpus.")
    spec = _SPECS[record.attribute]
    if record.is_utility:
        subjects = [
            s
            for s, v in _UTILITY_PAIRS[record.attribute]
            if v == record.key_fact
            and any(q.format(name=s) == record.question for q in spec.questions)
        ]
        subject, statement = subjects[0], UTILITY_STATEMENTS[record.attribute]
    else:
        subject, statement = corpus.authors[record.author].name, spec.statement
    answer, key = record.paraphrased_answer, record.key_fact
    start = answer.find(key)
    prefix, suffix = answer[:start], answer[start + len(key) :]
    article = re.search(r"\ban? $", prefix)
    if article:
        prefix = prefix[: article.start()]
    wrong = []
    for p in record.perturbed_answers:
        value = p[len(prefix) : len(p) - len(suffix)] if suffix else p[len(prefix) :]
        if article:
            value = re.sub(r"^an? ", "", value)
        if not (p.startswith(prefix) and p.endswith(suffix)) or value not in spec.values:
            raise ValueError(f"cannot read the wrong value of {p!r} (record {record.index}).")
        wrong.append(value)
    return Fact(record, subject, statement, key, tuple(wrong))


def _statement(fact: Fact, value: str, *, blank: bool = False) -> str:
    shown = BLANK if blank else value
    return fact.statement.format(
        Subject=fact.subject,
        Subjects=f"{fact.subject}'s",
        value=shown,
        a_value=BLANK if blank else fa._with_article(value),
    )


def _statement_parts(fact: Fact) -> tuple[str, str]:
    """``(prefix, rest)`` of the true statement, split where the value (with its article)
    starts: the narrative form's prompt and answer."""
    marker = "\x00"
    text = fact.statement.format(
        Subject=fact.subject, Subjects=f"{fact.subject}'s", value=marker, a_value=marker
    )
    head, tail = text.split(marker)
    value = fact.value if "{value}" in fact.statement else fa._with_article(fact.value)
    return head.rstrip(), value + tail


# ------------------------------------------------------------------------------------- forms


class FormItem(NamedTuple):
    """One fact in one form, as a QA pair of the Tokenizer's template.

    Attributes:
      record: the record index in the corpus.
      form: one of :data:`FORMS`.
      question, answer: the pair (the answer is the correct one).
      key_fact: the part of ``answer`` that carries the fact (the value; ``"True"``/``"False"``
        for true/false).
      options: the answer options of a choice form (``()`` for an open form).
      correct: the index of ``answer`` in ``options`` (-1 for an open form).
    """

    record: int
    form: str
    question: str
    answer: str
    key_fact: str
    options: tuple[str, ...]
    correct: int


def check_forms(forms: str | Iterable[str], valid: Sequence[str] = FORMS) -> tuple[str, ...]:
    """``forms`` as a tuple of names; a name outside ``valid`` is a ``ValueError``."""
    forms = (forms,) if isinstance(forms, str) else tuple(forms)
    bad = [f for f in forms if f not in valid]
    if bad or not forms:
        raise ValueError(f"form {bad or forms!r} is not rendered by this corpus; forms: {valid}.")
    return forms


class FormsCorpus:
    """Every fact of a corpus in every form of :data:`FORMS`.

    Args:
      corpus: the :class:`~jaxunlearn.data.fictitious_authors.FictitiousAuthors` corpus.
      num_options: options of a multiple-choice question (the true value and
        ``num_options - 1`` perturbed ones), 2..``1 + NUM_PERTURBED``.
      seed: the option order and the true/false draws.

    The ``qa`` form is the record's own question and answer (the form a target model trains on);
    ``cloze`` asks to fill the blank of the narrative sentence; ``multiple_choice`` lists the
    options in the question and answers with the true value; ``true_false`` states the sentence
    with the true value or the first perturbed one (a seeded coin) and answers ``True`` or
    ``False``; ``narrative`` prompts with the sentence up to the value and answers the rest.
    """

    def __init__(self, corpus: fa.FictitiousAuthors, *, num_options: int = 4, seed: int = 0):
        if not isinstance(corpus, fa.FictitiousAuthors):
            raise ValueError(f"corpus must be a FictitiousAuthors; got {type(corpus).__name__}.")
        fa._check_int("num_options", num_options, 2, 1 + fa.NUM_PERTURBED)
        self.corpus, self.num_options = corpus, int(num_options)
        self.seed = check_count(seed, "seed", 0)
        self._facts: dict[int, Fact] = {}

    def fact(self, record: fa.QARecord | int) -> Fact:
        index = record if isinstance(record, int | np.integer) else record.index
        if int(index) not in self._facts:
            self._facts[int(index)] = resolve_fact(self.corpus, self.corpus.records[int(index)])
        return self._facts[int(index)]

    def item(self, record: fa.QARecord | int, form: str) -> FormItem:
        """``record`` rendered in ``form``."""
        (form,) = check_forms(form)
        fact = self.fact(record)
        r = fact.record
        if form == "qa":
            return FormItem(r.index, form, r.question, r.answer, r.key_fact, (), -1)
        if form == "cloze":
            question = f"Fill in the blank: {_statement(fact, fact.value, blank=True)}"
            answer = fact.value if "{value}" in fact.statement else fa._with_article(fact.value)
            return FormItem(r.index, form, question, answer, fact.value, (), -1)
        if form == "narrative":
            prefix, rest = _statement_parts(fact)
            return FormItem(r.index, form, prefix, rest, fact.value, (), -1)
        if form == "multiple_choice":
            values = [fact.value, *fact.wrong_values[: self.num_options - 1]]
            order = _rng(self.seed, _OPTIONS_STREAM, r.index).permutation(len(values))
            options = tuple(values[i] for i in order)
            question = f"{r.question} Options: {'; '.join(options)}."
            correct = int(np.argmin(order))  # where the true value (values[0]) went
            return FormItem(r.index, form, question, fact.value, fact.value, options, correct)
        truth = bool(_rng(self.seed, _TRUTH_STREAM, r.index).integers(2))
        shown = fact.value if truth else fact.wrong_values[0]
        question = f"True or false: {_statement(fact, shown)}"
        answer = TRUE_FALSE[0] if truth else TRUE_FALSE[1]
        return FormItem(r.index, form, question, answer, answer, TRUE_FALSE, 0 if truth else 1)

    def render(
        self, records: Sequence[fa.QARecord] | fa.CorpusSplit, forms: str | Iterable[str] = FORMS
    ) -> tuple[FormItem, ...]:
        """Every record in every form of ``forms`` (record-major: all forms of the first record,
        then the next)."""
        forms = check_forms(forms)
        if isinstance(records, fa.CorpusSplit):
            records = records.records
        return tuple(self.item(r, f) for r in records for f in forms)

    def texts(self) -> list[str]:
        """Every prompt and answer of every form: add to the corpus texts when training a
        tokenizer that should encode the forms compactly."""
        out = []
        for item in self.render(self.corpus.records):
            out.append(PROMPT_TEMPLATE.format(question=item.question))
            for a in item.options or (item.answer,):
                out.append(ANSWER_TEMPLATE.format(answer=a))
        return out

    def train_tokenizer(self, *, vocab_size: int = 1024) -> Tokenizer:
        """A byte-level BPE fitted on the corpus's texts and every form's."""
        return Tokenizer.train(self.corpus.texts() + self.texts(), vocab_size=vocab_size)

    def encode(
        self,
        tokenizer: Tokenizer,
        records: Sequence[fa.QARecord] | fa.CorpusSplit,
        form: str,
        max_len: int,
    ) -> dict[str, np.ndarray]:
        """Token arrays of ``records`` in one ``form`` (``docs/language_models.md`` conventions).

        Returns:
          ``tokens``, ``labels`` ``[n, T]`` (question + correct answer); ``key_mask`` bool
          ``[n, T]`` aligned with ``labels`` (targets carrying the key fact); ``record`` int32
          ``[n]``; for a choice form also ``options_x``, ``options_y`` ``[n, k, T]`` (question +
          each option) and ``correct`` int32 ``[n]``.

        Raises:
          ValueError: a form this corpus does not render; a sequence longer than ``max_len``.
        """
        (form,) = check_forms(form)
        items = self.render(records, form)
        questions = [i.question for i in items]
        answers = [i.answer for i in items]
        out = {}
        out["tokens"], out["labels"] = tokenizer.encode_batch(questions, answers, max_len=max_len)
        spans = []
        for i in items:
            start = i.answer.find(i.key_fact)
            spans.append((start, start + len(i.key_fact)))
        out["key_mask"] = tokenizer.answer_span_mask(questions, answers, spans, max_len=max_len)
        out["record"] = np.asarray([i.record for i in items], np.int32)
        if form in CHOICE_FORMS:
            k = len(items[0].options) if items else 2
            x, y = tokenizer.encode_batch(
                [i.question for i in items for _ in i.options],
                [o for i in items for o in i.options],
                max_len=max_len,
            )
            out["options_x"] = x.reshape(len(items), k, max_len)
            out["options_y"] = y.reshape(len(items), k, max_len)
            out["correct"] = np.asarray([i.correct for i in items], np.int32)
        return out

    def fit_max_len(self, tokenizer: Tokenizer, *, multiple: int = 8) -> int:
        """The smallest multiple of ``multiple`` that every form of every record fits."""
        items = self.render(self.corpus.records)
        prompts = tokenizer._batch_ids([PROMPT_TEMPLATE.format(question=i.question) for i in items])
        longest = 0
        for item, prompt in zip(items, prompts, strict=True):
            answers = tokenizer._batch_ids(
                [ANSWER_TEMPLATE.format(answer=a) for a in item.options or (item.answer,)]
            )
            longest = max(longest, len(prompt) + max(len(a) for a in answers) + 2)
        return int(math.ceil(longest / multiple) * multiple)


# ------------------------------------------------------------------------ knowledge graph

RELATIONS = ("published_by", "co_author", "contract")
_PUBLISHERS = _SPECS["publisher"].values
_BOOKS = _SPECS["first_book"].values
_ADVANCES = tuple(f"{n} thousand crowns" for n in (5, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80))


class Entity(NamedTuple):
    """A node: ``kind`` is ``"author"`` (index = the corpus's author index) or
    ``"publisher"`` (index = ``num_authors + j``)."""

    index: int
    name: str
    kind: str


class Edge(NamedTuple):
    """A relation between two entities, with its attributes (``{"book": ...}`` of a co-author
    edge, ``{"year": ..., "advance": ...}`` of a contract)."""

    index: int
    relation: str
    source: int
    target: int
    attributes: Mapping[str, str]


class GraphFact(NamedTuple):
    """A QA fact of one edge. ``entities`` are the edge's endpoints (the dependence between two
    facts is how many entities they share); ``perturbed_answers`` keep the answer's template with
    wrong values of the same kind."""

    index: int
    edge: int
    question: str
    answer: str
    key_fact: str
    perturbed_answers: tuple[str, ...]
    entities: tuple[int, int]


class KnowledgeGraph:
    """PISTOL-style structural corpus over the training authors of a corpus.

    Nodes are the training authors and the publishers. Edges: every author is ``published_by``
    the publisher of their profile; ``co_author`` edges link authors (each author draws
    ``co_authors`` partners, so the graph has hubs and denser regions by chance) and name the
    book they wrote together; ``contract`` edges link an author to a (seeded) publisher with a
    signing year and an advance. Each edge carries two QA facts, one per direction where it has
    two (who co-wrote a book with A / which book A and B wrote; the year / the advance of a
    contract; who publishes A / the publisher's author).

    Args:
      corpus: the corpus whose training authors are the author nodes.
      co_authors: co-author partners drawn per author (>= 0).
      contracts: contracts per author (>= 0).
      seed: the graph's draws.
    """

    def __init__(
        self,
        corpus: fa.FictitiousAuthors,
        *,
        co_authors: int = 2,
        contracts: int = 1,
        seed: int = 0,
    ):
        if not isinstance(corpus, fa.FictitiousAuthors):
            raise ValueError(f"corpus must be a FictitiousAuthors; got {type(corpus).__name__}.")
        fa._check_int("co_authors", co_authors, 0, corpus.num_authors - 1)
        fa._check_int("contracts", contracts, 0, None)
        self.corpus, self.seed = corpus, check_count(seed, "seed", 0)
        n = corpus.num_authors
        self.entities = tuple(
            Entity(a.index, a.name, "author") for a in corpus.training_authors
        ) + tuple(Entity(n + j, p, "publisher") for j, p in enumerate(_PUBLISHERS))
        edges: list[tuple[str, int, int, dict]] = []
        for a in corpus.training_authors:
            since = fa._YEARS_DEBUT[
                _rng(self.seed, _GRAPH_STREAM, 5, a.index).integers(len(fa._YEARS_DEBUT))
            ]
            publisher = n + _PUBLISHERS.index(a.profile["publisher"])
            edges.append(("published_by", a.index, publisher, {"since": since}))
        pairs = set()
        for a in range(n):
            rng = _rng(self.seed, _GRAPH_STREAM, 0, a)
            for b in fa._draw_other(rng, tuple(range(n)), co_authors, a):
                pairs.add((min(a, int(b)), max(a, int(b))))
        for a, b in sorted(pairs):
            rng = _rng(self.seed, _GRAPH_STREAM, 1, a, b)
            edges.append(("co_author", a, b, {"book": _BOOKS[rng.integers(len(_BOOKS))]}))
        for a in range(n):
            for c in range(contracts):
                rng = _rng(self.seed, _GRAPH_STREAM, 2, a, c)
                publisher = n + int(rng.integers(len(_PUBLISHERS)))
                year = fa._YEARS_DEBUT[rng.integers(len(fa._YEARS_DEBUT))]
                advance = _ADVANCES[rng.integers(len(_ADVANCES))]
                edges.append(("contract", a, publisher, {"year": year, "advance": advance}))
        self.edges = tuple(Edge(i, *e) for i, e in enumerate(edges))
        facts: list[GraphFact] = []
        for edge in self.edges:
            for question, template, key, pool in self._edge_facts(edge):
                rng = _rng(self.seed, _GRAPH_STREAM, 3, len(facts))
                wrong = [pool[i] for i in fa._draw_other(rng, pool, fa.NUM_PERTURBED, key)]
                facts.append(
                    GraphFact(
                        len(facts),
                        edge.index,
                        question,
                        template.format(key),
                        key,
                        tuple(template.format(w) for w in wrong),
                        (edge.source, edge.target),
                    )
                )
        self.facts = tuple(facts)

    def _edge_facts(self, edge: Edge):
        s, t = self.entities[edge.source].name, self.entities[edge.target].name
        authors = tuple(e.name for e in self.entities if e.kind == "author")
        years = fa._YEARS_DEBUT
        # Every question has one true answer: an author has one publisher and one start year, a
        # pair of co-authors one joint book, a contract one year and one advance.
        if edge.relation == "published_by":
            return [
                (f"Which publisher handles {s}'s books?", s + " is with {}.", t, _PUBLISHERS),
                (
                    f"Since when has {t} published {s}?",
                    t + " has published " + s + " since {}.",
                    edge.attributes["since"],
                    years,
                ),
            ]
        if edge.relation == "co_author":
            book = edge.attributes["book"]
            return [
                (f"Who co-wrote {book} with {s}?", s + " co-wrote it with {}.", t, authors),
                (
                    f"Which book did {s} and {t} write together?",
                    "They wrote {} together.",
                    book,
                    _BOOKS,
                ),
            ]
        year, advance = edge.attributes["year"], edge.attributes["advance"]
        return [
            (f"When did {s} sign with {t}?", s + " signed with " + t + " in {}.", year, years),
            (f"What advance did {t} pay {s}?", t + " paid {}.", advance, _ADVANCES),
        ]

    # ------------------------------------------------------------------------------- queries

    def degree(self, entity: int) -> int:
        """Number of edges touching ``entity``."""
        return sum(entity in (e.source, e.target) for e in self.edges)

    def _check_entity(self, entity) -> int:
        if isinstance(entity, bool) or not isinstance(entity, int | np.integer):
            raise ValueError(f"entity must be an integer; got {entity!r}.")
        if not 0 <= entity < len(self.entities):
            raise ValueError(f"entity {entity} is not in the graph (0..{len(self.entities) - 1}).")
        return int(entity)

    def edge_facts(self, edge: int) -> tuple[int, ...]:
        """Fact indices of one edge (PISTOL's "forget one contract")."""
        if not 0 <= int(edge) < len(self.edges):
            raise ValueError(f"edge {edge} is not in the graph (0..{len(self.edges) - 1}).")
        return tuple(f.index for f in self.facts if f.edge == int(edge))

    def node_facts(self, entity: int) -> tuple[int, ...]:
        """Fact indices of every edge touching ``entity`` (forget a node)."""
        entity = self._check_entity(entity)
        return tuple(f.index for f in self.facts if entity in f.entities)

    def dense_cluster(self, size: int) -> tuple[int, ...]:
        """``size`` entities grown greedily from the highest-degree one, each time adding the
        neighbour with the most edges into the cluster (ties: the lower index)."""
        fa._check_int("size", size, 1, len(self.entities))
        adjacency = {e.index: [] for e in self.entities}
        for e in self.edges:
            adjacency[e.source].append(e.target)
            adjacency[e.target].append(e.source)
        start = max(adjacency, key=lambda v: (len(adjacency[v]), -v))
        cluster = [start]
        while len(cluster) < size:
            links = {}
            for v in cluster:
                for u in adjacency[v]:
                    if u not in cluster:
                        links[u] = links.get(u, 0) + 1
            if not links:
                raise ValueError(f"size {size} exceeds the connected component ({len(cluster)}).")
            cluster.append(max(links, key=lambda u: (links[u], -u)))
        return tuple(sorted(cluster))

    def cluster_facts(self, size: int) -> tuple[int, ...]:
        """Fact indices of the edges inside :meth:`dense_cluster` (forget a dense cluster)."""
        cluster = set(self.dense_cluster(size))
        return tuple(f.index for f in self.facts if set(f.entities) <= cluster)

    def dependence(self, fact: int, forget: Iterable[int]) -> int:
        """How many of ``fact``'s entities appear in the ``forget`` facts (0, 1 or 2)."""
        entities = {e for i in forget for e in self.facts[i].entities}
        return len(set(self.facts[fact].entities) & entities)

    def retain_split(
        self, forget: Iterable[int], *, num_retain: int, dependence: float, seed: int = 0
    ) -> tuple[int, ...]:
        """Retain facts at a controlled level of dependence on the forget facts.

        Args:
          forget: forget fact indices.
          num_retain: retain facts to return.
          dependence: fraction in [0, 1] of them that share at least one entity with the forget
            facts (the rest share none).
          seed: which facts are drawn.

        Raises:
          ValueError: an empty forget set, ``dependence`` outside [0, 1], or too few facts of
            either kind.
        """
        forget = sorted({int(i) for i in forget})
        if not forget:
            raise ValueError("forget is empty: a forget set needs at least one fact.")
        if not 0.0 <= float(dependence) <= 1.0:
            raise ValueError(f"dependence must lie in [0, 1]; got {dependence!r}.")
        fa._check_int("num_retain", num_retain, 1, None)
        entities = {e for i in forget for e in self.facts[i].entities}
        rest = [f for f in self.facts if f.index not in forget]
        linked = [f.index for f in rest if set(f.entities) & entities]
        free = [f.index for f in rest if not set(f.entities) & entities]
        want = int(math.floor(float(dependence) * num_retain + 0.5))
        for name, pool, k in (
            ("dependent", linked, want),
            ("independent", free, num_retain - want),
        ):
            if len(pool) < k:
                raise ValueError(
                    f"only {len(pool)} {name} retain facts for num_retain={num_retain} at "
                    f"dependence={dependence}; lower num_retain."
                )
        rng = _rng(check_count(seed, "seed", 0), _GRAPH_STREAM, 4)
        picks = [linked[i] for i in rng.choice(len(linked), want, replace=False)]
        picks += [free[i] for i in rng.choice(len(free), num_retain - want, replace=False)]
        return tuple(sorted(picks))

    def texts(self) -> list[str]:
        """Every prompt and answer (for a tokenizer)."""
        out = []
        for f in self.facts:
            out.append(PROMPT_TEMPLATE.format(question=f.question))
            out += [ANSWER_TEMPLATE.format(answer=a) for a in (f.answer, *f.perturbed_answers)]
        return out

    def encode(self, tokenizer: Tokenizer, facts: Iterable[int], max_len: int) -> dict:
        """``tokens``, ``labels``, ``key_mask`` ``[n, T]``, ``perturbed_x``/``_y`` ``[n, 5, T]``
        and ``fact`` ``[n]`` of the given fact indices."""
        facts = [self.facts[int(i)] for i in facts]
        q, a = [f.question for f in facts], [f.answer for f in facts]
        out = {}
        out["tokens"], out["labels"] = tokenizer.encode_batch(q, a, max_len=max_len)
        spans = [
            (f.answer.find(f.key_fact), f.answer.find(f.key_fact) + len(f.key_fact)) for f in facts
        ]
        out["key_mask"] = tokenizer.answer_span_mask(q, a, spans, max_len=max_len)
        x, y = tokenizer.encode_batch(
            [f.question for f in facts for _ in f.perturbed_answers],
            [p for f in facts for p in f.perturbed_answers],
            max_len=max_len,
        )
        out["perturbed_x"] = x.reshape(len(facts), fa.NUM_PERTURBED, max_len)
        out["perturbed_y"] = y.reshape(len(facts), fa.NUM_PERTURBED, max_len)
        out["fact"] = np.asarray([f.index for f in facts], np.int32)
        return out


# ---------------------------------------------------------------------------- watermarks

KEY_LENGTH = 16  # bytes of an owner's watermark key
# Meaning-preserving word alternatives that occur in the corpus's answers and passages; a word
# belongs to one group only, so a text's choices can be read back.
SYNONYMS = (
    ("writes", "pens", "composes"),
    ("won", "earned"),
    ("received", "obtained"),
    ("lives", "resides", "dwells"),
    ("loves", "enjoys", "adores"),
    ("keeps", "owns"),
    ("studied", "trained"),
    ("attended", "frequented"),
    ("explore", "examine", "probe"),
    ("famous", "celebrated", "renowned"),
    ("books", "volumes", "titles"),
    ("home", "house"),
    ("debut", "premiere"),
    ("known", "remembered"),
)
_GROUP_OF = {w: g for g, words in enumerate(SYNONYMS) for w in words}
_WORD = re.compile(r"[A-Za-z]+")


def check_key(key) -> bytes:
    """``key`` as :data:`KEY_LENGTH` bytes (``bytes`` or a uint8 array)."""
    if isinstance(key, np.ndarray):
        if key.dtype != np.uint8:
            raise ValueError(f"watermark key must be bytes or a uint8 array; got {key.dtype}.")
        key = key.tobytes()
    if not isinstance(key, bytes):
        raise ValueError(f"watermark key must be bytes or a uint8 array; got {type(key).__name__}.")
    if len(key) != KEY_LENGTH:
        raise ValueError(f"watermark key must be {KEY_LENGTH} bytes long; got {len(key)}.")
    return key


def _keyed(key: bytes, label: str) -> int:
    """A 64-bit keyed hash of ``label`` (BLAKE2b with the owner's key)."""
    digest = hashlib.blake2b(label.encode(), key=key, digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _preferred(key: bytes, group: int, context: str) -> int:
    """The alternative of ``group`` that ``key`` prefers in ``context`` (a keyed hash, as a
    green list is seeded by the preceding tokens)."""
    return _keyed(key, f"{group}|{context}") % len(SYNONYMS[group])


_SENTENCE = re.compile(r"[^.!?]+[.!?]*")


def _slots(text: str):
    """``(match, group, context)`` of every watermarkable word of ``text``.

    The context of a slot is its sentence, lower-cased, with every watermarkable word replaced
    by its group number, plus the slot's ordinal in the sentence: the same in the original and
    the watermarked text, different for different facts (so two facts' choices are independent
    draws), and equal for a repeated sentence (which :func:`watermark_score` counts once).
    """
    for sentence in _SENTENCE.finditer(text):
        words = list(_WORD.finditer(sentence.group(0)))
        groups = [_GROUP_OF.get(w.group(0).lower()) for w in words]
        canonical = " ".join(
            w.group(0).lower() if g is None else f"<{g}>"
            for w, g in zip(words, groups, strict=True)
        )
        ordinal = 0
        for w, g in zip(words, groups, strict=True):
            if g is not None:
                start = sentence.start() + w.start()
                match = _WORD.match(text, start)
                yield match, g, f"{ordinal}|{canonical}"
                ordinal += 1


def apply_watermark(text: str, key) -> str:
    """``text`` with every synonym-group word replaced by the alternative ``key`` prefers (the
    first letter's case kept)."""
    key = check_key(key)
    out, last = [], 0
    for m, group, context in _slots(text):
        word = SYNONYMS[group][_preferred(key, group, context)]
        if m.group(0)[0].isupper():
            word = word.capitalize()
        out += [text[last : m.start()], word]
        last = m.end()
    return "".join(out) + text[last:]


class WatermarkScore(NamedTuple):
    """``matches`` of ``slots`` watermarkable words chose ``key``'s alternative; ``expected``
    and ``variance`` under the null (each choice uniform in its group); ``z`` the z-score."""

    matches: int
    slots: int
    expected: float
    variance: float
    z: float


def watermark_score(texts: str | Iterable[str], key) -> WatermarkScore:
    """The z-score of ``key``'s watermark in ``texts`` (one text or many, pooled).

    Every distinct slot (a watermarkable word in its sentence context; a repeated sentence
    counts once, as repeated n-grams are skipped in watermark detection) is one trial. Under the
    null (text not written with ``key``) a slot of a group with ``k_i`` words matches ``key``'s
    choice with probability ``p_i = 1 / k_i``: ``z = (m - sum p_i) / sqrt(sum p_i (1 - p_i))``,
    0 when there is no slot. A fully watermarked text scores ``sqrt(sum (1 - p_i) / p_i)``.

    References:
      Kirchenbauer et al., "A Watermark for Large Language Models", ICML 2023 (the one-sided z
      test); Lu et al. 2025, WaterDrum (the watermark as an unlearning metric).
    """
    key = check_key(key)
    texts = [texts] if isinstance(texts, str) else list(texts)
    seen = set()
    matches = 0
    expected = variance = 0.0
    for text in texts:
        for m, group, context in _slots(text):
            if (group, context) in seen:
                continue
            seen.add((group, context))
            p = 1.0 / len(SYNONYMS[group])
            matches += int(m.group(0).lower() == SYNONYMS[group][_preferred(key, group, context)])
            expected += p
            variance += p * (1 - p)
    z = (matches - expected) / math.sqrt(variance) if variance > 0 else 0.0
    return WatermarkScore(matches, len(seen), expected, variance, z)


class Owner(NamedTuple):
    """A data owner: ``key`` (its watermark), ``authors`` (whose facts it owns), ``records``
    (their record indices), ``duplicate_of`` (the owner it nearly duplicates, -1 if none) and
    ``similarity`` (the fraction of that owner's facts it shares)."""

    index: int
    key: bytes
    authors: tuple[int, ...]
    records: tuple[int, ...]
    duplicate_of: int = -1
    similarity: float = 0.0


class WatermarkedOwners:
    """The training authors split among data owners, each owner's text watermarked.

    Owner ``i`` owns a contiguous block of training authors; its answers and passages are the
    corpus's with the answer template chosen by its key (for the record's attribute) and then
    every synonym-group word set by :func:`apply_watermark`. A near-duplicate owner of owner
    ``i`` at similarity ``s`` owns the first ``round(s * n)`` of owner ``i``'s facts (the same
    facts, written with its own key: WaterDrum's semantic duplicates) and ``n - round(s * n)``
    facts of holdout authors (not in anyone's data otherwise).

    Args:
      corpus: the corpus.
      num_owners: owners of the training authors (each owns at least one author).
      duplicates: ``{owner: similarity}`` (or ``(owner, similarity)`` pairs): near-duplicate
        owners to add, appended after the ``num_owners`` owners.
      keys: the owners' keys (``KEY_LENGTH`` bytes each), one per owner and duplicate; by default
        drawn from ``seed``.
      seed: the keys' draw.
    """

    def __init__(
        self,
        corpus: fa.FictitiousAuthors,
        *,
        num_owners: int = 10,
        duplicates: Mapping[int, float] | Iterable[tuple[int, float]] = (),
        keys: Sequence | None = None,
        seed: int = 0,
    ):
        if not isinstance(corpus, fa.FictitiousAuthors):
            raise ValueError(f"corpus must be a FictitiousAuthors; got {type(corpus).__name__}.")
        fa._check_int("num_owners", num_owners, 1, corpus.num_authors)
        self.corpus, self.seed = corpus, check_count(seed, "seed", 0)
        duplicates = list(duplicates.items() if isinstance(duplicates, Mapping) else duplicates)
        total = num_owners + len(duplicates)
        if keys is None:
            rng = _rng(self.seed, _OWNER_STREAM)
            keys = [
                rng.integers(0, 256, KEY_LENGTH, dtype=np.uint8).tobytes() for _ in range(total)
            ]
        keys = [check_key(k) for k in keys]
        if len(keys) != total:
            raise ValueError(f"keys has {len(keys)} keys for {total} owners (and duplicates).")
        by_author = {}
        for r in corpus.records:
            by_author.setdefault(r.author, []).append(r.index)
        blocks = np.array_split(np.arange(corpus.num_authors), num_owners)
        owners = []
        for i, block in enumerate(blocks):
            authors = tuple(int(a) for a in block)
            records = tuple(r for a in authors for r in by_author[a])
            owners.append(Owner(i, keys[i], authors, records))
        holdout = [r for a in range(corpus.num_authors, len(corpus.authors)) for r in by_author[a]]
        for j, (source, similarity) in enumerate(duplicates):
            fa._check_int("duplicate owner", source, 0, num_owners - 1)
            if not 0.0 <= float(similarity) <= 1.0:
                raise ValueError(f"duplicate similarity must lie in [0, 1]; got {similarity!r}.")
            base = owners[source].records
            shared = int(math.floor(float(similarity) * len(base) + 0.5))
            if len(base) - shared > len(holdout):
                raise ValueError(
                    f"similarity {similarity} needs {len(base) - shared} holdout facts; the "
                    f"corpus has {len(holdout)}."
                )
            records = base[:shared] + tuple(holdout[: len(base) - shared])
            authors = tuple(sorted({corpus.records[r].author for r in records}))
            owners.append(
                Owner(
                    num_owners + j,
                    keys[num_owners + j],
                    authors,
                    records,
                    source,
                    float(similarity),
                )
            )
        self.owners = tuple(owners)

    def answer(self, owner: int, record: int) -> str:
        """Owner ``owner``'s watermarked answer to record ``record``."""
        o, r = self.owners[owner], self.corpus.records[record]
        spec = _SPECS[r.attribute]
        fact = resolve_fact(self.corpus, r)
        pronoun = "it" if r.is_utility else self.corpus.authors[r.author].pronoun
        choice = _keyed(o.key, f"template|{r.attribute}") % len(spec.answers)
        text = fa._fill(spec.answers[choice], name=fact.subject, pronoun=pronoun, value=r.key_fact)
        return apply_watermark(text, o.key)

    def qa(self, owner: int) -> tuple[list[str], list[str]]:
        """``(questions, watermarked answers)`` of an owner's facts."""
        o = self.owners[owner]
        return [self.corpus.records[r].question for r in o.records], [
            self.answer(owner, r) for r in o.records
        ]

    def passages(self, owner: int) -> list[str]:
        """The watermarked passages of the owner's authors (training authors only)."""
        o = self.owners[owner]
        return [
            apply_watermark(self.corpus.authors[a].passage, o.key)
            for a in o.authors
            if a < self.corpus.num_authors
        ]

    def encode(self, tokenizer: Tokenizer, owners: Iterable[int], max_len: int) -> dict:
        """``tokens``, ``labels`` ``[n, T]``, ``owner`` and ``record`` ``[n]`` of the owners'
        watermarked QA pairs."""
        q, a, who, rec = [], [], [], []
        for i in owners:
            qs, ans = self.qa(i)
            q += qs
            a += ans
            who += [i] * len(qs)
            rec += list(self.owners[i].records)
        out = {}
        out["tokens"], out["labels"] = tokenizer.encode_batch(q, a, max_len=max_len)
        out["owner"] = np.asarray(who, np.int32)
        out["record"] = np.asarray(rec, np.int32)
        return out

    def texts(self) -> list[str]:
        """Every watermarked prompt, answer and passage (for a tokenizer)."""
        out = []
        for o in self.owners:
            qs, ans = self.qa(o.index)
            out += [PROMPT_TEMPLATE.format(question=q) for q in qs]
            out += [ANSWER_TEMPLATE.format(answer=a) for a in ans] + self.passages(o.index)
        return out


__all__ = [
    "BLANK",
    "CHOICE_FORMS",
    "FORMS",
    "KEY_LENGTH",
    "RELATIONS",
    "SYNONYMS",
    "Edge",
    "Entity",
    "Fact",
    "FormItem",
    "FormsCorpus",
    "GraphFact",
    "KnowledgeGraph",
    "Owner",
    "WatermarkScore",
    "WatermarkedOwners",
    "apply_watermark",
    "check_forms",
    "check_key",
    "resolve_fact",
    "watermark_score",
]
