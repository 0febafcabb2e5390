"""ROCR: Rank-One Concept Redirection, a training-free closed-form LM unlearning edit.

Unlearning by fine-tuning forgets the *form* it trained on (the QA pair) and keeps the knowledge
under other forms. ROCR (Ye, Zhang, Wu 2025, "LLM Unlearning Should Be Form-Independent", arXiv
2506.07795; code: Acruxos/ORT, ``LLaMA-Factory/src/llmtuner/train/rocr``) edits instead what the
model does with the *concept* the forget data activates, whatever the form: MLP output matrices get
a closed-form update (ROME's, Meng et al. 2022, "Locating and Editing Factual Associations in
GPT", in MEMIT's many-key form) so that at the target concept's tokens the layer writes the
residual-stream state of a harmless replacement concept, and later layers take the one for the
other.

What the authors' code does (its default ``mode="unrelated"`` for Llama-3-8B): the key is the
``down_proj`` input at the subject's last token (``fact_token="subject_last"``), averaged over a
few chat templates; the target ``z`` is the *output of the decoder layer* (the residual stream)
at the last token of an unrelated subject ("Donald Trump") in the same templates, and the
residual to write is ``z - h`` with ``h`` the target subject's own layer output there; layers
4-6 are edited with the residual spread over them, by AlphaEdit's null-space-projected MEMIT
solve ``(P (K K^T + C_prev) + I)^{-1} P K R^T``.

Here, for the ``down_proj`` kernel ``W`` ``[f, d]`` (``out = k @ W``) of one layer ``layer``:

* keys ``k_i`` = the inputs of ``down_proj`` (the gated MLP activation), read through the
  network's own ``apply``: the residual stream after the layer is affine in ``W`` with slope
  ``k``, so forward-mode derivatives along blocks of identity rows return ``k`` exactly (no model
  surgery; any decoder whose ``hidden[layer]`` follows that MLP);
* one key per forget-prompt position holding a concept token (the first ``max_positions``): by
  default the tokens that occur in the forget batch's prompts and in none of the retain batch's
  (the forgotten authors' names), or ``concept_ids``. Every concept token, not only the last: a
  small model may read the concept from any of them;
* the residual ``r_i = h_r - h_i``: ``h_i`` the layer's output (``hidden[layer]``) at that
  position, ``h_r`` the mean layer output at the retain prompts' own concept tokens (tokens in
  retain prompts and not in forget prompts, or ``replacement_ids``): an average other author, a
  concept the model knows;
* ``C = E[k k^T]`` over the retain batch's tokens (ROME's second moment; Wikipedia there) plus
  ``regularisation * mean(diag C) * I``;
* ``W' = W + C^{-1} K^T (K C^{-1} K^T + key_ridge * s * I)^{-1} R`` (``s`` the Gram's mean
  diagonal): ROME's equality-constrained, least-``C``-norm update for many keys, so that
  ``k_i @ W' ~ k_i @ W + r_i`` (exact as ``key_ridge -> 0``) while keys ``C^{-1}``-orthogonal to
  every ``k_i`` are mapped as before. One key gives ROME's rank-one update.

Differences from the authors' code, and why: one layer (spreading the residual over both layers
of a tiny model did worse); ROME's ``C^{-1}`` instead of AlphaEdit's null-space projector ``P``
(on a small model the retain keys span the key space, so ``P`` is nearly zero); every concept
token rather than the last one; the replacement is the average retain concept rather than one
named subject. The previous version of this rule sent the *mean* concept key to the mean
replacement key's MLP output ``k_r @ W``; the MLP output is a small part of the residual stream,
and it barely moved the forget answers (by < 0.01 nats on the trained model of
``tests/rules/test_rocr.py``, where this edit moves them by ~3 nats).

Where the concept is read matters: ROME's causal tracing finds facts recalled at the subject's
tokens in early-middle MLPs of deep models. A two-layer model may instead copy the subject's
embedding straight to the answer position in its first attention layer, past any MLP at the
subject's tokens; then redirecting the concept does little (on the test's corpus, over four
training seeds, the forget answers' NLL rose by 3.6, 4.3, 0.7 and 0.07 nats for layer 1 and
by < 0.05 for layer 0).

The edit runs on the first update; later updates leave the model as it is (a one-shot rule: the
registry gives it one update). ``shared/reference/lm_robust_evaluation.md`` section 2 has the ROME
formula and defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxunlearn.core.checks import check_count, concrete
from jaxunlearn.core.combinators import one_shot, phases
from jaxunlearn.core.types import UnlearningRule
from jaxunlearn.rules import registry
from jaxunlearn.rules.concept_ablation import prompt_mask


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

    num_blocks = -(-f // d)
    rows = jnp.arange(num_blocks * d)
    # Tangent b holds identity rows b*d .. b*d + d - 1 (those past f dropped).
    tangents = jnp.zeros((num_blocks, f, d), kernel.dtype)
    tangents = tangents.at[rows // d, jnp.minimum(rows, f - 1), rows % d].set(
        (rows < f).astype(kernel.dtype)
    )
    out = jax.vmap(lambda t: jax.jvp(hidden, (kernel,), (t,))[1])(tangents)  # [nb, B, T, d]
    keys = jnp.moveaxis(out, 0, -2).reshape(*out.shape[1:-1], num_blocks * d)
    return keys[..., :f].astype(jnp.float32)


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
    regularisation: float = 1e-4,
    key_ridge: float = 1e-3,
    concept_ids: Sequence[int] | None = None,
    replacement_ids: Sequence[int] | None = None,
    max_positions: int = 256,
    pad_id: int = 0,
):
    """The ROCR edit (module docstring), pure and jittable.

    Args:
      apply: the transformer's ``apply``.
      variables: the model.
      forget, retain: ``(tokens, labels)`` ``[B, T]`` batches (labels pre-shifted).
      layer: the edited MLP's layer.
      vocab_size: the vocabulary size.
      regularisation: ridge on ``C``, relative to its mean diagonal (small: the edit may use
        the key directions the retain data hardly occupies).
      key_ridge: ridge on the concept keys' Gram matrix ``K C^{-1} K^T``, relative to its mean
        diagonal (a least-squares compromise between repeated, nearly equal keys).
      concept_ids: the target concept's token ids (default: tokens of the forget prompts absent
        from the retain prompts).
      replacement_ids: the replacement concept's token ids (default: tokens of the retain
        prompts absent from the forget prompts).
      max_positions: concept positions redirected at most (the first ones, row by row; the rest
        are counted in ``dropped_positions``).
      pad_id: the padding id.

    Returns:
      ``(variables, metrics)``: ``metrics`` holds ``concept_positions`` (forget prompt positions
      redirected; 0 means no concept token was found and nothing changed),
      ``replacement_positions`` (retain positions averaged into ``h_r``; 0 also means no
      change), ``dropped_positions`` (beyond ``max_positions``), ``residual_norm`` (mean
      ``|h_r - h_i|``) and ``update_norm``.
    """
    (fx, fy), (rx, ry) = forget, retain
    kernel = _kernel(variables["params"], layer)
    f_prompt, r_prompt = prompt_mask(fx, fy, pad_id), prompt_mask(rx, ry, pad_id)
    in_forget = _present(fx, f_prompt, vocab_size)
    in_retain = _present(rx, r_prompt, vocab_size)
    if concept_ids is None:
        target = in_forget & ~in_retain
    else:
        target = jnp.zeros(vocab_size, bool).at[jnp.asarray(concept_ids)].set(True)
    if replacement_ids is None:
        replacement = in_retain & ~in_forget
    else:
        replacement = jnp.zeros(vocab_size, bool).at[jnp.asarray(replacement_ids)].set(True)
    f_mask = f_prompt & target[fx]
    r_mask = (r_prompt & replacement[rx]).astype(jnp.float32)
    # One key per concept position (the first max_positions of them): each is redirected in
    # its own context, as ROCR averages only over the templates of one prompt.
    flat = f_mask.reshape(-1)
    n = flat.shape[0]
    _, chosen = jax.lax.top_k(jnp.where(flat, n - jnp.arange(n), 0), min(max_positions, n))
    used = flat[chosen].astype(jnp.float32)  # [m]
    f_keys = down_proj_keys(apply, variables, fx, layer)
    r_keys = down_proj_keys(apply, variables, rx, layer)
    f_hidden = apply(variables, fx).hidden[layer].astype(jnp.float32)
    r_hidden = apply(variables, rx).hidden[layer].astype(jnp.float32)
    keys = f_keys.reshape(n, -1)[chosen] * used[:, None]  # [m, f] k_i
    h_repl = jnp.einsum("btd,bt->d", r_hidden, r_mask) / jnp.maximum(r_mask.sum(), 1.0)
    residual = (h_repl - f_hidden.reshape(n, -1)[chosen]) * used[:, None]
    valid = (rx != pad_id).astype(jnp.float32)
    second = jnp.einsum("btf,btg,bt->fg", r_keys, r_keys, valid) / jnp.maximum(valid.sum(), 1.0)
    eye = jnp.eye(second.shape[0])
    second = second + regularisation * jnp.maximum(jnp.mean(jnp.diag(second)), 1e-12) * eye
    u = jnp.linalg.solve(second, keys.T)  # [f, m] C^{-1} k_j
    gram = keys @ u  # [m, m] k_i^T C^{-1} k_j
    count = f_mask.sum().astype(jnp.float32)
    scale = jnp.maximum(jnp.trace(gram) / jnp.maximum(used.sum(), 1.0), 1e-12)
    gram = gram + jnp.diag(key_ridge * scale * used + (1.0 - used))
    update = u @ jnp.linalg.solve(gram, residual)  # [f, d]
    ok = (count > 0) & (r_mask.sum() > 0)
    update = jnp.where(ok, update, 0.0).astype(kernel.dtype)
    metrics = {
        "concept_positions": count,
        "replacement_positions": r_mask.sum(),
        "dropped_positions": count - used.sum(),
        "residual_norm": jnp.sum(jnp.linalg.norm(residual, axis=-1)) / jnp.maximum(used.sum(), 1),
        "update_norm": jnp.linalg.norm(update),
    }
    return _with_kernel(variables, layer, kernel + update), metrics


_METRICS = (
    "concept_positions",
    "replacement_positions",
    "dropped_positions",
    "residual_norm",
    "update_norm",
)


def _check_ids(name: str, ids, vocab_size: int):
    if ids is None:
        return None
    ids = tuple(int(i) for i in ids)
    bad = [i for i in ids if not 0 <= i < vocab_size]
    if bad or not ids:
        raise ValueError(
            f"{name} {bad or ids} are not in the vocabulary (token ids 0..{vocab_size - 1})."
        )
    return ids


@registry.rule(
    "rocr",
    parts=("forget", "retain"),
    paper="Ye, Zhang, Wu, LLM Unlearning Should Be Form-Independent (ROCR), 2025; "
    "Meng et al., ROME, NeurIPS 2022",
    task="language_model",
    needs_labels=False,
    cost="none",
    sweepable=("regularisation", "key_ridge"),
)
def rocr(
    apply: Callable,
    *,
    num_classes: int,
    layer: int | None = None,
    regularisation: float = 1e-4,
    key_ridge: float = 1e-3,
    concept_ids: Sequence[int] | None = None,
    replacement_ids: Sequence[int] | None = None,
    max_positions: int = 256,
    pad_id: int = 0,
) -> UnlearningRule:
    """ROCR: the closed-form rank-one concept redirection of :func:`rocr_edit`, applied on the
    first update from the first forget and retain batches (use a forget batch that holds the
    whole forget set); later updates leave the model unchanged.

    Args:
      apply: the transformer's ``apply``.
      num_classes: the vocabulary size (supplied by the registry).
      layer: the MLP layer edited; ``None`` = ``num_layers // 2`` (ROME edits an early-middle
        layer, 17 of GPT-2 XL's 48; ROCR layers 4-6 of Llama-3-8B's 32; on a two-layer model
        only layer 1 moved the answers, see the module docstring).
      regularisation: ridge on the key second moment ``C``, relative to its mean diagonal.
      key_ridge: ridge on the concept keys' Gram matrix, relative to its mean diagonal.
      concept_ids: the target concept's token ids (default: found from the batches).
      replacement_ids: the replacement concept's token ids (default: found from the batches).
      max_positions: concept positions redirected at most (the Gram matrix is this size).
      pad_id: the padding id.

    Raises:
      ValueError: a negative ``layer``, a concept or replacement id outside the vocabulary, a
        non-positive ``max_positions``, or (at the first update) a layer the model does not have.
    """
    if layer is not None and (isinstance(layer, bool) or not isinstance(layer, int) or layer < 0):
        raise ValueError(f"layer must be a non-negative integer or None; got {layer!r}.")
    try:
        max_positions = check_count(max_positions, "max_positions", 1)
    except ValueError as error:
        raise ValueError(f"rocr: {error} (concept positions redirected at most)") from None
    for name, value in (("regularisation", regularisation), ("key_ridge", key_ridge)):
        if concrete(value) and not float(value) > 0:
            raise ValueError(f"{name} must be positive; got {value!r}.")
    concept_ids = _check_ids("concept_ids", concept_ids, num_classes)
    replacement_ids = _check_ids("replacement_ids", replacement_ids, num_classes)

    def edit(variables, batch, *, key):
        del key
        depth = len(variables["params"].get("layers", {}))
        edited = depth // 2 if layer is None else layer
        if str(edited) not in variables["params"].get("layers", {}):
            raise ValueError(
                f"layer {edited} is not a layer of this model (layers 0..{depth - 1})."
            )
        return rocr_edit(
            apply,
            variables,
            (batch["forget"]["x"], batch["forget"]["y"]),
            (batch["retain"]["x"], batch["retain"]["y"]),
            layer=edited,
            vocab_size=num_classes,
            regularisation=regularisation,
            key_ridge=key_ridge,
            concept_ids=concept_ids,
            replacement_ids=replacement_ids,
            max_positions=max_positions,
            pad_id=pad_id,
        )

    def keep(variables, batch, *, key):
        del batch, key
        zero = jnp.float32(0)
        return variables, {name: zero for name in _METRICS}

    return phases((1, one_shot(edit)), (None, one_shot(keep)))
