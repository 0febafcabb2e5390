"""The language-model unlearning losses against values computed by hand."""

from __future__ import annotations

import inspect
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxunlearn
from jaxunlearn import losses
from jaxunlearn.core import lm_losses

IGN = losses.IGNORE_INDEX


def _logits(*probs):
    """``[1, T, V]`` logits whose softmax at position t is ``probs[t]``."""
    return jnp.log(jnp.asarray([probs], jnp.float32))


def test_public_module_has_the_issue_signatures():
    assert jaxunlearn.losses is losses
    assert losses.npo is lm_losses.npo and losses.supervised is jaxunlearn.core.losses.supervised
    sig = lambda f: str(inspect.signature(f))
    assert (
        sig(losses.npo) == "(logp: 'Array', logp_ref: 'Array', *, beta: 'float' = 0.1) -> 'Array'"
    )
    assert sig(losses.simnpo) == (
        "(logp: 'Array', lengths: 'Array', *, beta: 'float' = 4.5, delta: 'float' = 0.0) -> 'Array'"
    )
    assert list(inspect.signature(losses.dpo).parameters) == [
        "logp_win", "logp_win_ref", "logp_lose", "logp_lose_ref", "beta",
    ]  # fmt: skip
    for f in (losses.wga, losses.satimp, losses.undial, losses.ce_u):
        assert list(inspect.signature(f).parameters)[:3] == ["logits", "labels", "mask"], f
    assert set(losses.__all__) <= set(dir(losses))


def test_npo_value_at_the_reference_and_its_fading_weight():
    # At logp = logp_ref: -(2/beta) log(1/2) = 2 ln 2 / beta.
    zero = jnp.zeros(3)
    assert float(losses.npo(zero, zero, beta=0.1)) == pytest.approx(20 * math.log(2), rel=1e-6)
    # logp - ref = [1, -1], beta = 0.5: -4 * mean(log sig(-0.5), log sig(0.5)).
    value = losses.npo(jnp.array([-1.0, -3.0]), jnp.array([-2.0, -2.0]), beta=0.5)
    expected = 4 * (math.log(1 + math.exp(0.5)) + math.log(1 + math.exp(-0.5))) / 2
    assert float(value) == pytest.approx(expected, rel=1e-6)
    # d/d logp_i = (2 / B) sigmoid(beta (logp_i - ref_i)): 1/B at the reference, ~0 far below.
    logp = jnp.array([-2.0, -102.0])
    grad = jax.grad(lambda lp: losses.npo(lp, jnp.array([-2.0, -2.0]), beta=0.1))(logp)
    np.testing.assert_allclose(grad, [0.5, 1 / (1 + math.exp(10))], rtol=1e-5)
    # beta -> 0 is gradient ascent: npo - 2 ln2 / beta -> mean(logp - ref).
    small = 1e-3
    lp, ref = jnp.array([-1.0, -4.0]), jnp.array([-2.0, -2.0])
    limit = float(losses.npo(lp, ref, beta=small)) - 2 * math.log(2) / small
    assert limit == pytest.approx(-0.5, abs=1e-2)


def test_simnpo_on_length_normalised_nll():
    # NLL_avg = [2, 2]; beta = 1: -2 log sigmoid(2) = 2 log(1 + e^-2).
    logp, lengths = jnp.array([-4.0, -2.0]), jnp.array([2.0, 1.0])
    expected = 2 * math.log(1 + math.exp(-2))
    assert float(losses.simnpo(logp, lengths, beta=1.0)) == pytest.approx(expected, rel=1e-6)
    # delta = 2 cancels the NLL: -2 log(1/2).
    value = losses.simnpo(logp, lengths, beta=1.0, delta=2.0)
    assert float(value) == pytest.approx(2 * math.log(2), rel=1e-6)


