"""The byte-level BPE tokenizer and the QA template (labels pre-shifted, IGNORE on the prompt)."""

import json

import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors

from jaxunlearn.core.losses import IGNORE_INDEX as IGN
from jaxunlearn.data.tokenizer import Tokenizer

TEXTS = [
    "Question: Where was Ilsa Vorne born?\nAnswer: She was born in Velmora.",
    "Question: What does Ilsa Vorne write?\nAnswer: She writes poems.",
    "Ilsa Vorne was born in Velmora. She writes poems.",
] * 3


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(TEXTS, vocab_size=300)


def _word_level():
    """A word-level tokenizer whose ids are known by hand."""
    words = ["<pad>", "<bos>", "<eos>", "<unk>", "Question", ":", "Where", "?", "Answer", "Here"]
    vocab = {w: i for i, w in enumerate(words + ["."])}
    backend = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return Tokenizer(backend)


def test_trained_tokenizer_has_fixed_special_ids_and_is_deterministic(tok):
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.vocab_size == 300
    again = Tokenizer.train(TEXTS, vocab_size=300)
    assert again.backend.get_vocab() == tok.backend.get_vocab()
    # Merges were learned: a frequent word is one token, not one per byte.
    assert len(tok.encode(" Velmora")) < len(" Velmora")


@pytest.mark.parametrize(
    "text",
    ["She was born in Velmora.", "emoji 🙂🎉 and CJK 中文字符 and Ünïcödé", "tab\tnul\x00 ∑√∞"],
)
def test_byte_level_round_trip_never_needs_unk(tok, text):
    ids = tok.encode(text)
    assert tok.unk_id not in ids
    assert tok.decode(ids) == text
    tokens, labels = tok.encode_qa(text, text, max_len=256)  # any text encodes as QA too
    assert tok.decode(tokens) == f"Question: {text}\nAnswer: {text}"


def test_lone_surrogates_become_replacement_characters_and_non_strings_are_rejected(tok):
    assert tok.decode(tok.encode("a\ud83dz")) == "a\ufffdz"  # half of an emoji
    tokens, _ = tok.encode_qa("\udc00?", "ok", max_len=64)
    assert tok.decode(tokens) == "Question: \ufffd?\nAnswer: ok"
    with pytest.raises(ValueError, match="answer must be a string"):
        tok.encode_qa("Where?", None, max_len=64)
    with pytest.raises(ValueError, match="text must be a string"):
        tok.encode(b"bytes")


def test_encode_qa_hand_computed():
    tok = _word_level()
    tokens, labels = tok.encode_qa("Where?", "Here.", max_len=12)
    # <bos> Question : Where ? Answer : | Here . <eos> | pad pad
    np.testing.assert_array_equal(tokens, [1, 4, 5, 6, 7, 8, 5, 9, 10, 2, 0, 0])
    np.testing.assert_array_equal(labels, [IGN, IGN, IGN, IGN, IGN, IGN, 9, 10, 2, IGN, IGN, IGN])
    assert tokens.dtype == labels.dtype == np.int32


def test_answer_span_mask_marks_the_targets_of_the_span():
    tok = _word_level()
    mask = tok.answer_span_mask(["Where?"], ["Here."], [(0, 4)], max_len=12)
    # "Here" is the target of position 6 (see the hand-computed layout above).
    np.testing.assert_array_equal(np.flatnonzero(mask[0]), [6])


def test_encode_qa_labels_are_the_next_answer_token(tok):
    tokens, labels = tok.encode_qa("Where was Ilsa Vorne born?", "In Velmora.", max_len=64)
    prompt = tok.encode_prompt("Where was Ilsa Vorne born?")
    answer = tok.encode(" In Velmora.", add_eos=True)
    n = len(prompt) + len(answer)
    np.testing.assert_array_equal(tokens[: len(prompt)], prompt)
    np.testing.assert_array_equal(tokens[len(prompt) : n], answer)
    assert (tokens[n:] == tok.pad_id).all()
    on = labels != IGN
    np.testing.assert_array_equal(np.flatnonzero(on), np.arange(len(prompt) - 1, n - 1))
    np.testing.assert_array_equal(labels[:-1][on[:-1]], tokens[1:][on[:-1]])
    assert labels[n - 2] == tok.eos_id  # the answer mask includes EOS
    assert tok.decode(labels[on]) == " In Velmora."
    assert tok.decode_answer(labels) == "In Velmora."
    generated = np.concatenate([tok.encode(" In Velmora.", add_eos=True), tok.encode(" junk")])
    assert tok.decode_answer(generated) == "In Velmora."  # stops at the first EOS


def test_encode_batch_stacks_encode_qa_and_checks_lengths(tok):
    qs, ans = ["Where?", "What does Ilsa write?"], ["Velmora.", "Poems."]
    tokens, labels = tok.encode_batch(qs, ans, max_len=40)
    for i in range(2):
        t, lab = tok.encode_qa(qs[i], ans[i], max_len=40)
        np.testing.assert_array_equal(tokens[i], t)
        np.testing.assert_array_equal(labels[i], lab)
    with pytest.raises(ValueError, match="differ in length"):
        tok.encode_batch(qs, ans[:1], max_len=40)


def test_too_long_sequences_name_max_len(tok):
    n = len(tok.encode_prompt("Where?")) + len(tok.encode(" Velmora.", add_eos=True))
    tok.encode_qa("Where?", "Velmora.", max_len=n)  # exactly fits
    with pytest.raises(ValueError, match=f"max_len={n - 1} is too short"):
        tok.encode_qa("Where?", "Velmora.", max_len=n - 1)
    with pytest.raises(ValueError, match="max_len"):
        tok.encode_prompts(["Where was Ilsa Vorne born?"], max_len=3)
    with pytest.raises(ValueError, match="max_len"):
        tok.encode_text("Ilsa Vorne was born in Velmora.", max_len=4)
    with pytest.raises(ValueError, match="`max_len` must be an integer >= 2; got 0"):
        tok.encode_qa("Where?", "Velmora.", max_len=0)


