"""Unlearning rules for language models: NPO, SimNPO, IdkDPO, AltPO, RMU, UNDIAL, WGA, SatImp,
CE-U and PDU.

Each is OpenUnlearning's method (locuslab/open-unlearning, ``src/trainer/unlearn/*.py``; formulas
and defaults in ``shared/reference/lm_unlearning.md``, section 1 and Table A) as a pure
``(init, update)`` pair: a forget loss from :mod:`jaxunlearn.core.lm_losses` weighted by
``forget_weight`` (OU's ``gamma``) plus a retain term weighted by ``retain_weight`` (``alpha``),
one optimizer step per update through :func:`~jaxunlearn.core.rule.rule_from_loss`. Batches follow
``docs/language_models.md``: ``x`` tokens ``[B, T]``, ``y`` shifted labels with ``IGNORE_INDEX``;
IdkDPO and AltPO read their preferred answers from the forget part's ``idk_x``/``idk_y`` and
``alt_x``/``alt_y`` fields (``make_stream(..., extra=...)``).

The reference model is the frozen starting variables kept in the rule state. The retain term is
``"nll"`` (GradDiff's descent on the retain batch) or ``"kl"`` (``KL(p_ref || p_theta)`` over every
position, :func:`~jaxunlearn.rules.common.retain_term`). Every rule defaults to OU's optimizer,
AdamW with weight decay 0.01 at lr 1e-5 (``configs/trainer/finetune.yaml``; UNDIAL 1e-4); small
models need far larger rates, set in a config. Each works under :func:`jaxunlearn.core.lora.lora`
(except RMU and PDU, whose state holds more than an optimizer's: the steering vector, the dual
variable) and under a parameter-subset mask
(:func:`~jaxunlearn.core.combinators.masked` with :func:`~jaxunlearn.core.combinators.path_mask`;
RMU's ``trainable`` option).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import lm_losses, losses, optim
from jaxunlearn.core.checks import check_count, concrete
from jaxunlearn.core.combinators import compile_patterns, masked, path_mask
from jaxunlearn.core.rule import StepCounter, grads_of_loss, optimizer_step, rule_from_loss
from jaxunlearn.core.types import Array, Batch, UnlearningRule, Variables
from jaxunlearn.rules import registry
from jaxunlearn.rules.common import check_retain_loss, part_loss, retain_term

# OpenUnlearning's learning rate for every method but UNDIAL (``configs/trainer/finetune.yaml``).
OU_LEARNING_RATE = 1e-5
# RMU hooks the output of ``model.layers.7`` (OU ``RMU.yaml``, WMDP ``--layer_id 7``).
RMU_LAYER = 7
# WMDP's RMU updates only these weights (``--param_ids 6`` of ``layers 5, 6, 7``).
WMDP_TRAINABLE = r"layers\.(5|6|7)\.mlp\.down_proj\.kernel"

Optimizer = optax.GradientTransformation | Mapping | None


def _resolve(optimizer: Optimizer, learning_rate: float) -> optax.GradientTransformation:
    return optim.resolve(optimizer, learning_rate=learning_rate, default=optim.REFERENCE_ADAMW)


def _check(owner: str, **values) -> None:
    """Rejects concrete negative weights and non-positive inverse temperatures."""
    for name, value in values.items():
        if not concrete(value):
            continue
        positive = name.startswith("beta") or name in ("steering_coeff", "dual_step_size")
        bad = not (value > 0) if positive else not (value >= 0)
        if bad or not math.isfinite(value):
            rule = "positive" if positive else "non-negative"
            raise ValueError(f"{owner} `{name}` must be finite and {rule}; got {value}")


def _enabled(weight) -> bool:
    """Whether a weighted term must be computed (a traced weight may be non-zero)."""
    return not concrete(weight) or weight != 0


def _logp(apply: Callable, variables: Variables, x: Array, y: Array) -> tuple[Array, Array]:
    """``(log pi(y | x) [B], logits)``."""
    logits = apply(variables, x).logits
    return losses.sequence_log_prob(logits, y), logits


def _with_retain(
    apply: Callable,
    owner: str,
    forget_loss: Callable,
    *,
    forget_weight,
    retain_weight,
    retain_loss: str,
    optimizer: optax.GradientTransformation,
    needs_reference: bool,
) -> UnlearningRule:
    """``forget_weight * forget_loss + retain_weight * retain term``, one optimizer step each.

    ``forget_loss(variables, batch, reference) -> (loss, metrics)``.
    """
    check_retain_loss(owner, retain_loss)
    _check(owner, forget_weight=forget_weight, retain_weight=retain_weight)
    use_retain = _enabled(retain_weight)

    def loss_fn(variables, batch, *, reference, step, key):
        del step, key
        f, metrics = forget_loss(variables, batch, reference)
        loss = forget_weight * f
        metrics = {**metrics, "forget_loss": f}
        if use_retain:
            r, _ = retain_term(apply, variables, batch, retain_loss, reference=reference)
            loss = loss + retain_weight * r
            metrics["retain_loss"] = r
        return loss, metrics

    keep = needs_reference or (use_retain and retain_loss == "kl")
    return rule_from_loss(loss_fn, optimizer, keep_reference=keep)


def _field(batch: Batch, part: str, name: str, owner: str) -> Array:
    if name not in batch[part]:
        raise ValueError(
            f"{owner} reads batch[{part!r}][{name!r}]; give the stream the field with "
            f"make_stream(..., extra={{{name!r}: ...}}) (see docs/language_models.md)"
        )
    return batch[part][name]


# ------------------------------------------------------------------------------------- NPO


@registry.rule(
    "npo",
    parts=("forget", "retain"),
    paper="Zhang et al., Negative Preference Optimization, COLM 2024",
    task="language_model",
    sweepable=("beta", "retain_weight", "learning_rate"),
)
def npo(
    apply: Callable,
    *,
    beta: float = 0.1,
    forget_weight: float = 1.0,
    retain_weight: float = 1.0,
    retain_loss: str = "nll",
    learning_rate: float = OU_LEARNING_RATE,
    optimizer: Optimizer = None,
) -> UnlearningRule:
    """NPO: :func:`~jaxunlearn.core.lm_losses.npo` on the forget answers plus a retain term.

    The forget term pushes log pi_theta(y_f | x_f) below the reference's with a weight
    ``2 sigmoid(beta (logp - logp_ref))`` per sequence (reported as ``npo_weight``, 1 at the
    start) that fades as the answer is forgotten, so NPO slows down where gradient ascent
    collapses the model.

    Args:
      apply: the model's functional ``apply``.
      beta: inverse temperature (OU ``NPO.yaml``: 0.1).
      forget_weight: ``gamma`` (1).
      retain_weight: ``alpha`` (1).
      retain_loss: ``"nll"`` (OU's default, NPO+GD) or ``"kl"`` (NPO+KL).
      learning_rate: step size (OU: 1e-5).
      optimizer: an optax optimizer, or settings over AdamW with weight decay 0.01; see
        :func:`~jaxunlearn.core.optim.resolve`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and ``batch["retain"]``.

    References:
      Zhang et al., COLM 2024; OU ``src/trainer/unlearn/npo.py``.
    """
    _check("npo", beta=beta)

    def forget_loss(variables, batch, reference):
        x, y = batch["forget"]["x"], batch["forget"]["y"]
        logp, _ = _logp(apply, variables, x, y)
        logp_ref = jax.lax.stop_gradient(_logp(apply, reference, x, y)[0])
        weight = 2.0 * jax.nn.sigmoid(beta * (logp - logp_ref))
        return lm_losses.npo(logp, logp_ref, beta=beta), {
            "forget_logp": jnp.mean(logp),
            "forget_log_ratio": jnp.mean(logp - logp_ref),
            "npo_weight": jnp.mean(jax.lax.stop_gradient(weight)),
        }

    return _with_retain(
        apply,
        "npo",
        forget_loss,
        forget_weight=forget_weight,
        retain_weight=retain_weight,
        retain_loss=retain_loss,
        optimizer=_resolve(optimizer, learning_rate),
        needs_reference=True,
    )


@registry.rule(
    "simnpo",
    parts=("forget", "retain"),
    paper="Fan et al., Simplicity Prevails: Rethinking Negative Preference Optimization, 2024",
    task="language_model",
    sweepable=("beta", "delta", "forget_weight", "learning_rate"),
)
def simnpo(
    apply: Callable,
    *,
    beta: float = 4.5,
    delta: float = 0.0,
    forget_weight: float = 0.125,
    retain_weight: float = 1.0,
    retain_loss: str = "nll",
    learning_rate: float = OU_LEARNING_RATE,
    optimizer: Optimizer = None,
) -> UnlearningRule:
    """SimNPO: :func:`~jaxunlearn.core.lm_losses.simnpo` (no reference model) plus a retain term.

    Args:
      apply: the model's functional ``apply``.
      beta: inverse temperature (OU ``SimNPO.yaml``: 4.5).
      delta: margin on the length-normalised NLL (0).
      forget_weight: ``gamma`` (0.125).
      retain_weight: ``alpha`` (1).
      retain_loss: ``"nll"`` (OU's default) or ``"kl"``.
      learning_rate: step size (OU: 1e-5).
      optimizer: see :func:`npo`.

    References:
      Fan et al., 2024; OU ``src/trainer/unlearn/simnpo.py``.
    """
    _check("simnpo", beta=beta)
    if concrete(delta) and not math.isfinite(delta):
        raise ValueError(f"simnpo `delta` must be finite; got {delta}")

    def forget_loss(variables, batch, reference):
        del reference
        x, y = batch["forget"]["x"], batch["forget"]["y"]
        logp, _ = _logp(apply, variables, x, y)
        lengths = losses.answer_lengths(y)
        loss = lm_losses.simnpo(logp, lengths, beta=beta, delta=delta)
        return loss, {"forget_nll_avg": jnp.mean(-logp / lengths)}

    return _with_retain(
        apply,
        "simnpo",
        forget_loss,
        forget_weight=forget_weight,
        retain_weight=retain_weight,
        retain_loss=retain_loss,
        optimizer=_resolve(optimizer, learning_rate),
        needs_reference=False,
    )


# ---------------------------------------------------------------------------- IdkDPO, AltPO


def _preference(
    apply: Callable,
    owner: str,
    fields: tuple[str, str],
    *,
    beta,
    forget_weight,
    retain_weight,
    retain_loss: str,
    optimizer: optax.GradientTransformation,
) -> UnlearningRule:
    """DPO with the forget part's ``fields`` answer preferred over its true answer."""
    _check(owner, beta=beta)

    def forget_loss(variables, batch, reference):
        forget = batch["forget"]
        win_x, win_y = (_field(batch, "forget", name, owner) for name in fields)
        if win_x.shape != forget["x"].shape:
            raise ValueError(
                f"{owner}: batch['forget'][{fields[0]!r}] has shape {win_x.shape}, the forget "
                f"tokens {forget['x'].shape}; pad both to the model's context length"
            )
        # Winner and loser in one forward pass of each model.
        x = jnp.concatenate([win_x, forget["x"]])
        y = jnp.concatenate([win_y, forget["y"]])
        logp, _ = _logp(apply, variables, x, y)
        logp_ref = jax.lax.stop_gradient(_logp(apply, reference, x, y)[0])
        n = win_x.shape[0]
        loss = lm_losses.dpo(logp[:n], logp_ref[:n], logp[n:], logp_ref[n:], beta=beta)
        return loss, {"win_logp": jnp.mean(logp[:n]), "forget_logp": jnp.mean(logp[n:])}

    return _with_retain(
        apply,
        owner,
        forget_loss,
        forget_weight=forget_weight,
        retain_weight=retain_weight,
        retain_loss=retain_loss,
        optimizer=optimizer,
        needs_reference=True,
    )


@registry.rule(
    "idk_dpo",
    parts=("forget", "retain"),
    paper="Maini et al., TOFU, 2024 (IdkDPO); Rafailov et al., DPO, NeurIPS 2023",
    task="language_model",
    sweepable=("beta", "retain_weight", "learning_rate"),
)
def idk_dpo(
    apply: Callable,
    *,
    beta: float = 0.1,
    forget_weight: float = 1.0,
    retain_weight: float = 1.0,
    retain_loss: str = "nll",
    learning_rate: float = OU_LEARNING_RATE,
    optimizer: Optimizer = None,
) -> UnlearningRule:
    """IdkDPO: DPO preferring an "I don't know" answer (``idk_x``/``idk_y``) to the forget answer.

    Args:
      apply: the model's functional ``apply``.
      beta: inverse temperature (OU ``DPO.yaml``: 0.1).
      forget_weight: ``gamma`` (1).
      retain_weight: ``alpha`` (1).
      retain_loss: ``"nll"`` (OU's default) or ``"kl"``.
      learning_rate: step size (OU: 1e-5).
      optimizer: see :func:`npo`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` (with ``idk_x``, ``idk_y``: the
      same questions with a refusal answer) and ``batch["retain"]``.

    References:
      Maini et al., "TOFU: A Task of Fictitious Unlearning for LLMs", 2024; OU
      ``src/trainer/unlearn/dpo.py`` (winner: a line of ``data/idk.jsonl``).
    """
    return _preference(
        apply,
        "idk_dpo",
        ("idk_x", "idk_y"),
        beta=beta,
        forget_weight=forget_weight,
        retain_weight=retain_weight,
        retain_loss=retain_loss,
        optimizer=_resolve(optimizer, learning_rate),
    )


@registry.rule(
    "altpo",
    parts=("forget", "retain"),
    paper="Mekala et al., Alternate Preference Optimization for Unlearning Factual Knowledge, "
    "COLING 2025",
    task="language_model",
    sweepable=("beta", "retain_weight", "learning_rate"),
)
def altpo(
    apply: Callable,
    *,
    beta: float = 0.1,
    forget_weight: float = 1.0,
    retain_weight: float = 1.0,
    retain_loss: str = "nll",
    learning_rate: float = OU_LEARNING_RATE,
    optimizer: Optimizer = None,
) -> UnlearningRule:
    """AltPO: DPO preferring a plausible alternate answer (``alt_x``/``alt_y``) to the true one.

    Args: as :func:`idk_dpo`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` (with ``alt_x``, ``alt_y``) and
      ``batch["retain"]``.

    References:
      Mekala et al., COLING 2025; OU ``community/methods/AltPO`` (the DPO trainer with
      LLM-generated alternates as winners).
    """
    return _preference(
        apply,
        "altpo",
        ("alt_x", "alt_y"),
        beta=beta,
        forget_weight=forget_weight,
        retain_weight=retain_weight,
        retain_loss=retain_loss,
        optimizer=_resolve(optimizer, learning_rate),
    )


# ------------------------------------------------------------------------- token-level losses


@registry.rule(
    "undial",
    parts=("forget", "retain"),
    paper="Dong et al., UNDIAL: Self-Distillation with Adjusted Logits, NAACL 2025",
    task="language_model",
    sweepable=("beta", "retain_weight", "learning_rate"),
)
def undial(
    apply: Callable,
    *,
    beta: float = 10.0,
    forget_weight: float = 1.0,
    retain_weight: float = 0.0,
    retain_loss: str = "nll",
    reference_quirks: bool = False,
    learning_rate: float = 1e-4,
    optimizer: Optimizer = None,
) -> UnlearningRule:
    """UNDIAL: distil the reference with the true token's logit lowered by ``beta``.

    Args:
      apply: the model's functional ``apply``.
      beta: how far the true token's logit is lowered (OU ``UNDIAL.yaml``: 10).
      forget_weight: ``gamma`` (1).
      retain_weight: ``alpha`` (OU: 0, no retain term; the retain batch is then not read).
      retain_loss: ``"nll"`` or ``"kl"``, when ``retain_weight > 0``.
      reference_quirks: OU's averaging over all positions with the ignore label's wrap-around
        (see :func:`~jaxunlearn.core.lm_losses.undial`); off by default.
      learning_rate: step size (OU ``UNDIAL.yaml``: 1e-4).
      optimizer: see :func:`npo`.

    References:
      Dong et al., NAACL 2025; OU ``src/trainer/unlearn/undial.py``.
    """
    _check("undial", beta=beta)

    def forget_loss(variables, batch, reference):
        x, y = batch["forget"]["x"], batch["forget"]["y"]
        logits = apply(variables, x).logits
        ref_logits = jax.lax.stop_gradient(apply(reference, x).logits)
        loss = lm_losses.undial(
            logits, y, ref_logits=ref_logits, beta=beta, reference_quirks=reference_quirks
        )
        return loss, {"forget_nll": losses.token_nll_mean(logits, y)}

    return _with_retain(
        apply,
        "undial",
        forget_loss,
        forget_weight=forget_weight,
        retain_weight=retain_weight,
        retain_loss=retain_loss,
        optimizer=_resolve(optimizer, learning_rate),
        needs_reference=True,
    )


def _token_rule(apply, owner, token_loss, *, forget_weight, retain_weight, retain_loss, optimizer):
    def forget_loss(variables, batch, reference):
        del reference
        x, y = batch["forget"]["x"], batch["forget"]["y"]
        logits = apply(variables, x).logits
        return token_loss(logits, y), {"forget_nll": losses.token_nll_mean(logits, y)}

    return _with_retain(
        apply,
        owner,
        forget_loss,
        forget_weight=forget_weight,
        retain_weight=retain_weight,
        retain_loss=retain_loss,
        optimizer=optimizer,
        needs_reference=False,
    )


@registry.rule(
    "wga",
    parts=("forget", "retain"),
    paper="Wang et al., Rethinking LLM Unlearning Objectives: A Gradient Perspective, ICLR 2025",
    task="language_model",
    sweepable=("beta", "retain_weight", "learning_rate"),
)
def wga(
    apply: Callable,
    *,
    beta: float = 1.0,
    forget_weight: float = 1.0,
    retain_weight: float = 1.0,
    retain_loss: str = "nll",
    learning_rate: float = OU_LEARNING_RATE,
    optimizer: Optimizer = None,
) -> UnlearningRule:
    """WGA: gradient ascent on each answer token weighted by ``p_t^beta`` (not differentiated).

    Args:
      apply: the model's functional ``apply``.
      beta: exponent of the confidence weight (OU ``WGA.yaml``: 1).
      forget_weight, retain_weight: ``gamma``, ``alpha`` (1, 1).
      retain_loss: ``"nll"`` (OU's default) or ``"kl"``.
      learning_rate: step size (OU: 1e-5).
      optimizer: see :func:`npo`.

    References:
      Wang et al., ICLR 2025; OU ``src/trainer/unlearn/wga.py``.
    """
    if concrete(beta) and not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"wga `beta` must be finite and non-negative; got {beta}")
    return _token_rule(
        apply,
        "wga",
        lambda logits, y: lm_losses.wga(logits, y, beta=beta),
        forget_weight=forget_weight,
        retain_weight=retain_weight,
        retain_loss=retain_loss,
        optimizer=_resolve(optimizer, learning_rate),
    )


@registry.rule(
    "satimp",
    parts=("forget", "retain"),
    paper="Yang et al., Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning, "
    "ICML 2025",
    task="language_model",
    sweepable=("beta1", "beta2", "retain_weight", "learning_rate"),
)
def satimp(
    apply: Callable,
    *,
    beta1: float = 5.0,
    beta2: float = 1.0,
    forget_weight: float = 0.1,
    retain_weight: float = 1.0,
    retain_loss: str = "nll",
    learning_rate: float = OU_LEARNING_RATE,
    optimizer: Optimizer = None,
) -> UnlearningRule:
    """SatImp: gradient ascent per token weighted by ``p_t^beta1 (1 - p_t)^beta2``.

    Args:
      apply: the model's functional ``apply``.
      beta1, beta2: the weight's exponents (OU ``SatImp.yaml``: 5, 1).
      forget_weight: ``gamma`` (OU ``SatImp.yaml``: 0.1).
      retain_weight: ``alpha`` (1).
      retain_loss: ``"nll"`` (OU's default) or ``"kl"``.
      learning_rate: step size (OU: 1e-5).
      optimizer: see :func:`npo`.

    References:
      Yang et al., ICML 2025; OU ``src/trainer/unlearn/satimp.py``.
    """
    for name, value in (("beta1", beta1), ("beta2", beta2)):
        if concrete(value) and not (math.isfinite(value) and value >= 0):
            raise ValueError(f"satimp `{name}` must be finite and non-negative; got {value}")
    return _token_rule(
        apply,
        "satimp",
        lambda logits, y: lm_losses.satimp(logits, y, beta1=beta1, beta2=beta2),
        forget_weight=forget_weight,
        retain_weight=retain_weight,
        retain_loss=retain_loss,
        optimizer=_resolve(optimizer, learning_rate),
    )


@registry.rule(
    "ce_u",
    parts=("forget",),
    paper="Yang, CE-U: Cross Entropy Unlearning, arXiv:2503.01224",
    task="language_model",
    sweepable=("learning_rate",),
)
def ce_u(
    apply: Callable,
    *,
    ignore_first: int = 1,
    learning_rate: float = OU_LEARNING_RATE,
    optimizer: Optimizer = None,
) -> UnlearningRule:
    """CE-U: cross-entropy to the model's own distribution with the true token removed.

    No retain set and no reference model (OU's ``CEU``).

    Args:
      apply: the model's functional ``apply``.
      ignore_first: answer tokens skipped at the start of each answer (OU: 1).
      learning_rate: step size (OU: 1e-5).
      optimizer: see :func:`npo`.

    References:
      Yang, arXiv:2503.01224; OU ``src/trainer/unlearn/ceu.py``.
    """
    try:
        ignore_first = check_count(ignore_first, "ignore_first", 0)
    except ValueError as error:
        raise ValueError(f"ce_u: {error}") from None

    def loss_fn(variables, batch, *, reference, step, key):
        del reference, step, key
        x, y = batch["forget"]["x"], batch["forget"]["y"]
        logits = apply(variables, x).logits
        loss = lm_losses.ce_u(logits, y, ignore_first=int(ignore_first))
        return loss, {"forget_nll": losses.token_nll_mean(logits, y)}

    return rule_from_loss(loss_fn, _resolve(optimizer, learning_rate), keep_reference=False)


# ------------------------------------------------------------------------------------------ RMU


class RMUState(NamedTuple):
    """State of :func:`rmu` (without a ``trainable`` mask; with one, a ``MaskedState`` holds it).

    Attributes:
      inner: the loss rule's state (optimizer state, the frozen reference, step).
      steering: ``[d]`` the control vector ``c * u / ||u||``, drawn once at ``init``.
    """

    inner: object
    steering: Array


@registry.rule(
    "rmu",
    parts=("forget", "retain"),
    paper="Li et al., The WMDP Benchmark: Measuring and Reducing Malicious Use With Unlearning, "
    "ICML 2024",
    task="language_model",
    sweepable=("steering_coeff", "retain_weight", "learning_rate"),
)
def rmu(
    apply: Callable,
    *,
    input_shape: tuple[int, ...],
    layer: int | None = None,
    steering_coeff: float = 2.0,
    forget_weight: float = 1.0,
    retain_weight: float = 1.0,
    trainable: str | Sequence[str] | None = None,
    learning_rate: float = OU_LEARNING_RATE,
    optimizer: Optimizer = None,
) -> UnlearningRule:
    """RMU: steer layer-``L`` activations on forget text to a random vector, keep them on retain.

    ``L = forget_weight * mMSE(h_L(x_f), c * u) + retain_weight * mMSE(h_L(x_r), h_L^ref(x_r))``
    with :func:`~jaxunlearn.core.lm_losses.activation_mse` over the answer-token positions
    (:func:`~jaxunlearn.core.lm_losses.answer_positions`) and ``h_L`` = ``Outputs.hidden[L]``,
    the residual stream after decoder layer ``L``. ``u`` is drawn once, at ``init``, from the
    rule key: ``U[0, 1)^d`` normalised (``torch.rand``), times ``c``.

    Args:
      apply: the model's functional ``apply`` (its ``Outputs.hidden`` must hold the layers).
      input_shape: the model's input shape ``(T,)`` (supplied by the registry), to find the
        hidden width ``d`` at ``init``.
      layer: the decoder layer whose output is steered; ``None`` = 7 (OU's and WMDP's
        ``model.layers.7``), or the last layer of a model with fewer than 8. An explicit layer
        outside the model's depth is a ``ValueError`` at ``init``.
      steering_coeff: ``c`` (OU ``RMU.yaml``: 2; WMDP's Zephyr run 6.5, script default 20).
      forget_weight: ``gamma`` (1).
      retain_weight: ``alpha`` (OU: 1; WMDP: 100 to 1200).
      trainable: regular expression(s) over dotted parameter paths of the only weights that
        change (:func:`~jaxunlearn.core.combinators.path_mask` under
        :func:`~jaxunlearn.core.combinators.masked`); ``None`` = all (OU's TOFU setting).
        :data:`WMDP_TRAINABLE` is WMDP's ``layers.5-7`` MLP down-projections.
      learning_rate: step size (OU: 1e-5; WMDP: 5e-5).
      optimizer: see :func:`npo`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and ``batch["retain"]``; its metrics
      include ``forget_activation_mse`` (to ``c * u``) and ``retain_activation_mse``.

    References:
      Li et al., ICML 2024 (``rmu/unlearn.py`` of centerforaisafety/wmdp, read in its forks);
      OU ``src/trainer/unlearn/rmu.py`` (``compute_activation_loss``, ``get_control_vector``).
    """
    _check(
        "rmu",
        steering_coeff=steering_coeff,
        forget_weight=forget_weight,
        retain_weight=retain_weight,
    )
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int)):
        raise ValueError(f"rmu `layer` must be an int or None; got {layer!r}")
    if trainable is not None:
        compile_patterns(trainable, "trainable")
    opt = _resolve(optimizer, learning_rate)

    def depth_and_width(variables) -> tuple[int, int]:
        tokens = jax.ShapeDtypeStruct((1, *input_shape), jnp.int32)
        hidden = jax.eval_shape(lambda v, t: apply(v, t).hidden, variables, tokens)
        if not hidden:
            raise ValueError("rmu needs a model whose Outputs.hidden holds its layers' outputs")
        return len(hidden), int(hidden[0].shape[-1])

    def chosen_layer(depth: int) -> int:
        if layer is None:
            return min(RMU_LAYER, depth - 1)
        if not -depth <= layer < depth:
            raise ValueError(f"rmu `layer` {layer} is outside the model's {depth} layers")
        return layer % depth

    def activations(variables, x, index):
        return apply(variables, x).hidden[index]

    def make_loss(steering: Array, index: int):
        def loss_fn(variables, batch, *, reference, step, key):
            del step, key
            forget, retain = batch["forget"], batch["retain"]
            h_f = activations(variables, forget["x"], index)
            f = lm_losses.activation_mse(h_f, steering, lm_losses.answer_positions(forget["y"]))
            h_r = activations(variables, retain["x"], index)
            h_ref = jax.lax.stop_gradient(activations(reference, retain["x"], index))
            r = lm_losses.activation_mse(h_r, h_ref, lm_losses.answer_positions(retain["y"]))
            loss = forget_weight * f + retain_weight * r
            return loss, {"forget_activation_mse": f, "retain_activation_mse": r}

        return loss_fn

    def layer_index(variables) -> int:
        """The steered layer of this model (static: read from shapes)."""
        return chosen_layer(depth_and_width(variables)[0])

    def build(steering: Array, index: int) -> UnlearningRule:
        rule = rule_from_loss(make_loss(steering, index), opt, keep_reference=True)
        if trainable is not None:
            rule = masked(rule, lambda variables: path_mask(variables, trainable))
        return rule

    def init(variables: Variables, *, key: Array) -> RMUState:
        depth, width = depth_and_width(variables)
        chosen_layer(depth)  # checks an explicit layer now
        steering = lm_losses.rmu_steering_vector(key, width, scale=steering_coeff)
        return RMUState(build(steering, 0).init(variables, key=key), steering)

    def update(variables: Variables, state: RMUState, batch: Batch, *, key: Array):
        rule = build(state.steering, layer_index(variables))
        variables, inner, metrics = rule.update(variables, state.inner, batch, key=key)
        return variables, state._replace(inner=inner), metrics

    return UnlearningRule(init, update)