def test_dpo_value_and_npo_as_its_loser_only_case():
    # margin = (-1 + 2) - (-3 + 2) = 2, beta = 0.5: -4 log sigmoid(1).
    value = losses.dpo(
        jnp.array([-1.0]), jnp.array([-2.0]), jnp.array([-3.0]), jnp.array([-2.0]), beta=0.5
    )
    assert float(value) == pytest.approx(4 * math.log(1 + math.exp(-1)), rel=1e-6)
    # With the winner at its reference, DPO is NPO on the loser.
    lose, lose_ref = jnp.array([-3.0, -1.0]), jnp.array([-2.0, -2.5])
    win = jnp.array([-7.0, -0.3])
    np.testing.assert_allclose(
        losses.dpo(win, win, lose, lose_ref, beta=0.3), losses.npo(lose, lose_ref, beta=0.3)
    )


def test_wga_weights_each_token_by_its_probability():
    # p = 0.8 and 0.25 on the labelled tokens; the third position has no label.
    logits = _logits([0.8, 0.2], [0.75, 0.25], [0.5, 0.5])
    labels = jnp.array([[0, 1, IGN]])
    expected = -(0.8 * -math.log(0.8) + 0.25 * -math.log(0.25)) / 2
    assert float(losses.wga(logits, labels)) == pytest.approx(expected, rel=1e-5)
    # beta = 0 is plain gradient ascent: -mean NLL.
    assert float(losses.wga(logits, labels, beta=0.0)) == pytest.approx(
        -float(losses.token_nll_mean(logits, labels)), rel=1e-6
    )
    # A mask drops the second token.
    masked = losses.wga(logits, labels, jnp.array([[1.0, 0.0, 1.0]]))
    assert float(masked) == pytest.approx(0.8 * math.log(0.8), rel=1e-5)
    # The weight is not differentiated: d/dz_t = -w_t (softmax - onehot) / N.
    grad = jax.grad(lambda z: losses.wga(z, labels))(logits)
    np.testing.assert_allclose(grad[0, 0], -0.8 * np.array([0.8 - 1, 0.2]) / 2, rtol=1e-5)
    np.testing.assert_allclose(grad[0, 2], [0.0, 0.0])


def test_satimp_weights():
    logits = _logits([0.8, 0.2], [0.75, 0.25])
    labels = jnp.array([[0, 1]])
    w1, w2 = 0.8**5 * 0.2, 0.25**5 * 0.75
    expected = -(w1 * -math.log(0.8) + w2 * -math.log(0.25)) / 2
    assert float(losses.satimp(logits, labels)) == pytest.approx(expected, rel=1e-5)
    w1, w2 = 0.8 * 0.2**2, 0.25 * 0.75**2
    expected = -(w1 * -math.log(0.8) + w2 * -math.log(0.25)) / 2
    value = losses.satimp(logits, labels, beta1=1.0, beta2=2.0)
    assert float(value) == pytest.approx(expected, rel=1e-5)


def test_undial_targets_and_loss():
    # Uniform reference over 3 tokens, true token 1 lowered by ln 4: q = [4, 1, 4] / 9.
    ref = jnp.zeros((1, 2, 3))
    labels = jnp.array([[1, IGN]])
    targets = losses.undial_targets(ref, labels, beta=math.log(4))
    np.testing.assert_allclose(targets[0, 0], [4 / 9, 1 / 9, 4 / 9], rtol=1e-6)
    np.testing.assert_allclose(targets[0, 1], [1 / 3] * 3, rtol=1e-6)  # no label: nothing lowered
    # A uniform model: CE = ln 3; a model equal to the targets: CE = entropy(q).
    value = losses.undial(jnp.zeros((1, 2, 3)), labels, ref_logits=ref, beta=math.log(4))
    assert float(value) == pytest.approx(math.log(3), rel=1e-6)
    q = np.array([4, 1, 4]) / 9
    model = jnp.log(jnp.asarray(np.stack([q, q]))[None].astype(jnp.float32))
    value = losses.undial(model, labels, ref_logits=ref, beta=math.log(4))
    assert float(value) == pytest.approx(float(-(q * np.log(q)).sum()), rel=1e-5)
    # The reference's quirk: the unlabelled position's one-hot wraps to id V - 100, and the
    # mean runs over every position.
    vocab = 103
    ref = jnp.zeros((1, 2, vocab))
    quirky = losses.undial_targets(ref, labels, beta=1.0, reference_quirks=True)
    expected = jax.nn.softmax(-1.0 * jax.nn.one_hot(3, vocab))
    np.testing.assert_allclose(quirky[0, 1], expected, rtol=1e-6)
    z = jax.random.normal(jax.random.key(0), (1, 2, vocab))
    full = losses.undial(z, labels, ref_logits=ref, beta=1.0, reference_quirks=True)
    ce = -jnp.sum(quirky * jax.nn.log_softmax(z, -1), -1)
    assert float(full) == pytest.approx(float(jnp.mean(ce)), rel=1e-5)
    ours = losses.undial(z, labels, ref_logits=ref, beta=1.0)
    assert float(ours) == pytest.approx(float(ce[0, 0]), rel=1e-5)


