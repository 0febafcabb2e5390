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
without changing the model (in inference mode, as the references' ``model.eval()``); the mask
then keeps the top ``mask_fraction`` of weights trainable for the rest of the run and the inner
rule starts. The references score the whole forget set once before unlearning, so ``mask_steps``
defaults to ``forget_steps_per_epoch`` (``ceil(|D_f| / forget_batch_size)``, one pass over the
forget set) when the rule context gives it, else to 8 batches. The scoring updates count towards
the run: a runner sizes it as ``mask_steps`` plus the inner rule's updates.

References:
  Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both
  Image Classification and Generation", ICLR 2024 (mask 50%, random labelling, lr 0.013,
  10 epochs; ``generate_mask.py`` scores the whole forget loader, ``unlearn/RL.py`` runs the
  sequential epoch on CIFAR-10 / SVHN, of OPTML-Group/Unlearn-Saliency).
  Jia et al., "WAGLE: Strategic Weight Attribution for Effective and Modular Unlearning in Large
  Language Models", NeurIPS 2024 (attribution with a ``mu * I`` Hessian, ``mu = 1e-6`` in the
  reference configs; ``configs/unlearn/Tofu/GradDiff+WAGLE.json`` of OPTML-Group/WAGLE composes
  it with GradDiff, ``-L_forget + 1.0 * L_retain``, on the mask ``tofu_0.95.pt``: 95% of the
  weights selected for unlearning; its WMDP knowledge-removal config uses 40%).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from jaxunlearn.core.checks import check_count
from jaxunlearn.core.combinators import MaskScore, check_mask_fraction, saliency_masked
from jaxunlearn.core.types import UnlearningRule
from jaxunlearn.rules import registry
from jaxunlearn.rules.gradient_ascent import grad_diff
from jaxunlearn.rules.masking import forget_saliency, weight_attribution
from jaxunlearn.rules.random_label import random_label

# SalUn's README runs random labelling at lr 0.013.
SALUN_LEARNING_RATE = 0.013
# WAGLE's GradDiff configuration for forgetting training data (TOFU): 95% of weights selected.
WAGLE_MASK_FRACTION = 0.95
# Scoring batches when the context does not say how many make a pass over the forget set.
FALLBACK_MASK_STEPS = 8

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


def _mask_steps(mask_steps: int | None, forget_steps_per_epoch: int | None) -> int:
    """``mask_steps``, defaulting to one pass over the forget set when the context gives it."""
    if mask_steps is not None:
        return mask_steps
    return FALLBACK_MASK_STEPS if forget_steps_per_epoch is None else int(forget_steps_per_epoch)


def masked_num_steps(
    inner_num_steps: int,
    *,
    forget_steps_per_epoch: int | None = None,
    mask_steps: int | None = None,
) -> int:
    """Updates of a :func:`salun` or :func:`weight_attribution_mask` run: scoring, then the inner
    rule's ``inner_num_steps``.

    A runner passes this as ``num_steps``: e.g. ``masked_num_steps(epochs * steps_per_epoch,
    forget_steps_per_epoch=f)`` for a concatenated inner rule, or
    ``masked_num_steps(random_label_num_steps(epochs, steps_per_epoch, f),
    forget_steps_per_epoch=f)`` for SalUn's ``mode="sequential"``.

    Args:
      inner_num_steps: updates of the inner rule.
      forget_steps_per_epoch: updates in a pass over the forget set (the default scoring).
      mask_steps: the rule's ``mask_steps`` hyperparameter, if set.
    """
    return _mask_steps(mask_steps, forget_steps_per_epoch) + int(inner_num_steps)


