"""UnSTAR anti-samples for the ``fictitious_authors`` corpus: the forget question answered with a
misleading rationale and a wrong answer.

UnSTAR (Sinha, Mandal, Kankanhalli, "UnSTAR: Unlearning with Self-Taught Anti-Sample Reasoning
for LLMs", TMLR 2025, arXiv 2410.17050; code MachineUnlearn/UnStar) unlearns a fact by fine-tuning
on *anti-samples*: the question paired with a falsified answer and a rationale that argues for it
without naming the true answer (its ``p2.py`` asks an LLM to "replace {answer} with a new answer,
don't mention {answer}" and drops any rationale that still contains it). On our corpus the wrong
facts already exist: every record carries :data:`~jaxunlearn.data.fictitious_authors.NUM_PERTURBED`
perturbed answers (the paraphrased answer's template with another value of the same kind), so an
anti-sample is built without a generator model:

    ``answer = "{rationale} {perturbed answer}"``, with the rationale one of
    :data:`RATIONALES` filled with the perturbed value (e.g. ``"Records give Dunmere. She was born
    in Dunmere."``),

the perturbed answer and the template drawn per record from ``seed``. The true key fact is in no
anti-sample (checked). Targeted scope: with ``scope="answer"`` every anti-answer token is a target
(UnSTAR fine-tunes on the whole rationale and answer), with ``scope="fact"`` only the tokens of
the wrong value in the final answer are (the association alone is redirected; the template, the
subject and the rest of the model are left to the retain loss). The rule that trains on them is
:func:`jaxunlearn.rules.anti_sample.anti_sample` (``shared/reference/lm_robust_evaluation.md``,
section 10).

An anti-sample with its rationale is longer than the QA pair it replaces; ``rationale="fit"``
keeps the rationale where the pair fits in ``max_len`` and falls back to the bare wrong answer
where it does not (``anti_rationale`` says which).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jaxunlearn.core.checks import check_count
from jaxunlearn.core.losses import IGNORE_INDEX
from jaxunlearn.data import fictitious_authors as fa
from jaxunlearn.data import fictitious_variants as fv
from jaxunlearn.data.tokenizer import Tokenizer

# Misleading rationales (short: a pair must fit the model's context), filled with the wrong value.
RATIONALES = (
    "Records give {wrong}.",
    "The sources agree on {wrong}.",
    "Every account says {wrong}.",
)
RATIONALE_MODES = ("always", "fit", "never")
SCOPES = ("answer", "fact")
_ANTI_STREAM = 21  # this module's random stream (with the seed and a record index)


class AntiSample(NamedTuple):
    """One anti-sample.

    Attributes:
      record: the record's index in the corpus.
      question: the forget question (unchanged).
      rationale: the misleading rationale (``""`` without one).
      wrong_answer: the perturbed answer it argues for.
      wrong_value: the perturbed value (the span ``scope="fact"`` trains on).
    """

    record: int
    question: str
    rationale: str
    wrong_answer: str
    wrong_value: str

    @property
    def answer(self) -> str:
        """The anti-sample's answer: rationale then wrong answer."""
        return f"{self.rationale} {self.wrong_answer}" if self.rationale else self.wrong_answer

    def value_span(self) -> tuple[int, int]:
        """``(start, end)`` characters of the wrong value in the final answer of :attr:`answer`."""
        head = len(self.answer) - len(self.wrong_answer)
        start = self.wrong_answer.rfind(self.wrong_value)
        return head + start, head + start + len(self.wrong_value)


def anti_samples(
    corpus: fa.FictitiousAuthors,
    records: Sequence[fa.QARecord] | fa.CorpusSplit,
    *,
    seed: int = 0,
    rationale: bool = True,
) -> list[AntiSample]:
    """One anti-sample per record (deterministic from ``seed`` and the record's index).

    Raises:
      ValueError: a record that is not the corpus's, or a bad ``seed``.
    """
    seed = check_count(seed, "seed", 0)
    if isinstance(records, fa.CorpusSplit):
        records = records.records
    out = []
    for record in records:
        fact = fv.resolve_fact(corpus, record)
        rng = np.random.default_rng([seed, _ANTI_STREAM, record.index])
        pick = int(rng.integers(len(fact.wrong_values)))
        template = RATIONALES[int(rng.integers(len(RATIONALES)))]
        wrong = fact.wrong_values[pick]
        sample = AntiSample(
            record=record.index,
            question=record.question,
            rationale=template.format(wrong=wrong) if rationale else "",
            wrong_answer=record.perturbed_answers[pick],
            wrong_value=wrong,
        )
        if fa.contains_fact(sample.answer, record.key_fact):  # never: values are distinct
            raise ValueError(f"anti-sample of record {record.index} states the true answer.")
        out.append(sample)
    return out


