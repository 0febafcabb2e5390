"""Hugging Face Llama checkpoints: loaded against a NumPy Llama forward (and ``transformers`` when
installed), saved and reloaded, and bad directories rejected by name."""

import importlib.util
import json
import os

import jax
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxunlearn import models
from jaxunlearn.models import hf_llama

TINY = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "vocab_size": 61,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 16,
    "rms_norm_eps": 1e-5,
    "rope_theta": 500.0,
    "tie_word_embeddings": False,
    "pad_token_id": 0,
    "hidden_act": "silu",
}


def _hf_weights(config, seed=0):
    """Random weights under Hugging Face names, PyTorch layout ``(out, in)``."""
    rng = np.random.default_rng(seed)
    d, f, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    h, k = config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim") or d // h

    def w(*shape):
        return rng.normal(0.0, 0.3, shape).astype(np.float32)

    weights = {"model.embed_tokens.weight": w(v, d), "model.norm.weight": 1 + w(d)}
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        weights.update(
            {
                p + "self_attn.q_proj.weight": w(h * hd, d),
                p + "self_attn.k_proj.weight": w(k * hd, d),
                p + "self_attn.v_proj.weight": w(k * hd, d),
                p + "self_attn.o_proj.weight": w(d, h * hd),
                p + "mlp.gate_proj.weight": w(f, d),
                p + "mlp.up_proj.weight": w(f, d),
                p + "mlp.down_proj.weight": w(d, f),
                p + "input_layernorm.weight": 1 + w(d),
                p + "post_attention_layernorm.weight": 1 + w(d),
            }
        )
    if not config["tie_word_embeddings"]:
        weights["lm_head.weight"] = w(v, d)
    return weights


