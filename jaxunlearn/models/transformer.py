"""A Llama-architecture decoder in Flax NNX, with a pure KV-cached decoding path.

The model is the one of Touvron et al. (RMSNorm before each block, rotary position embeddings,
a SwiGLU MLP, grouped-query causal attention, optional tied input/output embeddings), with
Hugging Face Llama's parameter names so that checkpoints and regex masks written for HF paths
carry over (``docs/language_models.md``):

    embed_tokens.embedding                      [V, d]            ("vocab", "embed")
    layers.<i>.self_attn.q_proj.kernel          [d, H * hd]       ("embed", "heads")
    layers.<i>.self_attn.k_proj.kernel          [d, K * hd]       ("embed", "kv_heads")
    layers.<i>.self_attn.v_proj.kernel          [d, K * hd]       ("embed", "kv_heads")
    layers.<i>.self_attn.o_proj.kernel          [H * hd, d]       ("heads", "embed")
    layers.<i>.mlp.gate_proj.kernel             [d, f]            ("embed", "mlp")
    layers.<i>.mlp.up_proj.kernel               [d, f]            ("embed", "mlp")
    layers.<i>.mlp.down_proj.kernel             [f, d]            ("mlp", "embed")
    layers.<i>.input_layernorm.scale            [d]               ("norm",)
    layers.<i>.post_attention_layernorm.scale   [d]               ("norm",)
    norm.scale                                  [d]               ("norm",)
    lm_head.kernel                              [d, V]            ("embed", "vocab")  (untied only)

Kernels are ``(in, out)``; Hugging Face stores ``(out, in)``. The query/key head dimension uses
Hugging Face's rotary layout (``rotate_half``: the two halves of each head are the rotated pairs),
so HF weights load by a transpose alone. The third column is each parameter's logical axis names
(maxtext's convention); :func:`logical_axes` returns them as a pytree matching the parameters, for
a mesh rule that maps logical names to mesh axes.

Inputs are right-padded token ids ``[B, T]`` with ``pad_id``; pad tokens are masked as attention
keys everywhere (training, scoring and the KV cache), and positions are ``0..T-1``.

References:
  Touvron et al., "LLaMA: Open and Efficient Foundation Language Models", 2023; Su et al.,
  "RoFormer: Enhanced Transformer with Rotary Position Embedding", 2021; Shazeer, "GLU Variants
  Improve Transformer", 2020; Ainslie et al., "GQA: Training Generalized Multi-Query Transformer
  Models from Multi-Head Checkpoints", EMNLP 2023. Style after google/maxtext and
  google-deepmind/gemma. Shared conventions: docs/language_models.md.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from jaxunlearn.core.checks import check_count
from jaxunlearn.core.types import Array, Network
from jaxunlearn.models import functional

_DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """The settings of a Llama-style decoder (stored as ``Network.spec``; hashable, so it can be a
    static argument of ``jax.jit``).

    Attributes:
      vocab_size: number of token ids ``V`` (the logits' last dimension).
      max_len: the context length ``T``: the longest sequence ``apply`` and the KV cache accept.
      d_model: width of the residual stream ``d``.
      num_layers: number of decoder layers.
      num_heads: query heads ``H``.
      num_kv_heads: key/value heads ``K`` (grouped-query attention; ``H`` must be a multiple of
        ``K``); ``None`` means ``num_heads`` (multi-head attention).
      head_dim: width of one head; ``None`` means ``d_model // num_heads``.
      d_ff: hidden width of the SwiGLU MLP; ``None`` means Llama's rule, ``8 d / 3`` rounded up to
        a multiple of 8.
      tie_embeddings: use the input embedding matrix as the output projection (no ``lm_head``).
      rope_theta: base of the rotary frequencies (10000 in Llama 1/2, 500000 in Llama 3).
      norm_eps: RMSNorm epsilon (Hugging Face's ``rms_norm_eps``).
      pad_id: the padding token id, masked as an attention key.
      dtype: computation dtype (``"float32"``, ``"bfloat16"``, ``"float16"``); parameters are kept
        in float32 and logits are returned in float32.
    """

    vocab_size: int
    max_len: int
    d_model: int = 64
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int | None = None
    head_dim: int | None = None
    d_ff: int | None = None
    tie_embeddings: bool = False
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    pad_id: int = 0
    dtype: str = "float32"

    def __post_init__(self):
        for name in ("vocab_size", "max_len", "d_model", "num_layers", "num_heads"):
            check_count(getattr(self, name), name, 1)
        for name in ("num_kv_heads", "head_dim", "d_ff"):
            if getattr(self, name) is not None:
                check_count(getattr(self, name), name, 1)
        if self.num_kv_heads is None:
            object.__setattr__(self, "num_kv_heads", self.num_heads)
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"`num_heads` ({self.num_heads}) must be a multiple of `num_kv_heads` "
                f"({self.num_kv_heads}) for grouped-query attention."
            )
        if self.head_dim is None:
            if self.d_model % self.num_heads:
                raise ValueError(
                    f"`d_model` ({self.d_model}) is not divisible by `num_heads` "
                    f"({self.num_heads}); set `head_dim` explicitly."
                )
            object.__setattr__(self, "head_dim", self.d_model // self.num_heads)
        if self.head_dim % 2:
            raise ValueError(f"`head_dim` must be even for rotary embeddings; got {self.head_dim}.")
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", -(-8 * self.d_model // 3 // 8) * 8)
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"`tie_embeddings` must be a bool; got {self.tie_embeddings!r}.")
        if not (isinstance(self.rope_theta, numbers.Real) and self.rope_theta > 1):
            raise ValueError(f"`rope_theta` must be a number > 1; got {self.rope_theta!r}.")
        if not (isinstance(self.norm_eps, numbers.Real) and self.norm_eps > 0):
            raise ValueError(f"`norm_eps` must be a positive number; got {self.norm_eps!r}.")
        if not (
            isinstance(self.pad_id, numbers.Integral)
            and not isinstance(self.pad_id, bool)
            and 0 <= self.pad_id < self.vocab_size
        ):
            raise ValueError(
                f"`pad_id` must be a token id in [0, vocab_size={self.vocab_size}); "
                f"got {self.pad_id!r}."
            )
        if self.dtype not in _DTYPES:
            raise ValueError(f"`dtype` must be one of {_DTYPES}; got {self.dtype!r}.")

    @property
    def compute_dtype(self):
        return jnp.dtype(self.dtype)


def option_names() -> list[str]:
    """The keyword options of :class:`TransformerConfig`."""
    return [f.name for f in dataclasses.fields(TransformerConfig)]


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------

_INIT = nnx.initializers.normal(stddev=0.02)  # Hugging Face Llama's initializer_range


def _linear(n_in: int, n_out: int, spec: TransformerConfig, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(
        n_in,
        n_out,
        use_bias=False,
        kernel_init=_INIT,
        dtype=spec.compute_dtype,
        param_dtype=jnp.float32,
        rngs=rngs,
    )


class RMSNorm(nnx.Module):
    """``x / sqrt(mean(x^2) + eps) * scale``, computed in float32 (Zhang and Sennrich, 2019)."""

    def __init__(self, dim: int, *, eps: float, dtype):
        self.scale = nnx.Param(jnp.ones((dim,), jnp.float32))
        self.eps = eps
        self.dtype = dtype

    def __call__(self, x: Array) -> Array:
        x32 = x.astype(jnp.float32)
        y = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), -1, keepdims=True) + self.eps)
        return (y * self.scale[...]).astype(self.dtype)


def rope(x: Array, positions: Array, theta: float) -> Array:
    """Rotary position embedding of ``x [B, T, heads, hd]`` at integer ``positions [B, T]``, in
    Hugging Face's ``rotate_half`` layout (pairs ``(i, i + hd/2)``)."""
    hd = x.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, hd, 2, dtype=jnp.float32) / hd))
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [B, T, hd/2]
    angles = jnp.concatenate([angles, angles], -1)[:, :, None, :]
    x32 = x.astype(jnp.float32)
    x1, x2 = jnp.split(x32, 2, -1)
    rotated = jnp.concatenate([-x2, x1], -1)
    return (x32 * jnp.cos(angles) + rotated * jnp.sin(angles)).astype(x.dtype)


