"""A TOFU-shaped benchmark as token arrays: what the LM runner trains on and audits with.

:class:`LMBenchmark` holds every question-answer pair of the corpus (author QA of every author,
holdout authors included, and the utility facts) as one row of right-padded ``tokens``/``labels``
(``docs/language_models.md``), with the row-aligned evaluation fields TOFU needs: the paraphrased
answer and the perturbed (wrong) answers for the truth ratio, the question alone as a generation
prompt, the answer text and its key fact for ROUGE and the leak rule, IdkDPO's "I don't know" and
AltPO's alternate answers as ``Stream`` extras. Index sets name the rows: the target's training
rows, each split's forget and retain rows, the holdout (never trained on) and utility rows.

:func:`load_benchmark` builds one from a registered corpus (``fictitious_authors``) and its
tokenizer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np


@dataclasses.dataclass
class LMBenchmark:
    """The corpus as row-aligned token arrays and index sets.

    Attributes:
      x, y: int32 ``[N, T]`` tokens and shifted answer labels of every QA row.
      para_x, para_y: ``[N, T]`` the question with its paraphrased answer.
      pert_x, pert_y: ``[N, K, T]`` the question with each of ``K`` perturbed answers.
      prompts: ``[N, T]`` the question alone, formatted for generation (right-padded).
      answers, key_facts: ``N`` strings: the answer text and the fact a leaking answer names.
      author: int ``[N]`` the author of each row, ``-1`` for utility facts.
      extra: ``{name: [N, T]}`` per-row extras for the rules (``idk_x``, ``idk_y``, ``alt_x``,
        ``alt_y``).
      train: rows the target trains on (all but the holdout authors', utility included).
      forget, retain: ``{split: rows}``; ``retain[s]`` = ``train`` minus ``forget[s]``.
      holdout: rows of authors never trained on (non-members of the membership audits).
      utility: rows of the utility facts (trained on; "real authors / world facts" of TOFU).
      passages: ``{author: text}`` (MUSE verbatim memorisation), may be empty.
      tokenizer: decodes generated tokens (``decode(ids) -> str``).
      vocab_size, max_len: the transformer's vocabulary and context.
      pad_id, eos_id: the tokenizer's padding and end-of-sequence ids.
    """

    x: np.ndarray
    y: np.ndarray
    para_x: np.ndarray
    para_y: np.ndarray
    pert_x: np.ndarray
    pert_y: np.ndarray
    prompts: np.ndarray
    answers: tuple[str, ...]
    key_facts: tuple[str, ...]
    author: np.ndarray
    extra: dict[str, np.ndarray]
    train: np.ndarray
    forget: dict[str, np.ndarray]
    retain: dict[str, np.ndarray]
    holdout: np.ndarray
    utility: np.ndarray
    tokenizer: Any
    vocab_size: int
    max_len: int
    pad_id: int = 0
    eos_id: int = 1
    passages: dict = dataclasses.field(default_factory=dict)

    def check_split(self, name: str) -> None:
        """``ValueError`` for an unknown or empty split, or a forget set that overlaps retain."""
        if name not in self.forget:
            raise ValueError(f"Unknown forget split {name!r}; valid: {sorted(self.forget)}")
        forget, retain = self.forget[name], self.retain[name]
        if len(forget) == 0:
            raise ValueError(f"Forget split {name!r} is empty")
        overlap = np.intersect1d(forget, retain)
        if len(overlap):
            raise ValueError(
                f"Forget split {name!r} overlaps its retain set in {len(overlap)} rows"
            )

    def authors_of(self, rows) -> np.ndarray:
        """The distinct authors of ``rows``, in order of first appearance."""
        a = self.author[np.asarray(rows)]
        _, first = np.unique(a, return_index=True)
        return a[np.sort(first)]

    def rows_of_authors(self, authors, within=None) -> np.ndarray:
        """Rows (of ``within``, default every training row) whose author is in ``authors``."""
        within = self.train if within is None else np.asarray(within)
        return within[np.isin(self.author[within], np.asarray(authors))].astype(np.int32)


def load_benchmark(dataset: str, data_kwargs: Mapping, model_kwargs: Mapping) -> LMBenchmark:
    """The benchmark of a registered corpus (``fictitious_authors``): its QA rows tokenised with
    the corpus's own tokenizer. ``model_kwargs`` may set ``max_len`` (default: the longest row)."""
    from jaxunlearn import data as data_lib

    data_lib.check_name(dataset)
    corpus = data_lib.load(dataset, **dict(data_kwargs))
    return from_corpus(corpus, max_len=model_kwargs.get("max_len"))


def from_corpus(corpus, *, max_len: int | None = None) -> LMBenchmark:
    """An :class:`LMBenchmark` of a ``fictitious_authors`` corpus object."""
    raise NotImplementedError  # filled in when the corpus lands
