"""Mask-guided unlearning: SalUn (weight saliency) and WAGLE (weight attribution).

Both pick a subset of weights from data and run an ordinary unlearning rule on that subset only,
through :func:`~jaxunlearn.core.combinators.saliency_masked`. They differ in how a weight is
scored: SalUn by the magnitude of the forget-loss gradient, WAGLE by a first-order estimate of how
much the weight matters for forgetting once the retain loss is re-optimised.

The inner rule is a rule *object*, built with whatever context it needs (forget fraction,
forgotten classes, input shape, schedule), or a builder ``build(num_steps=...) -> rule`` such as
the one :func:`jaxunlearn.rules.make` makes from a config's ``inner`` name or
``{"name": ..., "hparams": {...}}`` mapping, with the outer rule's network and forget scenario.
The wrapper never looks a rule up by name, so no context is lost.

Each factory's first ``mask_steps`` updates score weights on the forget (and retain) batches
without changing the model; the mask then keeps the top ``mask_fraction`` of weights trainable
for the rest of the run and the inner rule starts. The reference scores the whole forget set once
before unlearning: set ``mask_steps`` to ``ceil(|D_f| / forget_batch_size)`` and add those steps
to the run.

References:
  Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both
  Image Classification and Generation", ICLR 2024 (mask 50%, random labelling, lr 0.013,
  10 epochs).
  Jia et al., "WAGLE: Strategic Weight Attribution for Effective and Modular Unlearning in Large
  Language Models", NeurIPS 2024 (attribution with a ``mu * I`` Hessian, ``mu = 1e-6`` in the
  reference configs; composed with gradient difference, i.e. NegGrad+).
"""

from __future__ import annotations

from collections.abc import Callable

from jaxunlearn.core.combinators import MaskScore, check_mask_fraction, saliency_masked
from jaxunlearn.core.types import UnlearningRule
from jaxunlearn.rules import registry
from jaxunlearn.rules.gradient_ascent import neggrad_plus
from jaxunlearn.rules.masking import forget_saliency, weight_attribution
from jaxunlearn.rules.random_label import random_label

# SalUn's README runs random labelling at lr 0.013.
SALUN_LEARNING_RATE = 0.013

InnerRule = UnlearningRule | Callable[..., UnlearningRule]


def _inner_rule(inner: InnerRule, inner_steps: int | None, owner: str) -> UnlearningRule:
    """The rule run under the mask: ``inner`` itself, or what its builder makes."""
    if isinstance(inner, UnlearningRule):
        return inner
    if isinstance(inner, str) or not callable(inner):
        raise ValueError(
            f"{owner} `inner` must be a rule or a builder `build(num_steps=...) -> rule`; got "
            f"{inner!r} (`rules.make` turns a rule name or {{'name', 'hparams'}} mapping into a "
            "builder)"
        )
    rule = inner(num_steps=inner_steps)
    if not isinstance(rule, UnlearningRule):
        raise ValueError(f"{owner} `inner` builder returned {type(rule).__name__}, not a rule")
    return rule


def _masked_rule(
    score: MaskScore,
    *,
    inner: InnerRule,
    num_steps: int | None,
    mask_fraction: float,
    mask_steps: int,
    owner: str,
) -> UnlearningRule:
    """``inner`` under the top ``mask_fraction`` of ``score`` over the first ``mask_steps``."""
    mask_fraction = check_mask_fraction(mask_fraction)
    if isinstance(mask_steps, bool) or int(mask_steps) != mask_steps or mask_steps < 1:
        raise ValueError(f"{owner} `mask_steps` must be a positive integer; got {mask_steps!r}")
    mask_steps = int(mask_steps)
    if num_steps is not None and num_steps <= mask_steps:
        raise ValueError(
            f"{owner} runs {num_steps} steps, all spent scoring the mask "
            f"(`mask_steps`={mask_steps}); run more steps or score fewer batches"
        )
    inner_steps = None if num_steps is None else num_steps - mask_steps
    rule = _inner_rule(inner, inner_steps, owner)
    return saliency_masked(rule, score=score, fraction=mask_fraction, score_steps=mask_steps)


