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

from jaxunlearn.core.checks import check_count


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
      passage_x, passage_y: int32 ``[M, T]`` the passages as language-modelling windows
        (:func:`passage_windows`, in author order), what the models train on when the config's
        ``train_passages`` is set and what VerbMem prompts with.
      passage_author: int32 ``[M]`` the author of each window.
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
    passage_x: np.ndarray | None = None
    passage_y: np.ndarray | None = None
    passage_author: np.ndarray | None = None

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

    def passage_rows(self, authors) -> np.ndarray:
        """Indices into ``passage_x`` of the windows of ``authors`` (empty without passages)."""
        if self.passage_author is None:
            return np.zeros(0, np.int32)
        return np.flatnonzero(np.isin(self.passage_author, np.asarray(authors))).astype(np.int32)


def passage_windows(
    ids, width: int, *, bos_id: int, eos_id: int, pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """A passage's token ids (no special tokens) as language-modelling rows of ``width`` tokens.

    The ids are cut into the fewest consecutive windows of at most ``width - 2`` tokens, of equal
    lengths give or take one (no short tail window); each row is BOS + its window
    (+ EOS after the last window), right-padded with ``pad_id``, with labels pre-shifted
    (``labels[t] = tokens[t + 1]``, ``IGNORE_INDEX`` after the row's last target), as
    :meth:`~jaxunlearn.data.tokenizer.Tokenizer.encode_text` builds a text that fits. A passage
    is longer than the QA rows' context, so the windows let a model of that context memorise it.

    Returns:
      ``(tokens, labels)`` int32 ``[ceil(len(ids) / (width - 2)), width]``.

    >>> passage_windows([5, 6, 7, 8, 9], 5, bos_id=2, eos_id=1, pad_id=0)[0].tolist()
    [[2, 5, 6, 7, 0], [2, 8, 9, 1, 0]]
    """
    from jaxunlearn.core.losses import IGNORE_INDEX

    try:
        width = check_count(width, "width", 3)
    except ValueError as error:
        raise ValueError(f"{error} (BOS, a token, EOS)") from None
    ids = [int(i) for i in ids]
    if not ids:
        raise ValueError("`ids` is empty: a passage needs at least one token")
    count = -(-len(ids) // (int(width) - 2))
    chunks = [c.tolist() for c in np.array_split(np.asarray(ids), count)]
    tokens = np.full((len(chunks), width), pad_id, np.int32)
    labels = np.full((len(chunks), width), IGNORE_INDEX, np.int32)
    for r, chunk in enumerate(chunks):
        seq = [bos_id, *chunk] + ([eos_id] if r == len(chunks) - 1 else [])
        tokens[r, : len(seq)] = seq
        labels[r, : len(seq) - 1] = seq[1:]
    return tokens, labels


def verbmem_split(
    tokens, *, bos_id: int, eos_id: int, pad_id: int, prefix_fraction: float = 0.5
) -> tuple[np.ndarray, list[np.ndarray]]:
    """MUSE's verbatim-memorisation prompts: each row's prefix and the true continuation.

    A row's text is its tokens after BOS, up to its first EOS or pad; the prompt is BOS + the
    first ``max(1, floor(prefix_fraction * n))`` of its ``n`` text tokens (MUSE prompts with a
    passage's first tokens and continues it greedily), the continuation the rest.

    Args:
      tokens: int ``[M, T]`` rows of :func:`passage_windows`, each with at least 2 text tokens.
      prefix_fraction: the share of each row's text in its prompt, in ``(0, 1)``.

    Returns:
      ``(prompts [M, P], continuations)``: prompts right-padded with ``pad_id`` to the longest,
      and ``M`` int32 arrays of the true continuation ids.

    >>> p, c = verbmem_split(np.array([[2, 5, 6, 7, 8, 1]]), bos_id=2, eos_id=1, pad_id=0)
    >>> p.tolist(), [x.tolist() for x in c]
    ([[2, 5, 6]], [[7, 8]])
    """
    if not 0.0 < float(prefix_fraction) < 1.0:
        raise ValueError(f"`prefix_fraction` must lie in (0, 1); got {prefix_fraction}")
    tokens = np.asarray(tokens)
    if tokens.ndim != 2 or len(tokens) == 0:
        raise ValueError(f"`tokens` must be a non-empty [M, T] array; got shape {tokens.shape}")
    prefixes, continuations = [], []
    for r, row in enumerate(tokens):
        if row[0] != bos_id:
            raise ValueError(f"`tokens` row {r} does not start with BOS ({bos_id})")
        stops = np.flatnonzero((row[1:] == eos_id) | (row[1:] == pad_id))
        text = row[1 : 1 + (stops[0] if len(stops) else len(row) - 1)]
        if len(text) < 2:
            raise ValueError(f"`tokens` row {r} has {len(text)} text tokens; VerbMem needs >= 2")
        k = max(1, int(np.floor(prefix_fraction * len(text))))
        prefixes.append(np.concatenate([[bos_id], text[:k]]))
        continuations.append(text[k:].astype(np.int32))
    prompts = np.full((len(tokens), max(len(x) for x in prefixes)), pad_id, np.int32)
    for r, x in enumerate(prefixes):
        prompts[r, : len(x)] = x
    return prompts, continuations


def load_benchmark(dataset: str, data_kwargs: Mapping) -> LMBenchmark:
    """The benchmark of a registered LM corpus (``data.load(dataset, **data_kwargs)``, e.g.
    ``fictitious_authors``), see :func:`from_dataset`."""
    from jaxunlearn import data as data_lib

    data_lib.check_name(dataset)
    ds = data_lib.load(dataset, **dict(data_kwargs))
    if getattr(ds, "task", None) != "language_model" or not hasattr(ds, "corpus"):
        raise ValueError(
            f"`dataset` {dataset!r} is not a language-model corpus (task "
            f"{getattr(ds, 'task', None)!r}); the LM track needs e.g. 'fictitious_authors'"
        )
    return from_dataset(ds)


def from_dataset(ds) -> LMBenchmark:
    """An :class:`LMBenchmark` of a ``fictitious_authors`` :class:`~jaxunlearn.data.
    fictitious_authors.LanguageModelDataset`: its training rows (every training author and the
    utility facts) then its holdout rows, the corpus's forget splits (``forget01/05/10``, retain
    = every other training row, utility facts included), and the records' text fields."""
    corpus, tok = ds.corpus, ds.tokenizer
    n_train = len(ds.x_train)

    def cat(name):
        return np.concatenate([ds.train_extra[name], ds.test_extra[name]])

    records = [corpus.records[int(i)] for i in np.concatenate([ds.train_records, ds.test_records])]
    prompts, _ = tok.encode_prompts(
        [r.question for r in records],
        max_len=max(len(tok.prompt_ids(r.question)) for r in records),
        padding="right",
    )
    rows = np.arange(len(records), dtype=np.int32)
    author = cat("author").astype(np.int32)
    windows = [
        (
            a.index,
            *passage_windows(
                tok.encode(a.passage, add_bos=False, add_eos=False),
                int(ds.x_train.shape[1]),
                bos_id=int(tok.bos_id),
                eos_id=int(tok.eos_id),
                pad_id=int(tok.pad_id),
            ),
        )
        for a in corpus.authors
    ]
    forget, retain = {}, {}
    for name in ("forget01", "forget05", "forget10"):
        try:
            split = ds.forget_split(name)
        except ValueError:  # a split too small for this many authors
            continue
        forget[name], retain[name] = split.forget.astype(np.int32), split.retain.astype(np.int32)
    return LMBenchmark(
        x=np.concatenate([ds.x_train, ds.x_test]).astype(np.int32),
        y=np.concatenate([ds.y_train, ds.y_test]).astype(np.int32),
        para_x=cat("paraphrase_x"),
        para_y=cat("paraphrase_y"),
        pert_x=cat("perturbed_x"),
        pert_y=cat("perturbed_y"),
        prompts=prompts,
        answers=tuple(r.answer for r in records),
        key_facts=tuple(r.key_fact for r in records),
        author=author,
        extra={k: cat(k) for k in ("idk_x", "idk_y", "alt_x", "alt_y")},
        train=rows[:n_train],
        forget=forget,
        retain=retain,
        holdout=rows[n_train:],
        utility=rows[:n_train][author[:n_train] < 0],
        tokenizer=tok,
        vocab_size=int(tok.vocab_size),
        max_len=int(ds.x_train.shape[1]),
        pad_id=int(tok.pad_id),
        eos_id=int(tok.eos_id),
        passages={a.index: a.passage for a in corpus.authors},
        passage_x=np.concatenate([x for _, x, _ in windows]),
        passage_y=np.concatenate([y for _, _, y in windows]),
        passage_author=np.concatenate([np.full(len(x), a, np.int32) for a, x, _ in windows]),
    )
