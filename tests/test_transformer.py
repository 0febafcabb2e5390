"""Tests for the Llama-style decoder (jaxunlearn/models/transformer.py) and its KV cache."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import models
from jaxunlearn.core import losses
from jaxunlearn.models import transformer as tr

V, T = 61, 16
TINY = {"d_model": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2}


@functools.cache
def _net(**overrides):
    net = models.make_network("transformer", vocab_size=V, max_len=T, **{**TINY, **overrides})
    return net, net.init(jax.random.key(0)), jax.jit(net.apply)


def _tokens(b: int, t: int = T, seed: int = 1) -> jax.Array:
    return jax.random.randint(jax.random.key(seed), (b, t), 1, V)  # no pad (pad_id = 0)


def test_shapes_names_and_layouts():
    net, variables, apply = _net()
    assert net.name == "transformer" and net.num_outputs == V and net.input_shape == (T,)
    assert net.spec == tr.TransformerConfig(vocab_size=V, max_len=T, **TINY)
    out = apply(variables, _tokens(3))
    assert out.logits.shape == (3, T, V) and out.logits.dtype == jnp.float32
    assert out.features.shape == (3, 32) and out.batch_stats is None
    assert len(out.hidden) == 2 and all(h.shape == (3, T, 32) for h in out.hidden)
    p = variables["params"]
    d_ff = net.spec.d_ff
    assert d_ff == 88  # Llama's 8d/3 rounded up to a multiple of 8
    expected = {
        "embed_tokens.embedding": (V, 32),
        "layers.1.self_attn.q_proj.kernel": (32, 32),
        "layers.1.self_attn.k_proj.kernel": (32, 16),  # 2 kv heads x head_dim 8
        "layers.1.self_attn.v_proj.kernel": (32, 16),
        "layers.1.self_attn.o_proj.kernel": (32, 32),
        "layers.0.mlp.gate_proj.kernel": (32, d_ff),
        "layers.0.mlp.up_proj.kernel": (32, d_ff),
        "layers.0.mlp.down_proj.kernel": (d_ff, 32),
        "layers.0.input_layernorm.scale": (32,),
        "layers.0.post_attention_layernorm.scale": (32,),
        "norm.scale": (32,),
        "lm_head.kernel": (32, V),
    }
    flat = {
        ".".join(str(k.key) for k in path): leaf.shape
        for path, leaf in jax.tree_util.tree_leaves_with_path(p)
    }
    assert len(flat) == 2 + 2 * 9 + 1
    for name, shape in expected.items():
        assert flat[name] == shape, name
    assert sum(np.prod(s) for s in flat.values()) == tr.num_params(net.spec)
    assert set(variables["batch_stats"]) == set()


def test_logical_axes_match_the_parameter_tree():
    for tied in (False, True):
        net, variables, _ = _net(tie_embeddings=tied)
        axes = tr.logical_axes(net.spec)
        is_axes = lambda x: isinstance(x, tuple)  # noqa: E731
        assert jax.tree.structure(axes, is_leaf=is_axes) == jax.tree.structure(variables["params"])
        pairs = zip(
            jax.tree.leaves(axes, is_leaf=is_axes),
            jax.tree.leaves(variables["params"]),
            strict=True,
        )
        assert all(len(a) == leaf.ndim for a, leaf in pairs)
    assert tr.logical_axes(net.spec)["embed_tokens"]["embedding"] == ("vocab", "embed")
    assert tr.logical_axes(net.spec)["layers"]["0"]["mlp"]["down_proj"]["kernel"] == (
        "mlp",
        "embed",
    )


def test_rms_norm_and_rope_by_hand():
    norm = tr.RMSNorm(2, eps=0.0, dtype=jnp.float32)
    # mean(3^2, 4^2) = 12.5 -> x / sqrt(12.5)
    np.testing.assert_allclose(norm(jnp.array([3.0, 4.0])), np.array([3, 4]) / np.sqrt(12.5), 1e-6)
    # head_dim 2: one frequency (1), so rope rotates (x1, x2) by the position's angle.
    x = jnp.array([1.0, 0.0]).reshape(1, 1, 1, 2)
    out = tr.rope(x, jnp.array([[2]]), 10000.0)
    np.testing.assert_allclose(out.ravel(), [np.cos(2.0), np.sin(2.0)], atol=1e-6)
    # Dot products of rotated queries and keys depend only on the offset of their positions.
    q, k = jax.random.normal(jax.random.key(0), (2, 1, 1, 1, 8))
    dot = lambda m, n: jnp.sum(
        tr.rope(q, jnp.array([[m]]), 1e4) * tr.rope(k, jnp.array([[n]]), 1e4)
    )  # noqa: E731
    np.testing.assert_allclose(dot(5, 3), dot(9, 7), rtol=1e-5)
    assert not np.allclose(dot(5, 3), dot(5, 4))


def test_causal():
    _, variables, apply = _net()
    x = _tokens(2)
    y = x.at[:, 9].set((x[:, 9] % (V - 1)) + 1)  # a different non-pad token at position 9
    a, b = apply(variables, x).logits, apply(variables, y).logits
    np.testing.assert_array_equal(a[:, :9], b[:, :9])
    assert not np.allclose(a[:, 9:], b[:, 9:])


def test_padding_is_invisible():
    _, variables, apply = _net()
    x = _tokens(2, 10)
    short = jnp.pad(x, ((0, 0), (0, 2)))  # right-padded to 12
    long = jnp.pad(x, ((0, 0), (0, 6)))  # right-padded to 16
    a, b = apply(variables, short), apply(variables, long)
    np.testing.assert_allclose(a.logits[:, :10], b.logits[:, :10], atol=1e-6)
    np.testing.assert_allclose(a.features, b.features, atol=1e-6)
    # Features average the final hidden state over the 10 valid tokens only.
    unpadded = apply(variables, x)
    np.testing.assert_allclose(unpadded.features, b.features, atol=1e-6)
    # A pad token inside a sequence is no attention key: no other position reads it, so changing
    # the pad token's embedding changes the logits at the pad's own position only.
    holes = x.at[:, 4].set(0)
    params = dict(variables["params"])
    emb = params["embed_tokens"]["embedding"]
    params["embed_tokens"] = {
        "embedding": emb.at[0].set(jax.random.normal(jax.random.key(9), (32,)))
    }
    a = apply(variables, holes).logits
    b = apply({"params": params, "batch_stats": {}}, holes).logits
    np.testing.assert_array_equal(np.delete(a, 4, 1), np.delete(b, 4, 1))
    assert not np.allclose(a[:, 4], b[:, 4])
    # A row of padding only (a filler row of a batch) stays finite, with zero features.
    empty = apply(variables, jnp.zeros((1, T), jnp.int32))
    assert np.all(np.isfinite(empty.logits)) and np.all(empty.features == 0)


def test_gqa_equals_mha_with_repeated_kv_heads():
    gqa, variables, apply = _net()
    mha, _, mha_apply = _net(num_kv_heads=4)
    params = jax.tree.map(lambda a: a, variables["params"])
    for layer in params["layers"].values():
        for name in ("k_proj", "v_proj"):
            kernel = layer["self_attn"][name]["kernel"].reshape(32, 2, 8)
            # Query heads 0, 1 share kv head 0; heads 2, 3 share kv head 1.
            layer["self_attn"][name]["kernel"] = jnp.repeat(kernel, 2, axis=1).reshape(32, 32)
    x = _tokens(2)
    np.testing.assert_allclose(
        apply(variables, x).logits,
        mha_apply({"params": params, "batch_stats": {}}, x).logits,
        atol=1e-5,
    )


def test_tied_embeddings_project_with_the_embedding_matrix():
    tied, tvars, tapply = _net(tie_embeddings=True)
    _, uvars, uapply = _net()
    assert "lm_head" not in tvars["params"]
    assert tr.num_params(tied.spec) == tr.num_params(_net()[0].spec) - 32 * V
    params = dict(tvars["params"])
    params["lm_head"] = {"kernel": params["embed_tokens"]["embedding"].T}
    x = _tokens(2)
    np.testing.assert_allclose(
        tapply(tvars, x).logits, uapply({"params": params, "batch_stats": {}}, x).logits, atol=1e-6
    )


def test_token_loss_gradients_reach_every_parameter():
    net, variables, _ = _net()
    x = _tokens(2)
    labels = jnp.concatenate([x[:, 1:], jnp.full((2, 1), losses.IGNORE_INDEX)], 1)

    def loss(params):
        return losses.supervised(net.apply({"params": params, "batch_stats": {}}, x).logits, labels)

    value, grads = jax.jit(jax.value_and_grad(loss))(variables["params"])
    assert abs(float(value) - np.log(V)) < 0.1  # a fresh model predicts nearly uniformly
    assert all(np.all(np.isfinite(g)) and np.any(g != 0) for g in jax.tree.leaves(grads))


def test_bfloat16_compute_returns_float32_logits():
    net, variables, apply = _net(dtype="bfloat16")
    out = apply(variables, _tokens(2))
    assert out.logits.dtype == jnp.float32
    assert variables["params"]["norm"]["scale"].dtype == jnp.float32
    _, fvars, fapply = _net()
    np.testing.assert_allclose(out.logits, fapply(fvars, _tokens(2)).logits, atol=0.05)


def test_cached_decode_equals_apply():
    net, variables, apply = _net()
    spec = net.spec
    lengths = np.array([3, 7, 5])
    full = np.array(_tokens(3, 12, seed=4))
    full[0, 10:] = 0  # row 0 ends early (right padding inside the rollout)
    expected = apply(variables, jnp.asarray(full)).logits
    prompts = np.where(np.arange(7)[None] < lengths[:, None], full[:, :7], 0)
    decode = jax.jit(tr.decode, static_argnums=0)
    cache = tr.init_cache(spec, 3, 12)
    logits, cache = decode(spec, variables, prompts, np.tile(np.arange(7), (3, 1)), cache)
    for b, n in enumerate(lengths):  # prefill logits at the prompt positions
        np.testing.assert_allclose(logits[b, :n], expected[b, :n], atol=1e-5)
    for step in range(12 - 7):
        pos = lengths + step
        tok = full[np.arange(3), pos]
        logits, cache = decode(spec, variables, tok[:, None], pos[:, None], cache)
        np.testing.assert_allclose(logits[:, 0], expected[np.arange(3), pos], atol=1e-5)


def test_bad_settings_and_inputs():
    _, variables, apply = _net()
    with pytest.raises(ValueError, match="max_len=16"):
        apply(variables, _tokens(1, T + 1))
    with pytest.raises(ValueError, match="num_kv_heads"):
        models.make_network("transformer", vocab_size=V, max_len=T, num_heads=4, num_kv_heads=3)
    with pytest.raises(ValueError, match="pad_id"):
        models.make_network("transformer", vocab_size=V, max_len=T, pad_id=V)
    with pytest.raises(ValueError, match="d_model"):
        models.make_network("transformer", vocab_size=V, max_len=T, d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="dtype"):
        models.make_network("transformer", vocab_size=V, max_len=T, dtype="int8")
    with pytest.raises(ValueError, match="Unknown option.*hidden"):
        models.make_network("transformer", vocab_size=V, max_len=T, hidden=3)
    with pytest.raises(ValueError, match="max_len"):
        models.make_network("transformer", vocab_size=V)
    with pytest.raises(ValueError, match="input_shape"):
        models.make_network("transformer", input_shape=(8, 8, 1), num_outputs=V)
    with pytest.raises(ValueError, match="num_outputs"):
        models.make_network("transformer", num_outputs=V + 1, vocab_size=V, max_len=T)
    with pytest.raises(ValueError, match="max_len"):
        tr.init_cache(_net()[0].spec, 1, T + 1)
    # input_shape=(T,) and num_outputs=V stand for max_len and vocab_size (as the experiment
    # plan passes them), and check_settings accepts the same arguments.
    net = models.make_network("transformer", input_shape=(T,), num_outputs=V, **TINY)
    assert net.spec == _net()[0].spec
    models.check_settings("transformer", input_shape=(T,), num_outputs=V, **TINY)
