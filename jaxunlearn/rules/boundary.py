"""Boundary unlearning: move the forget set across the decision boundary (shrink or expand).

- :func:`boundary_shrink` relabels every forget example with the class that the *original*
  model assigns to a one-step FGSM perturbation of it (its nearest wrong class, when the attack
  succeeds) and fine-tunes on the forget set with those labels, so the forget examples end up in
  their neighbouring classes' regions.
- :func:`boundary_expand` adds a shadow class: the output layer is widened by one neuron, the
  model is fine-tuned to put the whole forget set in that class, and the neuron is pruned, which
  leaves the forget examples' features in a region that none of the real classes owns.

Both fine-tune on the forget set only (the reference: 10 epochs, SGD with momentum 0.9 and weight
decay 5e-4; the Boundary Unlearning and SalUn scripts use learning rates from 1e-6 to 4e-5 on
CIFAR-10 / SVHN ResNets; the default here is 1e-5). The model being fine-tuned runs in training
mode by default (``train_mode=True``: BatchNorm batch statistics, refreshed running averages), as
the reference's ``model.train()``; the frozen original that boundary shrink attacks runs in
inference mode (``test_model.eval()``).

References:
  Chen et al., "Boundary Unlearning: Rapid Forgetting of Deep Networks via Shifting the Decision
  Space", CVPR 2023 (FGSM bound 0.1; code as re-implemented in OPTML-Group/Unlearn-Saliency
  ``unlearn/boundary_sh.py`` and ``unlearn/boundary_ex.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import losses, optim
from jaxunlearn.core.checks import check_count, concrete
from jaxunlearn.core.rule import BATCH_STATS_KEY, StepCounter, optimizer_step, rule_from_loss
from jaxunlearn.core.types import Array, Batch, PyTree, UnlearningRule, Variables
from jaxunlearn.rules import registry


def fgsm(
    apply: Callable,
    variables: Variables,
    x: Array,
    y: Array,
    *,
    bound: float,
    input_range: tuple[float, float] | None = (0.0, 1.0),
    levels: int | None = 255,
) -> Array:
    """One signed-gradient step that raises the loss: ``x + bound * sign(grad_x CE)``.

    Args:
      apply: the model's functional ``apply``.
      variables: the model attacked.
      x: inputs; y: their labels.
      bound: the step (L-infinity radius).
      input_range: the result is clipped to this range (``None``: no clipping).
      levels: the result is rounded to multiples of ``1 / levels`` (the reference discretises to
        8-bit pixels); ``None`` skips it.

    Returns:
      The perturbed inputs (no gradient flows through them).
    """

    def loss(inputs):
        return losses.cross_entropy(apply(variables, inputs).logits, y)

    x_adv = x + bound * jnp.sign(jax.grad(loss)(x))
    if input_range is not None:
        x_adv = jnp.clip(x_adv, *input_range)
    if levels is not None:
        x_adv = jnp.round(x_adv * levels) / levels
    return jax.lax.stop_gradient(x_adv.astype(x.dtype))


@registry.rule(
    "boundary_shrink",
    parts=("forget",),
    paper="Chen et al., Boundary Unlearning, CVPR 2023",
    sweepable=("bound", "learning_rate"),
)
def boundary_shrink(
    apply: Callable,
    *,
    bound: float = 0.1,
    learning_rate: float = 1e-5,
    input_range: tuple[float, float] | None = (0.0, 1.0),
    levels: int | None = 255,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """Boundary shrink: fine-tune on ``CE(f(x_f), argmax f_0(FGSM_{f_0}(x_f)))``.

    The attack and the new labels come from the frozen original model ``f_0`` (the rule's
    reference). Where the attack fails to change ``f_0``'s prediction the label stays the
    original prediction, as in the reference.

    Args:
      apply: the model's functional ``apply``.
      bound: FGSM step (0.1, "hard coding in the paper").
      learning_rate: step size.
      input_range: clip range of the perturbed inputs (images in [0, 1]); ``None`` for data that
        is not bounded, such as standardised features.
      levels: quantisation of the perturbed inputs (255 for 8-bit images; ``None`` to skip).
      train_mode: run the fine-tuned model's BatchNorm in training mode, as the reference
        (``unlearn/boundary_sh.py``: ``model.train()``); ``False`` keeps its statistics frozen.
      optimizer: an optax optimizer, or settings over the reference SGD (momentum 0.9, weight
        decay 5e-4); see :func:`~jaxunlearn.core.optim.resolve`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]``.

    References:
      Chen et al., "Boundary Unlearning", CVPR 2023.
    """
    if concrete(bound) and not bound > 0:
        raise ValueError(f"boundary_shrink `bound` must be positive; got {bound}")
    opt = optim.resolve(optimizer, learning_rate=learning_rate)

    def loss_fn(variables, batch, *, reference, step, key):
        del step, key
        x, y = batch["forget"]["x"], batch["forget"]["y"]
        x_adv = fgsm(apply, reference, x, y, bound=bound, input_range=input_range, levels=levels)
        targets = jnp.argmax(apply(reference, x_adv).logits, -1).astype(y.dtype)
        out = apply(variables, x, train=train_mode)
        metrics = {
            "forget_acc": losses.accuracy(out.logits, y),
            "relabelled": jnp.mean(targets != y),
        }
        if out.batch_stats is not None:
            metrics[BATCH_STATS_KEY] = out.batch_stats
        return losses.cross_entropy(out.logits, targets), metrics

    return rule_from_loss(loss_fn, opt, keep_reference=True)


class BoundaryExpandState(NamedTuple):
    """State of :func:`boundary_expand`.

    Attributes:
      shadow: the extra output neuron, ``{"kernel": [features], "bias": []}``; it exists only
        here, so the variables the rule returns are always the pruned model.
      opt_state: optimizer state over ``{"params": model params, "shadow": shadow}``.
      step: updates taken so far.
    """

    shadow: PyTree
    opt_state: PyTree
    step: StepCounter


def _feature_dim(params: PyTree, num_classes: int) -> int:
    """The input width of the output layer: the 2-D kernel whose last axis has ``num_classes``."""
    dims = {
        int(x.shape[0])
        for x in jax.tree.leaves(params)
        if x.ndim == 2 and x.shape[-1] == num_classes
    }
    if len(dims) != 1:
        raise ValueError(
            "boundary_expand could not identify the output layer (a single [features, "
            f"num_classes={num_classes}] kernel); found feature sizes {sorted(dims)}. Pass "
            "`feature_dim`."
        )
    return dims.pop()


@registry.rule(
    "boundary_expand",
    parts=("forget",),
    paper="Chen et al., Boundary Unlearning, CVPR 2023",
    needs_labels=False,
    sweepable=("learning_rate",),
)
def boundary_expand(
    apply: Callable,
    *,
    num_classes: int,
    learning_rate: float = 1e-5,
    feature_dim: int | None = None,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """Boundary expand: train the forget set into an extra shadow class, then prune it.

    The functional model has a fixed set of outputs, so the widened output layer is built from
    ``Outputs.features``: the shadow neuron (a weight vector and a bias, initialised like a
    PyTorch ``Linear`` row, ``U(-1/sqrt(d), 1/sqrt(d))``) lives in the rule state and the widened
    logits are ``concat([logits, features @ w + b])``. The whole model and the shadow neuron are
    trained with cross-entropy towards class ``num_classes`` on forget batches. Pruning is
    dropping the neuron: the variables returned by every update are the model without it.

    Args:
      apply: the model's functional ``apply`` (its ``features`` must feed the output layer).
      num_classes: number of real classes (supplied by the registry); the shadow class is
        ``num_classes``.
      learning_rate: step size.
      feature_dim: width of ``Outputs.features``; inferred from the output layer's kernel when
        ``None``.
      train_mode: run BatchNorm in training mode, as the reference
        (``unlearn/boundary_ex.py``: ``model.train()``); ``False`` keeps its statistics frozen.
      optimizer: an optax optimizer, or settings over the reference SGD (momentum 0.9, weight
        decay 5e-4, which also applies to the shadow neuron, as in the reference); see
        :func:`~jaxunlearn.core.optim.resolve`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]``.

    References:
      Chen et al., "Boundary Unlearning", CVPR 2023.
    """
    opt = optim.resolve(optimizer, learning_rate=learning_rate)
    if feature_dim is not None:
        try:
            feature_dim = check_count(feature_dim, "feature_dim", 1)
        except ValueError as error:
            raise ValueError(f"boundary_expand: {error}") from None

    def init(variables: Variables, *, key: Array) -> BoundaryExpandState:
        dim = (
            int(feature_dim)
            if feature_dim is not None
            else _feature_dim(variables["params"], num_classes)
        )
        limit = 1.0 / jnp.sqrt(dim)
        k_w, k_b = jax.random.split(key)
        shadow = {
            "kernel": jax.random.uniform(k_w, (dim,), jnp.float32, -limit, limit),
            "bias": jax.random.uniform(k_b, (), jnp.float32, -limit, limit),
        }
        return BoundaryExpandState(
            shadow,
            opt.init({"params": variables["params"], "shadow": shadow}),
            StepCounter.zero(),
        )

    def update(variables: Variables, state: BoundaryExpandState, batch: Batch, *, key: Array):
        del key
        x, y = batch["forget"]["x"], batch["forget"]["y"]

        def objective(trainable):
            out = apply({**variables, "params": trainable["params"]}, x, train=train_mode)
            shadow = trainable["shadow"]
            extra = out.features @ shadow["kernel"] + shadow["bias"]
            wide = jnp.concatenate([out.logits, extra[:, None].astype(out.logits.dtype)], -1)
            targets = jnp.full(y.shape, num_classes, jnp.int32)
            return losses.cross_entropy(wide, targets), (
                {
                    "forget_acc": losses.accuracy(out.logits, y),
                    "shadow_prob": jnp.mean(jax.nn.softmax(wide, -1)[:, -1]),
                },
                out.batch_stats,
            )

        # The optimizer steps the model's params and the shadow neuron together.
        trainable = {"params": {"params": variables["params"], "shadow": state.shadow}}
        (loss, (metrics, stats)), grads = jax.value_and_grad(objective, has_aux=True)(
            trainable["params"]
        )
        trainable, opt_state = optimizer_step(opt, grads, state.opt_state, trainable)
        new_state = BoundaryExpandState(trainable["params"]["shadow"], opt_state, state.step.next())
        new_variables = {**variables, "params": trainable["params"]["params"]}
        if stats is not None:
            new_variables[BATCH_STATS_KEY] = stats
        return new_variables, new_state, {**metrics, "loss": loss}

    return UnlearningRule(init, update)
