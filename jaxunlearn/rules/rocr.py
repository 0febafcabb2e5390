"""ROCR: Rank-One Concept Redirection, a training-free closed-form LM unlearning edit.

Unlearning by fine-tuning forgets the *form* it trained on (the QA pair) and keeps the knowledge
under other forms. ROCR (Ye, Zhang, Wu 2025, "LLM Unlearning Should Be Form-Independent", arXiv
2506.07795) edits instead what the model does with the *concept* the forget data activates,
whatever the form: one MLP's output matrix gets a rank-one update (ROME's closed form, Meng et al.
2022, "Locating and Editing Factual Associations in GPT") that maps the target concept's key to
the value of a harmless replacement concept, so the model takes the one for the other.

Here, for a ``down_proj`` kernel ``W`` ``[f, d]`` (``out = k @ W``) of layer ``layer``:

* keys ``k`` = the inputs of ``down_proj`` (the gated MLP activation), read through the network's
  own ``apply``: the residual stream after layer ``layer`` is affine in ``W`` with slope ``k``, so
  a forward-mode derivative along a block of identity rows returns ``k`` exactly (no model
  surgery, any decoder whose ``hidden[layer]`` follows that MLP);
* the target key ``k*`` = the mean key over the forget prompts' concept tokens: by default the
  tokens that occur in the forget batch's prompts and in none of the retain batch's (the forgotten
  authors' names), or the given ``concept_ids``;
* the replacement value ``v* = k_r @ W`` with ``k_r`` the mean key over the retain prompts' own
  concept tokens (tokens in retain prompts and not in forget prompts): an average other author,
  a harmless concept the model already knows;
* ``C = E[k k^T]`` over the retain batch's tokens (ROME's second moment, estimated on Wikipedia
  there) plus ``regularisation * mean(diag C) * I``;
* ``W' = W + (C^{-1} k*) (v* - k* @ W)^T / ((C^{-1} k*)^T k*)``, so ``k* @ W' = v*`` exactly while
  keys orthogonal to ``k*`` under ``C^{-1}`` are left alone.

The edit runs on the first update; later updates leave the model as it is (a one-shot rule: the
registry gives it one update). ``shared/reference/lm_robust_evaluation.md`` section 2 has the ROME
formula and defaults; ROCR's own key/value construction is known from its abstract only, and the
choice of concept tokens above is ours.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxunlearn.core import losses
from jaxunlearn.core.combinators import one_shot, phases
from jaxunlearn.core.types import UnlearningRule
from jaxunlearn.rules import registry


def _kernel(params, layer: int):
    return params["layers"][str(layer)]["mlp"]["down_proj"]["kernel"]


def _with_kernel(variables, layer: int, kernel):
    params = jax.tree.map(lambda a: a, variables["params"])
    mlp = params["layers"][str(layer)]["mlp"]
    mlp["down_proj"] = {**mlp["down_proj"], "kernel": kernel}
    return {**variables, "params": params}


def down_proj_keys(apply: Callable, variables, tokens, layer: int):
    """``[B, T, f]`` inputs of layer ``layer``'s ``down_proj``, read by forward-mode derivatives
    of ``apply(...).hidden[layer]`` along blocks of identity rows of the kernel (exact: the
    residual stream after the layer is affine in the kernel, ``h = c + k @ W``)."""
    kernel = _kernel(variables["params"], layer)
    f, d = kernel.shape

    def hidden(w):
        return apply(_with_kernel(variables, layer, w), tokens).hidden[layer]

    blocks = []
    for start in range(0, f, d):
        rows = min(d, f - start)
        tangent = jnp.zeros_like(kernel).at[start : start + rows, :rows].set(jnp.eye(rows))
        _, out = jax.jvp(hidden, (kernel,), (tangent,))
        blocks.append(out[..., :rows])
    return jnp.concatenate(blocks, -1).astype(jnp.float32)


def _prompt_mask(tokens, labels, pad_id: int):
    """``[B, T]`` the prompt's token positions (not padding, not an answer token)."""
    answer = jnp.pad(labels[:, :-1] != losses.IGNORE_INDEX, ((0, 0), (1, 0)))
    return (tokens != pad_id) & ~answer


def _present(tokens, mask, vocab: int):
    return jnp.zeros(vocab, bool).at[tokens].max(mask)


