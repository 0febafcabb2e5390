"""Clustering rules: SwAV's swapped prediction of Sinkhorn-Knopp codes, and DeeperCluster's
k-means pseudo-labels crossed with rotations.

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

DeeperCluster (:func:`deepcluster`, Caron et al., ICCV 2019) instead clusters a bank of every
example's features with k-means every so often and trains a classifier on the product of the
cluster and rotation labels of rotated images (see its docstring).

Both rules keep trained state beside the network (prototypes; a classifier and the bank), so
each gives :mod:`jaxunlearn.repr.unlearning` the gradient of its loss for the network alone
(``update.ssl_grads``).

References:
  Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, "Unsupervised Learning of Visual Features by
  Contrasting Cluster Assignments", NeurIPS 2020; facebookresearch/swav ``main_swav.py``
  (``distributed_sinkhorn``, temperature 0.1, epsilon 0.05, 3 Sinkhorn iterations,
  ``freeze_prototypes_niters``), ``src/resnet50.py`` (head, prototypes). The repository's
  ``shared/reference/unlearnable_and_representation.md`` (Part B1) lists SwAV and DeepCluster
  among the methods users expect.
  Caron, Bojanowski, Mairal, Joulin, "Unsupervised Pre-Training of Image Features on
  Non-Curated Data", ICCV 2019 (facebookresearch/DeeperCluster).
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
    with_batch_stats,
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

    def views_for(part, key):
        stacked = views_of(
            part,
            key,
            pipeline,
            num_views,
            rule="swav",
            min_batch=2,
            why="the Sinkhorn equipartition and BatchNorm in the head",
        )
        if num_local_views:
            local = views_lib.make_views(
                local_pipeline, jax.random.fold_in(key, VIEW_KEY + 1), part["x"], num_local_views
            )
            stacked = jnp.concatenate([stacked, local.astype(stacked.dtype)], 0)
        return stacked

    def objective(trainable, variables, stacked):
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

    def update(variables: Variables, state: SwavState, batch: Batch, *, key: Array):
        stacked = views_for(batch[PART], key)
        # main_swav.py normalises the prototypes in place before every forward pass.
        trainable = {
            "network": variables["params"],
            PROTOTYPES: normalize_prototypes(state.prototypes),
        }
        (loss, (stats, entropy)), grads = jax.value_and_grad(objective, has_aux=True)(
            trainable, variables, stacked
        )
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

    def ssl_grads(variables: Variables, state: SwavState, part, *, key: Array):
        """The loss's gradient for the network's params alone, the prototypes held at
        ``state``'s (for :func:`jaxunlearn.repr.unlearning.ssl_objective`)."""
        stacked = views_for(part, key)
        prototypes = normalize_prototypes(state.prototypes)

        def network_loss(params):
            return objective({"network": params, PROTOTYPES: prototypes}, variables, stacked)

        (loss, (stats, _)), grads = jax.value_and_grad(network_loss, has_aux=True)(
            variables["params"]
        )
        return grads, with_batch_stats({"loss": loss}, stats)

    update.ssl_grads = ssl_grads
    return UnlearningRule(init, update)


# ------------------------------------------------------------------- DeeperCluster (k-means)


def spherical_kmeans(
    points: Array, weights: Array, centroids: Array, iterations: int
) -> tuple[Array, Array]:
    """``(centroids [K, D], assignments [N])`` after ``iterations`` Lloyd steps of k-means on
    unit vectors (cosine similarity), from the given ``centroids``.

    ``weights`` ``[N]`` (0 or 1) leaves unseen rows out; a cluster that gets no point keeps its
    centroid (DeepCluster instead re-seeds it from a perturbed non-empty one).
    """
    points = losses.l2_normalize(points)

    def assign(c):
        return jnp.argmax(points @ c.T, axis=-1)

    def step(_, c):
        one_hot = jax.nn.one_hot(assign(c), c.shape[0], dtype=points.dtype) * weights[:, None]
        sums = one_hot.T @ points
        counts = one_hot.sum(0)[:, None]
        return jnp.where(counts > 0, losses.l2_normalize(sums), c)

    centroids = jax.lax.fori_loop(0, int(iterations), step, losses.l2_normalize(centroids))
    return centroids, assign(centroids)


