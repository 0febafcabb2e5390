"""Tokenizer for language models: a byte-level BPE, and the one place QA text becomes tokens.

:class:`Tokenizer` wraps a Hugging Face ``tokenizers.Tokenizer``. :meth:`Tokenizer.train` fits a
byte-level BPE (GPT-2's scheme: every byte is in the base alphabet, so any Unicode text encodes
and nothing is ever unknown) on a corpus such as :mod:`jaxunlearn.data.fictitious_authors`;
:meth:`Tokenizer.save` writes it as ``tokenizer.json`` beside a checkpoint, and
:meth:`Tokenizer.from_file` reads that file back, or a real model's ``tokenizer.json`` (e.g. a
Llama checkpoint directory, whose ``tokenizer_config.json`` names the special tokens).

Chat/QA formatting lives here and nowhere else (the conventions of ``docs/language_models.md``):

* prompt = ``BOS + "Question: {question}\\nAnswer:"`` (:data:`PROMPT_TEMPLATE`);
* answer = ``" {answer}" + EOS`` (:data:`ANSWER_TEMPLATE`), tokenized separately from the prompt so
  that the token boundary is exactly where generation starts;
* ``tokens`` ``[T]`` = prompt + answer, right-padded with ``pad_id``;
* ``labels`` ``[T]`` already shifted: ``labels[t] = tokens[t + 1]`` where ``tokens[t + 1]`` belongs
  to the answer (EOS included) and ``IGNORE_INDEX`` (-100) elsewhere (prompt and padding).

The template follows TOFU's "Question: ... Answer: ..." few-shot format (Maini et al., 2024, "TOFU:
A Task of Fictitious Unlearning for LLMs"; MUSE's KnowMem prompts use the same words); see
``shared/reference/lm_unlearning.md``.

>>> tok = Tokenizer.train(["Question: Where?\\nAnswer: Here."] * 4, vocab_size=300)
>>> tokens, labels = tok.encode_qa("Where?", "Here.", max_len=32)
>>> tok.decode(tokens)
'Question: Where?\\nAnswer: Here.'
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from jaxunlearn.core.checks import check_count
from jaxunlearn.core.losses import IGNORE_INDEX

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3 in a tokenizer trained here
PROMPT_TEMPLATE = "Question: {question}\nAnswer:"
ANSWER_TEMPLATE = " {answer}"
FILENAME = "tokenizer.json"

# Special-token names of common real checkpoints, tried in order when tokenizer_config.json is
# absent or silent (Llama 2: <s> </s> <unk>; Llama 3: <|begin_of_text|> <|end_of_text|>).
_CANDIDATES = {
    "bos": (BOS, "<s>", "<|begin_of_text|>", "[CLS]", "<|endoftext|>"),
    "eos": (EOS, "</s>", "<|end_of_text|>", "<|eot_id|>", "[SEP]", "<|endoftext|>"),
    "unk": (UNK, "<unk>", "[UNK]"),
    "pad": (PAD, "[PAD]", "<|pad|>", "<|finetune_right_pad_id|>", "<unk>"),
}


class Tokenizer:
    """A Hugging Face tokenizer with known special-token ids and the QA template.

    Attributes:
      backend: the wrapped ``tokenizers.Tokenizer``.
      pad_id, bos_id, eos_id: special-token ids (``pad_id`` is 0 for a tokenizer trained here).
      unk_id: the unknown token's id, or ``None`` when the vocabulary has none (byte-level BPE never
        needs it).
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        pad_token: str | None = None,
        bos_token: str | None = None,
        eos_token: str | None = None,
        unk_token: str | None = None,
    ):
        self.backend = backend
        given = {"pad": pad_token, "bos": bos_token, "eos": eos_token, "unk": unk_token}
        ids = {}
        for role, name in given.items():
            if name is not None:
                token_id = backend.token_to_id(name)
                if token_id is None:
                    raise ValueError(f"{role}_token {name!r} is not in the tokenizer's vocabulary.")
                ids[role] = token_id
            else:
                ids[role] = next(
                    (i for c in _CANDIDATES[role] if (i := backend.token_to_id(c)) is not None),
                    None,
                )
        for role in ("bos", "eos"):
            if ids[role] is None:
                raise ValueError(
                    f"The tokenizer has no {role} token; pass {role}_token= naming one of its "
                    "special tokens."
                )
        # A checkpoint without a pad token (Llama 3) pads with EOS; padding is masked by position
        # (right padding after the answer's EOS), so the two never need to be told apart.
        self.pad_id = ids["pad"] if ids["pad"] is not None else ids["eos"]
        self.bos_id, self.eos_id, self.unk_id = ids["bos"], ids["eos"], ids["unk"]

    # ----------------------------------------------------------------------------- construction

    @classmethod
    def train(
        cls, texts: Iterable[str], *, vocab_size: int = 1024, min_frequency: int = 2
    ) -> Tokenizer:
        """Fits a byte-level BPE on ``texts``.

        Args:
          texts: training text (e.g. every question, answer and passage of a corpus).
          vocab_size: the vocabulary size, at least 260 (256 bytes + 4 special tokens); the
            result may be smaller when the text offers fewer merges.
          min_frequency: a pair is merged only if it occurs at least this often.

        Returns:
          A tokenizer with ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, ``<unk>`` = 3.
        """
        minimum = 256 + len(SPECIAL_TOKENS)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise ValueError(f"vocab_size must be an integer; got {vocab_size!r}.")
        if vocab_size < minimum:
            raise ValueError(
                f"vocab_size must be at least {minimum} (256 bytes + {len(SPECIAL_TOKENS)} "
                f"special tokens) for a byte-level BPE; got {vocab_size}."
            )
        texts = list(texts)
        if not texts:
            raise ValueError("texts is empty: a tokenizer needs text to train on.")
        backend = tokenizers.Tokenizer(models.BPE(unk_token=UNK))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        backend.train_from_iterator(texts, trainer=trainer)
        return cls(backend, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Tokenizer:
        """Loads ``tokenizer.json`` (a file, or a directory holding one).

        In a directory, ``tokenizer_config.json`` (Hugging Face's layout) names the special tokens
        when present; otherwise they are found by their usual names (``<pad>``/``<bos>``/``<eos>``
        of a tokenizer trained here, ``<s>``/``</s>``/``<unk>`` of Llama 2,
        ``<|begin_of_text|>``/``<|end_of_text|>`` of Llama 3). A vocabulary without a pad token
        pads with EOS.

        Raises:
          ValueError: ``path`` holds no ``tokenizer.json``.
        """
        path = os.fspath(path)
        directory = path if os.path.isdir(path) else os.path.dirname(path)
        file = os.path.join(path, FILENAME) if os.path.isdir(path) else path
        if not os.path.isfile(file):
            raise ValueError(f"path {path!r} holds no {FILENAME}.")
        backend = tokenizers.Tokenizer.from_file(file)
        names = {}
        config_file = os.path.join(directory, "tokenizer_config.json")
        if os.path.isfile(config_file):
            with open(config_file) as f:
                config = json.load(f)
            for role in ("pad", "bos", "eos", "unk"):
                value = config.get(f"{role}_token")
                if isinstance(value, dict):  # {"content": "<s>", "lstrip": false, ...}
                    value = value.get("content")
                if isinstance(value, str) and backend.token_to_id(value) is not None:
                    names[f"{role}_token"] = value
        return cls(backend, **names)

    def save(self, path: str | os.PathLike) -> str:
        """Writes the tokenizer in Hugging Face's layout and returns the ``tokenizer.json`` path.

        Args:
          path: a directory (``path/tokenizer.json`` is written, the directory created), or a
            file path ending in ``.json`` (what ``models.save_hf_llama`` passes).

        Beside it, ``tokenizer_config.json`` records the special tokens (an existing one keeps its
        other keys), so :meth:`from_file` restores the same ids, a pad token chosen by fallback
        included.
        """
        path = os.fspath(path)
        file = path if path.endswith(".json") else os.path.join(path, FILENAME)
        directory = os.path.dirname(file) or "."
        os.makedirs(directory, exist_ok=True)
        self.backend.save(file)
        config_file = os.path.join(directory, "tokenizer_config.json")
        config = {}
        if os.path.isfile(config_file):
            with open(config_file) as f:
                config = json.load(f)
        for role in ("pad", "bos", "eos", "unk"):
            token_id = getattr(self, f"{role}_id")
            if token_id is not None:
                config[f"{role}_token"] = self.backend.id_to_token(token_id)
        with open(config_file, "w") as f:
            json.dump(config, f, indent=2)
        return file

    # ------------------------------------------------------------------------------- plain text

    @property
    def vocab_size(self) -> int:
        """Number of token ids (special tokens included): the model's ``vocab_size``."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, *, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Token ids of ``text``; BOS/EOS only when asked (a checkpoint's own post-processor is
        never applied, so every tokenizer behaves the same here)."""
        ids = self.backend.encode(_valid_text("text", text), add_special_tokens=False).ids
        return ([self.bos_id] if add_bos else []) + ids + ([self.eos_id] if add_eos else [])

    def decode(self, ids: Iterable[int], *, skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (a list or an array; padding and other special tokens dropped, and
        ``IGNORE_INDEX`` entries skipped, so a row of labels decodes to its answer)."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1) if i != IGNORE_INDEX]
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def decode_answer(self, ids: Iterable[int]) -> str:
        """The answer text of generated tokens or of a row of labels: everything before the first
        EOS, without the space the answer template puts in front (:data:`ANSWER_TEMPLATE`)."""
        ids = [int(i) for i in np.asarray(ids).reshape(-1) if i != IGNORE_INDEX]
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        text = self.decode(ids)
        prefix = ANSWER_TEMPLATE[: ANSWER_TEMPLATE.index("{")]
        return text[len(prefix) :] if text.startswith(prefix) else text

    # --------------------------------------------------------------------------- QA formatting

    def prompt_ids(self, question: str) -> list[int]:
        """BOS + the prompt template around ``question`` (what generation starts from)."""
        question = _valid_text("question", question)
        return self.encode(PROMPT_TEMPLATE.format(question=question), add_bos=True)

    def answer_ids(self, answer: str) -> list[int]:
        """The answer segment: ``" " + answer`` then EOS."""
        answer = _valid_text("answer", answer)
        return self.encode(ANSWER_TEMPLATE.format(answer=answer), add_eos=True)

    def answer_span_mask(
        self,
        questions: Sequence[str],
        answers: Sequence[str],
        spans: Sequence[tuple[int, int]],
        *,
        max_len: int,
    ) -> np.ndarray:
        """Which targets of :meth:`encode_batch` carry a given part of each answer.

        Args:
          questions, answers: the pairs, as given to :meth:`encode_batch`.
          spans: ``(start, end)`` character range in each answer (e.g. where the key fact is).
          max_len: the sequence length.

        Returns:
          bool ``[n, max_len]`` aligned with the labels: True at ``t`` when target token
          ``t + 1`` overlaps the span's characters.
        """
        check_count(max_len, "max_len", 2)
        questions = [_valid_text("question", q) for q in questions]
        answers = [_valid_text("answer", a) for a in answers]
        prompts = self._batch_ids([PROMPT_TEMPLATE.format(question=q) for q in questions])
        texts = [ANSWER_TEMPLATE.format(answer=a) for a in answers]
        encodings = self.backend.encode_batch(texts, add_special_tokens=False)
        mask = np.zeros((len(texts), max_len), bool)
        for i, (prompt, text, answer, encoding) in enumerate(
            zip(prompts, texts, answers, encodings, strict=True)
        ):
            shift = len(text) - len(answer)  # characters the template puts before the answer
            start, end = spans[i]
            for k, (a, b) in enumerate(encoding.offsets):
                # Target position of answer token k: the BOS and the prompt come first.
                t = len(prompt) + k
                if a - shift < end and b - shift > start and t < max_len:
                    mask[i, t] = True
        return mask

    def encode_qa(
        self, question: str, answer: str, *, max_len: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """One QA pair as model input and pre-shifted labels.

        Args:
          question, answer: the text (any Unicode).
          max_len: the sequence length ``T`` (the model's context).

        Returns:
          ``(tokens, labels)``, int32 ``[T]`` each: ``tokens`` = prompt + answer + EOS, right-padded
          with ``pad_id``; ``labels[t] = tokens[t + 1]`` on the answer tokens (EOS included) and
          ``IGNORE_INDEX`` on the prompt and the padding.

        Raises:
          ValueError: the pair needs more than ``max_len`` tokens (nothing is truncated silently).
        """
        tokens, labels = self.encode_batch([question], [answer], max_len=max_len)
        return tokens[0], labels[0]

    def encode_batch(
        self, questions: Sequence[str], answers: Sequence[str], *, max_len: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`encode_qa` for many pairs: ``(tokens, labels)``, int32 ``[n, T]`` each.

        Each distinct prompt and answer is tokenized once, in one batched call.
        """
        if len(questions) != len(answers):
            raise ValueError(
                f"questions and answers differ in length ({len(questions)} vs {len(answers)})."
            )
        check_count(max_len, "max_len", 2)
        questions = [_valid_text("question", q) for q in questions]
        answers = [_valid_text("answer", a) for a in answers]
        prompts = self._batch_ids([PROMPT_TEMPLATE.format(question=q) for q in questions])
        answer_parts = self._batch_ids([ANSWER_TEMPLATE.format(answer=a) for a in answers])
        tokens = np.full((len(questions), max_len), self.pad_id, np.int32)
        labels = np.full((len(questions), max_len), IGNORE_INDEX, np.int32)
        for i, (prompt, answer) in enumerate(zip(prompts, answer_parts, strict=True)):
            p, n = len(prompt) + 1, len(prompt) + len(answer) + 2  # + BOS, + BOS and EOS
            if n > max_len:
                raise ValueError(
                    f"max_len={max_len} is too short for this QA pair ({n} tokens: "
                    f"{p} prompt + {n - p} answer); raise max_len. "
                    f"Question: {questions[i][:60]!r}"
                )
            tokens[i, :n] = [self.bos_id, *prompt, *answer, self.eos_id]
            # Position t predicts token t + 1: the answer tokens (EOS included) sit at p .. n - 1.
            labels[i, p - 1 : n - 1] = tokens[i, p:n]
        return tokens, labels

    def _batch_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens), each distinct text encoded once."""
        unique = list(dict.fromkeys(texts))
        encoded = self.backend.encode_batch(unique, add_special_tokens=False)
        ids = {t: e.ids for t, e in zip(unique, encoded, strict=True)}
        return [ids[t] for t in texts]

    def encode_prompt(self, question: str) -> np.ndarray:
        """The prompt alone, int32 ``[P]`` (BOS + template, no answer, no padding): the input
        a model continues when it generates an answer."""
        return np.asarray(self.prompt_ids(question), np.int32)

    def encode_prompts(
        self, questions: Sequence[str], *, max_len: int | None = None, padding: str = "right"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Many prompts padded to ``max_len`` for batched generation.

        Args:
          questions: the questions.
          max_len: the padded length; ``None``: the longest prompt's (generation needs
            ``max_len + max_new_tokens`` to fit the model's context).
          padding: ``"right"`` (default; what ``models.generation.generate`` takes) or ``"left"``
            (every prompt ends at the last column).

        Returns:
          ``(tokens [n, max_len], lengths [n])``, int32: the padded prompts and their lengths.
        """
        if padding not in ("left", "right"):
            raise ValueError(f"padding must be 'left' or 'right'; got {padding!r}.")
        questions = [_valid_text("question", q) for q in questions]
        prompts = [
            [self.bos_id, *ids]
            for ids in self._batch_ids([PROMPT_TEMPLATE.format(question=q) for q in questions])
        ]
        if max_len is None:
            max_len = max((len(ids) for ids in prompts), default=2)
        check_count(max_len, "max_len", 2)
        tokens = np.full((len(questions), max_len), self.pad_id, np.int32)
        lengths = np.zeros(len(questions), np.int32)
        for i, (q, ids) in enumerate(zip(questions, prompts, strict=True)):
            if len(ids) > max_len:
                raise ValueError(
                    f"max_len={max_len} is too short for the prompt of {q[:60]!r} "
                    f"({len(ids)} tokens)."
                )
            lengths[i] = len(ids)
            if padding == "left":
                tokens[i, max_len - len(ids) :] = ids
            else:
                tokens[i, : len(ids)] = ids
        return tokens, lengths

    def encode_text(self, text: str, *, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Plain text for language modelling (e.g. a passage, MUSE's verbatim set).

        Returns:
          ``(tokens, labels)`` int32 ``[T]``: BOS + text + EOS right-padded; every token after BOS
          is a target (``labels[t] = tokens[t + 1]``), padding is ``IGNORE_INDEX``.

        Raises:
          ValueError: the text needs more than ``max_len`` tokens.
        """
        check_count(max_len, "max_len", 2)
        ids = self.encode(text, add_bos=True, add_eos=True)
        if len(ids) > max_len:
            raise ValueError(
                f"max_len={max_len} is too short for this text ({len(ids)} tokens): {text[:60]!r}"
            )
        tokens = np.full(max_len, self.pad_id, np.int32)
        tokens[: len(ids)] = ids
        labels = np.full(max_len, IGNORE_INDEX, np.int32)
        labels[: len(ids) - 1] = tokens[1 : len(ids)]
        return tokens, labels

    def __repr__(self) -> str:
        return (
            f"Tokenizer(vocab_size={self.vocab_size}, pad_id={self.pad_id}, "
            f"bos_id={self.bos_id}, eos_id={self.eos_id})"
        )


_SURROGATE = re.compile("[\ud800-\udfff]")


def _valid_text(arg: str, text) -> str:
    """``text`` as encodable Unicode: a lone surrogate (not valid in UTF-8, e.g. half of a split
    emoji) becomes U+FFFD instead of failing inside the tokenizer; a non-string is an error."""
    if not isinstance(text, str):
        raise ValueError(f"{arg} must be a string; got {type(text).__name__}: {text!r}.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = _SURROGATE.sub("\ufffd", text)
    return text
