"""LoRA: only the adapters train, the merge is W + (alpha / r) A B, and any loss rule works."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from rule_testing import forget_log_prob, lm_batch, tiny_lm_problem

from jaxunlearn import rules
from jaxunlearn.core import losses
from jaxunlearn.core.combinators import masked
from jaxunlearn.core.lora import ALL_PROJECTIONS, LoraState, init_adapters, lora, merge
from jaxunlearn.train import fit

MLP = r"layers\.\d+\.mlp\.(up|down)_proj\.kernel"


def _setup():
    net, variables, stream = tiny_lm_problem(trained=False)
    batch = {"forget": lm_batch(stream, "forget"), "retain": lm_batch(stream, "retain", 8)}
    return net, variables, stream, batch


def test_adapters_start_at_zero_update_on_the_chosen_kernels_only():
    net, variables, _, _ = _setup()
    adapters = init_adapters(variables["params"], MLP, 4, jax.random.key(0))
    assert sorted(adapters) == [
        f"layers.{i}.mlp.{p}_proj.kernel" for i in (0, 1) for p in ("down", "up")
    ]
    a, b = adapters["layers.0.mlp.up_proj.kernel"].values()
    assert a.shape == (16, 4) and b.shape == (4, 48) and not np.any(b)
    assert float(jnp.max(jnp.abs(a))) <= 1 / np.sqrt(16)
    state = lora(rules.gradient_ascent(net.apply), rank=4, targets=MLP).init(
        variables, key=jax.random.key(0)
    )
    # B = 0: the merged model is the base model.
    merged = merge(variables, state)
    for x, y in zip(jax.tree.leaves(merged), jax.tree.leaves(variables), strict=True):
        np.testing.assert_array_equal(x, y)


def test_one_sgd_step_is_the_chain_rule_and_only_adapters_move():
    net, variables, _, batch = _setup()
    lr, rank, alpha = 0.5, 2, 6.0
    rule = rules.gradient_ascent(net.apply, learning_rate=lr, optimizer=optax.sgd(lr))
    wrapped = lora(rule, rank=rank, alpha=alpha, targets=r"layers\.1\.mlp\.down_proj\.kernel")
    state = wrapped.init(variables, key=jax.random.key(3))
    new_vars, new_state, metrics = jax.jit(wrapped.update)(
        variables, state, batch, key=jax.random.key(4)
    )
    # The base variables are returned bit-identical.
    for x, y in zip(jax.tree.leaves(new_vars), jax.tree.leaves(variables), strict=True):
        np.testing.assert_array_equal(x, y)

    # G = d(-NLL_forget)/dW at the base; dA = s G B^T = 0, dB = s A^T G.
    def objective(params):
        logits = net.apply({**variables, "params": params}, batch["forget"]["x"]).logits
        return -losses.supervised(logits, batch["forget"]["y"])

    g = jax.grad(objective)(variables["params"])["layers"]["1"]["mlp"]["down_proj"]["kernel"]
    path = "layers.1.mlp.down_proj.kernel"
    a0 = state.adapters[path]["a"]
    scale = alpha / rank
    np.testing.assert_allclose(new_state.adapters[path]["a"], a0)
    np.testing.assert_allclose(new_state.adapters[path]["b"], -lr * scale * a0.T @ g, atol=1e-6)
    assert float(metrics["forget_loss"]) > 0
    # The merge adds scale * A @ B to that kernel and leaves every other leaf alone.
    merged = merge(new_vars, new_state)["params"]
    w = variables["params"]["layers"]["1"]["mlp"]["down_proj"]["kernel"]
    ad = new_state.adapters[path]
    np.testing.assert_allclose(
        merged["layers"]["1"]["mlp"]["down_proj"]["kernel"],
        w + scale * ad["a"] @ ad["b"],
        rtol=1e-6,
    )
    np.testing.assert_array_equal(
        merged["layers"]["0"]["mlp"]["down_proj"]["kernel"],
        variables["params"]["layers"]["0"]["mlp"]["down_proj"]["kernel"],
    )


def test_lora_gradient_ascent_lowers_forget_log_prob_in_fit():
    net, variables, stream, _ = _setup()
    rule = lora(
        rules.gradient_ascent(net.apply, learning_rate=0.01, optimizer={"name": "adam"}),
        rank=4,
        alpha=8.0,
        targets=ALL_PROJECTIONS,
    )
    res = fit(
        rule, variables, stream, batch_sizes={"forget": 8}, num_steps=6, key=jax.random.key(0)
    )
    assert isinstance(res.state, LoraState)
    # Adam's state is adapter-sized.
    sizes = sum(x.size for x in jax.tree.leaves(res.state.opt_state))
    adapter_size = sum(x.size for x in jax.tree.leaves(res.state.adapters))
    assert sizes <= 2 * adapter_size + 8
    before = forget_log_prob(variables)
    after = forget_log_prob(merge(res.variables, res.state))
    assert after < before - 0.2, (before, after)
    assert np.all(np.diff(res.metrics["forget_loss"]) > 0)
    # The returned variables are still the base model.
    assert forget_log_prob(res.variables) == pytest.approx(before)


def test_lora_npo_with_a_kl_retain_term_reads_the_base_as_reference():
    net, variables, _, batch = _setup()
    rule = lora(rules.npo(net.apply, learning_rate=0.05, retain_loss="kl"), rank=2, targets=MLP)
    state = rule.init(variables, key=jax.random.key(0))
    _, _, metrics = jax.jit(rule.update)(variables, state, batch, key=jax.random.key(1))
    # At the start the model is its reference: log ratio and KL are 0, the NPO weight 1.
    assert float(metrics["forget_log_ratio"]) == pytest.approx(0.0, abs=1e-5)
    assert float(metrics["retain_loss"]) == pytest.approx(0.0, abs=1e-6)
    assert float(metrics["npo_weight"]) == pytest.approx(1.0)


def test_bad_input():
    net, variables, _, _ = _setup()
    ga = rules.gradient_ascent(net.apply)
    with pytest.raises(ValueError, match="rank"):
        lora(ga, rank=0)
    with pytest.raises(ValueError, match="`targets`"):
        lora(ga, targets="(")
    with pytest.raises(ValueError, match="alpha"):
        lora(ga, alpha=float("nan"))
    with pytest.raises(ValueError, match="rule_from_loss"):
        lora(masked(ga, lambda v: jax.tree.map(lambda x: True, v["params"])))
    with pytest.raises(ValueError, match="rule_from_loss"):
        lora(rules.pdu(net.apply, dual_warmup_epochs=0.0))
    with pytest.raises(ValueError, match="only 2-D"):
        lora(ga, targets=r"norm\.scale").init(variables, key=jax.random.key(0))
    with pytest.raises(ValueError, match="matches no parameter"):
        lora(ga, targets=r"q_proj").init(variables, key=jax.random.key(0))
    with pytest.raises(ValueError, match="LoraState"):
        merge(variables, ())
