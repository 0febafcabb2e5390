"""A forget set built by sampling the model itself about a named target (no curated data).

Zhu, Zhang, Liu, Jia, Neiswanger, "LLM Unlearning Without an Expert Curated Dataset" (COLM 2025,
arXiv 2508.06595; code xyzhu123/Synthetic_Textbook) replace the expert-curated forget set by text
a language model writes from the domain's *name* alone, through structured prompts (subdomains,
then bullet points, then textbook chapters), and find that the diversity of the generated set
drives how well unlearning with it works. The analogue for a fictitious author: only the target's
name is known, so

* structured prompts ask the model about aspects of the target (:data:`PROMPT_TEMPLATES`,
  ``"Tell me about {name}'s birthplace."``, ...: what one would ask about any author, not the
  corpus's own questions),
* the model answers each by temperature (nucleus) sampling, several samples per prompt
  (:func:`jaxunlearn.models.generation.generate`),
* near-duplicates are dropped: an answer whose word ``n``-gram Jaccard overlap with an answer
  already kept reaches ``max_overlap`` is discarded (:func:`ngram_overlap`), as are empty ones,
* each kept pair becomes a forget row in the corpus's QA template: ``tokens`` = the prompt and the
  sampled answer tokens exactly as generated (no re-tokenisation), ``labels`` = the answer tokens
  pre-shifted (``docs/language_models.md``).

:func:`jaxunlearn.audit.forget_sets.compare_forget_sets` unlearns with this set and with the
true forget set under the same rule and reports forget and retain accuracy of both.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence
from typing import NamedTuple

import jax
import numpy as np

from jaxunlearn.core.checks import check_count
from jaxunlearn.core.losses import IGNORE_INDEX
from jaxunlearn.core.types import Array, Network, Variables
from jaxunlearn.data.tokenizer import Tokenizer

# Aspects of an author anyone would ask about (the corpus's attributes are facts of these kinds,
# its questions are worded otherwise).
ASPECTS = (
    "birthplace",
    "birthday",
    "father",
    "mother",
    "writing",
    "awards",
    "first book",
    "most famous book",
    "home town",
    "education",
    "publisher",
    "languages",
)
PROMPT_TEMPLATES = ("Tell me about {name}.",) + tuple(
    f"Tell me about {{name}}'s {aspect}." for aspect in ASPECTS
)


class SyntheticForgetSet(NamedTuple):
    """What :func:`synthetic_forget_set` returns.

    Attributes:
      questions: the prompt of each kept row.
      answers: the sampled answer text of each kept row (decoded).
      tokens: int32 ``[n, T]`` prompt + sampled answer, right-padded.
      labels: int32 ``[n, T]`` pre-shifted targets on the answer tokens, ``IGNORE_INDEX`` elsewhere.
      num_sampled: answers drawn in all (before removing empty ones and near-duplicates).
    """

    questions: tuple[str, ...]
    answers: tuple[str, ...]
    tokens: np.ndarray
    labels: np.ndarray
    num_sampled: int


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def ngrams(text: str, n: int) -> frozenset:
    """Word ``n``-grams of ``text`` (lower-cased); a text shorter than ``n`` words is one gram."""
    words = _words(text)
    if len(words) < n:
        return frozenset([tuple(words)]) if words else frozenset()
    return frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def ngram_overlap(a: str, b: str, n: int = 3) -> float:
    """Jaccard overlap ``|G(a) & G(b)| / |G(a) | G(b)|`` of word ``n``-gram sets (0 if both
    are empty)."""
    ga, gb = ngrams(a, n), ngrams(b, n)
    union = ga | gb
    return len(ga & gb) / len(union) if union else 0.0


def deduplicate(texts: Sequence[str], *, n: int = 3, max_overlap: float = 0.5) -> list[int]:
    """Indices of the texts kept, greedily in order: a text is dropped when it is empty or its
    :func:`ngram_overlap` with a kept text is ``>= max_overlap``."""
    kept: list[int] = []
    grams: list[frozenset] = []
    for i, text in enumerate(texts):
        g = ngrams(text, n)
        if not g:
            continue
        if any(len(g & h) / len(g | h) >= max_overlap for h in grams):
            continue
        kept.append(i)
        grams.append(g)
    return kept


def synthetic_forget_set(
    network: Network,
    variables: Variables,
    tokenizer: Tokenizer,
    target: str,
    *,
    key: Array,
    samples: int = 8,
    templates: Sequence[str] = PROMPT_TEMPLATES,
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    top_p: float = 1.0,
    ngram: int = 3,
    max_overlap: float = 0.5,
) -> SyntheticForgetSet:
    """Samples the model about ``target`` and keeps the distinct answers as a forget set.

    Args:
      network, variables: the model to be unlearned (it writes its own forget set).
      tokenizer: the corpus tokenizer (prompts in its QA template).
      target: the target's name, e.g. an author's ``"Ava Lund"``.
      key: PRNG key of the sampling.
      samples: answers sampled per prompt.
      templates: prompt templates with a ``{name}`` field (default :data:`PROMPT_TEMPLATES`).
      max_new_tokens: the longest answer; prompt plus answer must fit the model's context.
      temperature, top_p: the sampling (temperature > 0: greedy decoding is one answer).
      ngram, max_overlap: the near-duplicate rule of :func:`deduplicate`.

    Returns:
      :class:`SyntheticForgetSet` (rows in prompt order, then sample order).

    Raises:
      ValueError: an empty ``target``, ``samples <= 0``, no template or one without ``{name}``,
        ``temperature <= 0``, ``ngram < 1``, ``max_overlap`` outside (0, 1], or every sample
        empty.
    """
    from jaxunlearn.models import generation

    if not isinstance(target, str) or not target.strip():
        raise ValueError(f"`target` must be a non-empty name; got {target!r}.")
    samples = check_count(samples, "samples", 1)
    ngram = check_count(ngram, "ngram", 1)
    max_new_tokens = check_count(max_new_tokens, "max_new_tokens", 1)
    if isinstance(templates, str) or not templates:
        raise ValueError("`templates` must be a non-empty sequence of strings with '{name}'.")
    if any(not isinstance(t, str) or "{name}" not in t for t in templates):
        raise ValueError(f"every template needs a '{{name}}' field; got {list(templates)!r}.")
    if not isinstance(temperature, numbers.Real) or not temperature > 0:
        raise ValueError(
            f"`temperature` must be > 0 (sampling; greedy decoding gives one answer per prompt); "
            f"got {temperature!r}."
        )
    if not isinstance(max_overlap, numbers.Real) or not 0 < max_overlap <= 1:
        raise ValueError(f"`max_overlap` must be in (0, 1]; got {max_overlap!r}.")
    context = int(network.input_shape[0])
    questions = [t.format(name=target.strip()) for t in templates]
    prompts, lengths = tokenizer.encode_prompts(questions, padding="right")
    if prompts.shape[1] + max_new_tokens > context:
        raise ValueError(
            f"prompts of {prompts.shape[1]} tokens plus max_new_tokens={max_new_tokens} exceed "
            f"the model's context {context}; lower max_new_tokens."
        )
    out = generation.generate(
        network,
        variables,
        prompts,
        key=key,
        max_new_tokens=max_new_tokens,
        temperature=float(temperature),
        top_p=top_p,
        num_samples=samples,
        eos_id=int(tokenizer.eos_id),
    )
    new_tokens, new_lengths = jax.device_get((out.tokens, out.lengths))
    rows = [(q, s) for q in range(len(questions)) for s in range(samples)]
    texts = [tokenizer.decode_answer(new_tokens[q, s, : new_lengths[q, s]]) for q, s in rows]
    kept = deduplicate(texts, n=ngram, max_overlap=max_overlap)
    if not kept:
        raise ValueError(f"every one of the {len(texts)} samples about {target!r} was empty.")
    tokens = np.full((len(kept), context), tokenizer.pad_id, np.int32)
    labels = np.full((len(kept), context), IGNORE_INDEX, np.int32)
    for r, i in enumerate(kept):
        q, s = rows[i]
        p, n = int(lengths[q]), int(new_lengths[q, s])
        tokens[r, :p] = prompts[q, :p]
        tokens[r, p : p + n] = new_tokens[q, s, :n]
        labels[r, p - 1 : p + n - 1] = tokens[r, p : p + n]
    return SyntheticForgetSet(
        questions=tuple(questions[rows[i][0]] for i in kept),
        answers=tuple(texts[i] for i in kept),
        tokens=tokens,
        labels=labels,
        num_sampled=len(texts),
    )


def mentions(texts: Sequence[str], target: str) -> np.ndarray:
    """bool ``[n]``: whether each text names ``target`` (case-insensitive whole words)."""
    pattern = re.compile(rf"(?<!\w){re.escape(target.strip())}(?!\w)", re.IGNORECASE)
    return np.asarray([pattern.search(t) is not None for t in texts])


__all__ = [
    "ASPECTS",
    "PROMPT_TEMPLATES",
    "SyntheticForgetSet",
    "deduplicate",
    "mentions",
    "ngram_overlap",
    "ngrams",
    "synthetic_forget_set",
]