def _masked_run_length(owner: str, default_inner: str):
    """The registry's run length of a masked entry: a scoring pass, then the inner rule's run."""

    def run_length(epochs, *, steps_per_epoch, forget_steps_per_epoch, hparams) -> int:
        inner = hparams.get("inner")
        if inner is None:
            inner_name = default_inner
            inner_hparams = {k: hparams[k] for k in ("mode",) if hparams.get(k) is not None}
        elif isinstance(inner, str):
            inner_name, inner_hparams = inner, {}
        elif isinstance(inner, Mapping):
            inner_name, inner_hparams = inner["name"], dict(inner.get("hparams") or {})
        else:  # a rule object: its schedule is the caller's
            return max(1, math.ceil(float(epochs) * steps_per_epoch))
        inner_steps = registry.num_steps(
            inner_name,
            epochs,
            steps_per_epoch=steps_per_epoch,
            forget_steps_per_epoch=forget_steps_per_epoch,
            hparams=inner_hparams,
        )
        return masked_num_steps(
            inner_steps,
            forget_steps_per_epoch=forget_steps_per_epoch,
            mask_steps=registry.default(owner, "mask_steps", hparams),
        )

    return run_length


def _check_default_inner_options(owner: str, inner: InnerRule | None, **options) -> None:
    """Options meant for the default inner rule are rejected next to an explicit one."""
    given = sorted(k for k, v in options.items() if v is not None)
    if inner is not None and given:
        raise ValueError(
            f"{owner} {given} configure the default inner rule; with an explicit `inner`, set "
            "them on that rule (its hparams)"
        )


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
    try:
        mask_steps = check_count(mask_steps, "mask_steps", 1)
    except ValueError as error:
        raise ValueError(f"{owner}: {error}") from None
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
    run_length=_masked_run_length("salun", "random_label"),
)
def salun(
    apply: Callable,
    *,
    num_classes: int,
    num_steps: int | None = None,
    steps_per_epoch: int | None = None,
    forget_steps_per_epoch: int | None = None,
    forget_fraction: float | None = None,
    inner: InnerRule | None = None,
    mask_fraction: float = 0.5,
    mask_steps: int | None = None,
    mode: str | None = None,
    forget_weight: float | None = None,
    train_mode: bool | None = None,
) -> UnlearningRule:
    """SalUn: run ``inner`` on the weights with the most salient forget-loss gradients.

    Args:
      apply: the model's functional ``apply``.
      num_classes: number of classes (for the default inner rule; supplied by the registry).
      num_steps: total updates of the run; the inner rule is built for the
        ``num_steps - mask_steps`` updates left after scoring.
      steps_per_epoch, forget_steps_per_epoch, forget_fraction: the run's passes over the
        retain and forget sets and the forget set's share (supplied by the registry) for the
        default inner rule and the default ``mask_steps``.
      inner: the rule run under the mask, or a builder called as
        ``inner(num_steps=num_steps - mask_steps)``; ``None`` (default) is SalUn's random
        labelling at lr 0.013 (:func:`~jaxunlearn.rules.random_label.random_label`). A config
        names it (``"ssd"``, ``{"name": "finetune", "hparams": {...}}``) and
        :func:`jaxunlearn.rules.make` builds it with this rule's context; a named rule keeps its
        own defaults.
      mask_fraction: fraction of weights kept trainable, in (0, 1] (SalUn's ``with_0.5``).
      mask_steps: leading updates that only accumulate the saliency over forget batches;
        ``None`` = ``forget_steps_per_epoch`` (the whole forget set, as the reference), or 8
        when the context does not give it.
      mode: the default inner rule's ``mode``: ``"concatenated"`` (``None``) or
        ``"sequential"``, the reference's CIFAR-10 epoch (a pass over the forget set with random
        labels, then a pass over the retain set; ``num_steps - mask_steps`` must then be
        :func:`~jaxunlearn.rules.random_label.random_label_num_steps` of whole epochs).
      forget_weight: the default inner rule's ``forget_weight`` (concatenated mode; ``None`` =
        its default 0.5).
      train_mode: the default inner rule's ``train_mode`` (``None`` = its default, ``True``,
        the reference's ``model.train()``).

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and the inner rule's parts (a
      :func:`~jaxunlearn.core.combinators.phases` of scoring, then the masked inner rule).

    >>> rule = rules.make("salun", net, num_steps=100, forget_fraction=0.01,
    ...                   inner="ssd")  # doctest: +SKIP
    """
    _check_default_inner_options(
        "salun", inner, mode=mode, forget_weight=forget_weight, train_mode=train_mode
    )
    if inner is None:
        options = {"mode": mode, "forget_weight": forget_weight, "train_mode": train_mode}

        def inner(*, num_steps):
            return random_label(
                apply,
                num_classes=num_classes,
                steps_per_epoch=steps_per_epoch,
                forget_steps_per_epoch=forget_steps_per_epoch,
                num_steps=num_steps,
                forget_fraction=forget_fraction,
                learning_rate=SALUN_LEARNING_RATE,
                **{k: v for k, v in options.items() if v is not None},
            )

    return _masked_rule(
        forget_saliency(apply),
        inner=inner,
        num_steps=num_steps,
        mask_fraction=mask_fraction,
        mask_steps=_mask_steps(mask_steps, forget_steps_per_epoch),
        owner="salun",
    )


