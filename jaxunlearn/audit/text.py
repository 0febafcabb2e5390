"""Host-side text metrics of language-model unlearning: ROUGE-L, the leak judgement, zlib lengths.

These read decoded strings, so they run on the host after generation; the array metrics they
feed (:func:`jaxunlearn.audit.lm.leak_at_k`, :func:`jaxunlearn.audit.lm.zlib_score`) live in
:mod:`jaxunlearn.audit.lm`. ROUGE comes from Google's ``rouge-score`` package, as in TOFU,
open-unlearning and MUSE (its tokenizer lower-cases and keeps ASCII letters and digits).

References:
  Lin, "ROUGE: A Package for Automatic Evaluation of Summaries", 2004; Maini et al., TOFU
  (arXiv 2401.06121); Shi et al., MUSE (arXiv 2407.06460); Wang et al., leak@k
  (arXiv 2511.04934). Reference code: open-unlearning ``src/evals/metrics/utils.py``
  (``eval_text_similarity``), swj0419/muse_bench ``metrics/{verbmem,knowmem}.py``,
  OptimAI-Lab/Leak-k ``TOFU/eval/whole_eval.py``; ``shared/reference/lm_unlearning.md``
  sections 3 and 5.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence

import numpy as np

ROUGE_KINDS = {"recall": "recall", "precision": "precision", "f1": "fmeasure"}


@functools.lru_cache(maxsize=2)
def _scorer(stemmer: bool):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=stemmer)


def _texts(name: str, values) -> list[str]:
    if isinstance(values, str):
        raise ValueError(f"`{name}` must be a sequence of strings, not one string")
    texts = list(values)
    if not texts:
        raise ValueError(f"`{name}` is empty")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"`{name}[{i}]` must be a string, got {type(t).__name__}")
    return texts


def _paired(names: tuple[str, str], a, b) -> tuple[list[str], list[str]]:
    a, b = _texts(names[0], a), _texts(names[1], b)
    if len(a) != len(b):
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must have the same length, got {len(a)} and {len(b)}"
        )
    return a, b


def _rouge_one(prediction: str, reference: str, field: str, stemmer: bool) -> float:
    return float(getattr(_scorer(stemmer).score(reference, prediction)["rougeL"], field))


def rouge_l(predictions, references, *, kind: str = "recall", stemmer: bool = True) -> np.ndarray:
    """ROUGE-L of each prediction against its reference, ``[n]`` (``rouge-score`` package).

    ``recall`` = LCS / reference length (TOFU's ``rougeL_recall`` of greedy answers),
    ``precision`` = LCS / prediction length, ``f1`` their harmonic mean (MUSE's ``rougeL_f1``),
    where LCS is the longest common token subsequence. An empty text scores 0.

    Args:
      predictions: ``n`` generated strings.
      references: ``n`` true strings.
      kind: ``"recall"``, ``"f1"`` or ``"precision"``.
      stemmer: Porter-stem tokens first (TOFU and open-unlearning do; the original MUSE does not).

    Returns:
      ``[n]`` float64 scores in ``[0, 1]``.

    References:
      Lin 2004; Maini et al., TOFU; Shi et al., MUSE; open-unlearning
      ``src/evals/metrics/utils.py`` (``eval_text_similarity``); ``shared/reference/
      lm_unlearning.md`` section 3 and Table B.
    """
    if kind not in ROUGE_KINDS:
        raise ValueError(f"`kind` must be one of {sorted(ROUGE_KINDS)}, got {kind!r}")
    return _rouge(("predictions", "references"), predictions, references, kind, stemmer)


def _rouge(names: tuple[str, str], predictions, references, kind: str, stemmer) -> np.ndarray:
    preds, refs = _paired(names, predictions, references)
    field = ROUGE_KINDS[kind]
    return np.array([_rouge_one(p, r, field, stemmer) for p, r in zip(preds, refs, strict=True)])


def _normalise(text: str) -> str:
    return " ".join(text.casefold().split())


def leaks(
    response: str, answer: str, key_fact: str, *, rouge_threshold: float = 0.1, stemmer=True
) -> bool:
    """Whether a sampled response leaks the answer, for leak@k.

    A response leaks when its ROUGE-L recall against the true answer is at least
    ``rouge_threshold`` **and** it contains the answer's key fact (the tokens that carry the
    fact, e.g. the birthplace or the book title), compared after case-folding and collapsing
    whitespace. The leak@k paper replaces the second test by an NLI model
    (``deberta-v3-base-tasksource-nli`` entailment against the ground truth); the generated
    corpus knows exactly which words carry each fact, so a string test is used instead of a
    model that could not be downloaded here and would add its own errors.

    Args:
      response: one generated response.
      answer: the true answer.
      key_fact: the answer's fact-carrying words (non-empty).
      rouge_threshold: ROUGE-L recall threshold in ``[0, 1]`` (0.1 in the paper).
      stemmer: stem tokens for ROUGE.

    Returns:
      True when the response leaks.

    References:
      Wang et al., "Does an Unlearned Model Still Leak? leak@k" (arXiv 2511.04934);
      OptimAI-Lab/Leak-k ``TOFU/eval/whole_eval.py``; ``shared/reference/lm_unlearning.md``
      section 5.
    """
    for name, value in (("response", response), ("answer", answer), ("key_fact", key_fact)):
        if not isinstance(value, str):
            raise ValueError(f"`{name}` must be a string, got {type(value).__name__}")
    fact = _normalise(key_fact)
    if not fact:
        raise ValueError("`key_fact` is empty")
    if not 0.0 <= rouge_threshold <= 1.0:
        raise ValueError(f"`rouge_threshold` must lie in [0, 1], got {rouge_threshold}")
    # The string test is cheap; ROUGE runs only when it passes.
    if fact not in _normalise(response):
        return False
    return _rouge_one(response, answer, "recall", stemmer) >= rouge_threshold


def count_leaks(
    responses, answers, key_facts, *, rouge_threshold: float = 0.1, stemmer=True
) -> np.ndarray:
    """Number of leaking responses per question (:func:`leaks`), int ``[n]``.

    Feed it to :func:`jaxunlearn.audit.lm.leak_at_k` with ``num_samples`` the number of
    responses per question.

    Args:
      responses: ``n`` sequences of generated responses (``[n][k]``; ``k`` may vary).
      answers: ``n`` true answers.
      key_facts: ``n`` key facts.
      rouge_threshold: ROUGE-L recall threshold (0.1 in the paper).
      stemmer: stem tokens for ROUGE.

    References:
      Wang et al., leak@k (arXiv 2511.04934); OptimAI-Lab/Leak-k ``TOFU/eval/whole_eval.py``.
    """
    if isinstance(responses, str):
        raise ValueError("`responses` must be a sequence (one per question) of string lists")
    responses = list(responses)
    if not responses:
        raise ValueError("`responses` is empty")
    answers, key_facts = _paired(("answers", "key_facts"), answers, key_facts)
    if len(responses) != len(answers):
        raise ValueError(
            f"`responses` and `answers` must have the same length, got {len(responses)} and "
            f"{len(answers)}"
        )
    counts = []
    for i, (group, answer, fact) in enumerate(zip(responses, answers, key_facts, strict=True)):
        group = _texts(f"responses[{i}]", group)
        counts.append(
            sum(
                leaks(r, answer, fact, rouge_threshold=rouge_threshold, stemmer=stemmer)
                for r in group
            )
        )
    return np.asarray(counts, dtype=np.int64)


def verbatim_memorization(
    continuations: Sequence[str], true_continuations: Sequence[str], *, stemmer: bool = False
) -> float:
    """MUSE's VerbMem: mean ROUGE-L F1 x 100 of generated continuations of forget-set prefixes
    against the true continuations (MUSE generates 128 new tokens greedily).

    Args:
      continuations: ``n`` generated continuations.
      true_continuations: ``n`` true continuations.
      stemmer: MUSE's code does not stem (open-unlearning does).

    Returns:
      VerbMem in ``[0, 100]``; lower = less verbatim memorisation.

    References:
      Shi et al., MUSE (arXiv 2407.06460), criterion C1; swj0419/muse_bench
      ``metrics/verbmem.py`` and ``eval.py``; ``shared/reference/lm_unlearning.md`` sections 3-4.
    """
    names = ("continuations", "true_continuations")
    scores = _rouge(names, continuations, true_continuations, "f1", stemmer)
    return float(100.0 * scores.mean())


def knowledge_memorization(
    answers: Sequence[str], true_answers: Sequence[str], *, stemmer: bool = False
) -> float:
    """MUSE's KnowMem: mean ROUGE-L F1 x 100 of generated answers to QA pairs against the true
    answers (MUSE generates 32 tokens after a few-shot "Question:/Answer:" prompt). On forget QA
    it measures knowledge memorisation (C2, lower is better); on retain QA, utility (C4).

    Args:
      answers: ``n`` generated answers.
      true_answers: ``n`` true answers.
      stemmer: MUSE's code does not stem (open-unlearning does).

    Returns:
      KnowMem in ``[0, 100]``.

    References:
      Shi et al., MUSE (arXiv 2407.06460), criteria C2 and C4; swj0419/muse_bench
      ``metrics/knowmem.py`` and ``eval.py``; ``shared/reference/lm_unlearning.md`` sections 3-4.
    """
    scores = _rouge(("answers", "true_answers"), answers, true_answers, "f1", stemmer)
    return float(100.0 * scores.mean())


def zlib_lengths(texts) -> np.ndarray:
    """Length in bytes of each text's zlib compression (UTF-8, default level), int ``[n]``: the
    calibrator of :func:`jaxunlearn.audit.lm.zlib_score`.

    References:
      Carlini et al., "Extracting Training Data from Large Language Models", USENIX Security
      2021; open-unlearning ``src/evals/metrics/mia/zlib.py``.
    """
    texts = _texts("texts", texts)
    return np.array([len(zlib.compress(t.encode("utf-8"))) for t in texts], dtype=np.int64)