# ------------------------------------------------------------------------------------------ PDU


class PDUState(NamedTuple):
    """State of :func:`pdu`.

    Attributes:
      opt_state: the optimizer state over the params.
      dual: the multiplier ``lambda`` of the retain constraint (float32 scalar).
      step: updates taken so far.
    """

    opt_state: object
    dual: Array
    step: StepCounter


@registry.rule(
    "pdu",
    parts=("forget", "retain"),
    paper="Entesari et al., Constrained Entropic Unlearning: A Primal-Dual Framework for LLMs, "
    "2025",
    task="language_model",
    sweepable=("retain_eps", "dual_step_size", "retain_weight", "learning_rate"),
)
def pdu(
    apply: Callable,
    *,
    steps_per_epoch: int | None = None,
    forget_weight: float = 1.0,
    retain_weight: float = 1.0,
    retain_eps: float = 0.3,
    dual_step_size: float = 1.0,
    dual_warmup_epochs: float = 5.0,
    learning_rate: float = OU_LEARNING_RATE,
    optimizer: Optimizer = None,
) -> UnlearningRule:
    """PDU: flatten the forget outputs subject to ``retain loss <= eps``, by primal-dual steps.

    Each update takes an optimizer step on
    ``forget_weight * pdu_forget_loss(forget) + lambda * (NLL(retain) - retain_eps)`` and then,
    after the warm-up, a dual ascent step ``lambda <- max(0, lambda + dual_step_size *
    (NLL(retain) - retain_eps))`` on the retain loss of the same batch (OU's per-step dual update;
    its per-epoch variant is not provided). ``lambda`` starts at ``retain_weight`` and is
    reported as ``dual``.

    Args:
      apply: the model's functional ``apply``.
      steps_per_epoch: updates per epoch (supplied by the registry), to count the warm-up.
      forget_weight: ``gamma`` (1).
      retain_weight: the starting ``lambda`` (OU's ``alpha``, 1).
      retain_eps: the retain-loss budget ``eps``; PDU's authors advise a value a little above
        the starting model's retain loss (0.3: the TOFU value quoted in public run scripts).
      dual_step_size: ``eta`` (OU: 1).
      dual_warmup_epochs: epochs before ``lambda`` starts to move (5, the reference notes'
        setting); 0 updates it from the first step.
      learning_rate: step size (OU: 1e-5).
      optimizer: see :func:`npo`.

    Raises:
      ValueError: for a warm-up without ``steps_per_epoch`` to count it in.

    References:
      Entesari et al., 2025 (arXiv:2506.05314); OU ``src/trainer/unlearn/pdu.py``.
    """
    _check(
        "pdu",
        forget_weight=forget_weight,
        retain_weight=retain_weight,
        dual_step_size=dual_step_size,
    )
    if concrete(retain_eps) and not math.isfinite(retain_eps):
        raise ValueError(f"pdu `retain_eps` must be finite; got {retain_eps}")
    if not (math.isfinite(dual_warmup_epochs) and dual_warmup_epochs >= 0):
        raise ValueError(f"pdu `dual_warmup_epochs` must be non-negative; got {dual_warmup_epochs}")
    if dual_warmup_epochs > 0 and steps_per_epoch is None:
        raise ValueError(
            "pdu counts its `dual_warmup_epochs` in epochs: pass `steps_per_epoch` (rules.make "
            "does) or set dual_warmup_epochs=0"
        )
    warmup = 0 if dual_warmup_epochs == 0 else math.ceil(dual_warmup_epochs * steps_per_epoch)
    opt = _resolve(optimizer, learning_rate)

    def loss_fn(variables, batch, *, dual):
        forget = batch["forget"]
        logits = apply(variables, forget["x"]).logits
        f = lm_losses.pdu_forget_loss(logits, losses.token_mask(forget["y"]))
        r, _ = part_loss(apply, variables, batch, "retain")
        loss = forget_weight * f + dual * (r - retain_eps)
        return loss, {"forget_loss": f, "retain_loss": r}

    def init(variables: Variables, *, key: Array | None = None) -> PDUState:
        del key
        return PDUState(
            opt.init(variables["params"]),
            jnp.asarray(retain_weight, jnp.float32),
            StepCounter.zero(),
        )

    def update(variables: Variables, state: PDUState, batch: Batch, *, key: Array):
        del key
        grads, metrics = grads_of_loss(lambda v, b: loss_fn(v, b, dual=state.dual))(
            variables, batch
        )
        variables, opt_state = optimizer_step(opt, grads, state.opt_state, variables)
        stepped = lm_losses.pdu_dual_update(
            state.dual, metrics["retain_loss"], eps=retain_eps, step_size=dual_step_size
        )
        dual = jnp.where(state.step.count >= warmup, stepped, state.dual)
        metrics = {**metrics, "dual": state.dual}
        return variables, PDUState(opt_state, dual, state.step.next()), metrics

    return UnlearningRule(init, update)
