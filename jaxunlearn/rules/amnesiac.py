"""Amnesiac unlearning: relabel the forget set with wrong labels and keep training on everything.

Every forget example gets a random label other than its own, drawn *once* for the whole run, and
the model is trained on the union of the relabelled forget set and the retain set: the forget
examples' true labels are overwritten while the retain data keeps the rest of the function in
place.

This is the "amnesiac" baseline as run in the Selective Synaptic Dampening code (3 epochs over
``D_f ∪ D_r`` with Adam at lr 1e-4, shuffled batches of 128, the model in ``train()`` mode), not
the gradient-bookkeeping variant of Graves et al. that undoes stored updates. The reference builds
the relabelled data set once (``random.choice`` of a wrong label per forget example) before its
epochs, so an example keeps its wrong label whenever it is revisited. The rule sees batches, not
a data set, so it derives each example's wrong label from a key of the example
(:func:`example_keys`): its row in the training set, which every batch part drawn by
:func:`~jaxunlearn.train.fit` carries as ``batch["forget"]["index"]``, folded into a label key
drawn at ``init``. The same example therefore gets the same label at every update (an augmented
view of it included), two examples with equal inputs get independent labels as in the
reference, and another seed draws other labels. ``fixed_labels=False`` redraws the labels at
every update instead (this library's behaviour before it followed the reference).

Each update concatenates a forget batch with a retain batch, so the forget share of an update is
``forget_batch_size / (forget_batch_size + retain_batch_size)``; choose the batch sizes to match
the forget set's share of the data (e.g. 16 + 112 = 128 for a 10% forget set) to reproduce
shuffled batches of the union.

References:
  Graves, Nagisetty and Ganesh, "Amnesiac Machine Learning", AAAI 2021.
  Foster et al., "Fast Machine Unlearning Without Retraining Through Selective Synaptic
  Dampening", AAAI 2024 (code: if-loops/selective-synaptic-dampening
  ``forget_random_strategies.py::amnesiac``, ``unlearn.py::fit_one_unlearning_cycle``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import losses, optim
from jaxunlearn.core.checks import check_count
from jaxunlearn.core.rule import BATCH_STATS_KEY, LossRuleState, rule_from_loss
from jaxunlearn.core.types import Array, Batch, UnlearningRule, Variables
from jaxunlearn.rules import registry

# ------------------------------------------------------------------------------ example keys


def example_ids(part: Mapping[str, Array]) -> Array:
    """A uint32 identity per example of a batch part: its row in the data set,
    ``part["index"]`` (which every batch part drawn by :func:`~jaxunlearn.train.fit` carries).

    Raises:
      ValueError: the part has no ``"index"`` (a hand-built batch must give each example's row).
    """
    if "index" not in part:
        raise ValueError(
            "A label drawn once per example needs the examples' rows in the data set: the batch "
            f"part has keys {sorted(part)} but no 'index' (batches drawn by `fit` carry it; give "
            "a hand-built batch one)"
        )
    return jnp.asarray(part["index"]).astype(jnp.uint32)


def example_keys(key: Array, part: Mapping[str, Array]) -> Array:
    """One PRNG key per example of ``part``, a pure function of ``key`` and the example.

    Random choices made from these keys are "drawn once per example": an example revisited at a
    later update gets the same draw.
    """
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(example_ids(part))


def fixed_wrong_labels(key: Array, part: Mapping[str, Array], num_classes: int) -> Array:
    """A uniformly random label other than ``part["y"]`` per example, fixed per example."""
    y = part["y"]
    shift = jax.vmap(lambda k: jax.random.randint(k, (), 1, num_classes))(example_keys(key, part))
    return ((y + shift.astype(y.dtype)) % num_classes).astype(y.dtype)


# ------------------------------------------------------------------------------------ the rule


class AmnesiacState(NamedTuple):
    """State of :func:`amnesiac`.

    Attributes:
      inner: the loss rule's state (optimizer state and step counter).
      label_key: the key the forget examples' wrong labels are derived from (drawn at ``init``).
    """

    inner: LossRuleState
    label_key: Array


@registry.rule(
    "amnesiac",
    parts=("forget", "retain"),
    paper="Graves et al., Amnesiac Machine Learning, AAAI 2021; Foster et al., AAAI 2024",
    sweepable=("learning_rate",),
)
def amnesiac(
    apply: Callable,
    *,
    num_classes: int,
    learning_rate: float = 1e-4,
    fixed_labels: bool = True,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """Amnesiac: cross-entropy on forget examples with random *wrong* labels plus retain examples.

    Args:
      apply: the model's functional ``apply``.
      num_classes: number of classes to draw labels from (supplied by the registry; at least 2).
      learning_rate: Adam learning rate (1e-4).
      fixed_labels: draw each forget example's wrong label once for the whole run, as the
        reference does (see the module docstring); ``False`` redraws them at every update.
      train_mode: run BatchNorm in training mode (batch statistics, refreshed running averages)
        on the pooled batch, as the reference's ``model.train()``; ``False`` keeps them fixed.
      optimizer: an optax optimizer, or settings over the reference Adam (no weight decay); see
        :func:`~jaxunlearn.core.optim.resolve`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` (with its ``"index"`` when
      ``fixed_labels``) and ``batch["retain"]``, whose state is an :class:`AmnesiacState`.

    References:
      Graves et al., "Amnesiac Machine Learning", AAAI 2021; Foster et al., AAAI 2024.
    """
    try:
        num_classes = check_count(num_classes, "num_classes", 2)
    except ValueError as error:
        raise ValueError(f"amnesiac: {error} (to draw a wrong label)") from None
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=optim.REFERENCE_ADAM)

    def loss_with(label_key: Array):
        def loss_fn(variables, batch, *, reference, step, key):
            del reference, step
            forget = batch["forget"]
            xf, yf = forget["x"], forget["y"]
            if fixed_labels:
                wrong = fixed_wrong_labels(label_key, forget, num_classes)
            else:
                shift = jax.random.randint(key, yf.shape, 1, num_classes)
                wrong = ((yf + shift) % num_classes).astype(yf.dtype)
            x = jnp.concatenate([xf, batch["retain"]["x"]])
            y = jnp.concatenate([wrong, batch["retain"]["y"]])
            out = apply(variables, x, train=train_mode)
            nf = xf.shape[0]
            metrics = {"forget_acc": losses.accuracy(out.logits[:nf], yf)}
            if train_mode and out.batch_stats is not None:
                metrics[BATCH_STATS_KEY] = out.batch_stats
            return losses.cross_entropy(out.logits, y), metrics

        return loss_fn

    def init(variables: Variables, *, key: Array) -> AmnesiacState:
        inner = rule_from_loss(loss_with(key), opt, keep_reference=False)
        return AmnesiacState(inner.init(variables, key=key), jax.random.fold_in(key, 0x414D))

    def update(variables: Variables, state: AmnesiacState, batch: Batch, *, key: Array):
        # The loss closes over the label key held in the state.
        inner = rule_from_loss(loss_with(state.label_key), opt, keep_reference=False)
        variables, inner_state, metrics = inner.update(variables, state.inner, batch, key=key)
        return variables, state._replace(inner=inner_state), metrics

    return UnlearningRule(init, update)
