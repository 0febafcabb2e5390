"""The robust-LM benchmark: one corpus seen in several forms, as a graph and through owners.

:func:`build_benchmark` turns a seeded ``fictitious_authors`` corpus into the rows a target model
trains on and the evaluation sets the robustness audits read (the variants of
:mod:`jaxunlearn.data.fictitious_variants`; ``shared/reference/lm_robust_evaluation.md``):

* **forms** (Ye, Zhang, Wu 2025, arXiv 2506.07795): every training author's fact is a training row
  in each of ``train_forms`` (QA, cloze, multiple choice, true/false, narrative by default). A
  target that saw only the QA form never learns the others, so there would be no knowledge in
  them for unlearning to leave behind; the target and the retain model therefore train on several
  forms, while unlearning reads the QA form only (:attr:`RobustBenchmark.unlearn_retain` and the
  forget rows are QA rows);
* **structure** (PISTOL, Qiu et al. 2024, arXiv 2406.16810; Thaker et al. 2024, arXiv
  2410.02879): the :class:`~jaxunlearn.data.fictitious_variants.KnowledgeGraph` facts (publisher,
  co-author and contract edges) are training rows too. Forgetting the forget10 authors forgets
  them as nodes: the graph facts of every edge that touches one join the forget set, and the
  retain graph facts are grouped by how many entities they share with the forgotten facts;
* **owners** (WaterDrum, Lu et al. 2025): the training authors are split among data owners whose
  QA answers carry their key's lexical watermark (the QA rows are the owners' watermarked
  answers); with ``num_owners`` = 10 the last owner owns exactly the forget10 authors.

Everything lives in one :class:`~jaxunlearn.scenarios.lm.benchmark.LMBenchmark` (``lm``) so the
LM scenario's plan, artefacts (target and retain models, checkpointed) and rule runner are reused
unchanged: ``lm.train`` = every training row, ``lm.forget[split]`` = what unlearning forgets (QA
rows of the forget authors and their graph facts), ``lm.retain[split]`` = what the retain model
(the exact-unlearning oracle) trains on (every form of every other training fact).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxunlearn.core.checks import check_count
from jaxunlearn.data import anti_samples
from jaxunlearn.data import fictitious_authors as fa
from jaxunlearn.data import fictitious_variants as fv
from jaxunlearn.data.tokenizer import Tokenizer
from jaxunlearn.scenarios.lm.benchmark import LMBenchmark

SPLIT = "forget10"
CORPUS_DEFAULTS: dict[str, Any] = {
    "num_authors": 40,
    "qa_per_author": 5,
    "num_utility": 20,
    "seed": 0,
    "vocab_size": 512,
}
VARIANT_DEFAULTS: dict[str, Any] = {
    "train_forms": fv.FORMS,
    "unlearn_form": "qa",
    "num_options": 4,
    "co_authors": 1,
    "contracts": 1,
    "num_owners": 10,
    "context_shots": 2,  # in-context audits: the context holds this many extra QA pairs
}


@dataclasses.dataclass
class RobustBenchmark:
    """The rows and evaluation sets of the robust-LM experiment.

    Attributes:
      lm: the rows as an :class:`~jaxunlearn.scenarios.lm.benchmark.LMBenchmark` (see the module
        docstring for its ``train``/``forget``/``retain``).
      corpus, forms, graph, owners: the variants the rows came from.
      split: the forget split (``forget10``).
      train_forms: forms the target and retain models train on; unlearn_form: the one unlearning
        reads.
      forget_records, retain_records: training-author record indices of the forget authors and
        of the others (utility facts excluded).
      form_sets: ``{"forget"|"retain": {form: FormsCorpus.encode(...)}}`` (every rendered form,
        the untrained ones too).
      unlearn_retain: QA-form rows the rules' retain part reads (retain authors' QA, utility
        facts, retain graph facts).
      utility_rows: rows of the utility facts (relearning on unrelated text).
      graph_forget: rows of the graph facts touching a forget author.
      graph_retain: ``{dependence: rows}`` retain graph facts sharing 0, 1 or 2 entities with the
        forgotten facts.
      key_mask: bool ``[N, T]`` aligned with ``lm.y``: the targets that carry each row's key fact.
      forget_owner, retain_owner: the owner of the forget authors and a retain owner (control).
      context_len: the model's context (an in-context prompt holds ``context_shots`` extra pairs).
      questions: the question of every row of ``lm``.
    """

    lm: LMBenchmark
    corpus: fa.FictitiousAuthors
    forms: fv.FormsCorpus
    graph: fv.KnowledgeGraph
    owners: fv.WatermarkedOwners
    split: str
    train_forms: tuple[str, ...]
    unlearn_form: str
    forget_records: np.ndarray
    retain_records: np.ndarray
    form_sets: dict
    unlearn_retain: np.ndarray
    utility_rows: np.ndarray
    graph_forget: np.ndarray
    graph_retain: dict
    key_mask: np.ndarray
    forget_owner: int
    retain_owner: int
    context_len: int
    questions: tuple[str, ...] = ()

    @property
    def tokenizer(self) -> Tokenizer:
        return self.lm.tokenizer


def check_variants(variants: Mapping) -> dict:
    """``variants`` with :data:`VARIANT_DEFAULTS` filled in; ``ValueError`` naming the setting
    for an unknown key, a form the corpus does not render, or an unlearning form the target does
    not train on."""
    unknown = sorted(set(variants) - set(VARIANT_DEFAULTS))
    if unknown:
        raise ValueError(
            f"`variants` has unknown keys {unknown}; valid: {sorted(VARIANT_DEFAULTS)}"
        )
    v = {**VARIANT_DEFAULTS, **dict(variants)}
    try:
        v["train_forms"] = fv.check_forms(tuple(v["train_forms"]))
    except ValueError as e:
        raise ValueError(f"`variants.train_forms`: {e}") from None
    if v["unlearn_form"] not in v["train_forms"]:
        raise ValueError(
            f"`variants.unlearn_form` {v['unlearn_form']!r} is not one of `variants.train_forms` "
            f"{list(v['train_forms'])}: unlearning a form the target never learned measures nothing"
        )
    if v["unlearn_form"] != "qa":
        raise ValueError(
            f"`variants.unlearn_form` must be 'qa' (the form the rules' extras, IdkDPO's and "
            f"AltPO's answers, are written in); got {v['unlearn_form']!r}"
        )
    v["context_shots"] = check_count(v["context_shots"], "variants.context_shots", 1)
    return v


def _qa_answers(corpus, owners, records) -> list[str]:
    """Each record's answer as its owner writes it (watermarked); a holdout or utility record's
    own answer (no owner), as is an answer whose watermark would touch the key fact."""
    owner_of = {r: o.index for o in owners.owners if o.duplicate_of < 0 for r in o.records}
    out = []
    for r in records:
        text = r.answer
        if r.index in owner_of:
            marked = owners.answer(owner_of[r.index], r.index)
            text = marked if r.key_fact in marked else r.answer
        out.append(text)
    return out


def build_benchmark(data_kwargs: Mapping, variants: Mapping) -> RobustBenchmark:
    """The :class:`RobustBenchmark` of the corpus ``data_kwargs`` (:data:`CORPUS_DEFAULTS`:
    ``num_authors``, ``qa_per_author``, ``num_utility``, ``seed``, ``vocab_size``) and the
    ``variants`` (:data:`VARIANT_DEFAULTS`). Deterministic: the same settings give the same rows
    (the tokenizer is trained on every text of every variant)."""
    unknown = sorted(set(data_kwargs) - set(CORPUS_DEFAULTS))
    if unknown:
        raise ValueError(
            f"`data_kwargs` has unknown keys {unknown}; valid: {sorted(CORPUS_DEFAULTS)}"
        )
    ck = {**CORPUS_DEFAULTS, **dict(data_kwargs)}
    v = check_variants(variants)
    corpus = fa.FictitiousAuthors(
        int(ck["num_authors"]), int(ck["qa_per_author"]), int(ck["num_utility"]), int(ck["seed"])
    )
    forms = fv.FormsCorpus(corpus, num_options=int(v["num_options"]), seed=int(ck["seed"]))
    graph = fv.KnowledgeGraph(
        corpus, co_authors=int(v["co_authors"]), contracts=int(v["contracts"]), seed=int(ck["seed"])
    )
    owners = fv.WatermarkedOwners(corpus, num_owners=int(v["num_owners"]), seed=int(ck["seed"]))
    tok = Tokenizer.train(
        corpus.texts() + forms.texts() + graph.texts() + owners.texts(),
        vocab_size=int(ck["vocab_size"]),
    )
    split = corpus.split(SPLIT)
    forget_authors = set(split.authors)
    train_records = corpus.split("train").records  # training authors, then utility facts
    holdout_records = corpus.split("holdout10").records
    author_records = [r for r in train_records if not r.is_utility]
    forget_rec = np.asarray([r.index for r in author_records if r.author in forget_authors])
    retain_rec = np.asarray([r.index for r in author_records if r.author not in forget_authors])
    other_forms = [f for f in v["train_forms"] if f != "qa"]
    forget_entities = set(forget_authors)
    graph_forget_facts = [f.index for f in graph.facts if set(f.entities) & forget_entities]
    graph_retain_facts = [f.index for f in graph.facts if not set(f.entities) & forget_entities]

    # Sequence length: every row of every variant fits.
    qa_records = list(train_records) + list(holdout_records)
    qa_answers = _qa_answers(corpus, owners, qa_records)
    width = max(
        corpus.fit_max_len(tok),
        forms.fit_max_len(tok),
        _fit(tok, [r.question for r in qa_records], qa_answers),
        _fit(
            tok,
            [f.question for f in graph.facts],
            [a for f in graph.facts for a in (f.answer, *f.perturbed_answers)],
            per_question=1 + fa.NUM_PERTURBED,
        ),
    )

    # 1. QA rows (training records, then holdout): the corpus's own fields, owners' answers.
    qa = corpus.encode(tok, qa_records, width)
    qa["tokens"], qa["labels"] = tok.encode_batch(
        [r.question for r in qa_records], qa_answers, max_len=width
    )
    qa["key_mask"] = tok.answer_span_mask(
        [r.question for r in qa_records],
        qa_answers,
        [
            (a.find(r.key_fact), a.find(r.key_fact) + len(r.key_fact))
            for r, a in zip(qa_records, qa_answers, strict=True)
        ],
        max_len=width,
    )
    n_train_qa = len(train_records)
    parts = [
        _qa_part(qa, [r.question for r in qa_records], qa_answers, [r.key_fact for r in qa_records])
    ]
    # 2. The other forms of every training author's fact.
    form_rows: dict[str, np.ndarray] = {}
    start = len(qa_records)
    for form in other_forms:
        enc = forms.encode(tok, author_records, form, width)
        items = forms.render(author_records, form)
        parts.append(_self_part(enc, items, np.asarray([r.author for r in author_records])))
        form_rows[form] = np.arange(start, start + len(items), dtype=np.int32)
        start += len(items)
    # 3. The knowledge graph's facts.
    g = graph.encode(tok, range(len(graph.facts)), width)
    parts.append(_graph_part(g, graph, tok, width))
    graph_rows = np.arange(start, start + len(graph.facts), dtype=np.int32)
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "text"}
    texts = {k: sum((list(p["text"][k]) for p in parts), []) for k in parts[0]["text"]}

    qa_of = {r.index: i for i, r in enumerate(qa_records)}
    forget_qa = np.asarray([qa_of[int(r)] for r in forget_rec], np.int32)
    retain_qa = np.asarray([qa_of[int(r)] for r in retain_rec], np.int32)
    utility_rows = np.asarray([i for i, r in enumerate(train_records) if r.is_utility], np.int32)
    rec_pos_forget = np.searchsorted(np.asarray([r.index for r in author_records]), forget_rec)
    forget_other = np.concatenate(
        [form_rows[f][rec_pos_forget] for f in other_forms] or [np.zeros(0, np.int32)]
    )
    g_forget = graph_rows[np.asarray(graph_forget_facts, np.int64)]
    g_retain = graph_rows[np.asarray(graph_retain_facts, np.int64)]
    dep = np.asarray(
        [graph.dependence(int(i), graph_forget_facts) for i in graph_retain_facts], np.int32
    )
    train = np.concatenate([np.arange(n_train_qa), *form_rows.values(), graph_rows]).astype(
        np.int32
    )
    forget = np.sort(np.concatenate([forget_qa, g_forget])).astype(np.int32)
    oracle = np.setdiff1d(train, np.concatenate([forget_qa, forget_other, g_forget])).astype(
        np.int32
    )
    unlearn_retain = np.sort(np.concatenate([retain_qa, utility_rows, g_retain])).astype(np.int32)

    questions = texts["question"]
    longest_prompt = max(len(tok.prompt_ids(q)) for q in questions)
    prompts, _ = tok.encode_prompts(questions, max_len=longest_prompt, padding="right")
    context = width * (1 + int(v["context_shots"]))
    lm = LMBenchmark(
        x=merged["x"],
        y=merged["y"],
        para_x=merged["para_x"],
        para_y=merged["para_y"],
        pert_x=merged["pert_x"],
        pert_y=merged["pert_y"],
        prompts=prompts,
        answers=tuple(texts["answer"]),
        key_facts=tuple(texts["key_fact"]),
        author=merged["author"],
        extra={
            **{k: merged[k] for k in ("idk_x", "idk_y", "alt_x", "alt_y")},
            # UnSTAR's anti-samples of the QA rows (filler elsewhere: never a forget QA row).
            **anti_samples.anti_sample_extras(
                corpus,
                tok,
                [*qa_records, *[None] * (len(merged["x"]) - len(qa_records))],
                width,
                seed=int(ck["seed"]),
            ),
        },
        train=train,
        forget={SPLIT: forget},
        retain={SPLIT: oracle},
        holdout=np.arange(n_train_qa, len(qa_records), dtype=np.int32),
        utility=utility_rows,
        tokenizer=tok,
        vocab_size=int(tok.vocab_size),
        max_len=context,
        pad_id=int(tok.pad_id),
        eos_id=int(tok.eos_id),
    )
    form_sets = {
        part: {
            f: forms.encode(tok, [corpus.records[int(i)] for i in rec], f, width) for f in fv.FORMS
        }
        for part, rec in (("forget", forget_rec), ("retain", retain_rec))
    }
    forget_owner = _owner_of(owners, forget_authors)
    retain_owner = 0 if forget_owner != 0 else 1
    return RobustBenchmark(
        lm=lm,
        corpus=corpus,
        forms=forms,
        graph=graph,
        owners=owners,
        split=SPLIT,
        train_forms=tuple(v["train_forms"]),
        unlearn_form=v["unlearn_form"],
        forget_records=forget_rec.astype(np.int32),
        retain_records=retain_rec.astype(np.int32),
        form_sets=form_sets,
        unlearn_retain=unlearn_retain,
        utility_rows=utility_rows,
        graph_forget=g_forget.astype(np.int32),
        graph_retain={d: g_retain[dep == d].astype(np.int32) for d in (0, 1, 2)},
        key_mask=merged["key_mask"],
        forget_owner=forget_owner,
        retain_owner=retain_owner,
        context_len=context,
        questions=tuple(questions),
    )


def _fit(tok, questions, answers, *, per_question: int = 1, multiple: int = 8) -> int:
    """The smallest multiple of ``multiple`` that every prompt + answer (+ BOS/EOS) fits."""
    longest = 0
    for i, q in enumerate(questions):
        p = len(tok.prompt_ids(q))
        for a in answers[i * per_question : (i + 1) * per_question]:
            longest = max(longest, p + len(tok.answer_ids(a)) + 2)
    return int(-(-longest // multiple) * multiple)


def _qa_part(enc, questions, answers, key_facts) -> dict:
    return {
        "x": enc["tokens"],
        "y": enc["labels"],
        "para_x": enc["paraphrase_x"],
        "para_y": enc["paraphrase_y"],
        "pert_x": enc["perturbed_x"],
        "pert_y": enc["perturbed_y"],
        "idk_x": enc["idk_x"],
        "idk_y": enc["idk_y"],
        "alt_x": enc["alt_x"],
        "alt_y": enc["alt_y"],
        "key_mask": enc["key_mask"],
        "author": enc["author"].astype(np.int32),
        "text": {"question": questions, "answer": answers, "key_fact": key_facts},
    }


def _self_part(enc, items: Sequence[fv.FormItem], authors) -> dict:
    """Rows of a non-QA form. Unlearning never forgets them (it reads the QA form only), so the
    rule extras and the truth-ratio fields, which only forget rows feed, are the row itself."""
    x, y = enc["tokens"], enc["labels"]
    pert = np.repeat(x[:, None], fa.NUM_PERTURBED, 1), np.repeat(y[:, None], fa.NUM_PERTURBED, 1)
    return {
        "x": x,
        "y": y,
        "para_x": x,
        "para_y": y,
        "pert_x": pert[0],
        "pert_y": pert[1],
        "idk_x": x,
        "idk_y": y,
        "alt_x": x,
        "alt_y": y,
        "key_mask": enc["key_mask"],
        "author": np.asarray(authors, np.int32),
        "text": {
            "question": [i.question for i in items],
            "answer": [i.answer for i in items],
            "key_fact": [i.key_fact for i in items],
        },
    }


def _graph_part(enc, graph: fv.KnowledgeGraph, tok, width: int) -> dict:
    """Graph fact rows: the perturbed answers are the facts' own; IdkDPO's answer is one of the
    corpus's "I don't know" answers and AltPO's the first perturbed answer."""
    facts = graph.facts
    idk = [fa.IDK_ANSWERS[f.index % len(fa.IDK_ANSWERS)] for f in facts]
    idk_x, idk_y = tok.encode_batch([f.question for f in facts], idk, max_len=width)
    x, y = enc["tokens"], enc["labels"]
    author = np.asarray(
        [min(e for e in f.entities if e < graph.corpus.num_authors) for f in facts], np.int32
    )
    return {
        "x": x,
        "y": y,
        "para_x": x,
        "para_y": y,
        "pert_x": enc["perturbed_x"],
        "pert_y": enc["perturbed_y"],
        "idk_x": idk_x,
        "idk_y": idk_y,
        "alt_x": enc["perturbed_x"][:, 0],
        "alt_y": enc["perturbed_y"][:, 0],
        "key_mask": enc["key_mask"],
        "author": author,
        "text": {
            "question": [f.question for f in facts],
            "answer": [f.answer for f in facts],
            "key_fact": [f.key_fact for f in facts],
        },
    }


def _owner_of(owners: fv.WatermarkedOwners, authors) -> int:
    """The owner holding every author of ``authors``; ``ValueError`` when they are spread over
    several (``variants.num_owners`` must divide the training authors so that the last owner
    holds exactly the forget10 authors)."""
    holders = {o.index for o in owners.owners if set(o.authors) & set(authors)}
    if len(holders) != 1 or set(owners.owners[min(holders)].authors) != set(authors):
        raise ValueError(
            f"`variants.num_owners`={len(owners.owners)}: the forget authors {sorted(authors)} are "
            f"not exactly one owner's (owners hold contiguous author blocks; use num_owners = 10 "
            f"with num_authors a multiple of 10)"
        )
    return min(holders)
