"""ROCR's rank-one concept redirection: the closed form's guarantees, and the registered rule."""

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

# The module (the package attribute ``rules.rocr`` is the rule factory).
rocr_module = importlib.import_module("jaxunlearn.rules.rocr")
V, T = 40, 12


@functools.cache
def _problem():
    net = models.make_network(
        "transformer", vocab_size=V, max_len=T, d_model=16, num_layers=1, num_heads=2
    )
    variables = net.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    x = rng.integers(4, V, (12, T)).astype(np.int32)
    x = np.where(np.isin(x, [30, 31]), 5, x)
    x[:4, 1:3] = [30, 31]  # the forget rows' concept: tokens 30, 31, nowhere else
    y = np.where(np.arange(T) >= 7, np.roll(x, -1, 1), IGN).astype(np.int32)
    y[:, -1] = IGN
    return net, variables, x, y


def test_keys_read_through_apply_are_exact():
    net, variables, x, _ = _problem()
    keys = jax.jit(rocr_module.down_proj_keys, static_argnums=(0, 3))(net.apply, variables, x, 0)
    np.testing.assert_allclose(keys, lm_robust.mlp_keys(net, variables, x)[0], atol=1e-5)


def test_edit_redirects_the_concept_key_and_spares_orthogonal_keys():
    net, variables, x, y = _problem()
    edit = jax.jit(
        functools.partial(rocr_module.rocr_edit, layer=0, vocab_size=V, concept_ids=(30, 31)),
        static_argnums=0,
    )
    edited, metrics = edit(net.apply, variables, (x[:4], y[:4]), (x[4:], y[4:]))
    assert float(metrics["concept_positions"]) == 8  # 4 rows x 2 concept tokens
    w = variables["params"]["layers"]["0"]["mlp"]["down_proj"]["kernel"]
    w2 = edited["params"]["layers"]["0"]["mlp"]["down_proj"]["kernel"]
    # By hand: k* = mean key at the concept tokens; v* = mean retain-only-token key through W.
    keys = np.asarray(lm_robust.mlp_keys(net, variables, x)[0], np.float64)
    k_star = keys[:4, 1:3].reshape(-1, keys.shape[-1]).mean(0)
    prompt = (x != 0) & ~np.pad(y[:, :-1] != IGN, ((0, 0), (1, 0)))
    forget_tokens = set(x[:4][prompt[:4]].tolist())
    retain_only = prompt[4:] & ~np.isin(x[4:], list(forget_tokens))
    k_repl = keys[4:][retain_only].mean(0)
    np.testing.assert_allclose(k_star @ w2, k_repl @ np.asarray(w), rtol=2e-3, atol=2e-4)
    # A key C^{-1}-orthogonal to k* is mapped as before.
    r_keys = keys[4:].reshape(-1, keys.shape[-1])
    second = r_keys.T @ r_keys / len(r_keys)
    second += 1e-2 * np.mean(np.diag(second)) * np.eye(len(second))
    u = np.linalg.solve(second, k_star)
    k = np.random.default_rng(1).normal(size=k_star.shape)
    k_perp = k - (k @ u) / (u @ u) * u
    np.testing.assert_allclose(k_perp @ np.asarray(w2), k_perp @ np.asarray(w), atol=1e-4)
    # Only the edited kernel moved.
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), edited, variables)
    flat = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(moved)}
    assert [p for p, v in flat.items() if v > 0] == [
        "['params']['layers']['0']['mlp']['down_proj']['kernel']"
    ]


def test_registered_rule_edits_once():
    net, variables, x, y = _problem()
    assert rules.get("rocr").task == "language_model"
    rule = rules.make("rocr", net, num_steps=2)
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
    update = out.metrics["update_norm"]
    assert out.metrics["concept_positions"][0] > 0 and update[0] > 0 and update[1] == 0
    # Whole-set batches: the same edit as the pure function (means do not depend on the order).
    edit = jax.jit(
        functools.partial(rocr_module.rocr_edit, layer=0, vocab_size=V), static_argnums=0
    )
    direct, _ = edit(net.apply, variables, (x[:4], y[:4]), (x[4:], y[4:]))
    for a, b in zip(jax.tree.leaves(out.variables), jax.tree.leaves(direct), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_bad_settings():
    net, variables, x, y = _problem()
    with pytest.raises(ValueError, match="vocabulary"):
        rules.make("rocr", net, concept_ids=(V,))
    with pytest.raises(ValueError, match="layer"):
        rules.make("rocr", net, layer=-1)
    rule = rules.make("rocr", net, layer=3)
    batch = {"forget": {"x": x[:4], "y": y[:4]}, "retain": {"x": x[4:], "y": y[4:]}}
    with pytest.raises(ValueError, match="layer 3"):
        rule.update(
            variables, rule.init(variables, key=jax.random.key(0)), batch, key=jax.random.key(0)
        )
