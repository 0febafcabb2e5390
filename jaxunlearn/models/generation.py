"""Generation and teacher-forced scoring for the transformer, each one compiled program.

:func:`generate` decodes a batch of right-padded prompts with the KV cache of
:mod:`jaxunlearn.models.transformer`: one prefill per prompt, then a ``lax.while_loop`` of
one-token steps (it stops early once every row has emitted EOS). Many samples per prompt are
folded into the batch after the prefill (the prompt's cache is shared), and prompts may be
chunked with ``lax.map``, so leak@k's 200 samples for each of 400 questions are one compiled
program. Decoding is greedy (``temperature=0``) or samples from ``softmax(logits / temperature)``
restricted to the top-``p`` nucleus (Holtzman et al., 2020), by inverting the cumulative
distribution with one uniform per row (:func:`inverse_cdf_sample`). Every row draws from its own
key, ``fold_in(fold_in(key, prompt_index), sample_index)``, so samples do not depend on how
prompts are batched.

:func:`score` gives the per-token teacher-forced log-probabilities of labelled tokens
(``core.losses.token_log_probs``) with the statistics Min-K%++ needs: the mean and standard
deviation of ``log p`` under the model's own next-token distribution at each position,
``mu = E_p log p`` and ``sigma^2 = E_p (log p)^2 - mu^2`` (Zhang et al., 2024), and the
teacher-forced argmax (exact memorisation, extraction strength).

References:
  Holtzman et al., "The Curious Case of Neural Text Degeneration", ICLR 2020 (top-p); Zhang et
  al., "Min-K%++: Improved Baseline for Detecting Pre-Training Data from Large Language Models",
  2024; leak@k: arXiv 2511.04934. Formulas and defaults: shared/reference/lm_unlearning.md;
  conventions (right padding, pre-shifted labels): docs/language_models.md.
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.core import losses
from jaxunlearn.core.checks import check_count
from jaxunlearn.core.types import Array, Network, Variables
from jaxunlearn.models import transformer


class Generated(NamedTuple):
    """What :func:`generate` returns.

    Attributes:
      tokens: ``[B, num_samples, max_new_tokens]`` int32 new tokens; ``pad_id`` after EOS.
      lengths: ``[B, num_samples]`` int32 number of new tokens up to and including the first EOS
        (``max_new_tokens`` when none was emitted).
    """

    tokens: Array
    lengths: Array


class TokenScores(NamedTuple):
    """Per-token teacher-forced statistics, each ``[n, T]``, 0 where ``labels == IGNORE_INDEX``.

    Attributes:
      log_probs: ``log p(labels[t] | tokens[:t+1])``.
      mean: ``mu_t = sum_v p_t(v) log p_t(v)`` (minus the entropy of the next-token distribution).
      std: ``sigma_t = sqrt(sum_v p_t(v) log^2 p_t(v) - mu_t^2)``.
      argmax: the teacher-forced greedy prediction (int32; -1 where ignored).
    """

    log_probs: Array
    mean: Array
    std: Array
    argmax: Array


def _spec(network: Network) -> transformer.TransformerConfig:
    if not isinstance(network.spec, transformer.TransformerConfig):
        raise ValueError(
            f"`network` must be a transformer (make_network('transformer', ...)); got "
            f"{network.name!r} with spec {type(network.spec).__name__}."
        )
    return network.spec


def _concrete(x) -> np.ndarray | None:
    """``x`` as a NumPy array, or ``None`` inside a trace (value checks are then skipped)."""
    try:
        return np.asarray(x)
    except jax.errors.TracerArrayConversionError:
        return None


def _check_tokens(name: str, spec, tokens) -> None:
    shape = np.shape(tokens)
    if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"`{name}` must be a non-empty [batch, length] array; got shape {shape}.")
    if not jnp.issubdtype(jnp.asarray(tokens).dtype, jnp.integer):
        raise ValueError(f"`{name}` must hold integer token ids; got {jnp.asarray(tokens).dtype}.")
    values = _concrete(tokens)
    if values is not None:
        if values.min() < 0 or values.max() >= spec.vocab_size:
            raise ValueError(
                f"`{name}` holds ids outside [0, vocab_size={spec.vocab_size}): "
                f"[{values.min()}, {values.max()}]."
            )


# ----------------------------------------------------------------------------------------------
# Generation
# ----------------------------------------------------------------------------------------------


def generate(
    network: Network,
    variables: Variables,
    prompts,
    *,
    key: Array,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float = 1.0,
    num_samples: int = 1,
    eos_id: int | None = None,
    batch_size: int | None = None,
    prompt_embed_offset: Array | None = None,
) -> Generated:
    """Continues right-padded prompts with the KV cache, in one compiled program.

    Decoding runs :func:`jaxunlearn.models.transformer.decode` on ``variables["params"]`` in the
    transformer's own parameter layout (``network.spec``), not through ``network.apply``: merge
    any adapters (LoRA) into the parameters first.

    Args:
      network: a transformer (``make_network("transformer", ...)``).
      variables: its variables.
      prompts: ``[B, P]`` int token ids, right-padded with ``pad_id``; rows may have different
        lengths (a row's length is the position of its last non-pad token plus one, and its new
        tokens continue from there).
      key: PRNG key for sampling (unused by greedy decoding).
      max_new_tokens: number of decoding steps; ``P + max_new_tokens`` must fit in ``max_len``.
      temperature: 0 means greedy decoding (argmax, one answer per prompt); > 0 samples from
        ``softmax(logits / temperature)``.
      top_p: nucleus sampling: sample among the most probable tokens whose cumulative probability
        first reaches ``top_p`` (always at least the most probable one); 1 keeps all tokens.
      num_samples: samples per prompt (needs ``temperature > 0`` when more than 1).
      eos_id: end-of-sequence token; a row stops at its first EOS and is padded after it.
      batch_size: prompts decoded at once (``lax.map`` over chunks of this many prompts, each with
        its ``num_samples`` samples, in the same program); ``None``: all at once.
      prompt_embed_offset: ``[B, P, d]`` added to the prompt tokens' embeddings in the prefill
        only (the new tokens are embedded as they are): ECO's inference-time corruption
        (:mod:`jaxunlearn.models.eco`). ``None``: the network's own
        ``network.apply.prompt_embed_offset(variables, prompts)`` when it has one (an ECO-wrapped
        network), else nothing.

    Returns:
      :class:`Generated`: ``tokens [B, num_samples, max_new_tokens]`` and ``lengths
      [B, num_samples]``.

    >>> out = generate(net, variables, prompts, key=jax.random.key(0), max_new_tokens=32,
    ...                temperature=1.0, num_samples=200, eos_id=eos)  # doctest: +SKIP
    >>> out.tokens.shape  # doctest: +SKIP
    (B, 200, 32)

    Raises:
      ValueError: ``temperature < 0``; ``temperature == 0`` with sampling requested
        (``num_samples > 1`` or ``top_p < 1``): greedy decoding gives one answer, so sampling
        needs ``temperature > 0``; ``top_p`` outside (0, 1]; ``P + max_new_tokens > max_len``; an
        empty prompt; ids outside the vocabulary.
    """
    spec = _spec(network)
    max_new_tokens = check_count(max_new_tokens, "max_new_tokens", 1)
    num_samples = check_count(num_samples, "num_samples", 1)
    if not isinstance(temperature, numbers.Real) or not math.isfinite(temperature):
        raise ValueError(f"`temperature` must be a finite number >= 0; got {temperature!r}.")
    if temperature < 0:
        raise ValueError(
            f"`temperature` must be >= 0 (0 = greedy decoding, > 0 = sampling); got {temperature}."
        )
    if not isinstance(top_p, numbers.Real) or not 0 < top_p <= 1:
        raise ValueError(f"`top_p` must be in (0, 1]; got {top_p!r}.")
    if temperature == 0 and (num_samples > 1 or top_p < 1):
        raise ValueError(
            "`temperature`=0 is greedy decoding (one deterministic answer per prompt); sampling "
            f"(num_samples={num_samples}, top_p={top_p}) needs temperature > 0."
        )
    if eos_id is not None and not (
        isinstance(eos_id, numbers.Integral) and 0 <= eos_id < spec.vocab_size
    ):
        raise ValueError(f"`eos_id` must be a token id in [0, {spec.vocab_size}); got {eos_id!r}.")
    _check_tokens("prompts", spec, prompts)
    n, width = np.shape(prompts)
    if width + max_new_tokens > spec.max_len:
        raise ValueError(
            f"prompts of width {width} plus max_new_tokens={max_new_tokens} exceed the model's "
            f"context max_len={spec.max_len}."
        )
    values = _concrete(prompts)
    if values is not None and np.any(np.all(values == spec.pad_id, 1)):
        raise ValueError("`prompts` has an empty row (only pad tokens): nothing to continue.")
    batch_size = n if batch_size is None else check_count(batch_size, "batch_size", 1)
    if prompt_embed_offset is None and hasattr(network.apply, "prompt_embed_offset"):
        prompt_embed_offset = network.apply.prompt_embed_offset(variables, prompts)
    if prompt_embed_offset is not None and np.shape(prompt_embed_offset) != (
        n,
        width,
        spec.d_model,
    ):
        raise ValueError(
            f"`prompt_embed_offset` must be [B, P, d] = {(n, width, spec.d_model)}; got "
            f"{np.shape(prompt_embed_offset)}."
        )
    return _generate(
        spec,
        variables["params"],
        jnp.asarray(prompts, jnp.int32),
        key,
        prompt_embed_offset,
        max_new_tokens=max_new_tokens,
        num_samples=num_samples,
        temperature=float(temperature),
        top_p=float(top_p),
        eos_id=None if eos_id is None else int(eos_id),
        batch_size=min(batch_size, n),
    )


def greedy_answers(
    network: Network,
    variables: Variables,
    prompts,
    *,
    max_new_tokens: int,
    eos_id: int | None = None,
    batch_size: int | None = None,
) -> Generated:
    """Greedy continuations, ``tokens [B, max_new_tokens]`` and ``lengths [B]`` (TOFU's ROUGE
    and MUSE's knowledge memorisation decode this way)."""
    out = generate(
        network,
        variables,
        prompts,
        key=jax.random.key(0),
        max_new_tokens=max_new_tokens,
        eos_id=eos_id,
        batch_size=batch_size,
    )
    return Generated(out.tokens[:, 0], out.lengths[:, 0])


def prompt_lengths(prompts: Array, pad_id: int) -> Array:
    """``[B]`` length of each right-padded prompt: the last non-pad position plus one."""
    t = jnp.arange(1, prompts.shape[1] + 1)
    return jnp.max(jnp.where(prompts != pad_id, t, 0), axis=1).astype(jnp.int32)


def nucleus_logits(logits: Array, top_p: float) -> Array:
    """``logits`` with every token outside the top-``p`` nucleus set to ``-inf``: the most
    probable tokens whose cumulative probability first reaches ``top_p`` are kept (at least one;
    tokens tied with the least probable kept one are kept too)."""
    probs = jax.nn.softmax(logits, -1)
    ordered = -jnp.sort(-probs, -1)
    mass_before = jnp.cumsum(ordered, -1) - ordered
    count = jnp.sum(mass_before < top_p, -1, keepdims=True)
    threshold = jnp.take_along_axis(ordered, count - 1, -1)
    return jnp.where(probs >= threshold, logits, -jnp.inf)


def _sample_keys(key: Array, row: Array, num_samples: int) -> Array:
    """``[num_samples]`` keys of one prompt: ``fold_in(fold_in(key, row), j)``."""
    prompt_key = jax.random.fold_in(key, row)
    return jax.vmap(lambda j: jax.random.fold_in(prompt_key, j))(jnp.arange(num_samples))


def inverse_cdf_sample(keys: Array, logits: Array) -> Array:
    """One token per row of ``logits [B, V]`` (``-inf`` = excluded), drawn from
    ``softmax(logits)`` with one uniform ``u`` per row (``keys [B]``): the first token whose
    cumulative probability exceeds ``u`` times the total.

    Exact in distribution, like ``jax.random.categorical``'s Gumbel-max, which draws a uniform and
    takes two logarithms for every vocabulary entry: on a CPU that was a quarter of the cost of a
    sampled decoding step of the default LM model, this about a twentieth.
    """
    u = jax.vmap(jax.random.uniform)(keys)
    cdf = jnp.cumsum(jax.nn.softmax(logits.astype(jnp.float32), -1), -1)
    index = jnp.sum(cdf <= u[:, None] * cdf[:, -1:], -1)
    # u < 1, so index < V up to rounding; never past the last token with probability > 0.
    return jnp.minimum(index, jnp.argmax(cdf, -1)).astype(jnp.int32)


def _pick(logits: Array, keys: Array, temperature: float, top_p: float) -> Array:
    if temperature == 0:
        return jnp.argmax(logits, -1).astype(jnp.int32)
    scaled = logits / temperature
    if top_p < 1:
        scaled = nucleus_logits(scaled, top_p)
    return inverse_cdf_sample(keys, scaled)


@functools.partial(
    jax.jit,
    static_argnames=(
        "spec",
        "max_new_tokens",
        "num_samples",
        "temperature",
        "top_p",
        "eos_id",
        "batch_size",
    ),
)
def _generate(
    spec,
    params,
    prompts,
    key,
    offset,
    *,
    max_new_tokens,
    num_samples,
    temperature,
    top_p,
    eos_id,
    batch_size,
):
    n, width = prompts.shape
    chunks = -(-n // batch_size)
    padded = jnp.pad(prompts, ((0, chunks * batch_size - n), (0, 0)), constant_values=spec.pad_id)
    rows = jnp.arange(chunks * batch_size).reshape(chunks, batch_size)
    variables = {"params": params}
    s, steps = num_samples, max_new_tokens
    if offset is not None:
        offset = jnp.pad(offset, ((0, chunks * batch_size - n), (0, 0), (0, 0)))
        offset = offset.reshape(chunks, batch_size, width, -1)

    def chunk(args):
        prompt, row, prompt_offset = args
        b = prompt.shape[0]
        lengths = jnp.maximum(prompt_lengths(prompt, spec.pad_id), 1)  # (filler rows are empty)
        cache = transformer.init_cache(spec, b, width + steps)
        positions = jnp.broadcast_to(jnp.arange(width, dtype=jnp.int32), (b, width))
        logits, cache = transformer.decode(spec, variables, prompt, positions, cache, prompt_offset)
        logits = logits[jnp.arange(b), lengths - 1]
        # Fold the samples into the batch: row b * s + j is sample j of prompt b.
        logits = jnp.repeat(logits, s, 0)
        lengths = jnp.repeat(lengths, s, 0)
        cache = transformer.KVCache(
            jnp.repeat(cache.k, s, 1), jnp.repeat(cache.v, s, 1), jnp.repeat(cache.valid, s, 0)
        )
        keys = jax.vmap(lambda r: _sample_keys(key, r, s))(row).reshape(b * s)
        out = jnp.full((b * s, steps), spec.pad_id, jnp.int32)
        done = jnp.zeros(b * s, bool)
        new_lengths = jnp.full(b * s, steps, jnp.int32)

        def cond(carry):
            i, _, _, _, done, _ = carry
            return (i < steps) & ~jnp.all(done)

        def body(carry):
            i, logits, cache, out, done, new_lengths = carry
            step_keys = jax.vmap(jax.random.fold_in, (0, None))(keys, i)
            token = jnp.where(done, spec.pad_id, _pick(logits, step_keys, temperature, top_p))
            out = out.at[:, i].set(token)
            if eos_id is not None:
                stop = ~done & (token == eos_id)
                new_lengths = jnp.where(stop, i + 1, new_lengths)
                done = done | stop
            logits, cache = transformer.decode(
                spec, variables, token[:, None], (lengths + i)[:, None], cache
            )
            return i + 1, logits[:, 0], cache, out, done, new_lengths

        carry = (jnp.int32(0), logits, cache, out, done, new_lengths)
        _, _, _, out, _, new_lengths = jax.lax.while_loop(cond, body, carry)
        return out.reshape(b, s, steps), new_lengths.reshape(b, s)

    tokens, lengths = jax.lax.map(chunk, (padded.reshape(chunks, batch_size, width), rows, offset))
    tokens = tokens.reshape(chunks * batch_size, s, steps)[:n]
    return Generated(tokens, lengths.reshape(chunks * batch_size, s)[:n])


# ----------------------------------------------------------------------------------------------
# Teacher-forced scoring
# ----------------------------------------------------------------------------------------------


def token_statistics(logits: Array, labels: Array) -> TokenScores:
    """:class:`TokenScores` from logits ``[B, T, V]`` and pre-shifted labels ``[B, T]``."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    p = jnp.exp(logp)
    mask = losses.token_mask(labels)
    mean = jnp.sum(p * logp, -1)
    var = jnp.maximum(jnp.sum(p * jnp.square(logp), -1) - jnp.square(mean), 0.0)
    argmax = jnp.where(mask > 0, jnp.argmax(logp, -1), -1).astype(jnp.int32)
    return TokenScores(
        log_probs=losses.token_log_probs(logits, labels),
        mean=mean * mask,
        std=jnp.sqrt(var) * mask,
        argmax=argmax,
    )


def score(
    network: Network, variables: Variables, tokens, labels, *, batch_size: int = 32
) -> TokenScores:
    """Teacher-forced per-token statistics of ``labels`` under the model, in one jitted program.

    Args:
      network: any network whose ``apply`` gives ``[B, T, V]`` logits (the transformer).
      variables: its variables.
      tokens: ``[n, T]`` int token ids (right-padded).
      labels: ``[n, T]`` pre-shifted targets, ``IGNORE_INDEX`` where no token is scored.
      batch_size: rows per forward pass (``lax.map`` over batches; ``n`` need not divide).

    Returns:
      :class:`TokenScores`, each ``[n, T]``.
    """
    batch_size = check_count(batch_size, "batch_size", 1)
    if np.shape(tokens) != np.shape(labels) or len(np.shape(tokens)) != 2:
        raise ValueError(
            f"`tokens` {np.shape(tokens)} and `labels` {np.shape(labels)} must both be [n, T]."
        )
    n = np.shape(tokens)[0]
    return _score_fn(network, min(batch_size, max(n, 1)))(variables, tokens, labels)


@functools.lru_cache(maxsize=16)
def _score_fn(network: Network, batch_size: int):
    pad_id = getattr(network.spec, "pad_id", 0)

    @jax.jit
    def run(variables, tokens, labels):
        n, t = tokens.shape
        chunks = -(-n // batch_size)
        extra = chunks * batch_size - n
        tokens = jnp.pad(tokens, ((0, extra), (0, 0)), constant_values=pad_id)
        labels = jnp.pad(labels, ((0, extra), (0, 0)), constant_values=losses.IGNORE_INDEX)

        def one(args):
            x, y = args
            return token_statistics(network.apply(variables, x).logits, y)

        out = jax.lax.map(
            one, (tokens.reshape(chunks, batch_size, t), labels.reshape(chunks, batch_size, t))
        )
        return jax.tree.map(lambda a: a.reshape(chunks * batch_size, t)[:n], out)

    return run
