"""Every loss of the library, public: pure, jittable functions a meta-method can import.

The classifier and token helpers of :mod:`jaxunlearn.core.losses` and the language-model
unlearning losses of :mod:`jaxunlearn.core.lm_losses`, under one name:

>>> from jaxunlearn import losses
>>> loss = losses.npo(logp, logp_ref, beta=0.1)  # doctest: +SKIP

Sequence-level losses take ``logp`` ``[B]`` (:func:`sequence_log_prob`, the sum of the answer
tokens' log-probabilities): :func:`npo`, :func:`simnpo`, :func:`dpo`. Token-level losses take
``(logits [B, T, V], labels [B, T], mask [B, T])`` with shifted labels and ``IGNORE_INDEX``:
:func:`wga`, :func:`satimp`, :func:`undial`, :func:`ce_u`, :func:`pdu_forget_loss`. RMU's
:func:`activation_mse` compares ``[B, T, d]`` activations.
"""

from jaxunlearn.core.lm_losses import (
    activation_mse,
    answer_positions,
    ce_u,
    counted,
    dpo,
    npo,
    pdu_dual_update,
    pdu_forget_loss,
    rmu_steering_vector,
    satimp,
    simnpo,
    skip_first_answer_tokens,
    undial,
    undial_targets,
    wga,
)
from jaxunlearn.core.losses import (
    IGNORE_INDEX,
    accuracy,
    answer_lengths,
    attention_map,
    attention_transfer,
    cross_entropy,
    distillation_kl,
    is_classification,
    is_token_task,
    kl_to_target_probs,
    mean_absolute_error,
    mean_squared_error,
    negative_preference_loss,
    per_example_cross_entropy,
    per_example_supervised,
    sequence_log_prob,
    supervised,
    token_log_probs,
    token_mask,
    token_nll_mean,
)

__all__ = [
    "IGNORE_INDEX",
    "accuracy",
    "activation_mse",
    "answer_lengths",
    "answer_positions",
    "attention_map",
    "attention_transfer",
    "ce_u",
    "counted",
    "cross_entropy",
    "distillation_kl",
    "dpo",
    "is_classification",
    "is_token_task",
    "kl_to_target_probs",
    "mean_absolute_error",
    "mean_squared_error",
    "negative_preference_loss",
    "npo",
    "pdu_dual_update",
    "pdu_forget_loss",
    "per_example_cross_entropy",
    "per_example_supervised",
    "rmu_steering_vector",
    "satimp",
    "sequence_log_prob",
    "simnpo",
    "skip_first_answer_tokens",
    "supervised",
    "token_log_probs",
    "token_mask",
    "token_nll_mean",
    "undial",
    "undial_targets",
    "wga",
]