class KVCache(NamedTuple):
    """Keys and values of every layer for decoding, slot ``s`` holding position ``s``.

    Attributes:
      k: ``[num_layers, B, S, num_kv_heads, head_dim]`` rotated keys.
      v: ``[num_layers, B, S, num_kv_heads, head_dim]`` values.
      valid: ``[B, S]`` bool, True where the slot holds a non-pad token.
    """

    k: Array
    v: Array
    valid: Array


class Attention(nnx.Module):
    """Grouped-query causal self-attention (``jax.nn.dot_product_attention``)."""

    def __init__(self, spec: TransformerConfig, *, rngs: nnx.Rngs):
        d, hd = spec.d_model, spec.head_dim
        self.q_proj = _linear(d, spec.num_heads * hd, spec, rngs)
        self.k_proj = _linear(d, spec.num_kv_heads * hd, spec, rngs)
        self.v_proj = _linear(d, spec.num_kv_heads * hd, spec, rngs)
        self.o_proj = _linear(spec.num_heads * hd, d, spec, rngs)
        self.num_heads, self.num_kv_heads, self.head_dim = spec.num_heads, spec.num_kv_heads, hd
        self.rope_theta = spec.rope_theta

    def __call__(self, x, positions, key_positions, key_valid, kv=None):
        """Attends from ``x [B, T, d]`` at ``positions [B, T]``.

        Without ``kv`` the keys are this call's own tokens (``key_positions = positions``); with
        ``kv = (k [L, B, S, K, hd], v, layer)`` the new keys and values are written into layer
        ``layer`` of the stacked cache at slots ``positions`` (in place) and every slot of that
        layer (position ``key_positions [B, S]``) is a key. A key is seen when it is valid (not
        padding) and not after the query. Returns the output and ``(k, v)`` (the updated stacked
        cache, or this call's keys and values).
        """
        b, t, _ = x.shape
        q = self.q_proj(x).reshape(b, t, self.num_heads, self.head_dim)
        k = self.k_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(b, t, self.num_kv_heads, self.head_dim)
        q = rope(q, positions, self.rope_theta)
        k = rope(k, positions, self.rope_theta)
        if kv is None:
            keys, values = k, v
        else:
            k_cache, v_cache, layer = kv
            k = k_cache = _write(k_cache, k, positions[:, 0], layer)
            v = v_cache = _write(v_cache, v, positions[:, 0], layer)
            keys, values = k_cache[layer], v_cache[layer]
        mask = (key_positions[:, None, :] <= positions[:, :, None]) & key_valid[:, None, :]
        out = jax.nn.dot_product_attention(
            q, keys, values, mask=mask[:, None], scale=self.head_dim**-0.5
        )
        return self.o_proj(out.reshape(b, t, -1)), (k, v)


