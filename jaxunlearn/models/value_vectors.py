"""MLP value vectors of the transformer read through the vocabulary (ConceptVectors' lens).

Row ``j`` of layer ``l``'s ``down_proj`` kernel ``[f, d]`` is what hidden unit ``j`` writes into
the residual stream, a "value vector" (Geva et al. 2022, "Transformer Feed-Forward Layers Build
Predictions by Promoting Concepts in the Vocabulary Space"). Projected through the output
embedding (the final norm's scale folded in) it becomes a score per token; a vector whose
projection favours a concept's tokens is a candidate parametric trace of that concept (Hong et
al. 2024, "Intrinsic Evaluation of Unlearning Using Parametric Knowledge Traces", ConceptVectors;
``shared/reference/lm_robust_evaluation.md`` section 1).

The functions here are pure and jittable over the transformer's parameters
(``docs/language_models.md`` names), so the concept-vector audit
(:mod:`jaxunlearn.audit.lm_robust`) and the rule that ablates the vectors
(:mod:`jaxunlearn.rules.concept_ablation`) read them the same way.
"""

from __future__ import annotations

import jax.numpy as jnp

from jaxunlearn.core.types import Array


def unembedding(params) -> Array:
    """``[d, V]`` output projection with the final norm's scale folded in (the tied embedding
    when the parameters have no ``lm_head``)."""
    table = (
        params["lm_head"]["kernel"]
        if "lm_head" in params
        else params["embed_tokens"]["embedding"].T
    )
    return params["norm"]["scale"][:, None] * table


def value_vectors(params) -> Array:
    """``[L, f, d]`` every layer's ``down_proj`` rows (layers in numeric order)."""
    layers = params["layers"]
    return jnp.stack([layers[k]["mlp"]["down_proj"]["kernel"] for k in sorted(layers, key=int)])


def concept_scores(params, concept_weights) -> Array:
    """``[L, f]`` how strongly each value vector favours a concept: the z-score, over the
    vocabulary, of the ``concept_weights``-weighted mean projection logit.

    Args:
      params: the transformer's ``variables["params"]``.
      concept_weights: ``[V]`` non-negative weight of each token in the concept (a 0/1
        indicator of the concept's token ids gives their plain mean); all zero gives zeros.
    """
    logits = value_vectors(params) @ unembedding(params)  # [L, f, V]
    mean, std = logits.mean(-1), logits.std(-1) + 1e-8
    w = jnp.asarray(concept_weights, logits.dtype)
    concept = (logits @ w) / jnp.maximum(w.sum(), 1e-12)
    return jnp.where(w.sum() > 0, (concept - mean) / std, 0.0)