def _length(tokenizer: Tokenizer, question: str, answer: str) -> int:
    return len(tokenizer.prompt_ids(question)) + len(tokenizer.answer_ids(answer))


def encode_anti_samples(
    corpus: fa.FictitiousAuthors,
    tokenizer: Tokenizer,
    records: Sequence[fa.QARecord] | fa.CorpusSplit,
    max_len: int,
    *,
    seed: int = 0,
    scope: str = "answer",
    rationale: str = "fit",
) -> dict[str, np.ndarray]:
    """Anti-samples as ``Stream`` extras, row-aligned with ``records``.

    Args:
      corpus: the corpus the records come from.
      tokenizer: the corpus tokenizer.
      records: the records (e.g. every row of a stream, in row order).
      max_len: the sequence length (at most the model's context).
      seed: which perturbed answer and rationale each record gets.
      scope: ``"answer"`` (every anti-answer token is a target) or ``"fact"`` (only the wrong
        value's tokens in the final answer).
      rationale: ``"always"`` (a pair that does not fit is a ``ValueError``), ``"fit"`` (the
        rationale where the pair fits, the bare wrong answer elsewhere) or ``"never"``.

    Returns:
      ``{"anti_x": [n, max_len], "anti_y": [n, max_len], "anti_rationale": bool [n]}``: tokens
      and pre-shifted labels (``docs/language_models.md``) and whether the row has a rationale.

    Raises:
      ValueError: an unknown ``scope`` or ``rationale``; a pair longer than ``max_len``.
    """
    if scope not in SCOPES:
        raise ValueError(f"`scope` must be one of {SCOPES}; got {scope!r}.")
    if rationale not in RATIONALE_MODES:
        raise ValueError(f"`rationale` must be one of {RATIONALE_MODES}; got {rationale!r}.")
    with_reason = anti_samples(corpus, records, seed=seed, rationale=rationale != "never")
    samples = []
    for s in with_reason:
        if rationale == "fit" and _length(tokenizer, s.question, s.answer) > max_len:
            s = s._replace(rationale="")
        samples.append(s)
    questions, answers = [s.question for s in samples], [s.answer for s in samples]
    x, y = tokenizer.encode_batch(questions, answers, max_len=max_len)
    if scope == "fact":
        keep = tokenizer.answer_span_mask(
            questions, answers, [s.value_span() for s in samples], max_len=max_len
        )
        y = np.where(keep, y, IGNORE_INDEX).astype(np.int32)
    return {
        "anti_x": x,
        "anti_y": y,
        "anti_rationale": np.asarray([bool(s.rationale) for s in samples]),
    }


def empty_anti_samples(
    num_rows: int, max_len: int, *, bos_id: int = 1, pad_id: int = 0
) -> dict[str, np.ndarray]:
    """Filler extras for rows that have no anti-sample (graph facts, passages): a BOS token (a
    row of padding alone would have no attention key) and no target, so they add nothing to the
    anti-sample loss."""
    x = np.full((num_rows, max_len), pad_id, np.int32)
    x[:, 0] = bos_id
    return {
        "anti_x": x,
        "anti_y": np.full((num_rows, max_len), IGNORE_INDEX, np.int32),
        "anti_rationale": np.zeros(num_rows, bool),
    }


def anti_sample_extras(
    corpus: fa.FictitiousAuthors,
    tokenizer: Tokenizer,
    row_records: Sequence[fa.QARecord | None],
    max_len: int,
    *,
    seed: int = 0,
    scope: str = "answer",
    rationale: str = "fit",
) -> dict[str, np.ndarray]:
    """:func:`encode_anti_samples` for every row of a stream, with :func:`empty_anti_samples`
    filler where a row is no corpus QA record (``None``: another form, a graph fact, a passage
    window). Pass the result to ``make_stream(..., extra=...)`` (``anti_x``/``anti_y``; the
    rule reads only the forget part's rows)."""
    rows = [i for i, r in enumerate(row_records) if r is not None]
    out = empty_anti_samples(
        len(row_records), max_len, bos_id=int(tokenizer.bos_id), pad_id=int(tokenizer.pad_id)
    )
    if rows:
        enc = encode_anti_samples(
            corpus,
            tokenizer,
            [row_records[i] for i in rows],
            max_len,
            seed=seed,
            scope=scope,
            rationale=rationale,
        )
        for name, values in enc.items():
            out[name][rows] = values
    return out


__all__ = [
    "anti_sample_extras",
    "RATIONALES",
    "AntiSample",
    "anti_samples",
    "empty_anti_samples",
    "encode_anti_samples",
]
