"""Concept ablation (ConceptVectors' needle): the located value vectors change, nothing else does,
and on a hand-built model the concept token's logit drops."""

import functools
import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import models, rules
from jaxunlearn.audit import lm_robust
from jaxunlearn.core.losses import IGNORE_INDEX as IGN
from jaxunlearn.train import fit, make_stream

# The module (the package attribute ``rules.concept_ablation`` is the rule factory).
ca = importlib.import_module("jaxunlearn.rules.concept_ablation")
V, T, CONCEPT, UNIT = 40, 12, 17, 3


@functools.cache
def _planted():
    """A 2-layer model whose value vector (layer 1, unit 3) writes e_0, which the output
    embedding reads as token 17 only; unit 3's activation is ``z^2 sigmoid(z)`` >= 0 (equal gate
    and up columns), so the vector raises token 17's logit wherever it fires."""
    net = models.make_network(
        "transformer", vocab_size=V, max_len=T, d_model=16, num_layers=2, num_heads=2
    )
    variables = net.init(jax.random.key(0))
    params = jax.tree.map(lambda a: a, variables["params"])
    d = net.spec.d_model
    params["lm_head"] = {
        "kernel": params["lm_head"]["kernel"].at[0].set(0.0).at[0, CONCEPT].set(5.0)
    }
    mlp = params["layers"]["1"]["mlp"]
    column = jax.random.normal(jax.random.key(1), (d,)) * 2.0
    mlp["gate_proj"] = {"kernel": mlp["gate_proj"]["kernel"].at[:, UNIT].set(column)}
    mlp["up_proj"] = {"kernel": mlp["up_proj"]["kernel"].at[:, UNIT].set(column)}
    down = mlp["down_proj"]["kernel"].at[:, 0].set(0.0).at[UNIT].set(jnp.eye(d)[0] * 3.0)
    mlp["down_proj"] = {"kernel": down}
    return net, {**variables, "params": params}


def _rows(seed=0, n=12):
    rng = np.random.default_rng(seed)
    x = rng.integers(4, V, (n, T)).astype(np.int32)
    x = np.where(np.isin(x, [30, 31]), 5, x)
    x[:4, 1:3] = [30, 31]  # the forget prompts' own tokens
    y = np.where(np.arange(T) >= 7, np.roll(x, -1, 1), IGN).astype(np.int32)
    y[:, -1] = IGN
    return x, y


def test_ablation_changes_only_the_concept_vectors_and_drops_the_concept_logit():
    net, variables = _planted()
    rule = rules.make("concept_ablation", net, concept_ids=(CONCEPT,), top=1)
    x, y = _rows()
    batch = {"forget": {"x": x[:4], "y": y[:4]}, "retain": {"x": x[4:], "y": y[4:]}}
    key = jax.random.key(0)
    edited, _, metrics = jax.jit(rule.update)(
        variables, rule.init(variables, key=key), batch, key=key
    )
    assert float(metrics["update_norm"]) == pytest.approx(3.0, rel=1e-6)
    before = variables["params"]["layers"]["1"]["mlp"]["down_proj"]["kernel"]
    after = edited["params"]["layers"]["1"]["mlp"]["down_proj"]["kernel"]
    assert np.all(np.asarray(after[UNIT]) == 0) and np.any(np.asarray(before[UNIT]) != 0)
    rows = np.arange(before.shape[0]) != UNIT
    assert np.array_equal(np.asarray(after[rows]), np.asarray(before[rows]))  # bitwise
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(edited["params"]),
        jax.tree.leaves(variables["params"]),
        strict=True,
    ):
        if "down_proj" not in jax.tree_util.keystr(path) or "'1'" not in jax.tree_util.keystr(path):
            assert np.array_equal(np.asarray(a), np.asarray(b)), path
    # The same edit as the audit's causal check, and the concept token's logit drops by the
    # vector's contribution while the others barely move.
    audit = lm_robust.ablate_vectors(variables, [(1, UNIT)])
    for a, b in zip(jax.tree.leaves(edited), jax.tree.leaves(audit), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    apply = jax.jit(net.apply)
    logits0 = apply(variables, jnp.asarray(x)).logits
    logits1 = apply(edited, jnp.asarray(x)).logits
    drop = np.asarray(logits0[..., CONCEPT] - logits1[..., CONCEPT])
    assert drop.min() > 0 and drop.mean() > 1.0
    rest = np.delete(np.asarray(jnp.abs(logits0 - logits1)), CONCEPT, axis=-1)
    assert rest.mean() < 0.2 * drop.mean()


def test_concept_found_from_the_batches_and_noise_mode():
    net, variables = _planted()
    x, y = _rows()
    weights = ca.characteristic_tokens((x[:4], y[:4]), (x[4:], y[4:]), V)
    # Tokens 30 and 31 fill 1 of the 8 prompt positions (0..7) of every forget row, 0 of retain.
    np.testing.assert_allclose(weights[30], 1 / 8, rtol=1e-6)
    np.testing.assert_allclose(weights[31], 1 / 8, rtol=1e-6)
    assert float(weights[5]) >= 0 and float(weights[0]) == 0
    rule = rules.make("concept_ablation", net, mode="noise", top=3, layers=(0,), noise_scale=0.5)
    stream = make_stream(x, y, {"forget": np.arange(4), "retain": np.arange(4, 12)})
    out = fit(
        rule,
        variables,
        stream,
        batch_sizes={"forget": 4, "retain": 8},
        num_steps=2,
        key=jax.random.key(0),
        chunk_size=2,
    )
    assert out.metrics["update_norm"][0] > 0 and out.metrics["update_norm"][1] == 0
    before = np.asarray(variables["params"]["layers"]["0"]["mlp"]["down_proj"]["kernel"])
    after = np.asarray(out.variables["params"]["layers"]["0"]["mlp"]["down_proj"]["kernel"])
    changed = np.any(after != before, axis=1)
    assert changed.sum() == 3
    # The three rows are the top-scoring ones in layer 0 for the batches' concept weights.
    scores = np.asarray(ca.value_vectors.concept_scores(variables["params"], weights))[0]
    assert set(np.flatnonzero(changed)) == set(np.argsort(-scores)[:3])
    np.testing.assert_array_equal(
        out.variables["params"]["layers"]["1"]["mlp"]["down_proj"]["kernel"],
        variables["params"]["layers"]["1"]["mlp"]["down_proj"]["kernel"],
    )


def test_bad_settings():
    net, variables = _planted()
    x, y = _rows()
    batch = {"forget": {"x": x[:4], "y": y[:4]}, "retain": {"x": x[4:], "y": y[4:]}}
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="vocabulary"):
        rules.make("concept_ablation", net, concept_ids=(V,))
    with pytest.raises(ValueError, match="mode"):
        rules.make("concept_ablation", net, mode="erase")
    with pytest.raises(ValueError, match="top"):
        rules.make("concept_ablation", net, top=0)
    for settings in ({"layers": (2,)}, {"top": 10_000}):
        rule = rules.make("concept_ablation", net, **settings)
        with pytest.raises(ValueError, match="ablation layers|exceeds"):
            rule.update(variables, rule.init(variables, key=key), batch, key=key)