def _write(path, config, weights, *, split=False):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    if not split:
        save_file(weights, os.path.join(path, "model.safetensors"))
        return path
    names = sorted(weights)
    halves = [names[: len(names) // 2], names[len(names) // 2 :]]
    weight_map = {}
    for i, half in enumerate(halves):
        file = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({n: weights[n] for n in half}, os.path.join(path, file))
        weight_map.update(dict.fromkeys(half, file))
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": weight_map}, f)
    return path


def _reference_forward(config, weights, tokens):
    """Llama in NumPy float64 (transformers' modeling_llama: pre-norm RMSNorm, rotate_half RoPE,
    repeat_kv GQA, SwiGLU); pad tokens are masked as keys. Returns (logits, hidden per layer)."""
    wt = {k: v.astype(np.float64) for k, v in weights.items()}
    eps = config["rms_norm_eps"]
    theta = config.get("rope_theta") or config["rope_parameters"]["rope_theta"]
    d, h, k = config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]
    hd = config.get("head_dim") or d // h
    b, t = tokens.shape

    def rms(x, w):
        return x / np.sqrt(np.mean(x**2, -1, keepdims=True) + eps) * w

    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
    ang = np.arange(t)[:, None] * inv[None]
    ang = np.concatenate([ang, ang], -1)[None, :, None, :]

    def rope(x):
        rot = np.concatenate([-x[..., hd // 2 :], x[..., : hd // 2]], -1)
        return x * np.cos(ang) + rot * np.sin(ang)

    mask = (
        np.tril(np.ones((t, t), bool))[None, None]
        & (tokens != config["pad_token_id"])[:, None, None, :]
    )
    x = wt["model.embed_tokens.weight"][tokens]
    hidden = []
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}."
        a = rms(x, wt[p + "input_layernorm.weight"])
        q = rope((a @ wt[p + "self_attn.q_proj.weight"].T).reshape(b, t, h, hd))
        kk = rope((a @ wt[p + "self_attn.k_proj.weight"].T).reshape(b, t, k, hd))
        vv = (a @ wt[p + "self_attn.v_proj.weight"].T).reshape(b, t, k, hd)
        kk, vv = np.repeat(kk, h // k, axis=2), np.repeat(vv, h // k, axis=2)
        s = np.einsum("bqhd,bkhd->bhqk", q, kk) / np.sqrt(hd)
        s = np.where(mask, s, -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        o = np.einsum("bhqk,bkhd->bqhd", s, vv).reshape(b, t, h * hd)
        x = x + o @ wt[p + "self_attn.o_proj.weight"].T
        m = rms(x, wt[p + "post_attention_layernorm.weight"])
        gate = m @ wt[p + "mlp.gate_proj.weight"].T
        x = (
            x
            + (gate / (1 + np.exp(-gate)) * (m @ wt[p + "mlp.up_proj.weight"].T))
            @ wt[p + "mlp.down_proj.weight"].T
        )
        hidden.append(x)
    head = wt["model.embed_tokens.weight" if config["tie_word_embeddings"] else "lm_head.weight"]
    return rms(x, wt["model.norm.weight"]) @ head.T, hidden


def _tokens(config, t=12, seed=1):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, config["vocab_size"], (3, t)).astype(np.int32)
    tokens[1, 8:] = config["pad_token_id"]  # right padding
    tokens[2, 5:] = config["pad_token_id"]
    return tokens


@pytest.mark.parametrize(
    "changes, split",
    [
        ({}, False),
        # Tied embeddings, a head width other than hidden_size / heads, weights over two files,
        # the rotary base where transformers 5 writes it.
        (
            {
                "tie_word_embeddings": True,
                "head_dim": 16,
                "num_key_value_heads": 1,
                "rope_theta": None,
                "rope_parameters": {"rope_theta": 40.0, "rope_type": "default"},
            },
            True,
        ),
    ],
    ids=["untied-gqa", "tied-headdim-split"],
)
def test_loaded_checkpoint_matches_numpy_llama(tmp_path, changes, split):
    config = {k: v for k, v in {**TINY, **changes}.items() if v is not None}
    weights = _hf_weights(config)
    net, variables = hf_llama.load_hf_llama(_write(tmp_path, config, weights, split=split))

    spec = net.spec
    assert (spec.d_model, spec.num_layers, spec.num_heads, spec.num_kv_heads) == (
        32,
        2,
        4,
        config["num_key_value_heads"],
    )
    assert spec.head_dim == config.get("head_dim", 8) and spec.norm_eps == 1e-5
    assert spec.rope_theta == (40.0 if "rope_parameters" in config else 500.0)
    assert ("lm_head" in variables["params"]) != config["tie_word_embeddings"]
    np.testing.assert_array_equal(
        variables["params"]["layers"]["1"]["mlp"]["down_proj"]["kernel"],
        weights["model.layers.1.mlp.down_proj.weight"].T,
    )

    tokens = _tokens(config)
    out = jax.jit(net.apply)(variables, tokens)
    logits, hidden = _reference_forward(config, weights, tokens)
    valid = tokens != config["pad_token_id"]
    assert np.abs(logits).max() > 1.0  # the comparison is not between near-zero numbers
    np.testing.assert_allclose(np.asarray(out.logits)[valid], logits[valid], rtol=1e-4, atol=1e-4)
    for ours, ref in zip(out.hidden, hidden, strict=True):
        np.testing.assert_allclose(np.asarray(ours)[valid], ref[valid], rtol=1e-4, atol=1e-4)


def test_save_then_load_round_trips_exactly(tmp_path):
    net = models.make_network(
        "transformer", vocab_size=40, max_len=8, d_model=16, num_layers=2, num_heads=2, d_ff=24
    )
    variables = net.init(jax.random.key(0))
    tokenizer = tmp_path / "tok.json"
    tokenizer.write_text('{"model": {}}')
    out = tmp_path / "ckpt"
    hf_llama.save_hf_llama(out, net, variables, tokenizer_json=str(tokenizer), max_shard_bytes=4096)

    files = sorted(os.listdir(out))
    assert "model.safetensors.index.json" in files and "model-00002-of-" in " ".join(files)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llama" and config["hidden_size"] == 16
    assert config["intermediate_size"] == 24 and config["num_key_value_heads"] == 2
    stored = {}
    for f in files:
        if f.endswith(".safetensors"):
            stored.update(load_file(out / f))
    assert stored["model.layers.0.mlp.up_proj.weight"].shape == (24, 16)  # PyTorch (out, in)
    assert hf_llama.tokenizer_file(out) == str(out / "tokenizer.json")

    loaded_net, loaded = hf_llama.load_hf_llama(out)
    assert loaded_net.spec == net.spec
    jax.tree.map(np.testing.assert_array_equal, loaded, variables)


def test_dtype_and_context_overrides(tmp_path):
    path = _write(tmp_path, TINY, _hf_weights(TINY))
    net, variables = hf_llama.load_hf_llama(path, dtype="bfloat16", max_len=8, pad_id=3)
    assert net.input_shape == (8,) and net.spec.pad_id == 3 and net.spec.dtype == "bfloat16"
    assert variables["params"]["norm"]["scale"].dtype == np.dtype("bfloat16")
    tokens = _tokens(TINY, t=8)
    _, full = hf_llama.load_hf_llama(path, max_len=8, pad_id=3)
    apply = jax.jit(net.apply)
    np.testing.assert_allclose(  # bfloat16 keeps about 3 significant digits
        np.asarray(apply(variables, tokens).logits),
        np.asarray(apply(full, tokens).logits),
        rtol=0.1,
        atol=0.1,
    )
    assert hf_llama.tokenizer_file(path) is None


def _missing_tensor(path):
    weights = _hf_weights(TINY)
    del weights["model.layers.1.mlp.gate_proj.weight"]
    _write(path, TINY, weights)


def _wrong_shape(path):
    weights = _hf_weights(TINY)
    weights["model.layers.0.self_attn.k_proj.weight"] = np.zeros((32, 32), np.float32)
    _write(path, TINY, weights)


def _extra_layer(path):
    _write(path, TINY, _hf_weights({**TINY, "num_hidden_layers": 3}))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: _write(p, {**TINY, "model_type": "gpt2"}, {}), "model_type 'gpt2'"),
        (
            lambda p: _write(p, {**TINY, "architectures": ["LlamaForSequenceClassification"]}, {}),
            "LlamaForSequenceClassification",
        ),
        (lambda p: _write(p, {**TINY, "rope_scaling": {"type": "llama3"}}, {}), "rope_scaling"),
        (
            lambda p: _write(p, {**TINY, "rope_parameters": {"rope_type": "llama3"}}, {}),
            "rope_type.*llama3",
        ),
        (lambda p: os.makedirs(p), "no config.json"),
        (lambda p: _write(p, TINY, {"x": np.zeros(1, np.float32)}), r"does not: \['x'\]"),
        (_missing_tensor, "lacks the tensor 'model.layers.1.mlp.gate_proj.weight'"),
        (_wrong_shape, r"'model.layers.0.self_attn.k_proj.weight'.*\(32, 32\).*\(16, 32\)"),
        (_extra_layer, "model.layers.2"),
    ],
    ids=[
        "other-model-type",
        "other-architecture",
        "rope-scaling",
        "rope-type",
        "no-config",
        "unknown-tensor",
        "missing-tensor",
        "shape",
        "extra-layer",
    ],
)
def test_bad_checkpoints_are_rejected_by_name(tmp_path, make, message):
    path = tmp_path / "ckpt"
    make(path)
    with pytest.raises(ValueError, match=message):
        hf_llama.load_hf_llama(path)


def test_no_safetensors_is_rejected(tmp_path):
    with open(tmp_path / "config.json", "w") as f:
        json.dump(TINY, f)
    with pytest.raises(ValueError, match=r"\*\.safetensors"):
        hf_llama.load_hf_llama(tmp_path)


_HAVE_TRANSFORMERS = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))


@pytest.mark.skipif(not _HAVE_TRANSFORMERS, reason="needs torch and transformers")
def test_logits_match_transformers_llama(tmp_path):
    import torch
    import transformers

    torch.manual_seed(0)
    fields = {k: v for k, v in TINY.items() if k not in ("architectures", "model_type")}
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**fields)).eval()
    with torch.no_grad():
        for p in model.parameters():  # larger than the 0.02 init, so logits are O(1)
            p.add_(0.3 * torch.randn_like(p))
    model.save_pretrained(tmp_path, safe_serialization=True)
    tokens = _tokens(TINY)
    tokens[tokens == TINY["pad_token_id"]] = 5  # no padding: transformers would attend to it
    with torch.no_grad():
        ref = model(torch.as_tensor(tokens, dtype=torch.long)).logits.numpy()

    net, variables = hf_llama.load_hf_llama(tmp_path)
    ours = np.asarray(net.apply(variables, tokens).logits)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)
