"""UnSTAR: unlearning by fine-tuning on anti-samples (a misleading rationale and a wrong answer).

Sinha, Mandal, Kankanhalli, "UnSTAR: Unlearning with Self-Taught Anti-Sample Reasoning for
LLMs" (TMLR 2025, arXiv 2410.17050; code MachineUnlearn/UnStar). For each forget question the
method writes an *anti-sample*, the question answered with a falsified answer and a rationale
that argues for it, and fine-tunes the model on those while the retain set is preserved; its loop
keeps only the questions the model still answers correctly (``p2.py`` moves a question to
"answered" once the model's answer no longer contains the truth, and stops at a quota of such
questions). ``shared/reference/lm_robust_evaluation.md`` section 10 has the summary.

Here, one optimizer step per update on

    ``forget_weight * mean_{rows still known} NLL(anti answer | question)
    + retain_weight * retain term``

with the anti-samples from the forget part's ``anti_x``/``anti_y`` fields
(:func:`jaxunlearn.data.anti_samples.encode_anti_samples`, passed as
``make_stream(..., extra=...)`` like IdkDPO's ``idk_x``) and the retain term of
:func:`jaxunlearn.rules.common.retain_term` (``"nll"`` on the retain batch, or ``"kl"`` to the
frozen start). The NLL is each anti-sample's mean over its target tokens (the prompt is never a
target; with the builder's ``scope="fact"`` only the wrong value is), then averaged over rows.
``until_misled=True`` is UnSTAR's filter made a jittable weight: a row counts only while the
model, teacher-forced on the *true* answer, still predicts every one of its tokens (computed
without a gradient), so facts already redirected stop pulling the model and the retain term
takes over; rows without an anti-sample (no labelled token) never count.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxunlearn.core import losses
from jaxunlearn.core.types import UnlearningRule
from jaxunlearn.rules import registry
from jaxunlearn.rules.lm import OU_LEARNING_RATE, Optimizer, _check, _field, _resolve, _with_retain

FIELDS = ("anti_x", "anti_y")


def still_known(logits, labels):
    """``[B]`` bool: the teacher-forced argmax equals every labelled target of the row (a row
    without targets is not known)."""
    mask = labels != losses.IGNORE_INDEX
    correct = (jnp.argmax(logits, -1) == labels) | ~mask
    return jnp.all(correct, -1) & jnp.any(mask, -1)


def row_nll(logits, labels):
    """``[B]`` mean NLL of each row's targets, and ``[B]`` whether the row has any."""
    mask = losses.token_mask(labels)
    count = mask.sum(-1)
    nll = -losses.token_log_probs(logits, labels).sum(-1) / jnp.maximum(count, 1.0)
    return nll, count > 0


@registry.rule(
    "anti_sample",
    parts=("forget", "retain"),
    paper="Sinha, Mandal, Kankanhalli, UnSTAR: Unlearning with Self-Taught Anti-Sample "
    "Reasoning for LLMs, TMLR 2025",
    task="language_model",
    sweepable=("forget_weight", "retain_weight", "learning_rate"),
)
def anti_sample(
    apply: Callable,
    *,
    forget_weight: float = 1.0,
    retain_weight: float = 1.0,
    retain_loss: str = "nll",
    until_misled: bool = True,
    learning_rate: float = OU_LEARNING_RATE,
    optimizer: Optimizer = None,
) -> UnlearningRule:
    """UnSTAR: fine-tune on anti-samples of the forget facts, keep the retain set.

    Args:
      apply: the model's functional ``apply``.
      forget_weight: weight of the anti-sample NLL (1).
      retain_weight: weight of the retain term (1).
      retain_loss: ``"nll"`` (descent on the retain batch) or ``"kl"`` (to the frozen start).
      until_misled: count a row only while the model still gives its true answer (UnSTAR's
        loop); ``False`` trains on every anti-sample throughout.
      learning_rate: step size (OU's 1e-5 default; small models need more).
      optimizer: an optax optimizer or settings over AdamW (see :func:`jaxunlearn.rules.npo`).

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` (with ``anti_x``, ``anti_y``) and
      ``batch["retain"]``; metrics ``anti_nll`` (mean over rows with an anti-sample),
      ``still_known`` (fraction of forget rows whose true answer is still predicted) and
      ``forget_nll`` (true answer).

    References:
      Sinha et al., TMLR 2025 (arXiv 2410.17050); MachineUnlearn/UnStar ``p2.py`` (rationales
      that never name the true answer), ``p3.py`` (fine-tuning on them).
    """
    if not isinstance(until_misled, bool):
        raise ValueError(f"anti_sample `until_misled` must be a bool; got {until_misled!r}")
    _check("anti_sample", forget_weight=forget_weight)

    def forget_loss(variables, batch, reference):
        del reference
        forget = batch["forget"]
        ax, ay = (_field(batch, "forget", name, "anti_sample") for name in FIELDS)
        nll, has = row_nll(apply(variables, ax).logits, ay)
        true_logits = jax.lax.stop_gradient(apply(variables, forget["x"]).logits)
        known = still_known(true_logits, forget["y"])
        weight = (has & known if until_misled else has).astype(jnp.float32)
        loss = jnp.sum(weight * nll) / jnp.maximum(weight.sum(), 1.0)
        has_f = has.astype(jnp.float32)
        return loss, {
            "anti_nll": jnp.sum(has_f * nll) / jnp.maximum(has_f.sum(), 1.0),
            "still_known": jnp.mean(known.astype(jnp.float32)),
            "forget_nll": losses.token_nll_mean(true_logits, forget["y"]),
        }

    return _with_retain(
        apply,
        "anti_sample",
        forget_loss,
        forget_weight=forget_weight,
        retain_weight=retain_weight,
        retain_loss=retain_loss,
        optimizer=_resolve(optimizer, learning_rate),
        needs_reference=False,
    )
