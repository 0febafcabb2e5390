"""Each language-model rule shows its defining behaviour on a tiny memorised QA model."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from rule_testing import lm_batch, tiny_lm_problem

from jaxunlearn import rules
from jaxunlearn.core import lm_losses, losses
from jaxunlearn.core.combinators import leaf_paths
from jaxunlearn.rules.lm import RMUState


def _setup():
    net, variables, stream = tiny_lm_problem()
    batch = {"forget": lm_batch(stream, "forget"), "retain": lm_batch(stream, "retain", 8)}
    return net, variables, batch


def _run(rule, variables, batch, steps):
    """``steps`` jitted updates on one batch; returns the variables, state and metric lists."""
    state = rule.init(variables, key=jax.random.key(0))
    update = jax.jit(rule.update)
    history = []
    for i in range(steps):
        variables, state, metrics = update(variables, state, batch, key=jax.random.key(i))
        history.append({k: float(v) for k, v in metrics.items()})
    return variables, state, {k: np.array([m[k] for m in history]) for k in history[0]}


def _forget_logp(net, variables, batch):
    logits = net.apply(variables, batch["forget"]["x"]).logits
    return float(jnp.mean(losses.sequence_log_prob(logits, batch["forget"]["y"])))


def test_gradient_ascent_works_on_token_losses_unchanged():
    net, variables, batch = _setup()
    rule = rules.gradient_ascent(net.apply, learning_rate=0.02, optimizer={"name": "adam"})
    new, _, metrics = _run(rule, variables, batch, 4)
    logits = net.apply(variables, batch["forget"]["x"]).logits
    start_nll = float(losses.token_nll_mean(logits, batch["forget"]["y"]))
    assert metrics["forget_loss"][0] == pytest.approx(start_nll, rel=1e-5)
    assert _forget_logp(net, new, batch) < _forget_logp(net, variables, batch) - 1.0


def test_grad_diff_retain_terms():
    net, variables, batch = _setup()
    kl = rules.grad_diff(
        net.apply, learning_rate=0.02, retain_loss="kl", optimizer={"name": "adam"}
    )
    _, state, metrics = _run(kl, variables, batch, 3)
    # At the start the model is its reference: KL(p_ref || p_theta) = 0; then it grows.
    assert metrics["retain_loss"][0] == pytest.approx(0.0, abs=1e-6)
    assert metrics["retain_loss"][-1] > 1e-4
    assert state.reference is not None
    nll = rules.grad_diff(net.apply, learning_rate=0.02)
    assert nll.init(variables, key=jax.random.key(0)).reference is None
    _, _, metrics = _run(nll, variables, batch, 1)
    logits = net.apply(variables, batch["retain"]["x"]).logits
    expected = float(losses.token_nll_mean(logits, batch["retain"]["y"]))
    assert metrics["retain_loss"][0] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="retain_loss"):
        rules.grad_diff(net.apply, retain_loss="mse")


def test_npo_lowers_forget_log_prob_and_its_weight_fades():
    net, variables, batch = _setup()
    rule = rules.npo(net.apply, learning_rate=0.02, beta=0.5)
    _, _, metrics = _run(rule, variables, batch, 8)
    # Step 0: the model is its reference, the loss is 2 ln 2 / beta plus the retain NLL.
    assert metrics["forget_loss"][0] == pytest.approx(4 * math.log(2), rel=1e-5)
    assert metrics["npo_weight"][0] == pytest.approx(1.0)
    assert metrics["forget_log_ratio"][-1] < -1.0
    assert metrics["npo_weight"][-1] < 0.5 * metrics["npo_weight"][1]
    assert np.all(np.diff(metrics["npo_weight"][1:]) < 0)


def test_simnpo_raises_the_forget_nll_without_a_reference():
    net, variables, batch = _setup()
    rule = rules.simnpo(net.apply, learning_rate=0.02, forget_weight=1.0)
    _, state, metrics = _run(rule, variables, batch, 4)
    assert state.reference is None
    logits = net.apply(variables, batch["forget"]["x"]).logits
    rows = -np.asarray(losses.sequence_log_prob(logits, batch["forget"]["y"])) / 3  # |y| = 3
    nll_avg = float(rows.mean())
    assert metrics["forget_nll_avg"][0] == pytest.approx(nll_avg, rel=1e-4)
    expected = np.mean((2 / 4.5) * np.log1p(np.exp(-4.5 * rows)))
    assert metrics["forget_loss"][0] == pytest.approx(expected, rel=1e-4)
    assert metrics["forget_nll_avg"][-1] > nll_avg + 0.5


@pytest.mark.parametrize("name,field", [("idk_dpo", "idk"), ("altpo", "alt")])
def test_preference_rules_prefer_the_alternative_answer(name, field):
    net, variables, batch = _setup()
    rule = rules.make(name, net, learning_rate=0.02)
    new, _, metrics = _run(rule, variables, batch, 6)
    win = {"x": batch["forget"][f"{field}_x"], "y": batch["forget"][f"{field}_y"]}
    before = _forget_logp(net, variables, {"forget": win})
    assert _forget_logp(net, new, {"forget": win}) > before + 1.0
    assert metrics["win_logp"][0] == pytest.approx(before, rel=1e-4)
    assert metrics["forget_logp"][-1] < metrics["forget_logp"][0] - 1.0
    assert metrics["forget_loss"][0] == pytest.approx(20 * math.log(2), rel=1e-5)
    missing = {**batch, "forget": {"x": batch["forget"]["x"], "y": batch["forget"]["y"]}}
    with pytest.raises(ValueError, match=f"{field}_x"):
        rule.update(variables, rule.init(variables, key=jax.random.key(0)), missing, key=None)


def test_rmu_steers_layer_activations_towards_c_u():
    net, variables, batch = _setup()
    rule = rules.make("rmu", net, learning_rate=0.02, steering_coeff=4.0)
    state = rule.init(variables, key=jax.random.key(0))
    assert isinstance(state, RMUState)
    assert float(jnp.linalg.norm(state.steering)) == pytest.approx(4.0, rel=1e-5)
    np.testing.assert_allclose(
        state.steering, lm_losses.rmu_steering_vector(jax.random.key(0), 16, scale=4.0)
    )
    new, _, metrics = _run(rule, variables, batch, 8)
    # Default layer 7 is clipped to the last of the 2 layers: hidden[1].
    h = net.apply(variables, batch["forget"]["x"]).hidden[1]
    mask = lm_losses.answer_positions(batch["forget"]["y"])
    start = float(lm_losses.activation_mse(h, state.steering, mask))
    assert metrics["forget_activation_mse"][0] == pytest.approx(start, rel=1e-5)
    assert metrics["retain_activation_mse"][0] == pytest.approx(0.0, abs=1e-9)
    h_new = net.apply(new, batch["forget"]["x"]).hidden[1]
    assert float(lm_losses.activation_mse(h_new, state.steering, mask)) < 0.5 * start


def test_rmu_layer_choice_and_trainable_subset():
    net, variables, batch = _setup()
    with pytest.raises(ValueError, match="outside the model's 2 layers"):
        rules.make("rmu", net, layer=5).init(variables, key=jax.random.key(0))
    with pytest.raises(ValueError, match="`trainable`"):
        rules.make("rmu", net, trainable="layers.(5")
    target = r"layers\.(0|1)\.mlp\.down_proj\.kernel"
    rule = rules.make("rmu", net, layer=0, trainable=target, learning_rate=0.02)
    new, _, metrics = _run(rule, variables, batch, 2)
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new["params"], variables["params"])
    paths = leaf_paths(variables["params"])
    assert {
        p for p, m in zip(jax.tree.leaves(paths), jax.tree.leaves(moved), strict=True) if m
    } == {
        "layers.0.mlp.down_proj.kernel",
        "layers.1.mlp.down_proj.kernel",  # moved by the retain term's gradient
    }
    assert metrics["forget_activation_mse"][-1] < metrics["forget_activation_mse"][0]


def test_undial_needs_no_retain_batch_and_unlearns_the_true_token():
    net, variables, batch = _setup()
    rule = rules.undial(net.apply, learning_rate=0.02)
    forget_only = {"forget": batch["forget"]}
    new, _, metrics = _run(rule, variables, forget_only, 6)
    logits = net.apply(variables, batch["forget"]["x"]).logits
    expected = lm_losses.undial(logits, batch["forget"]["y"], ref_logits=logits, beta=10.0)
    assert metrics["forget_loss"][0] == pytest.approx(float(expected), rel=1e-5)
    assert _forget_logp(net, new, batch) < _forget_logp(net, variables, batch) - 3.0
    assert "retain_loss" not in metrics


@pytest.mark.parametrize("name", ["wga", "satimp"])
def test_reweighted_ascent_rules(name):
    net, variables, batch = _setup()
    rule = rules.make(name, net, learning_rate=0.02, forget_weight=1.0)
    new, _, metrics = _run(rule, variables, batch, 6)
    logits = net.apply(variables, batch["forget"]["x"]).logits
    loss_fn = getattr(lm_losses, name)
    expected = float(loss_fn(logits, batch["forget"]["y"]))
    assert metrics["forget_loss"][0] == pytest.approx(expected, rel=1e-5)
    assert _forget_logp(net, new, batch) < _forget_logp(net, variables, batch) - 0.5


def test_ce_u_drives_the_true_tokens_away():
    net, variables, batch = _setup()
    rule = rules.ce_u(net.apply, learning_rate=0.02)
    new, state, metrics = _run(rule, variables, {"forget": batch["forget"]}, 6)
    assert state.reference is None
    assert metrics["forget_nll"][-1] > metrics["forget_nll"][0] + 3.0


def test_pdu_dual_variable_rises_while_retain_loss_exceeds_eps():
    net, variables, batch = _setup()
    rule = rules.pdu(
        net.apply,
        learning_rate=0.02,
        retain_eps=0.0,
        dual_step_size=2.0,
        dual_warmup_epochs=0.0,
    )
    _, state, metrics = _run(rule, variables, batch, 4)
    assert metrics["dual"][0] == 1.0
    # lambda_{k+1} = lambda_k + eta * (L_ret,k - eps), with L_ret > 0 = eps.
    np.testing.assert_allclose(
        metrics["dual"][1:], metrics["dual"][:-1] + 2.0 * metrics["retain_loss"][:-1], rtol=1e-5
    )
    assert float(state.dual) > metrics["dual"][-1]
    # A generous budget lowers lambda to 0; during the warm-up it does not move.
    _, _, relaxed = _run(
        rules.pdu(net.apply, learning_rate=0.02, retain_eps=50.0, dual_warmup_epochs=0.0),
        variables,
        batch,
        2,
    )
    assert relaxed["dual"][1] == 0.0
    warm = rules.pdu(net.apply, learning_rate=0.02, retain_eps=0.0, steps_per_epoch=2)
    _, state, held = _run(warm, variables, batch, 3)
    assert held["dual"][-1] == 1.0 and float(state.dual) == 1.0
    with pytest.raises(ValueError, match="steps_per_epoch"):
        rules.pdu(net.apply)
    assert held["forget_loss"][-1] < held["forget_loss"][0]


def test_rules_on_the_lm_default_to_openunlearnings_adamw():
    net, variables, batch = _setup()
    state = rules.npo(net.apply).init(variables, key=jax.random.key(0))
    expected = optax.adamw(1e-5, weight_decay=0.01).init(variables["params"])
    assert jax.tree.structure(state.opt_state) == jax.tree.structure(expected)
    adam = rules.npo(net.apply, optimizer={"name": "adam"}).init(variables, key=jax.random.key(0))
    assert jax.tree.structure(adam.opt_state) != jax.tree.structure(expected)


def test_ties_merge_objective_is_token_aware_on_the_lm():
    # It used integer-label cross-entropy, which the ignored (-100) positions turned into NaN.
    net, variables, batch = _setup()
    rule = rules.make("ties_merge", net, scaling_coef=1.0)
    _, _, metrics = _run(rule, variables, batch, 1)
    assert all(np.isfinite(v).all() for v in metrics.values())
    # Step 0: both copies are the reference: NPO = 2 ln 2 / beta, KL = 0, CE = retain NLL.
    assert metrics["npo_loss"][0] == pytest.approx(20 * math.log(2), rel=1e-5)
    assert metrics["retain_kl"][0] == pytest.approx(0.0, abs=1e-6)
    logits = net.apply(variables, batch["retain"]["x"]).logits
    nll = float(losses.token_nll_mean(logits, batch["retain"]["y"]))
    assert metrics["retain_ce"][0] == pytest.approx(nll, rel=1e-5)


def test_wagle_masks_the_transformer_and_runs_grad_diff_on_the_kept_weights():
    net, variables, batch = _setup()
    rule = rules.make("weight_attribution_mask", net, num_steps=4, mask_steps=2, mask_fraction=0.25)
    new, _, metrics = _run(rule, variables, batch, 4)
    moved = sum(
        int(jnp.sum(a != b))
        for a, b in zip(
            jax.tree.leaves(new["params"]), jax.tree.leaves(variables["params"]), strict=True
        )
    )
    total = sum(x.size for x in jax.tree.leaves(variables["params"]))
    assert 0 < moved <= int(0.25 * total)
    assert np.all(metrics["phase"] == [0, 0, 1, 1])
