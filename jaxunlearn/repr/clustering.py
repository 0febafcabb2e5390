"""Online clustering: SwAV's swapped prediction of Sinkhorn-Knopp cluster assignments.

SwAV (Caron et al., NeurIPS 2020) learns prototypes ``C`` (``K`` unit vectors) together with the
encoder. For every batch, the scores ``s = normalize(z) C`` of each global view are turned into
soft *codes* ``q`` by a few Sinkhorn-Knopp iterations (an equipartition of the batch among the
prototypes, with entropy weight ``epsilon``; no gradient), and each other view is trained to
predict them from its own scores: ``-sum_k q_k log softmax(s / temperature)_k``. Multi-crop adds
small local views that are predicted from but never assigned (``crops_for_assign = [0, 1]``).

Where the pieces live: the projection head is the encoder's (``repr.encoder("swav", ...)``:
``Linear -> BN -> ReLU -> Linear(128)`` as ``swav/src/resnet50.py``); the prototypes ``[D, K]``
live in the rule state (:class:`SwavState`) and are trained by the same optimizer as the network
(one optax state over both). As ``main_swav.py`` does, they are L2-normalised before every
forward pass and frozen (gradients zeroed) for the first ``freeze_prototypes_steps`` updates.
The queue of past embeddings the reference adds for small batches is not kept.

References:
  Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, "Unsupervised Learning of Visual Features by
  Contrasting Cluster Assignments", NeurIPS 2020; facebookresearch/swav ``main_swav.py``
  (``distributed_sinkhorn``, temperature 0.1, epsilon 0.05, 3 Sinkhorn iterations,
  ``freeze_prototypes_niters``), ``src/resnet50.py`` (head, prototypes). The repository's
  ``shared/reference/unlearnable_and_representation.md`` (Part B1) lists SwAV among the methods
  users expect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import optim
from jaxunlearn.core.rule import BATCH_STATS_KEY, StepCounter, optimizer_step
from jaxunlearn.core.types import Array, Batch, PyTree, UnlearningRule, Variables
from jaxunlearn.data import views as views_lib
from jaxunlearn.repr import losses
from jaxunlearn.repr.common import (
    PART,
    VIEW_KEY,
    check_count,
    check_positive,
    encode,
    frozen_until,
    pipeline_of,
    views_of,
)
from jaxunlearn.repr.registry import rule

SWAV_ADAM = {"name": "adam", "weight_decay": 0.0}
PROTOTYPES = "prototypes"


def sinkhorn_knopp(scores: Array, *, epsilon: float = 0.05, iterations: int = 3) -> Array:
    """SwAV's soft codes: ``[B, K]`` assignments of ``B`` examples to ``K`` prototypes.

    ``Q = exp(scores / epsilon)^T`` (``[K, B]``) is scaled to sum to 1, then ``iterations`` times
    its rows are scaled to sum to ``1 / K`` (every prototype gets an equal share of the batch) and
    its columns to ``1 / B``; finally ``Q * B`` is transposed back, so every row (example) sums
    to 1. The maximum score is subtracted before the exponential, which the normalisations undo
    exactly but keeps ``exp`` finite for small ``epsilon``. Gradients are stopped.

    Args:
      scores: ``[B, K]`` scores (cosine similarities of embeddings and prototypes).
      epsilon: entropy weight (0.05); must be > 0.
      iterations: Sinkhorn iterations (3).

    References:
      Caron et al., NeurIPS 2020, Sec. 3.1 and ``main_swav.py`` (``distributed_sinkhorn``);
      Cuturi, "Sinkhorn Distances", NeurIPS 2013.
    """
    scores = jax.lax.stop_gradient(scores.astype(jnp.float32))
    b, k = scores.shape
    q = jnp.exp((scores - jnp.max(scores)) / epsilon).T
    q = q / jnp.sum(q)
    for _ in range(int(iterations)):
        q = q / jnp.sum(q, axis=1, keepdims=True) / k
        q = q / jnp.sum(q, axis=0, keepdims=True) / b
    return (q * b).T


def swav_loss(
    scores: Array,
    *,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    iterations: int = 3,
    num_assigned: int = 2,
) -> Array:
    """SwAV's swapped prediction over views.

    For each assigned view ``a < num_assigned`` the codes ``q_a = sinkhorn_knopp(scores[a])``
    are predicted by every other view ``v``: ``-mean_b sum_k q_a log softmax(scores[v] / T)``,
    averaged over the ``V - 1`` other views, then over the assigned views (``main_swav.py``).

    Args:
      scores: ``[V, B, K]`` prototype scores of ``V`` views of a batch.
      temperature: softmax temperature of the predictions (0.1).
      epsilon, iterations: of :func:`sinkhorn_knopp`.
      num_assigned: the views codes are computed for (the global crops, ``crops_for_assign``).
    """
    n_views = scores.shape[0]
    if not 1 <= num_assigned <= n_views or n_views < 2:
        raise ValueError(
            f"swav_loss needs at least 2 views and 1 <= num_assigned <= views; got {n_views} "
            f"views and num_assigned={num_assigned}"
        )
    log_p = jax.nn.log_softmax(scores / temperature, axis=-1)
    total = 0.0
    for a in range(num_assigned):
        q = sinkhorn_knopp(scores[a], epsilon=epsilon, iterations=iterations)
        sub = sum(-jnp.mean(jnp.sum(q * log_p[v], axis=-1)) for v in range(n_views) if v != a)
        total = total + sub / (n_views - 1)
    return total / num_assigned


def _prototypes_only(trainable: PyTree) -> PyTree:
    return {
        "network": jax.tree.map(lambda _: False, trainable["network"]),
        PROTOTYPES: True,
    }


class SwavState(NamedTuple):
    """State of :func:`swav`.

    Attributes:
      opt_state: the optimizer's state over ``{"network": params, "prototypes": prototypes}``.
      prototypes: ``[D, K]`` prototype vectors (columns; normalised before each use).
      step: updates taken so far.
    """

    opt_state: PyTree
    prototypes: Array
    step: StepCounter


def normalize_prototypes(prototypes: Array) -> Array:
    """Each prototype (column of ``[D, K]``) scaled to unit norm."""
    return losses.l2_normalize(prototypes.T).T


@rule(
    "swav",
    parts=(PART,),
    paper="Caron et al., Unsupervised Learning of Visual Features by Contrasting Cluster "
    "Assignments, NeurIPS 2020",
    needs_labels=False,
    task="any",
    sweepable=("learning_rate", "temperature", "epsilon"),
    head=lambda width, num_outputs: {"dims": (width, 128), "batch_norm": True},
    num_views=2,
    optimizer=SWAV_ADAM,
)
def swav(
    apply: Callable,
    *,
    input_shape: tuple[int, ...] | None = None,
    n_prototypes: int = 100,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    sinkhorn_iterations: int = 3,
    freeze_prototypes_steps: int = 30,
    learning_rate: float = 1e-3,
    views: str | Callable | None = None,
    num_views: int = 2,
    num_local_views: int = 0,
    local_views: str | Callable | None = None,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """SwAV: swapped prediction of Sinkhorn-Knopp codes against learned prototypes.

    Args:
      apply: the encoder's ``apply`` (``repr.encoder("swav", ...)``: a 2-layer projector to 128).
      input_shape: context, chooses the default view pipelines.
      n_prototypes: ``K`` (the reference's 3000 is for ImageNet; 100 here for 10-class data and
        batches of a few hundred); at least 2.
      temperature: 0.1; epsilon: 0.05; sinkhorn_iterations: 3 (the reference's; > 0, > 0, >= 1).
      freeze_prototypes_steps: updates during which the prototypes get no gradient (the
        reference's 313 is one ImageNet epoch at batch 4096; 30 here, a few digits epochs).
      learning_rate: step size of the network and the prototypes.
      views: pipeline of the ``num_views`` global views (codes are computed for them).
      num_views: global views, at least 2.
      num_local_views: extra small crops (multi-crop; 0 by default), which predict the global
        views' codes; drawn by ``local_views`` (default
        :func:`jaxunlearn.data.views.default_local_pipeline`).
      train_mode: BatchNorm in training mode.
      optimizer: an optax optimizer or settings over Adam (the reference's LARS is for batches
        of 4096).

    Metrics: ``loss`` and ``code_entropy`` (mean entropy of the codes: near ``log K`` when
    the assignment is spread, lower as the clusters sharpen).

    References:
      Caron et al., NeurIPS 2020; facebookresearch/swav ``main_swav.py``.
    """
    check_positive(temperature, "temperature")
    check_positive(epsilon, "epsilon")
    n_prototypes = check_count(n_prototypes, "n_prototypes", 2)
    sinkhorn_iterations = check_count(sinkhorn_iterations, "sinkhorn_iterations", 1)
    freeze_prototypes_steps = check_count(freeze_prototypes_steps, "freeze_prototypes_steps", 0)
    num_views = check_count(num_views, "num_views", 2)
    num_local_views = check_count(num_local_views, "num_local_views", 0)
    if input_shape is None:
        raise ValueError("swav needs `input_shape` (to size its prototypes); pass it via repr.make")
    base = optim.resolve(optimizer, learning_rate=learning_rate, default=SWAV_ADAM)
    opt = optax.chain(
        frozen_until(freeze_prototypes_steps, _prototypes_only),
        base,
    )
    pipeline = pipeline_of(views, input_shape)
    local_pipeline = views_lib.get(
        local_views if local_views is not None else views_lib.default_local_pipeline(input_shape)
    )

    def init(variables: Variables, *, key: Array | None = None) -> SwavState:
        shape = jax.eval_shape(
            lambda v: apply(v, jnp.zeros((2, *input_shape), jnp.float32)), variables
        )
        if shape.projection is None:
            raise ValueError("swav reads a projection head: build the network with repr.encoder")
        dim = shape.projection.shape[-1]
        key = jax.random.key(0) if key is None else key
        bound = 1.0 / dim**0.5  # nn.Linear(dim, K, bias=False)'s initialisation
        prototypes = jax.random.uniform(
            jax.random.fold_in(key, 0x5357), (dim, n_prototypes), jnp.float32, -bound, bound
        )
        trainable = {"network": variables["params"], PROTOTYPES: prototypes}
        return SwavState(opt.init(trainable), normalize_prototypes(prototypes), StepCounter.zero())

    def update(variables: Variables, state: SwavState, batch: Batch, *, key: Array):
        stacked = views_of(
            batch[PART],
            key,
            pipeline,
            num_views,
            rule="swav",
            min_batch=2,
            why="the Sinkhorn equipartition and BatchNorm in the head",
        )
        if num_local_views:
            local = views_lib.make_views(
                local_pipeline,
                jax.random.fold_in(key, VIEW_KEY + 1),
                batch[PART]["x"],
                num_local_views,
            )
            stacked = jnp.concatenate([stacked, local.astype(stacked.dtype)], 0)

        def objective(trainable):
            out, stats = encode(
                apply,
                {**variables, "params": trainable["network"]},
                stacked,
                train=train_mode,
                rule="swav",
            )
            z = losses.l2_normalize(out.projection)
            scores = z @ trainable[PROTOTYPES]
            loss = swav_loss(
                scores,
                temperature=temperature,
                epsilon=epsilon,
                iterations=sinkhorn_iterations,
                num_assigned=num_views,
            )
            q = sinkhorn_knopp(scores[0], epsilon=epsilon, iterations=sinkhorn_iterations)
            entropy = jnp.mean(-jnp.sum(q * jnp.log(jnp.maximum(q, 1e-30)), -1))
            return loss, (stats, entropy)

        # main_swav.py normalises the prototypes in place before every forward pass.
        trainable = {
            "network": variables["params"],
            PROTOTYPES: normalize_prototypes(state.prototypes),
        }
        (loss, (stats, entropy)), grads = jax.value_and_grad(objective, has_aux=True)(trainable)
        new, opt_state = optimizer_step(opt, grads, state.opt_state, {"params": trainable})
        variables = {**variables, "params": new["params"]["network"]}
        if stats is not None:
            variables[BATCH_STATS_KEY] = stats
        metrics = {"loss": loss, "code_entropy": entropy}
        return (
            variables,
            SwavState(opt_state, new["params"][PROTOTYPES], state.step.next()),
            metrics,
        )

    return UnlearningRule(init, update)
