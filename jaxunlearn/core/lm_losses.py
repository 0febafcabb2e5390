"""Losses of the language-model unlearning methods (pure, jittable, batch-averaged).

Two kinds of input, following the conventions of ``docs/language_models.md``:

- **sequence level**: ``logp`` ``[B]`` is log pi(y | x), the sum of the answer tokens'
  log-probabilities (:func:`jaxunlearn.core.losses.sequence_log_prob`, ``= -NLL_sum``);
  ``lengths`` ``[B]`` the number of answer tokens (:func:`~jaxunlearn.core.losses.answer_lengths`).
- **token level**: ``logits`` ``[B, T, V]`` and ``labels`` ``[B, T]`` already shifted
  (``labels[:, t]`` is what ``logits[:, t]`` predicts, ``IGNORE_INDEX`` = -100 on prompt and
  padding), and ``mask`` ``[B, T]``: the positions that count. ``mask=None`` means every
  position with a label; a given mask is multiplied by that one, so a position without a label
  never counts. A token-level mean is over all counted positions of the batch together
  (Hugging Face's flattened ``[labels != -100].mean()``).

Every loss is the *forget* term a rule minimises; the rules (:mod:`jaxunlearn.rules.lm`) add the
retain term. Definitions and defaults follow OpenUnlearning (OU), locuslab/open-unlearning
``src/trainer/unlearn/*.py`` and ``src/trainer/utils.py``; the notes in
``shared/reference/lm_unlearning.md`` (section 1 and Table A) list them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxunlearn.core.checks import check_count
from jaxunlearn.core.losses import IGNORE_INDEX, token_log_probs, token_mask
from jaxunlearn.core.types import Array

# ------------------------------------------------------------------------------ sequence level


def npo(logp: Array, logp_ref: Array, *, beta: float = 0.1) -> Array:
    """NPO: ``-(2/beta) * mean(log sigmoid(-beta * (logp - logp_ref)))``.

    A bounded gradient ascent: the gradient with respect to ``logp_i`` is
    ``(2 / B) * sigmoid(beta * (logp_i - logp_ref_i))``, which fades to 0 as the model's
    likelihood of the forget answer falls below the reference's (gradient ascent keeps weight 1).

    Args:
      logp: ``[B]`` log pi_theta(y | x) of the forget answers.
      logp_ref: ``[B]`` the same under the frozen reference model.
      beta: inverse temperature (OU ``NPO.yaml``: 0.1).

    References:
      Zhang et al., "Negative Preference Optimization: From Catastrophic Collapse to Effective
      Unlearning", COLM 2024; OU ``src/trainer/unlearn/npo.py`` (``compute_dpo_loss`` with
      ``win_inputs=None`` in ``src/trainer/utils.py``).
    """
    return -(2.0 / beta) * jnp.mean(jax.nn.log_sigmoid(-beta * (logp - logp_ref)))


def simnpo(logp: Array, lengths: Array, *, beta: float = 4.5, delta: float = 0.0) -> Array:
    """SimNPO: ``-(2/beta) * mean(log sigmoid(beta * (-logp / lengths - delta)))``.

    NPO without a reference model, on the length-normalised NLL ``-logp / |y|`` with a margin
    ``delta``.

    Args:
      logp: ``[B]`` log pi_theta(y | x) of the forget answers.
      lengths: ``[B]`` answer lengths ``|y|`` (positive).
      beta: inverse temperature (OU ``SimNPO.yaml``: 4.5).
      delta: reward margin (0).

    References:
      Fan et al., "Simplicity Prevails: Rethinking Negative Preference Optimization for LLM
      Unlearning", 2024; OU ``src/trainer/unlearn/simnpo.py``.
    """
    return -(2.0 / beta) * jnp.mean(jax.nn.log_sigmoid(beta * (-logp / lengths - delta)))


def dpo(
    logp_win: Array,
    logp_win_ref: Array,
    logp_lose: Array,
    logp_lose_ref: Array,
    *,
    beta: float = 0.1,
) -> Array:
    """DPO as OU uses it for unlearning (IdkDPO, AltPO).

    ``-(2/beta) * mean(log sigmoid(beta * ((logp_win - logp_win_ref) - (logp_lose -
    logp_lose_ref))))``: the preferred ("I don't know" or alternate) answer ``y_w`` is pushed up
    relative to the reference, the forget answer ``y_l`` down. The ``2/beta`` factor is OU's,
    not the DPO paper's.

    Args:
      logp_win, logp_win_ref: ``[B]`` log-probabilities of the preferred answers under the model
        and the reference.
      logp_lose, logp_lose_ref: ``[B]`` the same for the forget answers.
      beta: inverse temperature (OU ``DPO.yaml``: 0.1).

    References:
      Rafailov et al., "Direct Preference Optimization", NeurIPS 2023; Maini et al., "TOFU",
      2024 (IdkDPO); OU ``src/trainer/unlearn/dpo.py`` and ``compute_dpo_loss`` in
      ``src/trainer/utils.py``.
    """
    margin = (logp_win - logp_win_ref) - (logp_lose - logp_lose_ref)
    return -(2.0 / beta) * jnp.mean(jax.nn.log_sigmoid(beta * margin))


# --------------------------------------------------------------------------------- token level


def counted(labels: Array, mask: Array | None = None) -> Array:
    """``[B, T]`` float weights of the positions a token-level loss averages over.

    ``mask=None``: every position with a label (``labels != IGNORE_INDEX``); otherwise ``mask``
    times that.
    """
    valid = token_mask(labels)
    return valid if mask is None else valid * jnp.asarray(mask, jnp.float32)


def _token_mean(values: Array, weights: Array) -> Array:
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def _soft_cross_entropy(logits: Array, target_probs: Array) -> Array:
    """``[...]``: ``-sum_v q_v log softmax(z)_v`` (0 * log 0 = 0)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    return -jnp.sum(jnp.where(target_probs > 0, target_probs * logp, 0.0), -1)