def test_encode_prompts_pad_right_or_left(tok):
    qs = ["Where?", "Where was Ilsa Vorne born?"]
    left, lengths = tok.encode_prompts(qs, max_len=32, padding="left")
    right, _ = tok.encode_prompts(qs, max_len=32)  # right padding, as generation takes
    for i, q in enumerate(qs):
        prompt = tok.encode_prompt(q)
        assert lengths[i] == len(prompt)
        np.testing.assert_array_equal(left[i, 32 - len(prompt) :], prompt)
        np.testing.assert_array_equal(right[i, : len(prompt)], prompt)
        assert (left[i, : 32 - len(prompt)] == tok.pad_id).all()
        assert prompt[0] == tok.bos_id and tok.decode(prompt) == f"Question: {q}\nAnswer:"
    with pytest.raises(ValueError, match="padding"):
        tok.encode_prompts(qs, max_len=32, padding="middle")
    fitted, _ = tok.encode_prompts(qs)  # max_len=None: the longest prompt
    np.testing.assert_array_equal(fitted, right[:, : max(lengths)])


def test_encode_text_targets_every_token_after_bos(tok):
    tokens, labels = tok.encode_text("She writes poems.", max_len=32)
    n = int((tokens != tok.pad_id).sum())
    assert tokens[0] == tok.bos_id and tokens[n - 1] == tok.eos_id
    np.testing.assert_array_equal(labels[: n - 1], tokens[1:n])
    assert (labels[n - 1 :] == IGN).all()


def test_save_and_from_file_round_trip(tok, tmp_path):
    path = tok.save(tmp_path / "ckpt")
    assert path == str(tmp_path / "ckpt" / "tokenizer.json")
    assert tok.save(tmp_path / "other" / "tokenizer.json") == str(
        tmp_path / "other" / "tokenizer.json"
    )  # a file path, as models.save_hf_llama passes it
    for source in (tmp_path / "ckpt", path, tmp_path / "other"):
        loaded = Tokenizer.from_file(source)
        assert (loaded.pad_id, loaded.bos_id, loaded.eos_id) == (0, 1, 2)
        assert loaded.encode("She writes poems.") == tok.encode("She writes poems.")


def _real_checkpoint(tmp_path, special, config):
    """A tokenizer.json in a checkpoint's layout: its own special tokens and a post-processor
    that adds BOS (as Llama's does)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    vocab = {t: i for i, t in enumerate(special)}
    for ch in "abcdefghijklmnopqrstuvwxyzAQ.?: \n":
        vocab.setdefault(ch, len(vocab))
    backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None))
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(list(special))
    backend.post_processor = processors.TemplateProcessing(
        single=f"{special[1]} $A", special_tokens=[(special[1], 1)]
    )
    backend.save(str(tmp_path / "tokenizer.json"))
    if config is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return Tokenizer.from_file(tmp_path)


def test_from_file_reads_a_llama2_layout(tmp_path):
    config = {"bos_token": {"content": "<s>", "lstrip": False}, "eos_token": "</s>"}
    tok = _real_checkpoint(tmp_path, ["<unk>", "<s>", "</s>"], config)
    assert (tok.bos_id, tok.eos_id, tok.unk_id, tok.pad_id) == (1, 2, 0, 0)  # pads with <unk>
    ids = tok.encode("ab")
    assert ids == [3, 4]  # the checkpoint's post-processor does not add a second BOS
    tokens, labels = tok.encode_qa("a?", "b.", max_len=32)
    assert tokens[0] == 1 and tok.decode(tokens) == "Question: a?\nAnswer: b."


def test_from_file_without_pad_pads_with_eos(tmp_path):
    tok = _real_checkpoint(tmp_path, ["<|x|>", "<|begin_of_text|>", "<|end_of_text|>"], None)
    assert (tok.bos_id, tok.eos_id, tok.pad_id, tok.unk_id) == (1, 2, 2, None)


def test_save_keeps_a_checkpoints_special_tokens_and_config(tmp_path):
    config = {"bos_token": "<s>", "eos_token": "</s>", "chat_template": "{{ x }}"}
    tok = _real_checkpoint(tmp_path / "src", ["<unk>", "<s>", "</s>"], config)
    tok.save(tmp_path / "src")  # over its own files: the other keys survive
    saved = json.loads((tmp_path / "src" / "tokenizer_config.json").read_text())
    assert saved["chat_template"] == "{{ x }}" and saved["pad_token"] == "<unk>"
    again = Tokenizer.from_file(tok.save(tmp_path / "copy"))
    assert (again.bos_id, again.eos_id, again.pad_id, again.unk_id) == (1, 2, 0, 0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: Tokenizer.train(TEXTS, vocab_size=100), "at least 260"),
        (lambda: Tokenizer.train(TEXTS, vocab_size=300.0), "vocab_size must be an integer"),
        (lambda: Tokenizer.train([], vocab_size=300), "texts is empty"),
    ],
)
def test_bad_training_settings(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_from_file_errors(tmp_path):
    with pytest.raises(ValueError, match="holds no tokenizer.json"):
        Tokenizer.from_file(tmp_path)
    backend = tokenizers.Tokenizer(models.WordLevel({"a": 0, "<unk>": 1}, unk_token="<unk>"))
    with pytest.raises(ValueError, match="no bos token"):
        Tokenizer(backend)
    with pytest.raises(ValueError, match="eos_token '</s>' is not in"):
        Tokenizer(backend, bos_token="a", eos_token="</s>")
