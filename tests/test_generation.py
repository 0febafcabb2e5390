"""Tests for KV-cached generation and teacher-forced scoring (jaxunlearn/models/generation.py)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import models
from jaxunlearn.core import losses
from jaxunlearn.models import generation

V, T, P, N = 61, 20, 6, 8


@functools.cache
def _net():
    net = models.make_network(
        "transformer", vocab_size=V, max_len=T, d_model=32, num_layers=2, num_heads=4,
        num_kv_heads=2,
    )  # fmt: skip
    variables = net.init(jax.random.key(0))
    # Sharper next-token distributions than a fresh init gives, so greedy choices are stable.
    variables["params"]["lm_head"]["kernel"] = variables["params"]["lm_head"]["kernel"] * 40
    return net, variables


def _prompts():
    """Three right-padded prompts of lengths 6, 2 and 4."""
    x = np.array(jax.random.randint(jax.random.key(3), (3, P), 1, V))
    x[1, 2:] = 0
    x[2, 4:] = 0
    return x


@functools.cache
def _rollout():
    """Greedy continuations computed with the full forward pass, one token at a time."""
    net, variables = _net()
    apply = jax.jit(net.apply)
    prompts = _prompts()
    lengths = (prompts != 0).sum(1)
    seq = np.zeros((3, P + N), np.int32)
    seq[:, :P] = prompts
    new = np.zeros((3, N), np.int32)
    for i in range(N):
        logits = np.asarray(apply(variables, jnp.asarray(seq)).logits)
        for b in range(3):
            new[b, i] = logits[b, lengths[b] + i - 1].argmax()
            seq[b, lengths[b] + i] = new[b, i]
    return new


def test_greedy_generation_equals_the_argmax_rollout():
    net, variables = _net()
    out = generation.generate(net, variables, _prompts(), key=jax.random.key(0), max_new_tokens=N)
    assert out.tokens.shape == (3, 1, N) and out.lengths.shape == (3, 1)
    np.testing.assert_array_equal(out.tokens[:, 0], _rollout())
    np.testing.assert_array_equal(out.lengths, np.full((3, 1), N))


def test_eos_stops_a_row_and_pads_after_it():
    net, variables = _net()
    expected = _rollout()
    eos = int(expected[0, 2])
    got = generation.greedy_answers(net, variables, _prompts(), max_new_tokens=N, eos_id=eos)
    for b in range(3):
        hits = np.flatnonzero(expected[b] == eos)
        stop = hits[0] + 1 if hits.size else N
        assert got.lengths[b] == stop
        np.testing.assert_array_equal(got.tokens[b, :stop], expected[b, :stop])
        assert np.all(np.asarray(got.tokens[b, stop:]) == 0)
    assert got.lengths[0] <= 3


def test_tiny_top_p_sampling_is_greedy():
    net, variables = _net()
    out = generation.generate(
        net, variables, _prompts(), key=jax.random.key(5), max_new_tokens=N, temperature=1.0,
        top_p=1e-6, num_samples=3,
    )  # fmt: skip
    np.testing.assert_array_equal(out.tokens, np.repeat(_rollout()[:, None], 3, 1))


def test_samples_are_reproducible_and_independent_of_batching():
    net, variables = _net()
    kw = dict(max_new_tokens=4, temperature=1.0, num_samples=5)
    a = generation.generate(net, variables, _prompts(), key=jax.random.key(1), **kw)
    b = generation.generate(net, variables, _prompts(), key=jax.random.key(1), batch_size=2, **kw)
    c = generation.generate(net, variables, _prompts(), key=jax.random.key(2), **kw)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)
    # Samples of one prompt differ from each other.
    assert len({tuple(s) for s in np.asarray(a.tokens[0])}) > 1


def test_first_tokens_follow_the_tempered_nucleus_distribution():
    net, variables = _net()
    prompt = _prompts()[1:2]
    logits = np.asarray(net.apply(variables, jnp.asarray(prompt)).logits[0, 1], np.float64)
    temperature, top_p, n = 3.0, 0.75, 1000
    out = generation.generate(
        net, variables, prompt, key=jax.random.key(7), max_new_tokens=1,
        temperature=temperature, top_p=top_p, num_samples=n,
    )  # fmt: skip
    first = np.asarray(out.tokens[0, :, 0])
    probs = np.exp(logits / temperature - np.max(logits / temperature))
    probs /= probs.sum()
    order = np.argsort(-probs)
    mass_before = np.cumsum(probs[order]) - probs[order]
    nucleus = order[mass_before < top_p]
    assert 1 < len(nucleus) < V and set(first) <= set(nucleus)
    renormalised = probs[nucleus] / probs[nucleus].sum()
    freq = np.array([(first == t).sum() / n for t in nucleus])
    sd = np.sqrt(renormalised * (1 - renormalised) / n)
    assert np.all(np.abs(freq - renormalised) < 5 * sd + 1e-3)


def test_nucleus_by_hand():
    logits = jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05]))
    kept = lambda p: np.isfinite(generation.nucleus_logits(logits, p))  # noqa: E731
    np.testing.assert_array_equal(kept(0.5), [1, 0, 0, 0])
    np.testing.assert_array_equal(kept(0.7), [1, 1, 0, 0])
    np.testing.assert_array_equal(kept(0.81), [1, 1, 1, 0])
    np.testing.assert_array_equal(kept(1.0), [1, 1, 1, 1])


def test_inverse_cdf_sample_by_hand():
    # p = [0.1, 0, 0.6, 0.3] (token 1 excluded): u < 0.1 -> 0, 0.1 <= u < 0.7 -> 2, else 3.
    logits = jnp.log(jnp.array([0.1, 1.0, 0.6, 0.3])).at[1].set(-jnp.inf)
    keys = jax.random.split(jax.random.key(0), 200)
    u = np.asarray(jax.vmap(jax.random.uniform)(keys))
    expected = np.where(u < 0.1, 0, np.where(u < 0.7, 2, 3))
    got = np.asarray(generation.inverse_cdf_sample(keys, jnp.tile(logits, (200, 1))))
    np.testing.assert_array_equal(got, expected)
    assert set(expected.tolist()) == {0, 2, 3}
    # One token with all the mass is always drawn, whatever the uniform.
    one = jnp.full((200, 4), -jnp.inf).at[:, 3].set(0.0)
    assert np.all(np.asarray(generation.inverse_cdf_sample(keys, one)) == 3)


def test_score_matches_the_forward_pass():
    net, variables = _net()
    tokens = np.array(jax.random.randint(jax.random.key(4), (5, 10), 1, V))
    tokens[3, 7:] = 0
    labels = np.concatenate([tokens[:, 1:], np.zeros((5, 1), int)], 1)
    labels[:, :3] = losses.IGNORE_INDEX  # the "prompt"
    labels[labels == 0] = losses.IGNORE_INDEX
    got = generation.score(net, variables, tokens, labels, batch_size=2)  # 3 batches, 1 filler
    logits = np.asarray(net.apply(variables, jnp.asarray(tokens)).logits, np.float64)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    mask = labels != losses.IGNORE_INDEX
    picked = np.take_along_axis(logp, np.where(mask, labels, 0)[..., None], -1)[..., 0]
    np.testing.assert_allclose(got.log_probs, picked * mask, atol=1e-5)
    mu = (np.exp(logp) * logp).sum(-1)
    sigma = np.sqrt((np.exp(logp) * logp**2).sum(-1) - mu**2)
    np.testing.assert_allclose(got.mean, mu * mask, atol=1e-4)
    np.testing.assert_allclose(got.std, sigma * mask, atol=1e-4)
    np.testing.assert_array_equal(got.argmax, np.where(mask, logits.argmax(-1), -1))
    assert got.log_probs.shape == (5, 10) and np.all(np.asarray(got.std)[mask] > 0)


def test_bad_inputs_name_the_argument():
    net, variables = _net()
    prompts, key = _prompts(), jax.random.key(0)
    gen = functools.partial(generation.generate, net, variables, key=key)
    with pytest.raises(ValueError, match="temperature"):
        gen(prompts, max_new_tokens=2, temperature=-0.5)
    with pytest.raises(ValueError, match="temperature"):
        gen(prompts, max_new_tokens=2, num_samples=4)  # sampling with temperature 0
    with pytest.raises(ValueError, match="temperature"):
        gen(prompts, max_new_tokens=2, top_p=0.9)
    for top_p in (0.0, 1.5, -1.0):
        with pytest.raises(ValueError, match="top_p"):
            gen(prompts, max_new_tokens=2, temperature=1.0, top_p=top_p)
    with pytest.raises(ValueError, match="max_len=20"):
        gen(prompts, max_new_tokens=T - P + 1)
    with pytest.raises(ValueError, match="max_new_tokens"):
        gen(prompts, max_new_tokens=0)
    with pytest.raises(ValueError, match="empty row"):
        gen(np.zeros((1, 3), np.int32), max_new_tokens=2)
    with pytest.raises(ValueError, match="vocab_size"):
        gen(np.full((1, 3), V), max_new_tokens=2)
    with pytest.raises(ValueError, match="eos_id"):
        gen(prompts, max_new_tokens=2, eos_id=V)
    mlp = models.make_network("mlp", input_shape=(4,), num_outputs=3)
    with pytest.raises(ValueError, match="transformer"):
        generation.generate(mlp, {}, prompts, key=key, max_new_tokens=2)
    with pytest.raises(ValueError, match="labels"):
        generation.score(net, variables, prompts, prompts[:, :2])