@registry.rule(
    "salun",
    parts=("forget", "retain"),
    paper="Fan et al., SalUn: Gradient-based Weight Saliency, ICLR 2024",
)
def salun(
    apply: Callable,
    *,
    num_classes: int,
    num_steps: int | None = None,
    inner: InnerRule | None = None,
    mask_fraction: float = 0.5,
    mask_steps: int = 8,
) -> UnlearningRule:
    """SalUn: run ``inner`` on the weights with the most salient forget-loss gradients.

    Args:
      apply: the model's functional ``apply``.
      num_classes: number of classes (for the default inner rule; supplied by the registry).
      num_steps: total updates of the run; the inner rule is built for the
        ``num_steps - mask_steps`` updates left after scoring.
      inner: the rule run under the mask, or a builder called as
        ``inner(num_steps=num_steps - mask_steps)``; ``None`` (default) is SalUn's random
        labelling at lr 0.013 (:func:`~jaxunlearn.rules.random_label.random_label`). A config
        names it (``"ssd"``, ``{"name": "finetune", "hparams": {...}}``) and
        :func:`jaxunlearn.rules.make` builds it with this rule's context; a named rule keeps its
        own defaults.
      mask_fraction: fraction of weights kept trainable, in (0, 1] (SalUn's ``with_0.5``).
      mask_steps: leading updates that only accumulate the saliency over forget batches.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and the inner rule's parts (a
      :func:`~jaxunlearn.core.combinators.phases` of scoring, then the masked inner rule).

    >>> rule = rules.make("salun", net, num_steps=100, forget_fraction=0.01,
    ...                   inner="ssd")  # doctest: +SKIP
    """
    if inner is None:
        inner = random_label(apply, num_classes=num_classes, learning_rate=SALUN_LEARNING_RATE)
    return _masked_rule(
        forget_saliency(apply),
        inner=inner,
        num_steps=num_steps,
        mask_fraction=mask_fraction,
        mask_steps=mask_steps,
        owner="salun",
    )


@registry.rule(
    "weight_attribution_mask",
    parts=("forget", "retain"),
    paper="Jia et al., WAGLE: Strategic Weight Attribution for Unlearning, NeurIPS 2024",
    sweepable=("hessian_scale",),
)
def weight_attribution_mask(
    apply: Callable,
    *,
    num_steps: int | None = None,
    inner: InnerRule | None = None,
    mask_fraction: float = 0.5,
    mask_steps: int = 8,
    hessian_scale: float = 1e-6,
) -> UnlearningRule:
    """WAGLE: run ``inner`` on the weights with the largest forget/retain weight attribution.

    Args:
      apply: the model's functional ``apply``.
      num_steps: total updates of the run; the inner rule is built for the
        ``num_steps - mask_steps`` updates left after scoring.
      inner: the rule run under the mask, or a builder called as
        ``inner(num_steps=num_steps - mask_steps)``; ``None`` (default) is gradient difference
        (:func:`~jaxunlearn.rules.gradient_ascent.neggrad_plus` with its defaults). See
        :func:`salun`.
      mask_fraction: fraction of weights kept trainable, in (0, 1].
      mask_steps: leading updates that only accumulate forget and retain gradients.
      hessian_scale: ``mu`` of the diagonal Hessian approximation ``mu * I``.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and ``batch["retain"]``.
    """
    if inner is None:
        inner = neggrad_plus(apply)
    return _masked_rule(
        weight_attribution(apply, hessian_scale=hessian_scale),
        inner=inner,
        num_steps=num_steps,
        mask_fraction=mask_fraction,
        mask_steps=mask_steps,
        owner="weight_attribution_mask",
    )