def wga(logits: Array, labels: Array, mask: Array | None = None, *, beta: float = 1.0) -> Array:
    """Weighted gradient ascent: ``-mean_t(sg(p_t)^beta * l_t)`` over the counted tokens.

    ``l_t = -log p_theta(y_t | ...)`` and ``p_t = exp(-l_t)``; the weight is not differentiated
    (``stop_gradient``, OU's ``.detach()``), so tokens the model already gets wrong stop pushing.

    Args:
      logits: ``[B, T, V]``.
      labels: ``[B, T]`` shifted targets with ``IGNORE_INDEX``.
      mask: ``[B, T]`` positions that count, or ``None`` (see :func:`counted`).
      beta: exponent of the confidence weight (OU ``WGA.yaml``: 1).

    References:
      Wang et al., "Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go
      Beyond", ICLR 2025; OU ``src/trainer/unlearn/wga.py``.
    """
    logp = token_log_probs(logits, labels)
    weight = jax.lax.stop_gradient(jnp.exp(logp)) ** beta
    return -_token_mean(weight * -logp, counted(labels, mask))


def satimp(
    logits: Array,
    labels: Array,
    mask: Array | None = None,
    *,
    beta1: float = 5.0,
    beta2: float = 1.0,
) -> Array:
    """SatImp: ``-mean_t(sg(p_t^beta1 * (1 - p_t)^beta2) * l_t)`` over the counted tokens.

    Args:
      logits: ``[B, T, V]``.
      labels: ``[B, T]`` shifted targets with ``IGNORE_INDEX``.
      mask: ``[B, T]`` positions that count, or ``None`` (see :func:`counted`).
      beta1: exponent of the saturation weight ``p_t`` (OU ``SatImp.yaml``: 5).
      beta2: exponent of the importance weight ``1 - p_t`` (1).

    References:
      Yang et al., "Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning", ICML
      2025; OU ``src/trainer/unlearn/satimp.py``.
    """
    logp = token_log_probs(logits, labels)
    p = jax.lax.stop_gradient(jnp.exp(logp))
    weight = p**beta1 * (1.0 - p) ** beta2
    return -_token_mean(weight * -logp, counted(labels, mask))


