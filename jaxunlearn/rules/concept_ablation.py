"""Concept ablation: erase a concept's parametric trace, ConceptVectors' "needle", in one edit.

ConceptVectors (Hong et al. 2024, "Intrinsic Evaluation of Unlearning Using Parametric Knowledge
Traces", yihuaihong/ConceptVectors) finds that a concept lives in a few MLP value vectors (rows of
a ``down_proj`` kernel, what one hidden unit writes into the residual stream), located by
projecting them through the output embedding, and that fine-tuning-based unlearning leaves them
almost unchanged. Their oracle-like "Needle" perturbs the located vector (Gaussian noise, std 0.1)
and then fine-tunes only it with the unlearning loss. This rule is the training-free part: it
locates the ``top`` value vectors whose vocabulary projection most favours the concept's tokens
(:func:`jaxunlearn.models.value_vectors.concept_scores`, the same lens as the
:func:`~jaxunlearn.audit.concept_vectors` audit) and zeroes them (``mode="zero"``, the audit's
causal check) or adds Gaussian noise to them (``mode="noise"``, the Needle's perturbation). Every
other parameter is left bitwise unchanged. The Needle's fine-tuning phase is the rule algebra's
``phases((1, concept_ablation(...)), (None, masked(npo(...), mask)))`` with a mask on the
located rows.

The concept's tokens are ``concept_ids`` when given; otherwise the tokens characteristic of the
forget prompts: weight ``max(0, p_forget(v) - p_retain(v))`` for token ``v``, with ``p`` its
share of the prompt positions of the forget (retain) batch (the forgotten authors' names, which
the retain prompts never contain, get the largest weights).

The edit runs on the first update (pass a forget batch that holds the whole forget set); later
updates leave the model as it is. Formulas, defaults and the reference's quirks:
``shared/reference/lm_robust_evaluation.md`` section 1 (the exact located-vector filter of the
paper, GPT-4-judged top tokens, is replaced here by the projection z-score).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxunlearn.core import losses
from jaxunlearn.core.checks import check_count, concrete
from jaxunlearn.core.combinators import one_shot, phases
from jaxunlearn.core.types import Array, UnlearningRule
from jaxunlearn.models import value_vectors
from jaxunlearn.rules import registry

MODES = ("zero", "noise")


def prompt_mask(tokens, labels, pad_id: int = 0) -> Array:
    """``[B, T]`` the prompt's token positions: not padding, not an answer token (``labels`` are
    pre-shifted: ``labels[t]`` is token ``t + 1``)."""
    answer = jnp.pad(labels[:, :-1] != losses.IGNORE_INDEX, ((0, 0), (1, 0)))
    return (tokens != pad_id) & ~answer


def characteristic_tokens(forget: tuple, retain: tuple, vocab_size: int, pad_id: int = 0):
    """``[V]`` weight of each token in the forget prompts beyond its share in the retain prompts,
    ``max(0, p_forget(v) - p_retain(v))`` (``forget``/``retain`` = ``(tokens, labels)``)."""

    def share(tokens, labels):
        mask = prompt_mask(tokens, labels, pad_id).astype(jnp.float32)
        counts = jnp.zeros(vocab_size).at[tokens].add(mask)
        return counts / jnp.maximum(mask.sum(), 1.0)

    return jnp.maximum(share(*forget) - share(*retain), 0.0)


def ablation_mask(params, concept_weights, *, top: int, layers: Sequence[int] | None = None):
    """``[L, f]`` bool: the ``top`` value vectors with the highest concept score, searched in
    ``layers`` (all when ``None``)."""
    scores = value_vectors.concept_scores(params, concept_weights)
    if layers is not None:
        allowed = jnp.zeros(scores.shape[0], bool).at[jnp.asarray(layers)].set(True)
        scores = jnp.where(allowed[:, None], scores, -jnp.inf)
    _, flat = jax.lax.top_k(scores.reshape(-1), top)
    return jnp.zeros(scores.size, bool).at[flat].set(True).reshape(scores.shape)


def ablate(variables, mask, *, mode: str = "zero", noise_scale: float = 0.1, key=None):
    """``variables`` with the value vectors where ``mask [L, f]`` holds zeroed (``"zero"``) or
    perturbed by ``N(0, noise_scale^2)`` noise (``"noise"``); everything else is untouched."""
    params = jax.tree.map(lambda a: a, variables["params"])
    for i, name in enumerate(sorted(params["layers"], key=int)):
        mlp = params["layers"][name]["mlp"]
        kernel = mlp["down_proj"]["kernel"]
        if mode == "zero":
            new = jnp.zeros_like(kernel)
        else:
            noise = jax.random.normal(jax.random.fold_in(key, i), kernel.shape, kernel.dtype)
            new = kernel + noise_scale * noise
        mlp["down_proj"] = {**mlp["down_proj"], "kernel": jnp.where(mask[i][:, None], new, kernel)}
    return {**variables, "params": params}


@registry.rule(
    "concept_ablation",
    parts=("forget", "retain"),
    paper="Hong et al., Intrinsic Evaluation of Unlearning Using Parametric Knowledge Traces "
    "(ConceptVectors, Needle), 2024",
    task="language_model",
    needs_labels=False,
    cost="none",
    sweepable=("noise_scale",),
)
def concept_ablation(
    apply: Callable,
    *,
    num_classes: int,
    concept_ids: Sequence[int] | None = None,
    top: int = 4,
    layers: Sequence[int] | None = None,
    mode: str = "zero",
    noise_scale: float = 0.1,
    pad_id: int = 0,
) -> UnlearningRule:
    """Zeroes (or perturbs) the ``top`` MLP value vectors that carry the concept, in one edit.

    Args:
      apply: the transformer's ``apply`` (unused: the edit reads only the parameters).
      num_classes: the vocabulary size (supplied by the registry).
      concept_ids: the concept's token ids (default: :func:`characteristic_tokens` of the first
        forget and retain batches).
      top: value vectors ablated.
      layers: layers searched (default all).
      mode: ``"zero"`` (ablation) or ``"noise"`` (the Needle's Gaussian perturbation).
      noise_scale: standard deviation of the noise in ``"noise"`` mode (Needle: 0.1).
      pad_id: the padding id.

    Returns:
      A rule whose first update makes the edit; metrics ``concept_score`` (mean score of the
      ablated vectors before the edit) and ``update_norm``.

    Raises:
      ValueError: a ``top`` below 1, an unknown ``mode``, a negative ``noise_scale``, a concept
        id outside the vocabulary, or (at the first update) a layer the model does not have or
        more vectors than the searched layers hold.

    References:
      Hong et al. 2024, ConceptVectors (``forget.py``: Needle); Geva et al. 2022 (value vectors).
    """
    del apply
    try:
        top = check_count(top, "top", 1)
    except ValueError as error:
        raise ValueError(f"concept_ablation: {error} (value vectors ablated)") from None
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}.")
    if concrete(noise_scale) and not float(noise_scale) >= 0:
        raise ValueError(f"noise_scale must be >= 0; got {noise_scale!r}.")
    if concept_ids is not None:
        concept_ids = tuple(int(i) for i in concept_ids)
        bad = [i for i in concept_ids if not 0 <= i < num_classes]
        if bad or not concept_ids:
            raise ValueError(
                f"concept_ids {bad or concept_ids} are not in the vocabulary "
                f"(0..{num_classes - 1})."
            )
    if layers is not None:
        layers = tuple(layers)
        if not layers or any(isinstance(i, bool) or not isinstance(i, int) for i in layers):
            raise ValueError(f"layers must be a non-empty sequence of layer indices; got {layers}.")

    def edit(variables, batch, *, key):
        params = variables["params"]
        depth = len(params.get("layers", {}))
        if layers is not None and any(not 0 <= i < depth for i in layers):
            raise ValueError(
                f"ablation layers {layers} do not exist: the model has layers 0..{depth - 1}."
            )
        units = params["layers"]["0"]["mlp"]["down_proj"]["kernel"].shape[0]
        searched = depth if layers is None else len(set(layers))
        if top > searched * units:
            raise ValueError(f"top={top} exceeds the {searched * units} value vectors searched.")
        if concept_ids is None:
            weights = characteristic_tokens(
                (batch["forget"]["x"], batch["forget"]["y"]),
                (batch["retain"]["x"], batch["retain"]["y"]),
                num_classes,
                pad_id,
            )
        else:
            weights = jnp.zeros(num_classes).at[jnp.asarray(concept_ids)].set(1.0)
        mask = ablation_mask(params, weights, top=top, layers=layers)
        scores = value_vectors.concept_scores(params, weights)
        edited = ablate(variables, mask, mode=mode, noise_scale=noise_scale, key=key)
        before = value_vectors.value_vectors(params)
        after = value_vectors.value_vectors(edited["params"])
        metrics = {
            "concept_score": jnp.sum(jnp.where(mask, scores, 0.0)) / top,
            "update_norm": jnp.linalg.norm(after - before),
        }
        return edited, metrics

    def keep(variables, batch, *, key):
        del batch, key
        return variables, {"concept_score": jnp.float32(0), "update_norm": jnp.float32(0)}

    return phases((1, one_shot(edit)), (None, one_shot(keep)))