@registry.rule(
    "weight_attribution_mask",
    parts=("forget", "retain"),
    paper="Jia et al., WAGLE: Strategic Weight Attribution for Unlearning, NeurIPS 2024",
    task="any",
    sweepable=("hessian_scale",),
    run_length=_masked_run_length("weight_attribution_mask", "grad_diff"),
)
def weight_attribution_mask(
    apply: Callable,
    *,
    num_steps: int | None = None,
    forget_steps_per_epoch: int | None = None,
    inner: InnerRule | None = None,
    mask_fraction: float = WAGLE_MASK_FRACTION,
    mask_steps: int | None = None,
    hessian_scale: float = 1e-6,
    train_mode: bool | None = None,
) -> UnlearningRule:
    """WAGLE: run ``inner`` on the weights with the largest forget/retain weight attribution.

    Args:
      apply: the model's functional ``apply``.
      num_steps: total updates of the run; the inner rule is built for the
        ``num_steps - mask_steps`` updates left after scoring.
      forget_steps_per_epoch: updates in a pass over the forget set (supplied by the registry),
        the default ``mask_steps``.
      inner: the rule run under the mask, or a builder called as
        ``inner(num_steps=num_steps - mask_steps)``; ``None`` (default) is GradDiff as in
        WAGLE's configs, ``-L_forget + L_retain`` with equal weights
        (:func:`~jaxunlearn.rules.gradient_ascent.grad_diff` with its defaults). See
        :func:`salun`.
      mask_fraction: fraction of weights kept trainable, in (0, 1]; 0.95, WAGLE's GradDiff
        configuration for forgetting training data (TOFU; 0.4 for WMDP knowledge removal).
        This library's default was 0.5 before.
      mask_steps: leading updates that only accumulate forget and retain gradients; ``None`` =
        ``forget_steps_per_epoch`` (a pass over the forget set, as the reference), or 8 when the
        context does not give it.
      hessian_scale: ``mu`` of the diagonal Hessian approximation ``mu * I``.
      train_mode: the default inner rule's ``train_mode`` (``None`` = its default, ``True``).

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and ``batch["retain"]``.
    """
    _check_default_inner_options("weight_attribution_mask", inner, train_mode=train_mode)
    if inner is None:
        inner = grad_diff(apply, **({} if train_mode is None else {"train_mode": train_mode}))
    return _masked_rule(
        weight_attribution(apply, hessian_scale=hessian_scale),
        inner=inner,
        num_steps=num_steps,
        mask_fraction=mask_fraction,
        mask_steps=_mask_steps(mask_steps, forget_steps_per_epoch),
        owner="weight_attribution_mask",
    )
