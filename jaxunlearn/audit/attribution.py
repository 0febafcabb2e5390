"""UnTrac: attribute a test behaviour to training datasets by unlearning each of them.

Isonuma and Titov (ACL 2024, "Unlearning Reveals the Influential Training Data of Language
Models", arXiv 2401.15241; code misonuma/untrac) estimate how much a training dataset ``Z_k``
shaped the model's behaviour on a test set ``Z'`` by *unlearning* it: start from the trained
``theta``, take ``T`` gradient-ascent steps on ``Z_k`` to get ``theta_k``, and score

    ``I(Z_k, Z') = L(Z'; theta_k) - L(Z'; theta)``

(the rise of the test loss; a dataset the test behaviour rests on raises it most). UnTrac-Inv
swaps the roles and needs one unlearning run, not one per dataset: ascend on ``Z'`` once to get
``theta'`` and score ``I(Z_k, Z') = L(Z_k; theta') - L(Z_k; theta)``. The exact answer is
leave-dataset-out retraining, ``L(Z'; theta_{-k}) - L(Z'; theta)`` with ``theta_{-k}`` trained
with the same recipe (same steps, same key) on every dataset but ``Z_k``; the paper reports how
well the estimates agree with it across datasets (``shared/reference/lm_robust_evaluation.md``,
section 5). Here the agreement is Spearman's rank correlation (:func:`spearman`).

Everything is the library's own pieces: gradient ascent is the
:func:`~jaxunlearn.rules.gradient_ascent` rule and retraining the :func:`~jaxunlearn.rules.finetune`
rule, both driven by :func:`~jaxunlearn.train.scan_steps` (Adam, as the paper prefers for UnTrac),
and the ``K`` unlearning runs (and the ``K`` retrainings) are one ``vmap`` over the datasets'
index sets. Datasets are rows of one token pool ``(x, y)`` given as ``groups [K, n]``; equal sizes
keep the ``vmap`` one program. Losses are mean token NLLs
(:func:`~jaxunlearn.core.losses.token_nll_mean`), so the functions work on any supervised network
whose ``apply`` gives logits for ``y`` (a classifier too).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.core import losses
from jaxunlearn.core.checks import check_count
from jaxunlearn.core.types import Array, Variables

# Adam, the optimiser the paper finds UnTrac works best with.
ADAM = {"name": "adam"}


class UnTracResult(NamedTuple):
    """What :func:`run_untrac` returns (each score ``[K]``, one per training dataset).

    Attributes:
      untrac: ``L(Z'; theta_k) - L(Z'; theta)`` after gradient ascent on dataset ``k``.
      untrac_inv: ``L(Z_k; theta') - L(Z_k; theta)`` after gradient ascent on the test set.
      exact: ``L(Z'; theta_{-k}) - L(Z'; theta)``, retraining without dataset ``k``.
      spearman_untrac, spearman_inv: rank correlation of each estimate with ``exact``.
      test_loss: ``L(Z'; theta)`` of the model trained on every dataset.
    """

    untrac: np.ndarray
    untrac_inv: np.ndarray
    exact: np.ndarray
    spearman_untrac: float
    spearman_inv: float
    test_loss: float


def _positive(name: str, value) -> float:
    if not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a finite positive number; got {value!r}.")
    return float(value)


def check_groups(groups, num_rows: int) -> np.ndarray:
    """``groups`` as int32 ``[K, n]``: ``K >= 2`` disjoint, equal-sized, non-empty index sets
    into a pool of ``num_rows`` rows.

    Raises:
      ValueError: ragged or empty groups, fewer than 2, an index outside the pool, overlap.
    """
    try:
        g = np.asarray(groups)
    except ValueError as e:  # ragged lists
        raise ValueError(f"`groups` must hold equally many rows per dataset: {e}") from None
    if g.dtype == object or g.ndim != 2 or g.shape[0] < 2 or g.shape[1] < 1:
        raise ValueError(
            f"`groups` must be [K >= 2 datasets, n >= 1 rows] of row indices with equally many "
            f"rows per dataset (one vmapped program); got shape {g.shape}."
        )
    if not np.issubdtype(g.dtype, np.integer):
        raise ValueError(f"`groups` must hold integer row indices; got {g.dtype}.")
    if g.min() < 0 or g.max() >= num_rows:
        raise ValueError(f"`groups` holds rows outside [0, {num_rows}): [{g.min()}, {g.max()}].")
    if len(np.unique(g)) != g.size:
        raise ValueError("`groups` overlap: each row may belong to one dataset only.")
    return g.astype(np.int32)


def author_groups(author, rows, num_groups: int) -> np.ndarray:
    """``[K, n]`` datasets for UnTrac from a corpus's rows: the distinct authors of ``rows``
    (``author[row] >= 0``; utility facts, ``-1``, are left out) in order of appearance, cut into
    ``num_groups`` consecutive runs of equally many authors (the remainder is dropped), each
    dataset holding its authors' rows, truncated to the smallest dataset's size.

    Raises:
      ValueError: ``num_groups < 2`` or fewer authors than groups.
    """
    num_groups = check_count(num_groups, "num_groups", 2)
    rows = np.asarray(rows)
    who = np.asarray(author)[rows]
    keep = who >= 0
    rows, who = rows[keep], who[keep]
    _, first = np.unique(who, return_index=True)
    order = who[np.sort(first)]
    per = len(order) // num_groups
    if per == 0:
        raise ValueError(f"{len(order)} authors cannot fill `num_groups`={num_groups} datasets.")
    groups = [rows[np.isin(who, order[k * per : (k + 1) * per])] for k in range(num_groups)]
    n = min(len(g) for g in groups)
    return np.stack([g[:n] for g in groups]).astype(np.int32)


def graded_rows(groups, counts: Sequence[int]) -> np.ndarray:
    """The first ``counts[k]`` rows of each dataset ``groups[k]``, concatenated: a test set whose
    dependence on the datasets is planted (more rows, more influence).

    Raises:
      ValueError: one count per dataset is needed, each in ``[0, n]``, not all zero.
    """
    g = np.asarray(groups)
    counts = [int(c) for c in counts]
    if len(counts) != g.shape[0] or min(counts) < 0 or max(counts) > g.shape[1]:
        raise ValueError(
            f"`counts` must give one count in [0, {g.shape[1]}] per dataset ({g.shape[0]}); "
            f"got {counts}."
        )
    if sum(counts) == 0:
        raise ValueError("`counts` selects no row.")
    return np.concatenate([g[k, :c] for k, c in enumerate(counts)]).astype(np.int32)


def mean_token_loss(apply: Callable, variables: Variables, x: Array, y: Array) -> Array:
    """``L(Z; theta)``: the mean token NLL of ``y`` given ``x`` (scalar, float32)."""
    return losses.token_nll_mean(apply(variables, x).logits, y)


def group_losses(apply: Callable, variables: Variables, x: Array, y: Array, groups) -> Array:
    """``[K]`` ``L(Z_k; theta)`` of each dataset (rows ``groups[k]`` of the pool ``x, y``)."""
    x, y, groups = jnp.asarray(x), jnp.asarray(y), jnp.asarray(groups)
    return jax.lax.map(lambda g: mean_token_loss(apply, variables, x[g], y[g]), groups)


def _unlearn(apply, variables, x, y, rows, *, steps, learning_rate, batch_size, optimizer, key):
    """``steps`` gradient-ascent updates on ``x[rows], y[rows]`` (pure, traceable)."""
    from jaxunlearn.rules.gradient_ascent import gradient_ascent
    from jaxunlearn.train.loop import Stream, scan_steps

    rule = gradient_ascent(
        apply, learning_rate=learning_rate, optimizer=optimizer, train_mode=False
    )
    stream = Stream(x, y, {"forget": rows}, {})
    new, _, _ = scan_steps(
        rule, variables, stream, batch_sizes={"forget": batch_size}, num_steps=steps, key=key
    )
    return new


def _train(apply, variables, x, y, rows, *, steps, learning_rate, batch_size, optimizer, key):
    """``steps`` fine-tuning updates on ``x[rows], y[rows]`` (pure, traceable)."""
    from jaxunlearn.rules.finetune import finetune
    from jaxunlearn.train.loop import Stream, scan_steps

    rule = finetune(apply, learning_rate=learning_rate, optimizer=optimizer, train_mode=False)
    stream = Stream(x, y, {"retain": rows}, {})
    new, _, _ = scan_steps(
        rule, variables, stream, batch_sizes={"retain": batch_size}, num_steps=steps, key=key
    )
    return new


def untrac(
    apply: Callable,
    variables: Variables,
    x,
    y,
    groups,
    test: tuple,
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    key: Array,
    optimizer=ADAM,
) -> Array:
    """UnTrac scores ``[K]``: ``L(Z'; theta_k) - L(Z'; theta)``, ``theta_k`` = ``steps``
    gradient-ascent updates on dataset ``k`` from ``variables`` (one ``vmap`` over datasets).

    Args:
      apply: the network's ``apply``.
      variables: the trained model ``theta``.
      x, y: ``[N, T]`` the pool of training rows (tokens, pre-shifted labels).
      groups: ``[K, n]`` row indices of each training dataset (:func:`check_groups`).
      test: ``(tokens, labels)`` of the test set ``Z'``.
      steps, learning_rate, batch_size: the unlearning run (the paper: one epoch, Adam-type).
      key: PRNG key of the batch order (the same for every dataset).
      optimizer: optax optimizer or settings (:func:`~jaxunlearn.core.optim.resolve`).

    Returns:
      float32 ``[K]``: the larger, the more the test behaviour rests on the dataset.
    """
    g = check_groups(groups, np.shape(x)[0])
    steps = check_count(steps, "steps", 1)
    batch_size = min(check_count(batch_size, "batch_size", 1), g.shape[1])
    learning_rate = _positive("learning_rate", learning_rate)
    x, y = jnp.asarray(x), jnp.asarray(y)
    tx, ty = jnp.asarray(test[0]), jnp.asarray(test[1])

    @jax.jit
    def run(variables, g, key):
        before = mean_token_loss(apply, variables, tx, ty)

        def one(rows):
            new = _unlearn(
                apply,
                variables,
                x,
                y,
                rows,
                steps=steps,
                learning_rate=learning_rate,
                batch_size=batch_size,
                optimizer=optimizer,
                key=key,
            )
            return mean_token_loss(apply, new, tx, ty)

        return jax.vmap(one)(g) - before

    return run(variables, jnp.asarray(g), key)


def untrac_inv(
    apply: Callable,
    variables: Variables,
    x,
    y,
    groups,
    test: tuple,
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    key: Array,
    optimizer=ADAM,
) -> Array:
    """UnTrac-Inv scores ``[K]``: ascend once on the test set to ``theta'``, then
    ``L(Z_k; theta') - L(Z_k; theta)`` per dataset. Arguments as :func:`untrac`
    (``batch_size`` is capped at the test set's size)."""
    g = check_groups(groups, np.shape(x)[0])
    steps = check_count(steps, "steps", 1)
    tx, ty = jnp.asarray(test[0]), jnp.asarray(test[1])
    batch_size = min(check_count(batch_size, "batch_size", 1), tx.shape[0])
    learning_rate = _positive("learning_rate", learning_rate)
    x, y = jnp.asarray(x), jnp.asarray(y)

    @jax.jit
    def run(variables, g, key):
        new = _unlearn(
            apply,
            variables,
            tx,
            ty,
            jnp.arange(tx.shape[0]),
            steps=steps,
            learning_rate=learning_rate,
            batch_size=batch_size,
            optimizer=optimizer,
            key=key,
        )
        return group_losses(apply, new, x, y, g) - group_losses(apply, variables, x, y, g)

    return run(variables, jnp.asarray(g), key)


def leave_dataset_out(
    apply: Callable,
    init_variables: Variables,
    x,
    y,
    groups,
    test: tuple,
    *,
    steps: int,
    learning_rate: float,
    batch_size: int,
    key: Array,
    optimizer=ADAM,
) -> tuple[Array, Array, Variables]:
    """The exact influence: retrain from ``init_variables`` on every dataset (``theta``) and on
    every dataset but ``k`` (``theta_{-k}``, one ``vmap``), same steps and batch-order key.

    Returns:
      ``(influence [K], L(Z'; theta), theta)``: ``influence[k] = L(Z'; theta_{-k}) -
      L(Z'; theta)``, and the model trained on everything (what :func:`untrac` starts from).
    """
    g = check_groups(groups, np.shape(x)[0])
    steps = check_count(steps, "steps", 1)
    batch_size = min(check_count(batch_size, "batch_size", 1), g.shape[1])
    learning_rate = _positive("learning_rate", learning_rate)
    x, y = jnp.asarray(x), jnp.asarray(y)
    tx, ty = jnp.asarray(test[0]), jnp.asarray(test[1])
    k = g.shape[0]
    # Row k of `others` = every dataset's rows but k's.
    others = np.stack([np.concatenate([g[j] for j in range(k) if j != i]) for i in range(k)])
    train = dict(
        steps=steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        optimizer=optimizer,
        key=key,
    )

    @jax.jit
    def run(init_variables, everything, others):
        full = _train(apply, init_variables, x, y, everything, **train)
        left_out = jax.vmap(
            lambda rows: mean_token_loss(
                apply, _train(apply, init_variables, x, y, rows, **train), tx, ty
            )
        )(others)
        full_loss = mean_token_loss(apply, full, tx, ty)
        return left_out - full_loss, full_loss, full

    return run(init_variables, jnp.asarray(g.reshape(-1)), jnp.asarray(others))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given the average of the ranks they span."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation: the Pearson correlation of the (average-tie) ranks.

    ``nan`` when either side is constant (no ranking to compare).

    Raises:
      ValueError: different lengths, fewer than 2 values, or non-finite values.
    """
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if a.shape != b.shape or a.size < 2:
        raise ValueError(
            f"spearman needs two equally long sequences of >= 2 values; got {a.size}, {b.size}."
        )
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("spearman needs finite values.")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt(np.sum(ra * ra) * np.sum(rb * rb))
    return float(np.sum(ra * rb) / denom) if denom > 0 else float("nan")


def run_untrac(
    apply: Callable,
    init_variables: Variables,
    x,
    y,
    groups,
    test: tuple,
    *,
    train_steps: int,
    train_learning_rate: float,
    unlearn_steps: int,
    unlearn_learning_rate: float,
    batch_size: int,
    key: Array,
    inv_steps: int | None = None,
    optimizer=ADAM,
) -> UnTracResult:
    """The whole UnTrac experiment on one pool of datasets.

    Trains ``theta`` on every dataset and ``theta_{-k}`` without each (:func:`leave_dataset_out`,
    the exact answer), then scores the datasets with :func:`untrac` and :func:`untrac_inv` from
    ``theta`` and compares each ranking with the exact one by :func:`spearman`.

    Args:
      apply: the network's ``apply``.
      init_variables: the initialisation every retraining starts from.
      x, y, groups, test: as :func:`untrac`.
      train_steps, train_learning_rate: the training recipe (equal for every retraining).
      unlearn_steps, unlearn_learning_rate: UnTrac's gradient ascent.
      batch_size: batch size of training and unlearning.
      key: PRNG key (split into the training and the unlearning batch orders).
      inv_steps: UnTrac-Inv's ascent steps on the test set (default ``unlearn_steps``).
      optimizer: optax optimizer or settings for every run (default Adam).

    Returns:
      :class:`UnTracResult`.
    """
    train_key, unlearn_key = jax.random.split(key)
    exact, full_loss, theta = leave_dataset_out(
        apply,
        init_variables,
        x,
        y,
        groups,
        test,
        steps=train_steps,
        learning_rate=train_learning_rate,
        batch_size=batch_size,
        key=train_key,
        optimizer=optimizer,
    )
    common = dict(learning_rate=unlearn_learning_rate, batch_size=batch_size, key=unlearn_key)
    scores = untrac(
        apply, theta, x, y, groups, test, steps=unlearn_steps, optimizer=optimizer, **common
    )
    inv = untrac_inv(
        apply,
        theta,
        x,
        y,
        groups,
        test,
        steps=unlearn_steps if inv_steps is None else inv_steps,
        optimizer=optimizer,
        **common,
    )
    exact, scores, inv = (np.asarray(a, np.float64) for a in (exact, scores, inv))
    return UnTracResult(
        untrac=scores,
        untrac_inv=inv,
        exact=exact,
        spearman_untrac=spearman(scores, exact),
        spearman_inv=spearman(inv, exact),
        test_loss=float(full_loss),
    )