def rocr_edit(
    apply: Callable,
    variables,
    forget: tuple,
    retain: tuple,
    *,
    layer: int,
    vocab_size: int,
    regularisation: float = 1e-2,
    concept_ids: Sequence[int] | None = None,
    pad_id: int = 0,
):
    """The ROCR rank-one edit (module docstring), pure and jittable.

    Args:
      apply: the transformer's ``apply``.
      variables: the model.
      forget, retain: ``(tokens, labels)`` ``[B, T]`` batches (labels pre-shifted).
      layer: the edited MLP's layer.
      vocab_size: the vocabulary size.
      regularisation: ridge on ``C`` relative to its mean diagonal.
      concept_ids: the target concept's token ids (default: tokens of the forget prompts absent
        from the retain prompts).
      pad_id: the padding id.

    Returns:
      ``(variables, metrics)``: ``metrics`` holds ``concept_positions`` (forget tokens averaged
      into ``k*``; 0 means no concept token was found and nothing changed) and ``update_norm``.
    """
    (fx, fy), (rx, ry) = forget, retain
    kernel = _kernel(variables["params"], layer)
    f_keys = down_proj_keys(apply, variables, fx, layer)
    r_keys = down_proj_keys(apply, variables, rx, layer)
    f_prompt, r_prompt = _prompt_mask(fx, fy, pad_id), _prompt_mask(rx, ry, pad_id)
    in_forget = _present(fx, f_prompt, vocab_size)
    in_retain = _present(rx, r_prompt, vocab_size)
    if concept_ids is None:
        target = in_forget & ~in_retain
    else:
        target = jnp.zeros(vocab_size, bool).at[jnp.asarray(concept_ids)].set(True)
    f_mask = (f_prompt & target[fx]).astype(jnp.float32)
    r_mask = (r_prompt & (in_retain & ~in_forget)[rx]).astype(jnp.float32)
    count = f_mask.sum()
    k_star = jnp.einsum("btf,bt->f", f_keys, f_mask) / jnp.maximum(count, 1.0)
    k_repl = jnp.einsum("btf,bt->f", r_keys, r_mask) / jnp.maximum(r_mask.sum(), 1.0)
    valid = (rx != pad_id).astype(jnp.float32)
    second = jnp.einsum("btf,btg,bt->fg", r_keys, r_keys, valid) / jnp.maximum(valid.sum(), 1.0)
    scale = jnp.maximum(jnp.mean(jnp.diag(second)), 1e-12)
    second = second + regularisation * scale * jnp.eye(second.shape[0])
    u = jnp.linalg.solve(second, k_star)
    residual = k_repl @ kernel - k_star @ kernel
    update = jnp.outer(u, residual) / jnp.where(u @ k_star > 0, u @ k_star, 1.0)
    update = jnp.where(count > 0, update, 0.0).astype(kernel.dtype)
    metrics = {"concept_positions": count, "update_norm": jnp.linalg.norm(update)}
    return _with_kernel(variables, layer, kernel + update), metrics


@registry.rule(
    "rocr",
    parts=("forget", "retain"),
    paper="Ye, Zhang, Wu, LLM Unlearning Should Be Form-Independent (ROCR), 2025; "
    "Meng et al., ROME, NeurIPS 2022",
    task="language_model",
    needs_labels=False,
    cost="none",
    sweepable=("regularisation",),
)
def rocr(
    apply: Callable,
    *,
    num_classes: int,
    layer: int = 0,
    regularisation: float = 1e-2,
    concept_ids: Sequence[int] | None = None,
    pad_id: int = 0,
) -> UnlearningRule:
    """ROCR: the closed-form rank-one concept redirection of :func:`rocr_edit`, applied on the
    first update from the first forget and retain batches (use a forget batch that holds the
    whole forget set); later updates leave the model unchanged.

    Args:
      apply: the transformer's ``apply``.
      num_classes: the vocabulary size (supplied by the registry).
      layer: the MLP layer edited (ROME edits an early-middle layer: 17 of GPT-2 XL's 48).
      regularisation: ridge on the key second moment, relative to its mean diagonal.
      concept_ids: the target concept's token ids (default: found from the batches).
      pad_id: the padding id.

    Raises:
      ValueError: a negative ``layer``, or a concept id outside the vocabulary.
    """
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise ValueError(f"layer must be a non-negative integer; got {layer!r}.")
    if concept_ids is not None:
        concept_ids = tuple(int(i) for i in concept_ids)
        bad = [i for i in concept_ids if not 0 <= i < num_classes]
        if bad or not concept_ids:
            raise ValueError(
                f"concept_ids {bad or concept_ids} are not in the vocabulary "
                f"(0..{num_classes - 1})."
            )

    def edit(variables, batch, *, key):
        del key
        if str(layer) not in variables["params"].get("layers", {}):
            raise ValueError(f"layer {layer} is not a layer of this model.")
        return rocr_edit(
            apply,
            variables,
            (batch["forget"]["x"], batch["forget"]["y"]),
            (batch["retain"]["x"], batch["retain"]["y"]),
            layer=layer,
            vocab_size=num_classes,
            regularisation=regularisation,
            concept_ids=concept_ids,
            pad_id=pad_id,
        )

    def keep(variables, batch, *, key):
        del batch, key
        return variables, {"concept_positions": jnp.float32(0), "update_norm": jnp.float32(0)}

    return phases((1, one_shot(edit)), (None, one_shot(keep)))
