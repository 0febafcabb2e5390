"""Unlearning in self-supervised encoders: the SSL loss turned around, and label-free rules.

An encoder trained by a representation rule (:mod:`jaxunlearn.repr`) has learned from every
training example, labels or not; a deletion request (a class, a random subset) asks for an encoder
like one trained without those examples. Two ways, neither reading a label:

* :func:`self_supervised_ascent` turns the encoder's *own* training loss around: each update
  ascends the rule's loss on fresh views of the forget batch and descends it on views of the
  retain batch, ``d = w_r grad L(retain) - w_f grad L(forget)`` through one optimizer (NegGrad+'s
  combination, Kurmanji et al. 2023, with the self-supervised loss in place of the cross-entropy).
  It is one mechanism over *any* rule built from a loss: it reads the loss out of the rule object
  (:func:`ssl_objective`: the ``GradFn`` of a rule built by ``rule_from_loss`` / ``rule_from_grads``
  -- SimCLR, VICReg, Barlow Twins, SimSiam, rotation -- or the loss of an EMA-target rule built by
  ``repr.common.rule_with_target`` -- BYOL, DINO), never one variant per method. A target rule's
  target network (and DINO's centre) is its state at ``init`` on the encoder being unlearned, held
  fixed: the encoder as it was is the teacher the retain views keep agreeing with while the forget
  views are pushed away from it. ``forget_bound`` stops the ascent on a batch whose forget loss
  already exceeds it (an unbounded loss -- VICReg's invariance, rotation's cross-entropy -- would
  otherwise run away).
* The library's label-free unlearning rules (``label_agnostic_forgetting``, ``bad_teacher``, ...)
  run on the encoder through :func:`projection_view`: the encoder with its projection head as the
  ``logits`` a rule reads, the space its self-supervised loss lives in (an SSL encoder's own
  classifier head is untrained). :func:`label_free_rule` builds one with the settings an encoder
  needs (LAF treats the projection head as the head it leaves alone).

The representation audits against an encoder retrained without the forget set (CKA, k-NN on the
forget set, effective rank) are :mod:`jaxunlearn.scenarios.ssl`'s.

References:
  Kurmanji, Triantafillou, Hayes, Triantafillou, "Towards Unbounded Machine Unlearning"
  (NeurIPS 2023) (NegGrad+: descent on retain, ascent on forget). Kim, Cha, Kim, "Are We Truly
  Forgetting?", arXiv 2503.06991 (2025) (unlearning judged in the representation). Shen et al.,
  "Label-Agnostic Forgetting", ICLR 2024; Chundawat et al., "Can Bad Teaching Induce
  Forgetting?", AAAI 2023 (the label-free rules). ``shared/reference/
  unlearnable_and_representation.md`` (Part B) and ``classifier_unlearning.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import optim
from jaxunlearn.core.rule import BATCH_STATS_KEY, grad_parts, rule_from_grads
from jaxunlearn.core.types import Array, Network, UnlearningRule, Variables
from jaxunlearn.repr.common import PART, check_nonnegative, check_positive
from jaxunlearn.rules import registry as rules_registry

ASCENT_ADAM = {"name": "adam", "weight_decay": 0.0}
FORGET_KEY = 0x4647  # fold-in of the update key that draws the forget views

# What an encoder with a projection head needs of a label-free rule beyond its defaults: LAF's
# "head" (the subtree it leaves alone) is the projection head, the encoder's top-level params
# being {"backbone", "projector"[, "predictor"]}.
ENCODER_SETTINGS = {"label_agnostic_forgetting": {"head_key": "projector"}}


class SSLObjective(NamedTuple):
    """A representation rule's loss, read out of the rule object.

    Attributes:
      init: ``(variables, *, key) -> state``: the rule's state the loss reads (its target
        network, centre, step).
      grads: ``(variables, state, part, *, key) -> (grads, metrics)``: the gradient of the rule's
        loss on one batch part ``{"x", ...}`` (views drawn from ``key``) with respect to
        ``variables["params"]``; ``metrics`` hold ``"loss"`` and, for a rule run in training
        mode, the refreshed ``"batch_stats"``.
    """

    init: Callable
    grads: Callable


def ssl_objective(rule: UnlearningRule, *, name: str = "the rule") -> SSLObjective:
    """The loss of a representation rule as an :class:`SSLObjective`.

    Args:
      rule: a rule built by ``rule_from_loss`` / ``rule_from_grads`` (its ``GradFn``) or by
        ``repr.common.rule_with_target`` (its target loss), e.g. ``repr.make("byol", net)``, or
        one whose ``update.ssl_grads`` is an :class:`SSLObjective` ``grads`` (``swav``,
        ``deepcluster``).
      name: the rule's name, for the error message.

    Raises:
      ValueError: for a rule that exposes neither (a phased rule such as LwF with a warm-up, a
        hand-written update): there is no loss to turn around.
    """
    # A rule with trained state of its own (SwAV's prototypes, DeeperCluster's classifier and
    # bank) gives the gradient of its loss for the network's params itself.
    own = getattr(rule.update, "ssl_grads", None)
    if own is not None:
        return SSLObjective(rule.init, own)
    parts = grad_parts(rule)
    if parts is not None:

        def grads(variables: Variables, state, part, *, key: Array):
            return parts.grad_fn(
                variables,
                {PART: part},
                reference=state.reference,
                step=state.step.count,
                key=key,
            )

        return SSLObjective(rule.init, grads)
    loss_fn = getattr(rule.update, "target_loss", None)
    if loss_fn is not None:

        def target_grads(variables: Variables, state, part, *, key: Array):
            def objective(params):
                loss, (metrics, _) = loss_fn(
                    {**variables, "params": params},
                    {PART: part},
                    target=jax.lax.stop_gradient(state.target),
                    extra=state.extra,
                    step=state.step.count,
                    key=key,
                )
                return loss, metrics

            (loss, metrics), g = jax.value_and_grad(objective, has_aux=True)(variables["params"])
            return g, {**metrics, "loss": loss}

        return SSLObjective(rule.init, target_grads)
    raise ValueError(
        f"{name} exposes no loss to turn around: self_supervised_ascent needs a rule built by "
        "rule_from_loss / rule_from_grads or repr.common.rule_with_target"
    )


def self_supervised_ascent(
    rule: UnlearningRule,
    *,
    forget_weight: float = 1.0,
    retain_weight: float = 1.0,
    forget_bound: float | None = None,
    learning_rate: float = 1e-4,
    optimizer: optax.GradientTransformation | Mapping | None = None,
    name: str = "the rule",
) -> UnlearningRule:
    """Unlearning by the encoder's own self-supervised loss: ascent on forget, descent on retain.

    Each update draws fresh views of ``batch["forget"]`` and ``batch["retain"]`` (keys folded
    apart), computes the rule's loss gradients ``g_f`` and ``g_r`` and takes one optimizer step
    along ``retain_weight * g_r - forget_weight * g_f`` (a descent direction of
    ``retain_weight * L_r - forget_weight * L_f``). BatchNorm statistics refreshed by the retain
    pass are kept; the forget pass's are dropped. Labels are never read.

    Args:
      rule: the representation rule whose loss is turned around, built for the encoder
        (``repr.make(name, encoder, ...)``; see :func:`ssl_objective`).
      forget_weight: weight ``w_f`` of the ascent on the forget views, >= 0.
      retain_weight: weight ``w_r`` of the descent on the retain views, >= 0.
      forget_bound: stop the ascent on a batch whose forget loss exceeds this (> 0), or
        ``None`` for an unbounded ascent.
      learning_rate: step size (Adam, no weight decay, by default).
      optimizer: an optax optimizer or settings over Adam (:func:`jaxunlearn.core.optim.resolve`).
      name: the rule's name, for error messages.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and ``batch["retain"]``; metrics
      ``loss`` (``w_r L_r - w_f L_f``), ``forget_loss``, ``retain_loss`` and ``ascending``
      (1 where the ascent ran). Its state's ``reference`` is the wrapped rule's state at
      ``init``, held fixed.

    >>> net = repr.encoder("simclr", backbone)  # doctest: +SKIP
    >>> rule = repr.make("simclr", net)  # doctest: +SKIP
    >>> unlearn = self_supervised_ascent(rule, forget_weight=0.5)  # doctest: +SKIP

    References:
      Kurmanji et al., NeurIPS 2023 (NegGrad+); the module docstring.
    """
    check_nonnegative(forget_weight, "forget_weight")
    check_nonnegative(retain_weight, "retain_weight")
    if forget_bound is not None:
        check_positive(forget_bound, "forget_bound")
    objective = ssl_objective(rule, name=name)
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=ASCENT_ADAM)

    def grad_fn(variables: Variables, batch, *, reference, step, key: Array):
        del step
        for part in ("forget", "retain"):
            if part not in batch:
                raise ValueError(f"self_supervised_ascent reads batch[{part!r}]; it is missing")
        g_f, m_f = objective.grads(
            variables, reference, batch["forget"], key=jax.random.fold_in(key, FORGET_KEY)
        )
        g_r, m_r = objective.grads(variables, reference, batch["retain"], key=key)
        forget_loss, retain_loss = m_f["loss"], m_r["loss"]
        ascending = jnp.ones((), jnp.float32)
        if forget_bound is not None:
            ascending = (forget_loss < forget_bound).astype(jnp.float32)
        w_f = forget_weight * ascending
        direction = jax.tree.map(lambda r, f: retain_weight * r - w_f * f, g_r, g_f)
        metrics = {
            "loss": retain_weight * retain_loss - forget_weight * forget_loss,
            "forget_loss": forget_loss,
            "retain_loss": retain_loss,
            "ascending": ascending,
        }
        if BATCH_STATS_KEY in m_r:
            metrics[BATCH_STATS_KEY] = m_r[BATCH_STATS_KEY]
        return direction, metrics

    inner = rule_from_grads(grad_fn, opt, keep_reference=False)

    def init(variables: Variables, *, key: Array | None = None):
        key = jax.random.key(0) if key is None else key
        return inner.init(variables, key=key)._replace(reference=objective.init(variables, key=key))

    return UnlearningRule(init, inner.update)


def projection_view(network: Network) -> Network:
    """``network`` (an encoder with a projection head) whose ``logits`` are its projection.

    Unlearning rules read ``Outputs.logits``; an SSL encoder's classifier head is untrained, its
    projection is where its loss reads. ``features`` (the backbone representation every audit
    reads), ``projection`` and the variables are unchanged.

    Raises:
      ValueError: (at the first ``apply``) for a network without a projection head.
    """

    def apply(variables: Variables, x: Array, *, train: bool = False):
        out = network.apply(variables, x, train=train)
        if out.projection is None:
            raise ValueError(
                f"projection_view: network {network.name!r} has no projection head (build it "
                "with repr.encoder)"
            )
        return out._replace(logits=out.projection)

    # Its outputs are the projection's, so is its output count (rules size one-hot targets and
    # Fisher sums by it); found abstractly, no computation.
    variables = jax.eval_shape(network.init, jax.random.key(0))
    x = jax.ShapeDtypeStruct((1, *network.input_shape), jnp.float32)
    projection = jax.eval_shape(network.apply, variables, x).projection
    outputs = network.num_outputs if projection is None else int(projection.shape[-1])
    return network._replace(apply=apply, name=f"{network.name}:projection", num_outputs=outputs)


def label_free_rule(
    name: str, encoder: Network, *, num_steps: int, **settings
) -> tuple[Network, UnlearningRule]:
    """A registered unlearning rule that reads no labels, built for an SSL encoder.

    Args:
      name: an unlearning rule's registry name (``label_agnostic_forgetting``, ``bad_teacher``).
      encoder: the encoder (``repr.encoder``); the rule sees it through :func:`projection_view`.
      num_steps: the run's updates.
      **settings: the rule's hyperparameters and context (``forget_fraction``, ...), over
        :data:`ENCODER_SETTINGS`.

    Returns:
      ``(network the rule runs on, rule)``: the network's variables are the encoder's.

    Raises:
      ValueError: for an unknown rule, or one that reads labels (``needs_labels``, or
        ``retain_labels`` for a rule that reads the retain set).
    """
    info = rules_registry.get(name)
    if info.needs_labels or info.reads_retain_labels:
        which = "forget" if info.needs_labels else "retain-set"
        raise ValueError(
            f"unlearning rule {name!r} reads {which} labels; a self-supervised encoder has none "
            f"(label-free rules: {label_free_names()})"
        )
    view = projection_view(encoder)
    hparams = {**ENCODER_SETTINGS.get(name, {}), **settings}
    return view, rules_registry.make(name, view, num_steps=num_steps, **hparams)


def label_free_names() -> list[str]:
    """Registered unlearning rules that read no labels at all (neither the forget set's nor the
    retain set's: ``RuleInfo.retain_labels``) and fit any classifier."""
    return [
        n
        for n in rules_registry.names()
        if not (info := rules_registry.get(n)).needs_labels
        and not info.reads_retain_labels
        and info.task in ("any", "classification")
    ]


def withheld_labels(y) -> Array:
    """All-zero labels shaped like ``y``: what a self-supervised unlearning run is given, so
    that a rule which read labels would see none of the real ones."""
    return jnp.zeros(jnp.shape(y), jnp.int32)


__all__ = [
    "ENCODER_SETTINGS",
    "SSLObjective",
    "label_free_names",
    "label_free_rule",
    "projection_view",
    "self_supervised_ascent",
    "ssl_objective",
    "withheld_labels",
]