def undial_targets(
    ref_logits: Array, labels: Array, *, beta: float = 10.0, reference_quirks: bool = False
) -> Array:
    """``[B, T, V]``: UNDIAL's soft targets ``softmax(z_ref - beta * onehot(y_t))``.

    Positions without a label get ``softmax(z_ref)`` (nothing subtracted); with
    ``reference_quirks=True`` their one-hot index wraps around to vocabulary id ``V - 100`` as
    OU's ``mask[..., labels] = 1`` does for the label -100 (for ``V > 100``).
    """
    vocab = ref_logits.shape[-1]
    if reference_quirks:
        index = jnp.where(labels == IGNORE_INDEX, vocab + IGNORE_INDEX, labels)
        onehot = jax.nn.one_hot(index, vocab, dtype=jnp.float32)
    else:
        onehot = jax.nn.one_hot(labels, vocab, dtype=jnp.float32)  # -100 gives all zeros
    return jax.nn.softmax(ref_logits.astype(jnp.float32) - beta * onehot, -1)


def undial(
    logits: Array,
    labels: Array,
    mask: Array | None = None,
    *,
    ref_logits: Array,
    beta: float = 10.0,
    reference_quirks: bool = False,
) -> Array:
    """UNDIAL: self-distillation on adjusted logits, ``mean_t CE(z_theta, softmax(z_ref - beta *
    onehot(y_t)))`` over the counted tokens.

    The reference model's distribution with the true token's logit lowered by ``beta`` is the
    target, so the model unlearns the token without collapsing the rest of its distribution.

    Args:
      logits: ``[B, T, V]`` of the model being unlearned.
      labels: ``[B, T]`` shifted targets with ``IGNORE_INDEX``.
      mask: ``[B, T]`` positions that count, or ``None`` (see :func:`counted`).
      ref_logits: ``[B, T, V]`` of the frozen reference model (treated as constants).
      beta: how far the true token's logit is lowered (OU ``UNDIAL.yaml``: 10).
      reference_quirks: reproduce OU's ``compute_undial_loss`` exactly: the mean is over *all*
        ``B * T`` positions (``mask`` ignored) and an unlabelled position's one-hot wraps to
        vocabulary id ``V - 100``, so prompt and padding positions are also trained away from
        that arbitrary token. ``False`` (default) averages over the counted tokens only.

    References:
      Dong et al., "UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in
      Large Language Models", NAACL 2025; OU ``src/trainer/unlearn/undial.py``.
    """
    targets = undial_targets(
        jax.lax.stop_gradient(ref_logits), labels, beta=beta, reference_quirks=reference_quirks
    )
    ce = _soft_cross_entropy(logits, targets)
    if reference_quirks:
        return jnp.mean(ce)
    return _token_mean(ce, counted(labels, mask))


def skip_first_answer_tokens(labels: Array, n: int) -> Array:
    """``[B, T]`` labels with each row's first ``n`` labelled positions set to ``IGNORE_INDEX``."""
    valid = labels != IGNORE_INDEX
    first = valid & (jnp.cumsum(valid, axis=-1) <= n)
    return jnp.where(first, IGNORE_INDEX, labels)


def ce_u(
    logits: Array, labels: Array, mask: Array | None = None, *, ignore_first: int = 1
) -> Array:
    """Cross-entropy unlearning: ``mean_t CE(z_t, softmax(sg(z_t) with z_t[y_t] = -inf))``.

    The target is the model's own (constant) distribution with the true token removed, so the
    true token's probability is driven to 0 while the others keep their proportions. Its
    gradient with respect to the logits is ``softmax(z) - q``: bounded, unlike gradient ascent.

    Args:
      logits: ``[B, T, V]``.
      labels: ``[B, T]`` shifted targets with ``IGNORE_INDEX``.
      mask: ``[B, T]`` positions that count, or ``None`` (see :func:`counted`).
      ignore_first: the first answer tokens of each sequence left out (OU's
        ``ignore_first_n_answer_tokens=1``, after the footnote in arXiv:2503.01224's training
        settings).

    References:
      Yang, "CE-U: Cross Entropy Unlearning", arXiv:2503.01224; OU ``src/trainer/unlearn/ceu.py``.
    """
    try:
        ignore_first = check_count(ignore_first, "ignore_first", 0)
    except ValueError as error:
        raise ValueError(f"ce_u: {error}") from None
    labels = skip_first_answer_tokens(labels, ignore_first)
    z = logits.astype(jnp.float32)
    safe = jnp.where(labels == IGNORE_INDEX, 0, labels)
    true = jax.nn.one_hot(safe, z.shape[-1], dtype=bool)
    targets = jax.nn.softmax(jnp.where(true, -jnp.inf, jax.lax.stop_gradient(z)), -1)
    return _token_mean(_soft_cross_entropy(z, targets), counted(labels, mask))