def pca_whiten(points: Array, weights: Array, eps: float = 1e-5) -> Array:
    """``points`` centred, rotated onto their principal axes and scaled to unit variance along
    each (DeepCluster's PCA-whitening before k-means), over the rows with ``weights`` 1."""
    total = jnp.maximum(weights.sum(), 1.0)
    mean = (weights[:, None] * points).sum(0) / total
    centred = points - mean
    cov = (weights[:, None] * centred).T @ centred / total
    eigenvalues, eigenvectors = jnp.linalg.eigh(cov)
    return centred @ eigenvectors / jnp.sqrt(jnp.maximum(eigenvalues, 0.0) + eps)


class DeeperClusterState(NamedTuple):
    """State of :func:`deepcluster`.

    Attributes:
      opt_state: the optimizer's state over ``{"network": params, "classifier": classifier}``.
      classifier: ``[D, K * 4]`` linear classifier on the projection (reset at each
        clustering, as DeepCluster resets its top layer).
      bank: ``[N, F]`` the latest backbone features of every example (un-rotated view).
      seen: ``[N]`` whether the bank row was filled.
      assignments: ``[N]`` cluster of every example at the last clustering (-1: not yet in the
        bank then; such examples are trained on their rotation only).
      centroids: ``[K, F]`` the last clustering's centroids (in the whitened space).
      clustered: whether a clustering has run (before it, only rotations are predicted).
      step: updates taken so far.
    """

    opt_state: PyTree
    classifier: Array
    bank: Array
    seen: Array
    assignments: Array
    centroids: Array
    clustered: Array
    step: StepCounter


CLASSIFIER = "classifier"