def test_ce_u_removes_the_true_token_and_skips_the_first_answer_token():
    # Position 1 (the second answer token) has p = [1/4, 1/2, 1/4] and label 1: the target is
    # [1/2, 0, 1/2] and CE = ln 4; position 0 is the first answer token, skipped.
    logits = _logits([0.1, 0.1, 0.8], [0.25, 0.5, 0.25])
    labels = jnp.array([[2, 1]])
    assert float(losses.ce_u(logits, labels)) == pytest.approx(math.log(4), rel=1e-5)
    grad = jax.grad(lambda z: losses.ce_u(z, labels))(logits)
    np.testing.assert_allclose(grad[0, 1], [-0.25, 0.5, -0.25], atol=1e-6)
    np.testing.assert_allclose(grad[0, 0], [0.0, 0.0, 0.0])
    # Without skipping, position 0's target is [1/2, 1/2, 0]: CE = -(ln .1 + ln .1) / 2.
    both = losses.ce_u(logits, labels, ignore_first=0)
    assert float(both) == pytest.approx((math.log(4) - math.log(0.1)) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="ignore_first"):
        losses.ce_u(logits, labels, ignore_first=-1)


def test_skip_first_answer_tokens_per_row():
    labels = jnp.array([[IGN, 4, 5, 6], [IGN, IGN, IGN, 7]])
    np.testing.assert_array_equal(
        losses.skip_first_answer_tokens(labels, 1), [[IGN, IGN, 5, 6], [IGN] * 4]
    )


def test_pdu_pieces():
    logits = jnp.array([[[1.0, 2.0, 3.0], [0.0, 0.0, 4.0]]])
    # gaps: (3 - 2)^2 = 1 and (4 - 4/3)^2 = 64/9.
    assert float(losses.pdu_forget_loss(logits)) == pytest.approx((1 + 64 / 9) / 2, rel=1e-6)
    masked = losses.pdu_forget_loss(logits, jnp.array([[0.0, 1.0]]))
    assert float(masked) == pytest.approx(64 / 9, rel=1e-6)
    up = losses.pdu_dual_update(jnp.array(1.0), jnp.array(0.5), eps=0.2, step_size=2.0)
    assert float(up) == pytest.approx(1.6)
    assert float(losses.pdu_dual_update(jnp.array(0.1), jnp.array(0.0), eps=0.5)) == 0.0


def test_activation_mse_is_a_mean_of_row_means():
    a = jnp.array([[[1.0, 1.0], [3.0, 3.0]], [[2.0, 2.0], [9.0, 9.0]]])
    mask = jnp.array([[1.0, 1.0], [1.0, 0.0]])
    # rows: (1 + 9) / 2 = 5 and 4 (the masked 81 is dropped): mean 4.5.
    assert float(losses.activation_mse(a, jnp.zeros(2), mask)) == pytest.approx(4.5)
    assert float(losses.activation_mse(a, a, mask)) == 0.0


def test_answer_positions_shift_the_label_mask():
    labels = jnp.array([[IGN, 5, 6, IGN]])
    np.testing.assert_array_equal(losses.answer_positions(labels), [[0, 0, 1, 1]])


def test_rmu_steering_vector():
    u = losses.rmu_steering_vector(jax.random.key(3), 16, scale=6.5)
    assert u.shape == (16,) and float(jnp.linalg.norm(u)) == pytest.approx(6.5, rel=1e-6)
    assert float(jnp.min(u)) >= 0.0
    np.testing.assert_array_equal(u, losses.rmu_steering_vector(jax.random.key(3), 16, scale=6.5))