def pdu_forget_loss(logits: Array, mask: Array | None = None) -> Array:
    """PDU's forget term: ``mean_t (max_v z_t,v - mean_v z_t,v)^2``, a flat output distribution.

    Args:
      logits: ``[B, T, V]``.
      mask: ``[B, T]`` positions that count; ``None`` = every position, as OU's code (which
        reshapes all ``B * T`` logits). The rule passes the answer positions.

    References:
      Entesari et al., "Constrained Entropic Unlearning: A Primal-Dual Framework for Large
      Language Models", 2025; OU ``src/trainer/unlearn/pdu.py``.
    """
    z = logits.astype(jnp.float32)
    gap = jnp.square(jnp.max(z, -1) - jnp.mean(z, -1))
    if mask is None:
        return jnp.mean(gap)
    return _token_mean(gap, jnp.asarray(mask, jnp.float32))


def pdu_dual_update(
    dual: Array, retain_loss: Array, *, eps: float = 0.0, step_size: float = 1.0
) -> Array:
    """PDU's dual ascent on the retain constraint: ``max(0, lambda + eta * (L_ret - eps))``.

    The multiplier ``lambda`` of ``L = gamma * L_f + lambda * (L_ret - eps)`` grows while the
    retain loss exceeds its budget ``eps`` and shrinks (not below 0) once it is met.

    References:
      Entesari et al., 2025; ``final_loss_value`` in OU ``src/trainer/unlearn/pdu.py``.
    """
    return jnp.maximum(0.0, dual + step_size * (retain_loss - eps))


# ------------------------------------------------------------------------------------------ RMU


def answer_positions(labels: Array) -> Array:
    """``[B, T]`` float mask of the positions that *hold* an answer token.

    With shifted labels, position ``t`` holds an answer token when ``labels[:, t - 1]`` is set:
    the mask Hugging Face's unshifted ``labels != -100`` gives, which OU's RMU uses to pick the
    activations it steers.
    """
    valid = token_mask(labels)
    return jnp.pad(valid[:, :-1], ((0, 0), (1, 0)))


def activation_mse(activations: Array, targets: Array, mask: Array) -> Array:
    """RMU's masked MSE: ``mean_b [sum_t mask_bt * mean_d (a - b)^2 / sum_t mask_bt]``.

    Args:
      activations: ``[B, T, d]``.
      targets: ``[B, T, d]`` or broadcastable (a steering vector ``[d]``).
      mask: ``[B, T]`` positions that count (a row without any counts 0).

    References:
      Li et al., "The WMDP Benchmark", ICML 2024; ``compute_activation_loss`` in OU
      ``src/trainer/unlearn/rmu.py`` (WMDP's own ``rmu/unlearn.py`` uses a plain mean over
      ``(b, s, d)``, padding included: pass an all-ones mask for that).
    """
    mask = jnp.asarray(mask, jnp.float32)
    per_token = jnp.mean(jnp.square(activations.astype(jnp.float32) - targets), -1)
    per_row = jnp.sum(per_token * mask, -1) / jnp.maximum(jnp.sum(mask, -1), 1.0)
    return jnp.mean(per_row)


def rmu_steering_vector(key: Array, dim: int, *, scale: float = 2.0) -> Array:
    """``[dim]``: RMU's random control vector ``c * u / ||u||`` with ``u ~ U[0, 1)^dim``.

    References:
      Li et al., ICML 2024 (``torch.rand(1, 1, d)`` normalised, times ``steering_coeff``);
      ``get_control_vector`` in OU ``src/trainer/unlearn/rmu.py`` (``c = 2`` in ``RMU.yaml``).
    """
    u = jax.random.uniform(key, (int(dim),), jnp.float32)
    return scale * u / jnp.linalg.norm(u)
