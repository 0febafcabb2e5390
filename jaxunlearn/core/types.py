"""The vocabulary every layer speaks: model outputs, the functional model view and the rule pair.

A model's variables are a plain dict pytree ``{"params": ..., "batch_stats": ...}``. Only
``variables["params"]`` is ever trained; ``batch_stats`` (BatchNorm running statistics, ``{}`` for
models without them) is model state that training in ``train=True`` mode refreshes and that
unlearning rules, which run the model in inference mode, leave untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax

Array = jax.Array
PyTree = Any
Variables = dict[str, Any]
Batch = Mapping[str, Mapping[str, Array]]
Metrics = dict[str, Array]


class Outputs(NamedTuple):
    """What a functional model returns.

    Attributes:
      logits: ``[batch, num_outputs]`` pre-softmax scores (or regression outputs).
      features: ``[batch, dim]`` penultimate-layer features (the representation).
      batch_stats: refreshed BatchNorm statistics when called with ``train=True`` on a model that
        has them, else ``None``.
      hidden: optional tuple of intermediate activations (used by attention-transfer style losses).
      projection: ``[batch, dim]`` output of a projection head on the features, for a network
        wrapped by :func:`jaxunlearn.repr.with_projection_head` (what self-supervised losses
        read), else ``None``.
      prediction: ``[batch, dim]`` output of a predictor on the projection (BYOL, SimSiam), else
        ``None``.
    """

    logits: Array
    features: Array
    batch_stats: PyTree | None = None
    hidden: tuple[Array, ...] = ()
    projection: Array | None = None
    prediction: Array | None = None


class Network(NamedTuple):
    """The functional view of a model: everything a rule or audit may know about it.

    Attributes:
      init: ``key -> variables``; fresh variables for a new model.
      apply: ``(variables, x, *, train=False) -> Outputs``; pure and jittable.
      name: registry name of the architecture.
      num_outputs: number of logits (classes) or regression targets.
      input_shape: shape of one input example, e.g. ``(8, 8, 1)`` (``None`` when unknown); rules
        that synthesise inputs (UNSIR's error-maximising noise) read it.
      spec: the architecture's settings when code needs more than ``apply`` (a transformer's
        config for KV-cached decoding and checkpoint loading); ``None`` for the classifiers.
    """

    init: Callable[[Array], Variables]
    apply: Callable[..., Outputs]
    name: str
    num_outputs: int
    input_shape: tuple[int, ...] | None = None
    spec: Any = None


class UnlearningRule(NamedTuple):
    """An unlearning (or training) rule: a pair of pure functions, in the spirit of optax.

    Attributes:
      init: ``(variables, *, key) -> state``.
      update: ``(variables, state, batch, *, key) -> (variables, state, metrics)`` where ``batch``
        is ``{"forget": {"x", "y"}, "retain": {"x", "y"}}`` (a rule reads the parts it uses) and
        ``metrics`` is a dict of scalars.
    """

    init: Callable[..., PyTree]
    update: Callable[..., tuple[Variables, PyTree, Metrics]]