@rule(
    "deepcluster",
    parts=(PART,),
    paper="Caron, Bojanowski, Mairal, Joulin, Unsupervised Pre-Training of Image Features on "
    "Non-Curated Data (DeeperCluster), ICCV 2019",
    needs_labels=False,
    task="any",
    sweepable=("learning_rate",),
    head=lambda width, num_outputs: {"dims": (width, width, width), "batch_norm": True},
    num_views=1,
    optimizer=SWAV_ADAM,
)
def deepcluster(
    apply: Callable,
    *,
    input_shape: tuple[int, ...] | None = None,
    num_examples: int | None = None,
    n_clusters: int = 50,
    recluster_every: int = 60,
    kmeans_iterations: int = 10,
    learning_rate: float = 1e-3,
    views: str | Callable | None = None,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """DeeperCluster: k-means pseudo-labels crossed with rotation prediction.

    Every example of the batch is rotated by 0, 90, 180, 270 degrees
    (:func:`jaxunlearn.data.views.rotations`, after one augmented view) and a linear classifier
    on the projection predicts the pair (cluster of the example, rotation): ``K * 4``
    classes, the paper's product of the clustering and the rotation labels. Clusters come from
    spherical k-means (:func:`spherical_kmeans`) of the PCA-whitened (:func:`pca_whiten`)
    bank of every example's latest un-rotated backbone features, rerun every ``recluster_every``
    updates (DeepCluster reclusters every epoch), after which the classifier is reset. Before
    the first clustering (while the bank fills), and for examples not yet in the bank at the
    last clustering, only the rotation is predicted (the classifier's probabilities summed over
    clusters). Batch parts must carry ``"index"`` (as :func:`jaxunlearn.train.fit`'s do): the
    rows of the bank.

    Simplifications of the reference (a VGG-16 on 96M images): one level of clustering instead
    of the hierarchical super-class / sub-class split across workers, no dimension reduction
    in the PCA, each example's loss weighted by 1 / (its cluster's size) in place of sampling
    uniformly over pseudo-labels, Adam by default.

    Args:
      apply: the encoder's ``apply`` (``repr.encoder("deepcluster", ...)``).
      input_shape: context; square images.
      num_examples: rows of the bank: the size of the data the batch indices point into
        (``len(stream.x)``); required.
      n_clusters: ``K`` >= 2 (the paper's 320k for 96M images; 50 here for 10-class data).
      recluster_every: updates between clusterings, >= 1 (the paper: every epoch; 60 here,
        about 11 digits epochs at batch 256: on the digits CNN, clustering every 20 updates
        with a fresh classifier each time leaves the features below a random encoder's).
      kmeans_iterations: Lloyd iterations per clustering, >= 1.
      learning_rate: step size.
      views: pipeline of the one view that is rotated.
      train_mode: BatchNorm in training mode.
      optimizer: an optax optimizer or settings over Adam.

    Metrics: ``loss`` (its scale changes from ``log 4`` to ``log 4K`` at the first clustering),
    ``rotation_loss`` and ``rotation_accuracy`` (of the rotation alone, the classifier's
    probabilities summed over clusters) and ``clustered`` (1 once a clustering ran).

    References:
      Caron et al., ICCV 2019 (DeeperCluster; facebookresearch/DeeperCluster); Caron et al.,
      "Deep Clustering for Unsupervised Learning of Visual Features", ECCV 2018 (DeepCluster);
      Gidaris et al., ICLR 2018 (rotations).
    """
    n_clusters = check_count(n_clusters, "n_clusters", 2)
    recluster_every = check_count(recluster_every, "recluster_every", 1)
    kmeans_iterations = check_count(kmeans_iterations, "kmeans_iterations", 1)
    if num_examples is None:
        raise ValueError(
            "deepcluster needs `num_examples` (the size of the data batch indices point into, "
            "e.g. len(stream.x)) for its feature bank"
        )
    num_examples = check_count(num_examples, "num_examples", n_clusters)
    if input_shape is None or len(input_shape) != 3 or input_shape[0] != input_shape[1]:
        raise ValueError(f"deepcluster needs square images (H, H, C); got {input_shape}")
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=SWAV_ADAM)
    pipeline = pipeline_of(views, input_shape)
    n_classes = 4 * n_clusters

    def new_classifier(key, dim):
        bound = 1.0 / dim**0.5
        return jax.random.uniform(key, (dim, n_classes), jnp.float32, -bound, bound)

    def init(variables: Variables, *, key: Array | None = None) -> DeeperClusterState:
        shape = jax.eval_shape(
            lambda v: apply(v, jnp.zeros((2, *input_shape), jnp.float32)), variables
        )
        if shape.projection is None:
            raise ValueError(
                "deepcluster reads a projection head: build the network with repr.encoder"
            )
        dim, feature_dim = shape.projection.shape[-1], shape.features.shape[-1]
        key = jax.random.key(0) if key is None else key
        classifier = new_classifier(jax.random.fold_in(key, 0x4443), dim)
        trainable = {"network": variables["params"], CLASSIFIER: classifier}
        return DeeperClusterState(
            opt.init(trainable),
            classifier,
            jnp.zeros((num_examples, feature_dim), jnp.float32),
            jnp.zeros((num_examples,), jnp.float32),
            jnp.full((num_examples,), -1, jnp.int32),
            jnp.zeros((n_clusters, feature_dim), jnp.float32),
            jnp.zeros((), jnp.bool_),
            StepCounter.zero(),
        )

    def recluster(state: DeeperClusterState, key: Array) -> DeeperClusterState:
        k_seed, k_head = jax.random.split(key)
        # Seed k-means with K distinct seen examples (unseen rows get no chance).
        noise = jax.random.uniform(k_seed, (num_examples,)) + state.seen
        points = pca_whiten(state.bank, state.seen)
        seeds = points[jax.lax.top_k(noise, n_clusters)[1]]
        centroids, assignments = spherical_kmeans(points, state.seen, seeds, kmeans_iterations)
        classifier = new_classifier(k_head, state.classifier.shape[0])
        # A fresh top layer starts with fresh optimizer moments.
        opt_state = _reset_leaf(opt, state.opt_state, CLASSIFIER, classifier)
        return state._replace(
            opt_state=opt_state,
            classifier=classifier,
            assignments=jnp.where(state.seen > 0, assignments, -1),
            centroids=centroids,
            clustered=jnp.ones((), jnp.bool_),
        )

    def objective_for(state: DeeperClusterState, part, key: Array):
        """``objective(trainable, variables) -> (loss, (stats, features, metrics))`` on fresh
        rotated views of ``part``, with ``state``'s cluster assignments."""
        if "index" not in part:
            raise ValueError(
                "deepcluster needs the batch part's 'index' (rows of its feature bank), as "
                "train.fit's batches carry"
            )
        view = views_of(
            part, key, pipeline, 1, rule="deepcluster", min_batch=2, why="BatchNorm in the head"
        )[0]
        rotated, rotation = views_lib.rotations(view)
        index = part["index"]
        cluster = state.assignments[index]
        known = cluster >= 0  # in the bank when it was last clustered
        cluster = jnp.maximum(cluster, 0)
        # DeepCluster samples images uniformly over the pseudo-labels; weighting each example by
        # 1 / (its cluster's size) gives the same expected loss (mean weight 1 over the batch).
        # (-1, not yet clustered, would wrap around: it is sent out of bounds and dropped.)
        in_bank = jnp.where(state.assignments >= 0, state.assignments, n_clusters)
        sizes = jnp.zeros(n_clusters).at[in_bank].add(1.0, mode="drop")
        weight = jnp.where(known, 1.0 / jnp.maximum(sizes[cluster], 1.0), 1.0)
        weight = weight / jnp.mean(weight)

        def objective(trainable, variables):
            out, stats = encode(
                apply,
                {**variables, "params": trainable["network"]},
                rotated,
                train=train_mode,
                rule="deepcluster",
            )
            z = out.projection  # [4, B, D]
            logits = (z @ trainable[CLASSIFIER]).reshape(4, -1, n_clusters, 4)
            joint = jax.nn.log_softmax(logits.reshape(4, -1, n_classes), -1).reshape(logits.shape)
            picked_joint = jnp.take_along_axis(
                jnp.take_along_axis(joint, cluster[None, :, None, None], 2)[:, :, 0],
                rotation[..., None],
                -1,
            )[..., 0]
            by_rotation = jax.nn.logsumexp(joint, axis=2)  # marginal over clusters
            picked_rotation = jnp.take_along_axis(by_rotation, rotation[..., None], -1)[..., 0]
            loss = -jnp.mean(weight * jnp.where(known[None], picked_joint, picked_rotation))
            rotation_metrics = {
                "rotation_loss": -jnp.mean(picked_rotation),
                "rotation_accuracy": jnp.mean(jnp.argmax(by_rotation, -1) == rotation),
            }
            return loss, (stats, out.features[0], rotation_metrics)

        return objective

    def update(variables: Variables, state: DeeperClusterState, batch: Batch, *, key: Array):
        part = batch[PART]
        index = part.get("index")
        due = (state.step.count > 0) & (state.step.count % recluster_every == 0)
        state = jax.lax.cond(due, recluster, lambda s, k: s, state, jax.random.fold_in(key, 0x4B4D))
        objective = objective_for(state, part, key)
        trainable = {"network": variables["params"], CLASSIFIER: state.classifier}
        (loss, (stats, z0, rotation_metrics)), grads = jax.value_and_grad(objective, has_aux=True)(
            trainable, variables
        )
        new, opt_state = optimizer_step(opt, grads, state.opt_state, {"params": trainable})
        variables = {**variables, "params": new["params"]["network"]}
        if stats is not None:
            variables[BATCH_STATS_KEY] = stats
        state = state._replace(
            opt_state=opt_state,
            classifier=new["params"][CLASSIFIER],
            bank=state.bank.at[index].set(jax.lax.stop_gradient(z0)),
            seen=state.seen.at[index].set(1.0),
            step=state.step.next(),
        )
        metrics = {
            "loss": loss,
            **rotation_metrics,
            "clustered": state.clustered.astype(jnp.float32),
        }
        return variables, state, metrics

    def ssl_grads(variables: Variables, state: DeeperClusterState, part, *, key: Array):
        """The loss's gradient for the network's params alone, the classifier and the
        assignments held at ``state``'s (for :func:`jaxunlearn.repr.unlearning.ssl_objective`)."""
        objective = objective_for(state, part, key)

        def network_loss(params):
            return objective({"network": params, CLASSIFIER: state.classifier}, variables)

        (loss, (stats, _, _)), grads = jax.value_and_grad(network_loss, has_aux=True)(
            variables["params"]
        )
        return grads, with_batch_stats({"loss": loss}, stats)

    update.ssl_grads = ssl_grads
    return UnlearningRule(init, update)


def _reset_leaf(opt, opt_state, name: str, value: Array):
    """``opt_state`` with the entries of the ``name`` leaf replaced by a fresh init's."""
    fresh = opt.init({"network": None, name: value})

    def pick(old, new):
        if isinstance(old, dict) and name in old and "network" in old:
            return {**old, name: new[name]}
        return old

    return jax.tree.map(pick, opt_state, fresh, is_leaf=lambda n: isinstance(n, dict) and name in n)