def _write(cache: Array, new: Array, start: Array, layer: int | None = None) -> Array:
    """Writes ``new [B, t, ...]`` into ``cache [B, S, ...]`` (or, given ``layer``, into that layer
    of ``cache [L, B, S, ...]``) at slots ``start[b] .. start[b] + t`` of each row."""

    def one(c, n, s):
        if layer is None:
            return jax.lax.dynamic_update_slice_in_dim(c, n.astype(c.dtype), s, axis=0)
        index = (layer, s) + (0,) * (c.ndim - 2)
        return jax.lax.dynamic_update_slice(c, n[None].astype(c.dtype), index)

    return jax.vmap(
        one, in_axes=(0 if layer is None else 1, 0, 0), out_axes=0 if layer is None else 1
    )(cache, new, start)


class FeedForward(nnx.Module):
    """SwiGLU MLP: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, spec: TransformerConfig, *, rngs: nnx.Rngs):
        self.gate_proj = _linear(spec.d_model, spec.d_ff, spec, rngs)
        self.up_proj = _linear(spec.d_model, spec.d_ff, spec, rngs)
        self.down_proj = _linear(spec.d_ff, spec.d_model, spec, rngs)

    def __call__(self, x: Array) -> Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nnx.Module):
    """Pre-norm residual block: attention then MLP."""

    def __init__(self, spec: TransformerConfig, *, rngs: nnx.Rngs):
        dt = spec.compute_dtype
        self.input_layernorm = RMSNorm(spec.d_model, eps=spec.norm_eps, dtype=dt)
        self.self_attn = Attention(spec, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(spec.d_model, eps=spec.norm_eps, dtype=dt)
        self.mlp = FeedForward(spec, rngs=rngs)

    def __call__(self, h, positions, key_positions, key_valid, kv=None):
        a, kv = self.self_attn(self.input_layernorm(h), positions, key_positions, key_valid, kv)
        h = h + a
        return h + self.mlp(self.post_attention_layernorm(h)), kv


class Transformer(nnx.Module):
    """The decoder; ``__call__(tokens)`` gives ``(logits, features, hidden)`` for ``from_nnx``."""

    def __init__(self, spec: TransformerConfig, *, rngs: nnx.Rngs):
        self.spec = spec
        dt = spec.compute_dtype
        self.embed_tokens = nnx.Embed(
            spec.vocab_size,
            spec.d_model,
            embedding_init=_INIT,
            dtype=dt,
            param_dtype=jnp.float32,
            rngs=rngs,
        )
        self.layers = nnx.List([DecoderLayer(spec, rngs=rngs) for _ in range(spec.num_layers)])
        self.norm = RMSNorm(spec.d_model, eps=spec.norm_eps, dtype=dt)
        if not spec.tie_embeddings:
            self.lm_head = _linear(spec.d_model, spec.vocab_size, spec, rngs)

    def _logits(self, h: Array) -> Array:
        if self.spec.tie_embeddings:
            return self.embed_tokens.attend(h).astype(jnp.float32)
        return self.lm_head(h).astype(jnp.float32)

    def __call__(self, tokens: Array, embed_offset: Array | None = None):
        tokens = _check_tokens(self.spec, tokens)
        b, t = tokens.shape
        positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        valid = tokens != self.spec.pad_id
        h = _embed(self.embed_tokens, tokens, embed_offset)
        hidden = []
        for layer in self.layers:
            h, _ = layer(h, positions, positions, valid)
            hidden.append(h)
        normed = self.norm(h)
        w = valid.astype(jnp.float32)[..., None]
        features = (normed.astype(jnp.float32) * w).sum(1) / jnp.maximum(w.sum(1), 1.0)
        return self._logits(normed), features, tuple(hidden)

    def decode(
        self, tokens: Array, positions: Array, cache: KVCache, embed_offset: Array | None = None
    ):
        """Runs ``tokens [B, t]`` at ``positions [B, t]`` (consecutive per row) against the cache.

        Returns ``(logits [B, t, V] float32, new cache)``.
        """
        b, t = tokens.shape
        s = cache.valid.shape[1]
        valid = _write(cache.valid, tokens != self.spec.pad_id, positions[:, 0])
        key_positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
        h = _embed(self.embed_tokens, tokens, embed_offset)
        k, v = cache.k, cache.v
        for i, layer in enumerate(self.layers):
            h, (k, v) = layer(h, positions, key_positions, valid, (k, v, i))
        return self._logits(self.norm(h)), KVCache(k, v, valid)


def _embed(table: nnx.Embed, tokens: Array, offset: Array | None) -> Array:
    """Token embeddings ``[B, t, d]``, plus ``offset`` (same shape) when given: inference-time
    embedding corruption (ECO prompts, :mod:`jaxunlearn.models.eco`) leaves the weights alone."""
    h = table(tokens)
    return h if offset is None else h + jnp.asarray(offset).astype(h.dtype)


def _check_tokens(spec: TransformerConfig, tokens) -> Array:
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"`tokens` must be [batch, length] token ids; got shape {tokens.shape}.")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"`tokens` must be integer token ids; got dtype {tokens.dtype}.")
    if tokens.shape[1] > spec.max_len:
        raise ValueError(
            f"`tokens` has length {tokens.shape[1]}, longer than the model's context "
            f"max_len={spec.max_len}."
        )
    return tokens


# ----------------------------------------------------------------------------------------------
# The functional view
# ----------------------------------------------------------------------------------------------


def make_config(**kwargs) -> TransformerConfig:
    """A :class:`TransformerConfig`, rejecting unknown options by name."""
    unknown = sorted(set(kwargs) - set(option_names()))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for model 'transformer'; valid options: {option_names()}."
        )
    for required in ("vocab_size", "max_len"):
        if required not in kwargs:
            raise ValueError(f"Model 'transformer' needs `{required}`.")
    return TransformerConfig(**kwargs)


def network(spec: TransformerConfig) -> Network:
    """The functional view of the decoder: ``Network`` with ``spec``, ``num_outputs = V`` and
    ``input_shape = (max_len,)``; ``apply(variables, tokens)`` returns ``Outputs`` with logits
    ``[B, T, V]`` (float32), features ``[B, d]`` (final normed hidden state averaged over non-pad
    tokens) and ``hidden`` (the residual stream after each layer)."""
    return functional.from_nnx(
        lambda rngs: Transformer(spec, rngs=rngs),
        name="transformer",
        num_outputs=spec.vocab_size,
        input_shape=(spec.max_len,),
        spec=spec,
    )


@functools.lru_cache(maxsize=32)
def _split(spec: TransformerConfig):
    abstract = nnx.eval_shape(lambda: Transformer(spec, rngs=nnx.Rngs(0)))
    graphdef, template = nnx.split(abstract, nnx.Param)
    return graphdef, template


def _module(spec: TransformerConfig, params) -> Transformer:
    graphdef, template = _split(spec)
    return nnx.merge(graphdef, functional._filled(template, params))


def init_cache(spec: TransformerConfig, batch_size: int, max_len: int | None = None) -> KVCache:
    """An empty KV cache for ``batch_size`` rows and ``max_len`` slots (default: the context).

    Raises:
      ValueError: ``max_len`` beyond the model's context, or a non-positive size.
    """
    max_len = spec.max_len if max_len is None else max_len
    check_count(batch_size, "batch_size", 1)
    check_count(max_len, "max_len", 1)
    if max_len > spec.max_len:
        raise ValueError(
            f"KV cache `max_len`={max_len} is longer than the model's context "
            f"max_len={spec.max_len}."
        )
    shape = (spec.num_layers, batch_size, max_len, spec.num_kv_heads, spec.head_dim)
    zeros = jnp.zeros(shape, spec.compute_dtype)
    return KVCache(k=zeros, v=zeros, valid=jnp.zeros((batch_size, max_len), bool))


def decode(
    spec: TransformerConfig,
    variables,
    tokens: Array,
    positions: Array,
    cache: KVCache,
    embed_offset: Array | None = None,
) -> tuple[Array, KVCache]:
    """Prefill or one decoding step with a KV cache (pure and jittable).

    Args:
      spec: the network's config (``network.spec``).
      variables: ``{"params": ...}`` of that network.
      tokens: ``[B, t]`` token ids: the (right-padded) prompts for prefill (``t = P``), or one
        new token per row (``t = 1``).
      positions: ``[B, t]`` int positions of those tokens, consecutive within a row
        (``arange(P)`` for prefill; the row's next position for a step). Slot ``p`` of the cache
        holds position ``p``; a row's keys are the slots at or before the query's position that
        hold non-pad tokens, exactly what :func:`network`'s ``apply`` attends to.
      cache: from :func:`init_cache` or a previous call.
      embed_offset: ``[B, t, d]`` added to the tokens' embeddings (``None``: nothing).

    Returns:
      ``(logits [B, t, V] float32, cache)``; ``logits[b, j]`` equals ``apply``'s logits at position
      ``positions[b, j]`` of the sequence the cache now holds.
    """
    tokens = jnp.asarray(tokens)
    positions = jnp.asarray(positions, jnp.int32)
    if tokens.shape != positions.shape or tokens.ndim != 2:
        raise ValueError(
            f"`tokens` {tokens.shape} and `positions` {positions.shape} must both be [B, t]."
        )
    return _module(spec, variables["params"]).decode(tokens, positions, cache, embed_offset)


def logical_axes(spec: TransformerConfig) -> dict:
    """The logical axis names of every parameter, a pytree matching ``variables["params"]``.

    Each leaf is a tuple with one name per dimension (maxtext's vocabulary): ``"vocab"``,
    ``"embed"`` (the residual width), ``"heads"`` (query heads x head_dim, flattened),
    ``"kv_heads"`` (key/value heads x head_dim), ``"mlp"`` (the SwiGLU hidden width) and
    ``"norm"`` (RMSNorm scales). A sharding rule maps these names to mesh axes, e.g.
    ``{"embed": "fsdp", "heads": "model", "kv_heads": "model", "mlp": "model", "vocab": "model"}``.
    """

    def layer():
        return {
            "input_layernorm": {"scale": ("norm",)},
            "post_attention_layernorm": {"scale": ("norm",)},
            "self_attn": {
                "q_proj": {"kernel": ("embed", "heads")},
                "k_proj": {"kernel": ("embed", "kv_heads")},
                "v_proj": {"kernel": ("embed", "kv_heads")},
                "o_proj": {"kernel": ("heads", "embed")},
            },
            "mlp": {
                "gate_proj": {"kernel": ("embed", "mlp")},
                "up_proj": {"kernel": ("embed", "mlp")},
                "down_proj": {"kernel": ("mlp", "embed")},
            },
        }

    axes = {
        "embed_tokens": {"embedding": ("vocab", "embed")},
        "layers": {str(i): layer() for i in range(spec.num_layers)},
        "norm": {"scale": ("norm",)},
    }
    if not spec.tie_embeddings:
        axes["lm_head"] = {"kernel": ("embed", "vocab")}
    return axes


def num_params(spec: TransformerConfig, *, embeddings: bool = True) -> int:
    """Number of parameters (with or without the input embedding matrix, as FLOP counts use)."""
    d, f, hd = spec.d_model, spec.d_ff, spec.head_dim
    attn = d * hd * (2 * spec.num_heads + 2 * spec.num_kv_heads)
    per_layer = attn + 3 * d * f + 2 * d
    n = spec.num_layers * per_layer + d
    if not spec.tie_embeddings:
        n += d * spec.vocab_size
    if embeddings or spec.tie_embeddings:
        n += spec.vocab_size * d
    return n
