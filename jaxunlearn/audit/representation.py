"""Representations: does unlearning change the features, not just the classifier head?

Metrics over feature matrices:

* :func:`linear_cka` compares two feature matrices of the same inputs (e.g. unlearned vs retrained
  penultimate features), as in "Are We Truly Forgetting?" (Kim, Cha, Kim, 2025).
* :func:`weighted_knn_accuracy` and :func:`linear_probe_accuracy` measure how much class information
  frozen features still carry, with the weighted k-NN of DINO / solo-learn and a scaled-down version
  of the solo-learn frozen-backbone linear probe.

The audits registered on them (at the end of this module). A method can reach the retrained
model's accuracy on the forget set by editing only the classifier head, leaving the features,
and everything the forget set taught them, untouched. These audits compare representations:

* ``"representation"``: linear CKA of the audited model's penultimate features to the original's
  and to the oracle's, on forget and on retain data, and weighted k-NN accuracy of its features.
* ``"linear_probe"`` (slower, not in the default config): accuracy of a linear classifier trained
  on the frozen features.
* ``"zrf"``: Zero Retrain Forgetting, closeness of the forget-set predictions to those of a
  randomly initialised ("incompetent") network.

Like every per-model audit they give one value per model of their context (``[N]`` arrays): the
N models' features and logits are read once, as ``[N, n, F]`` / ``[N, n, C]`` rows of the run's
shared predictions, and CKA, the k-NN, the probe and ZRF are then computed model by model.

k-NN and probe protocol. Both classify the *queries* (the forget set, and the retain set) with a
*labelled memory* that no model trained on: the whole test split (``test`` plus
``test_forget``), embedded by the audited model itself. The memory holds every class, including
forgotten ones, and is the same for the original, the oracle and every method, so the numbers
are comparable in both scenarios:

* class forgetting: a model whose forget-class features still cluster with held-out examples of
  that class (the original, or a method that only changed the head) scores high; the oracle
  never learned the class, so its features for it need not cluster and it scores lower. (A
  memory made of retain data would not contain the forgotten class at all and give 0 for every
  model; splitting the forget set itself into memory and queries, as UUEF's 80/20 split does,
  is trivially 100% for a single forgotten class.)
* random forgetting: forget examples are ordinary members of their classes; an oracle classifies
  them like test data, the original like memorised training data.

References:
  Kim, Cha, Kim, "Are We Truly Forgetting? A Critical Re-examination of Machine Unlearning
  Evaluation Protocols", arXiv 2503.06991 (2025); yongwookim1/UUEF (CKA, k-NN on frozen features).
  Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML 2019.
  Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021 (weighted
  k-NN, k = 20, T = 0.07).
  Chundawat et al., "Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks Using an
  Incompetent Teacher", AAAI 2023 (ZRF).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn.audit import registry
from jaxunlearn.audit.membership import zrf_score
from jaxunlearn.core.checks import check_count
from jaxunlearn.core.losses import linear_cka_core  # noqa: F401  (re-exported here)
from jaxunlearn.core.types import Array


def _as_features(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim < 2:
        raise ValueError(f"{name} must have shape [n, d] (or [n, ...]), got {a.shape}.")
    a = a.reshape(a.shape[0], -1)
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
    if np.isnan(a).any() or not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite (found NaN or inf).")
    return a


def _as_labels(y, n: int, name: str) -> np.ndarray:
    a = np.asarray(y)
    if a.shape != (n,):
        raise ValueError(f"{name} must have shape [{n}], got {a.shape}.")
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be integer class labels, got dtype {a.dtype}.")
    if a.size and a.min() < 0:
        raise ValueError(f"{name} must be non-negative.")
    return a.astype(np.int32)


def _train_test(train_features, train_labels, test_features, test_labels):
    """Checked ``(train, train labels, test, test labels)`` of a frozen-feature evaluation:
    non-empty feature matrices of one width, one label per row."""
    train = _as_features(train_features, "train_features")
    test = _as_features(test_features, "test_features")
    if train.shape[0] == 0 or test.shape[0] == 0:
        raise ValueError("train_features and test_features must be non-empty.")
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            f"train_features and test_features must have the same width, got {train.shape[1]} and "
            f"{test.shape[1]}."
        )
    ytr = _as_labels(train_labels, train.shape[0], "train_labels")
    yte = _as_labels(test_labels, test.shape[0], "test_labels")
    return train, ytr, test, yte


# --------------------------------------------------------------------------------------------------
# Linear CKA.


def linear_cka(x, y, *, batch_size: int | None = None) -> float:
    """Centred linear CKA, ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on column-centred X, Y.

    Equals ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with linear kernels ``K = X X^T``,
    ``L = Y Y^T``. It is 1 for identical representations and is invariant to orthogonal
    transformations and isotropic scaling of either argument, so it compares what two networks
    represent rather than their coordinates.

    Args:
      x: ``[n, d1]`` features of ``n`` inputs (trailing dimensions beyond the first are flattened).
      y: ``[n, d2]`` features of the same ``n`` inputs from another model or layer.
      batch_size: if given, CKA is computed on consecutive batches of this many rows and averaged
        (the per-batch protocol of the UUEF code); a final batch of fewer than 2 rows is skipped.

    Returns:
      CKA in ``[0, 1]`` as a Python float; 0 when either representation is constant over the inputs.

    Raises:
      ValueError: if the inputs have different numbers of rows, fewer than 2 rows, or non-finite
        values, or ``batch_size < 2``.

    References:
      Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML 2019.
      Kim, Cha, Kim, "Are We Truly Forgetting? A Critical Re-examination of Machine Unlearning
      Evaluation Protocols", arXiv 2503.06991 (2025); yongwookim1/UUEF ``CKA/CKA.py``.
    """
    x = _as_features(x, "x")
    y = _as_features(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must have the same number of rows, got {x.shape[0]} and {y.shape[0]}."
        )
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"linear_cka needs at least 2 rows, got {n}.")
    if batch_size is None:
        return float(linear_cka_core(jnp.asarray(x), jnp.asarray(y)))
    batch_size = check_count(batch_size, "batch_size", 2)
    values = [
        float(
            linear_cka_core(jnp.asarray(x[s : s + batch_size]), jnp.asarray(y[s : s + batch_size]))
        )
        for s in range(0, n, batch_size)
        if min(n, s + batch_size) - s >= 2
    ]
    return float(np.mean(values))


# --------------------------------------------------------------------------------------------------
# Weighted k-NN.


def _l2_normalise(x: Array) -> Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def _knn_predict(
    train: Array, train_labels: Array, test: Array, *, k: int, num_classes: int, temperature: float
) -> Array:
    sim = test @ train.T  # [chunk, n_train] cosine similarities (rows are unit vectors).
    top_sim, top_idx = jax.lax.top_k(sim, k)
    weights = jnp.exp(top_sim / temperature)
    # Scatter-add the votes: memory O(chunk * num_classes), not O(chunk * k * num_classes).
    rows = jnp.broadcast_to(jnp.arange(test.shape[0])[:, None], top_idx.shape)
    scores = jnp.zeros((test.shape[0], num_classes), weights.dtype)
    scores = scores.at[rows, train_labels[top_idx]].add(weights)
    return jnp.argmax(scores, axis=-1)


def weighted_knn_accuracy(
    train_features,
    train_labels,
    test_features,
    test_labels,
    *,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> float:
    """Top-1 accuracy (percent) of the temperature-weighted cosine k-NN classifier.

    Features are L2-normalised; for each test point the ``k`` most cosine-similar training points
    vote for their class with weight ``exp(sim / temperature)``; the class with the largest summed
    weight is predicted (ties go to the smaller class index). Test points are processed in chunks of
    ``chunk_size``, so memory is ``O(chunk_size * n_train)``.

    Args:
      train_features: ``[n_train, d]`` frozen features of the labelled reference set.
      train_labels: ``[n_train]`` integer labels.
      test_features: ``[n_test, d]`` features to classify.
      test_labels: ``[n_test]`` integer labels.
      k: number of neighbours (20 in solo-learn; DINO evaluates 10, 20, 100, 200); capped at
        ``n_train``.
      temperature: the weighting temperature ``T`` (0.07).
      chunk_size: test points per similarity block.

    Returns:
      Accuracy in percent, a Python float in ``[0, 100]``.

    Raises:
      ValueError: on mismatched shapes, empty sets, non-finite features, negative labels or
        non-positive ``k``, ``temperature`` or ``chunk_size``.

    References:
      Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
      CVPR 2018. Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO),
      ICCV 2021, ``eval_knn.py``; da Costa et al., solo-learn (JMLR 2022), ``solo/utils/knn.py``.
    """
    train, ytr, test, yte = _train_test(train_features, train_labels, test_features, test_labels)
    k = check_count(k, "k", 1)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    chunk_size = check_count(chunk_size, "chunk_size", 1)
    k = min(k, train.shape[0])
    num_classes = int(max(ytr.max(), yte.max())) + 1
    train_n = _l2_normalise(jnp.asarray(train))
    test_n = _l2_normalise(jnp.asarray(test))
    ytr_j = jnp.asarray(ytr)
    chunk = min(chunk_size, test.shape[0])
    correct = 0
    for start in range(0, test.shape[0], chunk):
        block = test_n[start : start + chunk]
        valid = block.shape[0]
        if valid < chunk:  # Pad the last block so that every call reuses one compiled shape.
            block = jnp.pad(block, ((0, chunk - valid), (0, 0)))
        pred = _knn_predict(
            train_n, ytr_j, block, k=k, num_classes=num_classes, temperature=float(temperature)
        )
        correct += int(np.sum(np.asarray(pred[:valid]) == yte[start : start + valid]))
    return 100.0 * correct / test.shape[0]


# --------------------------------------------------------------------------------------------------
# Linear probe.


@functools.partial(
    jax.jit,
    static_argnames=("num_classes", "epochs", "batch_size", "learning_rate", "weight_decay"),
)
def _train_probe(
    x: Array,
    y: Array,
    key: Array,
    *,
    num_classes: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    weight_decay: float,
):
    n, d = x.shape
    steps_per_epoch = -(-n // batch_size)
    boundaries = {
        int(0.6 * epochs) * steps_per_epoch: 0.1,
        int(0.8 * epochs) * steps_per_epoch: 0.1,
    }
    schedule = optax.piecewise_constant_schedule(learning_rate, boundaries)
    # Coupled L2 (added to the gradient before momentum), like torch SGD's weight_decay.
    tx = optax.chain(optax.add_decayed_weights(weight_decay), optax.sgd(schedule, momentum=0.9))
    params = {"w": jnp.zeros((d, num_classes), x.dtype), "b": jnp.zeros((num_classes,), x.dtype)}
    opt_state = tx.init(params)

    def loss_fn(p, xb, yb, mask):
        logits = xb @ p["w"] + p["b"]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, yb)
        return jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)

    def epoch(carry, epoch_key):
        # Shuffle, then pad the permutation to whole batches; padded rows get zero weight.
        perm = jax.random.permutation(epoch_key, n)
        padded = jnp.concatenate([perm, jnp.zeros(steps_per_epoch * batch_size - n, perm.dtype)])
        mask = (jnp.arange(steps_per_epoch * batch_size) < n).astype(x.dtype)

        def step(carry, batch):
            p, s = carry
            idx, m = batch
            grads = jax.grad(loss_fn)(p, x[idx], y[idx], m)
            updates, s = tx.update(grads, s, p)
            return (optax.apply_updates(p, updates), s), None

        shape = (steps_per_epoch, batch_size)
        batches = (padded.reshape(shape), mask.reshape(shape))
        carry, _ = jax.lax.scan(step, carry, batches)
        return carry, None

    (params, _), _ = jax.lax.scan(epoch, (params, opt_state), jax.random.split(key, epochs))
    return params


def linear_probe_accuracy(
    train_features,
    train_labels,
    test_features,
    test_labels,
    *,
    epochs: int = 100,
    learning_rate: float = 0.1,
    weight_decay: float = 0.0,
    batch_size: int = 256,
    seed: int = 0,
) -> float:
    """Test accuracy (percent) of a linear softmax classifier trained on frozen features.

    Protocol (the solo-learn frozen-backbone linear evaluation, scaled down to pre-extracted
    features): features are standardised with the training set's per-dimension mean and standard
    deviation (constant dimensions are left unscaled); a zero-initialised linear layer is trained
    with cross-entropy by SGD with momentum 0.9 on shuffled mini-batches (the last one partial),
    with the learning rate divided by 10 at 60% and 80% of training (solo-learn: epochs 60 and 80
    of 100) and optional coupled L2 weight decay. solo-learn uses lr 0.3 on raw backbone
    features; standardised features make 0.1 the default here. The whole training loop is one
    jitted ``lax.scan``.

    Args:
      train_features: ``[n_train, d]`` frozen features.
      train_labels: ``[n_train]`` integer labels.
      test_features: ``[n_test, d]`` frozen features.
      test_labels: ``[n_test]`` integer labels.
      epochs: passes over the training set.
      learning_rate: initial SGD learning rate.
      weight_decay: L2 coefficient added to the gradient (0 in solo-learn).
      batch_size: mini-batch size (capped at ``n_train``).
      seed: seed of the shuffling.

    Returns:
      Accuracy in percent, a Python float in ``[0, 100]``.

    Raises:
      ValueError: on mismatched shapes, empty sets, non-finite features, negative labels or
        non-positive ``epochs``, ``batch_size`` or ``learning_rate``, or negative ``weight_decay``.

    References:
      Kolesnikov, Zhai, Beyer, "Revisiting Self-Supervised Visual Representation Learning",
      CVPR 2019 (linear evaluation protocol). da Costa et al., solo-learn (JMLR 2022),
      ``scripts/linear/imagenet-100/*.yaml``.
    """
    train, ytr, test, yte = _train_test(train_features, train_labels, test_features, test_labels)
    epochs = check_count(epochs, "epochs", 1)
    batch_size = check_count(batch_size, "batch_size", 1)
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be positive, got {learning_rate}.")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be non-negative, got {weight_decay}.")

    train = train.astype(np.float32)
    test = test.astype(np.float32)
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    train = (train - mean) / std
    test = (test - mean) / std
    num_classes = int(max(ytr.max(), yte.max())) + 1
    params = _train_probe(
        jnp.asarray(train),
        jnp.asarray(ytr),
        jax.random.PRNGKey(seed),
        num_classes=num_classes,
        epochs=epochs,
        batch_size=min(batch_size, train.shape[0]),
        learning_rate=float(learning_rate),
        weight_decay=float(weight_decay),
    )
    logits = jnp.asarray(test) @ params["w"] + params["b"]
    pred = np.asarray(jnp.argmax(logits, axis=-1))
    return float(100.0 * np.mean(pred == yte))


# --------------------------------------------------------------------------------------------------
# The registered audits: "representation", "linear_probe", "zrf".

KNN_K = 20
KNN_TEMPERATURE = 0.07
# Queries beyond this many (a CIFAR-sized retain set) are subsampled with a fixed seed: the
# accuracy estimate is already tight, and the cost grows with queries x memory.
MAX_QUERIES = 4096
# The incompetent teacher of seed s is initialised from key(ZRF_SEED_OFFSET + s). The experiment's
# models take fold_in keys of their root (scenarios.artefacts.role_keys), a different derivation;
# the audit sees only the seed, not the experiment's root.
ZRF_SEED_OFFSET = 30_000


def _query_rows(n: int) -> np.ndarray | slice:
    """The rows of a part used as k-NN / probe queries: all, or a fixed subsample of
    ``MAX_QUERIES``."""
    if n > MAX_QUERIES:
        return np.sort(np.random.default_rng(0).choice(n, MAX_QUERIES, replace=False))
    return slice(None)


def _queries(ctx: registry.AuditContext, part: str):
    """``(features [N, q, F], labels [q])`` of ``part``, at most ``MAX_QUERIES`` rows (a fixed
    subsample, the same for every model)."""
    labels = ctx.data(part)[1]
    keep = _query_rows(len(labels))
    return ctx.features(part)[:, keep], labels[keep]


def _memory(ctx: registry.AuditContext):
    """``(features [N, m, F], labels [m])`` of the whole test split under each audited model
    (the k-NN memory)."""
    parts = [p for p in ("test", "test_forget") if len(getattr(ctx.split, p))]
    feats = np.concatenate([ctx.features(p) for p in parts], axis=1)
    labels = np.concatenate([ctx.data(p)[1] for p in parts])
    return feats, labels


def _cka_percent(ctx: registry.AuditContext, part: str, which: str) -> np.ndarray:
    feats = ctx.features(part)
    if feats.shape[1] < 2:
        return np.full(ctx.num_models, np.nan)
    other = ctx.features(part, which)
    return np.array([100.0 * linear_cka(feats[i], other[i]) for i in range(ctx.num_models)])


def _per_model(fn, memory, memory_labels, feats, labels) -> np.ndarray:
    """``fn(memory[i], memory_labels, feats[i], labels)`` for each model ``i`` (NaN without
    queries): the k-NN and the probe are fitted per model."""
    if not len(labels):
        return np.full(len(feats), np.nan)
    return np.array([fn(memory[i], memory_labels, feats[i], labels) for i in range(len(feats))])


def representation_audit(ctx: registry.AuditContext) -> dict[str, np.ndarray]:
    """Linear CKA to the original and the oracle, and weighted k-NN accuracy (all percent).

    ``CKA_{orig,oracle}_{forget,retain}``: CKA (x 100, as UUEF reports it) between each audited
    model's penultimate features and its original's / oracle's on the same inputs, over the
    whole part. A method that only edits the head keeps ``CKA_orig_forget`` at 100.
    ``kNN_forget`` / ``kNN_retain``: accuracy of the temperature-weighted cosine k-NN
    (k = 20, T = 0.07) classifying forget / retain examples against the test split as memory
    (see the module docstring). k-NN needs labels and is skipped for regression. The features
    of the N models are read once; CKA and k-NN are computed model by model.
    """
    out = {}
    for part in ("forget", "retain"):
        out[f"CKA_orig_{part}"] = _cka_percent(ctx, part, "original")
        out[f"CKA_oracle_{part}"] = _cka_percent(ctx, part, "oracle")
    if ctx.dataset.task == "classification":
        memory, memory_labels = _memory(ctx)
        knn = functools.partial(weighted_knn_accuracy, k=KNN_K, temperature=KNN_TEMPERATURE)
        for part in ("forget", "retain"):
            out[f"kNN_{part}"] = _per_model(knn, memory, memory_labels, *_queries(ctx, part))
    return out


def linear_probe_audit(ctx: registry.AuditContext) -> dict[str, np.ndarray]:
    """``probe_forget`` / ``probe_retain``: a linear probe trained on the test split's frozen
    features (the k-NN memory), evaluated on forget / retain features (percent); one probe per
    model."""
    memory, memory_labels = _memory(ctx)
    return {
        f"probe_{part}": _per_model(
            linear_probe_accuracy, memory, memory_labels, *_queries(ctx, part)
        )
        for part in ("forget", "retain")
    }


@functools.lru_cache(maxsize=8)
def _teacher(init, seed: int):
    # Every method of a seed is scored against the same teacher: initialise it once.
    return init(jax.random.key(ZRF_SEED_OFFSET + seed))


def zrf_teacher(network, seed: int):
    """The incompetent teacher of seed ``seed``: a freshly initialised network of the audited
    architecture, from ``key(ZRF_SEED_OFFSET + seed)`` (see :func:`zrf_audit` for how it
    compares with the reference's teacher)."""
    return _teacher(network.init, int(seed))


def _one(variables):
    return jax.tree.map(lambda x: x[None], variables)


def zrf_audit(ctx: registry.AuditContext) -> dict[str, np.ndarray]:
    """``ZRF``: 1 - mean Jensen-Shannon divergence between the audited model's and a randomly
    initialised network's forget-set predictions (1 = as uninformed as a random network; see
    :func:`~jaxunlearn.audit.membership.zrf_score`).

    Teacher mode. As in the paper (Chundawat et al., AAAI 2023), the teacher is a randomly
    initialised network of the same architecture. Ours is drawn once per seed from its own key
    (:func:`zrf_teacher`), so every method of a seed, the original and the oracle included, is
    scored against the same network, one that no rule has seen; it runs in inference mode like
    every audited model (BatchNorm with its initial running statistics, mean 0 and variance 1).
    The public code differs in two ways (SSD ``forget_random_main.py`` /
    ``forget_*_strategies.py``, taken from bad-teaching-unlearning): its ZRF teacher is the very
    ``unlearning_teacher`` that the bad-teacher method distils from, so that method is scored
    against the network it imitated, which raises its ZRF; and that teacher is never switched
    to ``eval()`` except by the bad-teacher method, so for the other methods its BatchNorm layers
    normalise each forget batch (128 examples) with the batch's own statistics. Models without
    BatchNorm (the MLP) are unaffected by the second point.

    Each audited model is scored against the teacher of its seed (``ctx.seeds``)."""
    if not len(ctx.split.forget):
        return {"ZRF": np.full(ctx.num_models, np.nan)}
    logits = ctx.logits("forget")
    x = ctx.data("forget")[0]
    teachers = {}  # seed -> the teacher's forget logits (models of one seed share a teacher)
    out = np.empty(ctx.num_models)
    for i, seed in enumerate(ctx.seeds.tolist()):
        if seed not in teachers:
            teacher = zrf_teacher(ctx.network, seed)
            teachers[seed] = ctx.predictions.predictor(_one(teacher), x, features=False)[0][0]
        out[i] = zrf_score(logits[i], teachers[seed])
    return {"ZRF": out}


registry.register("representation", representation_audit)
registry.register("linear_probe", linear_probe_audit, task="classification")
registry.register("zrf", zrf_audit, task="classification")
