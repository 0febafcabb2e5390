"""Mask-guided unlearning: SalUn (weight saliency) and WAGLE (weight attribution).

Both pick a subset of weights from data and run an ordinary unlearning rule on that subset only.
They share one mechanism, :func:`~jaxunlearn.rules.masking.hold_masked`, and differ in how a
weight is scored: SalUn by the magnitude of the forget-loss gradient, WAGLE by a first-order
estimate of how much the weight matters for forgetting once the retain loss is re-optimised.
The inner rule is any registered rule, chosen by name.

Each factory's first ``mask_steps`` updates score weights on the forget (and retain) batches
without changing the model; the mask then keeps the top ``mask_fraction`` of weights trainable
for the rest of the run. The reference scores the whole forget set once before unlearning: set
``mask_steps`` to ``ceil(|D_f| / forget_batch_size)`` and add those steps to the run.

References:
  Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both
  Image Classification and Generation", ICLR 2024 (mask 50%, random labelling, lr 0.013,
  10 epochs).
  Jia et al., "WAGLE: Strategic Weight Attribution for Effective and Modular Unlearning in Large
  Language Models", NeurIPS 2024 (attribution with a ``mu * I`` Hessian, ``mu = 1e-6`` in the
  reference configs; composed with gradient difference, i.e. NegGrad+).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from jaxunlearn.core.types import Network, UnlearningRule
from jaxunlearn.rules import registry
from jaxunlearn.rules.masking import (
    MaskScore,
    check_mask_fraction,
    forget_saliency,
    hold_masked,
    weight_attribution,
)

# SalUn's README runs random labelling at lr 0.013; other inner rules keep their own defaults.
_SALUN_INNER_DEFAULTS = {"random_label": {"learning_rate": 0.013}}


def _masked_rule(
    apply: Callable,
    score: MaskScore,
    *,
    num_classes: int,
    init_fn: Callable | None,
    num_steps: int | None,
    steps_per_epoch: int | None,
    inner: str,
    inner_hparams: Mapping | None,
    inner_defaults: Mapping,
    mask_fraction: float,
    mask_steps: int,
    owner: str,
) -> UnlearningRule:
    """Builds the registered rule ``inner`` and wraps it in a scored mask."""
    mask_fraction = check_mask_fraction(mask_fraction)
    if int(mask_steps) < 1:
        raise ValueError(f"{owner} `mask_steps` must be at least 1; got {mask_steps}")
    if num_steps is not None and num_steps <= mask_steps:
        raise ValueError(
            f"{owner} runs {num_steps} steps, all spent scoring the mask "
            f"(`mask_steps`={mask_steps}); run more steps or score fewer batches"
        )
    registry.get(inner)  # unknown names list the valid ones
    hparams = {**inner_defaults.get(inner, {}), **dict(inner_hparams or {})}
    network = Network(init=init_fn, apply=apply, name=f"{owner}/{inner}", num_outputs=num_classes)
    inner_steps = None if num_steps is None else num_steps - mask_steps
    inner_rule = registry.make(
        inner, network, num_steps=inner_steps, steps_per_epoch=steps_per_epoch, **hparams
    )
    return hold_masked(
        inner_rule, score=score, mask_fraction=mask_fraction, mask_steps=int(mask_steps)
    )


@registry.rule(
    'salun',
    parts=('forget', 'retain'),
    paper='Fan et al., SalUn: Gradient-based Weight Saliency, ICLR 2024',
)
def salun(
    apply: Callable,
    *,
    num_classes: int,
    init_fn: Callable | None = None,
    num_steps: int | None = None,
    steps_per_epoch: int | None = None,
    inner: str = "random_label",
    inner_hparams: Mapping | None = None,
    mask_fraction: float = 0.5,
    mask_steps: int = 8,
) -> UnlearningRule:
    """SalUn: run ``inner`` on the weights with the most salient forget-loss gradients.

    Args:
      apply: the model's functional ``apply``.
      num_classes: number of classes (passed on to the inner rule).
      init_fn: fresh-model initialiser, for inner rules that need one.
      num_steps: total updates of the run (the inner rule gets ``num_steps - mask_steps``).
      steps_per_epoch: updates per epoch, for inner rules with epoch schedules.
      inner: registry name of the rule run under the mask (SalUn: ``"random_label"``).
      inner_hparams: hyperparameters of the inner rule; with the default inner rule, the
        learning rate defaults to SalUn's 0.013.
      mask_fraction: fraction of weights kept trainable, in (0, 1] (SalUn's ``with_0.5``).
      mask_steps: leading updates that only accumulate the saliency over forget batches.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and the inner rule's parts.
    """
    return _masked_rule(
        apply,
        forget_saliency(apply),
        num_classes=num_classes,
        init_fn=init_fn,
        num_steps=num_steps,
        steps_per_epoch=steps_per_epoch,
        inner=inner,
        inner_hparams=inner_hparams,
        inner_defaults=_SALUN_INNER_DEFAULTS,
        mask_fraction=mask_fraction,
        mask_steps=mask_steps,
        owner="salun",
    )


@registry.rule(
    'weight_attribution_mask',
    parts=('forget', 'retain'),
    paper='Jia et al., WAGLE: Strategic Weight Attribution for Unlearning, NeurIPS 2024',
    sweepable=('hessian_scale',),
)
def weight_attribution_mask(
    apply: Callable,
    *,
    num_classes: int,
    init_fn: Callable | None = None,
    num_steps: int | None = None,
    steps_per_epoch: int | None = None,
    inner: str = "neggrad_plus",
    inner_hparams: Mapping | None = None,
    mask_fraction: float = 0.5,
    mask_steps: int = 8,
    hessian_scale: float = 1e-6,
) -> UnlearningRule:
    """WAGLE: run ``inner`` on the weights with the largest forget/retain weight attribution.

    Args:
      apply: the model's functional ``apply``.
      num_classes: number of classes (passed on to the inner rule).
      init_fn: fresh-model initialiser, for inner rules that need one.
      num_steps: total updates of the run (the inner rule gets ``num_steps - mask_steps``).
      steps_per_epoch: updates per epoch, for inner rules with epoch schedules.
      inner: registry name of the rule run under the mask (gradient difference by default).
      inner_hparams: hyperparameters of the inner rule.
      mask_fraction: fraction of weights kept trainable, in (0, 1].
      mask_steps: leading updates that only accumulate forget and retain gradients.
      hessian_scale: ``mu`` of the diagonal Hessian approximation ``mu * I``.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and ``batch["retain"]``.
    """
    return _masked_rule(
        apply,
        weight_attribution(apply, hessian_scale=hessian_scale),
        num_classes=num_classes,
        init_fn=init_fn,
        num_steps=num_steps,
        steps_per_epoch=steps_per_epoch,
        inner=inner,
        inner_hparams=inner_hparams,
        inner_defaults={},
        mask_fraction=mask_fraction,
        mask_steps=mask_steps,
        owner="weight_attribution_mask",
    )
