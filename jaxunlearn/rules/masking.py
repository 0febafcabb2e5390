"""Weight scores for mask-guided unlearning: SalUn's saliency and WAGLE's weight attribution.

Mask-guided unlearning (SalUn's weight saliency, WAGLE's weight attribution, layer selection) lets
an unlearning rule change only a chosen subset of the weights. This module says how weights are
*scored* from data, as :class:`~jaxunlearn.core.combinators.MaskScore` triples; the rule algebra
applies the mask:

- :func:`~jaxunlearn.core.combinators.saliency_masked` scores the weights on the first
  ``score_steps`` batches of the run (the model is left untouched meanwhile), keeps the global
  top ``fraction`` trainable and runs any inner rule *object* under that mask;
- :func:`~jaxunlearn.core.combinators.masked` runs a rule under a fixed mask, e.g. one computed
  offline by :func:`mask_from_batches`.

Both hold masked-out weights bit-exactly at their starting values whatever the inner optimizer
does: masking the gradient is not enough, since weight decay, momentum and Adam's moments still
move them (the bug of Unlearn-Saliency issue #32, fixed in PR #33).

A mask is ``True`` (1) where a weight may change and ``False`` (0) where it is held, as in
SalUn's ``with_{fraction}.pt`` files: a fraction of 0.5 keeps the 50% most salient weights
trainable.

>>> rule = saliency_masked(random_label(apply, num_classes=10), score=forget_saliency(apply),
...                        fraction=0.5, score_steps=8)  # doctest: +SKIP

References:
  Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both
  Image Classification and Generation", ICLR 2024 (saliency mask, top-k of the forget gradient).
  Jia et al., "WAGLE: Strategic Weight Attribution for Effective and Modular Unlearning in Large
  Language Models", NeurIPS 2024 (weight-attribution mask).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxunlearn.core.checks import concrete
from jaxunlearn.core.combinators import MaskScore, top_fraction_mask
from jaxunlearn.core.types import Array, Batch, PyTree, Variables
from jaxunlearn.rules.common import part_loss


def _part_grad(apply: Callable, variables: Variables, batch: Batch, part: str) -> PyTree:
    """Gradient of the supervised loss on ``batch[part]`` with respect to the params."""

    def objective(params):
        return part_loss(apply, {**variables, "params": params}, batch, part)[0]

    return jax.grad(objective)(variables["params"])


def _zeros_like(tree: PyTree) -> PyTree:
    return jax.tree.map(jnp.zeros_like, tree)


def forget_saliency(apply: Callable) -> MaskScore:
    """SalUn's weight saliency: ``|sum over forget batches of grad CE(forget)|``.

    SalUn differentiates the forgetting loss ``-CE``; the magnitude makes the sign irrelevant.

    Args:
      apply: the model's functional ``apply`` (run in inference mode).

    Returns:
      A :class:`MaskScore` reading ``batch["forget"]``.

    References:
      Fan et al., ICLR 2024, Eq. (5) and ``generate_mask.py`` of OPTML-Group/Unlearn-Saliency.
    """

    def accumulate(variables, batch, *, key):
        del key
        return _part_grad(apply, variables, batch, "forget")

    def finalize(total, params):
        del params
        return jax.tree.map(jnp.abs, total)

    return MaskScore(_zeros_like, accumulate, finalize)


def weight_attribution(apply: Callable, *, hessian_scale: float = 1e-6) -> MaskScore:
    """WAGLE's weight attribution: ``|(theta - g_retain / mu) * g_forget|``.

    WAGLE scores weight ``i`` by the first-order effect on the forget objective of the retain-
    optimal adjustment when ``i`` is switched off: with the retain Hessian approximated by
    ``mu * I``, the implicit gradient gives ``S_i = theta_i g_f,i - (1/mu) g_r,i g_f,i``. Gradients
    are summed over batches, as in the reference.

    Args:
      apply: the model's functional ``apply`` (run in inference mode).
      hessian_scale: ``mu``, the diagonal Hessian approximation (the reference configs' ``mu``).

    Returns:
      A :class:`MaskScore` reading ``batch["forget"]`` and ``batch["retain"]``.

    References:
      Jia et al., NeurIPS 2024, Eq. (8); ``snip_advanced`` in ``src/unlearn/generate_mask.py`` of
      OPTML-Group/WAGLE.
    """
    if concrete(hessian_scale) and not hessian_scale > 0:
        raise ValueError(f"`hessian_scale` must be positive; got {hessian_scale}")

    def init(params):
        return {"forget": _zeros_like(params), "retain": _zeros_like(params)}

    def accumulate(variables, batch, *, key):
        del key
        return {
            "forget": _part_grad(apply, variables, batch, "forget"),
            "retain": _part_grad(apply, variables, batch, "retain"),
        }

    def finalize(total, params):
        return jax.tree.map(
            lambda p, gf, gr: jnp.abs((p - gr / hessian_scale) * gf),
            params,
            total["forget"],
            total["retain"],
        )

    return MaskScore(init, accumulate, finalize)


def mask_from_batches(
    score: MaskScore,
    variables: Variables,
    batches: Batch,
    *,
    fraction: float,
    key: Array | None = None,
) -> PyTree:
    """Computes a mask offline, from batches stacked along a leading axis.

    Args:
      score: how to score weights (e.g. :func:`forget_saliency`).
      variables: the model to score.
      batches: a batch pytree whose leaves carry a leading ``[num_batches]`` axis.
      fraction: the fraction of weights kept trainable, in (0, 1].
      key: PRNG key passed to ``score.accumulate`` (folded with the batch index).

    Returns:
      The boolean mask, to pass as ``masked(rule, mask)``.
    """
    key = jax.random.key(0) if key is None else key
    num = jax.tree.leaves(batches)[0].shape[0]

    def body(total, i):
        batch = jax.tree.map(lambda x: x[i], batches)
        inc = score.accumulate(variables, batch, key=jax.random.fold_in(key, i))
        return jax.tree.map(jnp.add, total, inc), None

    total, _ = jax.lax.scan(body, score.init(variables["params"]), jnp.arange(num))
    return top_fraction_mask(score.finalize(total, variables["params"]), fraction)
