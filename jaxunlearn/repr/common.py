"""Pieces every representation rule shares: setting checks, views, encoding, EMA targets.

Where a batch gets its views: a rule receives the plain batches that
:func:`jaxunlearn.train.fit` draws (``{"retain": {"x", "y", "index", ...}}``) and makes the views
itself, on the device, with :mod:`jaxunlearn.data.views` from the update's key (fold-in
``VIEW_KEY``), so ``fit`` and the data stream are unchanged and every step sees fresh views. A
batch part that already carries ``"views"`` (``[B, V, ...]``: a ``Stream`` extra field of
precomputed views, one row of ``V`` views per example) is used as it is instead.

Views are encoded in one forward pass over the ``V * B`` stacked examples (as SimCLR's TF2 code
does), so BatchNorm layers see the statistics of all views together.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core.checks import check_count, concrete
from jaxunlearn.core.rule import BATCH_STATS_KEY, StepCounter, optimizer_step
from jaxunlearn.core.types import Array, Batch, Outputs, PyTree, UnlearningRule, Variables
from jaxunlearn.data import views as views_lib

VIEW_KEY = 0x5649  # fold-in of the update key that draws the views
PART = "retain"  # the batch part representation rules learn from


def check_positive(value, name: str) -> None:
    """``ValueError`` unless ``value`` (when concrete) is a finite number > 0."""
    if not concrete(value):
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be a number; got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"`{name}` must be finite and > 0; got {value}")


def check_nonnegative(value, name: str) -> None:
    """``ValueError`` unless ``value`` (when concrete) is a finite number >= 0."""
    if not concrete(value):
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be a number; got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"`{name}` must be finite and >= 0; got {value}")


def check_rate(value, name: str) -> None:
    """``ValueError`` unless ``value`` (when concrete) lies in [0, 1] (an EMA rate, a momentum)."""
    if not concrete(value):
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"`{name}` must be a number in [0, 1]; got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must lie in [0, 1]; got {value}")


def pipeline_of(views: str | Callable | None, input_shape) -> Callable:
    """The view pipeline a rule uses: the one named or given, else the default for the input
    shape (:func:`jaxunlearn.data.views.default_pipeline`)."""
    return views_lib.get(views if views is not None else views_lib.default_pipeline(input_shape))


def views_of(
    part: Mapping[str, Array],
    key: Array,
    pipeline: Callable,
    num_views: int,
    *,
    rule: str,
    min_batch: int = 1,
    why: str = "",
) -> Array:
    """``[V, B, ...]`` views of a batch part: its ``"views"`` (``[B, V, ...]``, the first
    ``num_views`` of them) if it carries them, else ``num_views`` fresh views of ``part["x"]``
    drawn from ``key``.

    Raises (while tracing, before any compute):
      ValueError: a part with fewer views than the rule reads, or a batch smaller than
        ``min_batch`` (``why`` says what needs it).
    """
    if "views" in part:
        given = part["views"]
        if given.ndim < 2 or given.shape[1] < num_views:
            have = given.shape[1] if given.ndim >= 2 else 0
            raise ValueError(
                f"{rule}: the batch carries {have} view(s) per example but the rule reads "
                f"`num_views`={num_views} (batch 'views' are [batch, views, ...])"
            )
        stacked = jnp.swapaxes(given[:, :num_views], 0, 1)
    else:
        stacked = views_lib.make_views(
            pipeline, jax.random.fold_in(key, VIEW_KEY), part["x"], num_views
        )
    batch = stacked.shape[1]
    if batch < min_batch:
        raise ValueError(
            f"{rule}: batch size {batch} is too small; {why or 'the loss'} needs at least "
            f"{min_batch} examples per batch (set a larger `batch_sizes['{PART}']`)"
        )
    return stacked


def encode(
    apply: Callable, variables: Variables, stacked: Array, *, train: bool, rule: str
) -> tuple[Outputs, PyTree | None]:
    """Runs the network once on ``[V, B, ...]`` views; returns Outputs whose ``features``,
    ``projection`` and ``prediction`` are ``[V, B, ...]`` and the refreshed batch statistics.

    Raises:
      ValueError: if the network has no projection head (not built by ``repr.encoder`` /
        ``with_projection_head``).
    """
    v, b = stacked.shape[:2]
    out = apply(variables, stacked.reshape(v * b, *stacked.shape[2:]), train=train)
    if out.projection is None:
        raise ValueError(
            f"{rule} reads a projection head: build the network with "
            f"`repr.encoder({rule!r}, network)` or `repr.with_projection_head`"
        )

    def split(a):
        return None if a is None else a.reshape(v, b, *a.shape[1:])

    shaped = out._replace(
        logits=split(out.logits),
        features=split(out.features),
        projection=split(out.projection),
        prediction=split(out.prediction),
        hidden=(),
        batch_stats=None,
    )
    return shaped, out.batch_stats


def with_batch_stats(metrics: dict, batch_stats: PyTree | None) -> dict:
    """``metrics`` with refreshed BatchNorm statistics for ``rule_from_loss`` to store."""
    if batch_stats is not None:
        metrics = {**metrics, BATCH_STATS_KEY: batch_stats}
    return metrics


def cosine_ema_rate(step: Array, num_steps: int | None, base: Array | float) -> Array:
    """BYOL's target decay ``tau_k = 1 - (1 - tau_base) (cos(pi k / K) + 1) / 2``.

    Rises from ``base`` at step 0 to 1 at step ``K = num_steps``; constant ``base`` when
    ``num_steps`` is ``None`` (``byol/utils/schedules.target_ema``).
    """
    if num_steps is None:
        return jnp.asarray(base, jnp.float32)
    progress = jnp.minimum(step.astype(jnp.float32) / max(int(num_steps), 1), 1.0)
    return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * progress) + 1.0) / 2.0


def ema(target: PyTree, online: PyTree, rate: Array) -> PyTree:
    """``target + (1 - rate) (online - target)``, leaf by leaf."""
    return jax.tree.map(lambda t, o: t + (1.0 - rate) * (o - t), target, online)


class TargetState(NamedTuple):
    """State of a rule with an EMA target (teacher) network.

    Attributes:
      opt_state: the optimizer's state over ``variables["params"]``.
      target: the target's variables (an exponential moving average of the online params; its
        BatchNorm statistics are copied from the online network).
      extra: rule-specific running statistics (DINO's centre), or ``()``.
      step: updates taken so far.
    """

    opt_state: PyTree
    target: Variables
    extra: PyTree
    step: StepCounter


def rule_with_target(
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    *,
    base_rate: Array | float,
    num_steps: int | None,
    init_extra: Callable[[Variables], PyTree] = lambda variables: (),
) -> UnlearningRule:
    """A rule that minimises ``loss_fn`` against an EMA target of the online network.

    Args:
      loss_fn: ``(variables, batch, *, target, extra, step, key) -> (loss, (metrics, extra))``;
        ``target`` is the target's variables (gradients do not reach it); ``extra`` the running
        statistics, returned updated.
      optimizer: optax transformation over ``variables["params"]``.
      base_rate: ``tau_base`` of :func:`cosine_ema_rate`.
      num_steps: ``K`` of the schedule (``None``: constant rate).
      init_extra: ``variables -> extra`` at init.

    The target is updated after the online step, from the new online params (BYOL's order).
    """

    def init(variables: Variables, *, key: Array | None = None) -> TargetState:
        del key
        return TargetState(
            optimizer.init(variables["params"]),
            variables,
            init_extra(variables),
            StepCounter.zero(),
        )

    def update(variables: Variables, state: TargetState, batch: Batch, *, key: Array):
        def objective(params):
            return loss_fn(
                {**variables, "params": params},
                batch,
                target=jax.lax.stop_gradient(state.target),
                extra=state.extra,
                step=state.step.count,
                key=key,
            )

        (loss, (metrics, extra)), grads = jax.value_and_grad(objective, has_aux=True)(
            variables["params"]
        )
        metrics = dict(metrics)
        variables, opt_state = optimizer_step(
            optimizer,
            grads,
            state.opt_state,
            variables,
            batch_stats=metrics.pop(BATCH_STATS_KEY, None),
        )
        rate = cosine_ema_rate(state.step.count, num_steps, base_rate)
        target = {
            **variables,
            "params": ema(state.target["params"], variables["params"], rate),
        }
        metrics.update(loss=loss, ema_rate=rate)
        return variables, TargetState(opt_state, target, extra, state.step.next()), metrics

    # The loss, for wrappers that reuse it (self-supervised unlearning, repr.unlearning).
    update.target_loss = loss_fn
    return UnlearningRule(init, update)


class FrozenUntilState(NamedTuple):
    """State of :func:`frozen_until`: updates seen so far (an int32 scalar)."""

    count: Array


def frozen_until(steps: int, mask: Callable[[PyTree], PyTree]) -> optax.GradientTransformation:
    """Zeroes the gradients of the leaves ``mask`` selects for the first ``steps`` updates; chain
    it before the optimizer.

    What the references do by dropping those gradients for a while: DINO's
    ``cancel_gradients_last_layer`` (the head's last layer, first epoch) and SwAV's prototypes
    (``freeze_prototypes_niters``). With Adam the frozen leaves' moments stay at zero, so they
    start from scratch when released, as parameters whose ``.grad`` was ``None`` do.

    Args:
      steps: updates to freeze for (0: never).
      mask: ``params -> pytree of bools`` of the same structure (as ``optax.masked`` takes):
        ``True`` for the leaves to freeze.
    """
    steps = check_count(steps, "steps", 0)

    def init(params):
        del params
        return FrozenUntilState(jnp.zeros((), jnp.int32))

    def update(updates, state, params=None):
        del params
        live = state.count >= steps
        updates = jax.tree.map(
            lambda g, m: jnp.where(live, g, jnp.zeros_like(g)) if m else g, updates, mask(updates)
        )
        return updates, FrozenUntilState(state.count + 1)

    return optax.GradientTransformation(init, update)
