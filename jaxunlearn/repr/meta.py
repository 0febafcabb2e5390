"""Meta-training of the learned unsupervised rule: gradients through truncated inner unrolls.

The inner loop applies :func:`~jaxunlearn.repr.learned.learned_unsupervised_rule` (its own
``update``, with ``theta`` in the rule state) to a freshly initialised base MLP on unlabelled
batches of a *task*: a random subset of ``num_ways`` classes of the data set, its inputs seen
through a random orthogonal projection with probability ``projection_prob``. The
*meta-objective* is the paper's few-shot ridge regression: after each inner step, a closed-form
ridge readout is fitted on the features of ``shots`` labelled examples per class (centred one-hot
targets, ridge 0.1) and scored on a held-out query set, as the squared distance between the
normalised prediction and the normalised target (:func:`ridge_meta_objective`).

Training follows ``learned_optimization``'s truncated backprop (``outer_trainers/
truncated_grad.py``): each task's inner state (base parameters, task, inner step) is carried from
one truncation to the next; a meta-step unrolls ``unroll_length`` inner steps of every task with
``lax.scan``, vmapped over ``num_tasks`` tasks, differentiates the mean meta-objective over the
unroll with respect to ``theta``, and applies Adam; a task whose inner run reached
``trajectory_length`` steps is replaced by a new task and a new base network at the start of the
next truncation. Tasks start at staggered inner steps so that resets are spread out.

References:
  Metz, Maheswaranathan, Cheung, Sohl-Dickstein, "Meta-Learning Update Rules for Unsupervised
  Representation Learning", ICLR 2019 (few-shot ridge-regression meta-objective, truncated
  unrolls); ``tensorflow/models`` ``research/learning_unsupervised_learning``
  ``meta_objective/linear_regression.py``; ``google/learned_optimization`` (truncated steps);
  ``shared/reference/unlearnable_and_representation.md`` (Part B2).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn.core.rule import StepCounter
from jaxunlearn.core.types import Array, Network, PyTree, Variables
from jaxunlearn.repr import learned
from jaxunlearn.repr.common import PART, check_count, check_nonnegative, check_positive, check_rate

EPS = 1e-8


# ------------------------------------------------------------------------------------ data


class TaskData(NamedTuple):
    """A labelled split, device-resident, indexed by class for episode sampling.

    Attributes:
      x: ``[N, ...]`` inputs.
      y: ``[N]`` int32 labels.
      class_index: ``[num_classes, max_count]`` int32 row indices of each class (padded by
        repeating the class's first row).
      class_count: ``[num_classes]`` int32 examples per class.
    """

    x: Array
    y: Array
    class_index: Array
    class_count: Array

    @property
    def num_classes(self) -> int:
        return int(self.class_index.shape[0])


def task_data(x, y, *, num_classes: int | None = None) -> TaskData:
    """:class:`TaskData` of NumPy/JAX arrays ``x [N, ...]`` and integer labels ``y [N]``.

    Raises:
      ValueError: lengths differ, or a class in ``range(num_classes)`` has no example.
    """
    x, y = np.asarray(x), np.asarray(y).astype(np.int64)
    if y.ndim != 1 or len(x) != len(y):
        raise ValueError(f"`x` and `y` must have one label per example; got {x.shape}, {y.shape}")
    num_classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
    counts = np.bincount(y, minlength=num_classes)[:num_classes]
    if np.any(counts == 0):
        raise ValueError(
            f"every class needs examples to sample tasks; classes {np.flatnonzero(counts == 0)} "
            "have none"
        )
    index = np.zeros((num_classes, counts.max()), np.int32)
    for c in range(num_classes):
        rows = np.flatnonzero(y == c)
        index[c] = np.concatenate([rows, np.full(counts.max() - len(rows), rows[0])])
    return TaskData(
        jnp.asarray(x, jnp.float32),
        jnp.asarray(y, jnp.int32),
        jnp.asarray(index),
        jnp.asarray(counts, jnp.int32),
    )


class Task(NamedTuple):
    """One meta-training task.

    Attributes:
      classes: ``[num_ways]`` int32 classes of the data set in the task (label ``k`` of an episode
        is ``classes[k]``).
      projection: ``[D, D]`` float32 orthogonal map applied to the flattened inputs (identity
        when the task is not projected).
    """

    classes: Array
    projection: Array


def sample_task(key: Array, data: TaskData, *, num_ways: int, projection_prob: float) -> Task:
    """A task of ``num_ways`` distinct random classes, projected with ``projection_prob``."""
    k_classes, k_flip, k_proj = jax.random.split(key, 3)
    classes = jax.random.permutation(k_classes, data.num_classes)[:num_ways].astype(jnp.int32)
    dim = math.prod(data.x.shape[1:])
    q, r = jnp.linalg.qr(jax.random.normal(k_proj, (dim, dim), jnp.float32))
    q = q * jnp.sign(jnp.diagonal(r))[None, :]  # Haar-distributed orthogonal matrix
    project = jax.random.bernoulli(k_flip, projection_prob)
    return Task(classes, jnp.where(project, q, jnp.eye(dim, dtype=jnp.float32)))


def task_inputs(task: Task, x: Array) -> Array:
    """``x`` as the task sees it: its flattened inputs times the task's projection."""
    flat = x.reshape(x.shape[0], -1) @ task.projection
    return flat.reshape(x.shape)


def _rows_of(key: Array, data: TaskData, classes: Array) -> Array:
    """One random row index of each class in ``classes`` (any shape)."""
    pick = jax.random.randint(key, classes.shape, 0, data.class_count[classes])
    return data.class_index[classes, pick]


def unlabelled_batch(key: Array, data: TaskData, task: Task, batch_size: int) -> Array:
    """``[batch_size, ...]`` inputs of the task's classes (classes drawn uniformly)."""
    k_class, k_row = jax.random.split(key)
    ways = jax.random.randint(k_class, (batch_size,), 0, task.classes.shape[0])
    return task_inputs(task, data.x[_rows_of(k_row, data, task.classes[ways])])


def episode(key: Array, data: TaskData, task: Task, shots: int, queries: int):
    """``(support x, support labels, query x, query labels)`` with ``shots`` / ``queries``
    examples of every class of the task; labels are ``0..num_ways-1``."""
    ways = task.classes.shape[0]
    k_s, k_q = jax.random.split(key)
    labels_s = jnp.repeat(jnp.arange(ways, dtype=jnp.int32), shots)
    labels_q = jnp.repeat(jnp.arange(ways, dtype=jnp.int32), queries)
    xs = task_inputs(task, data.x[_rows_of(k_s, data, task.classes[labels_s])])
    xq = task_inputs(task, data.x[_rows_of(k_q, data, task.classes[labels_q])])
    return xs, labels_s, xq, labels_q


# ---------------------------------------------------------------------------- meta-objective


def ridge_meta_objective(
    support: Array,
    support_labels: Array,
    query: Array,
    query_labels: Array,
    *,
    num_classes: int,
    ridge: float | Array = 0.1,
) -> tuple[Array, Array]:
    """The few-shot ridge-regression meta-objective of Metz et al. on frozen features.

    Features are centred by the support mean and L2-normalised per example; the ridge readout
    ``W = (F_s^T F_s + ridge I)^{-1} F_s^T T_s`` is fitted in closed form to the centred one-hot
    targets ``T = onehot(y) - 1/num_classes``; on the query set the loss is the mean squared
    distance between the L2-normalised prediction ``F_q W`` and the L2-normalised target.

    Args:
      support: ``[S, d]`` support features.
      support_labels: ``[S]`` labels in ``[0, num_classes)``.
      query: ``[Q, d]`` query features.
      query_labels: ``[Q]`` labels.
      num_classes: number of classes of the episode.
      ridge: the ridge penalty (0.1, the reference's).

    Returns:
      ``(loss in [0, 4], accuracy in [0, 1])``; the loss is differentiable in the features.
    """
    mean = jnp.mean(support, axis=0, keepdims=True)

    def normalise(f):
        f = f - mean
        return f / (jnp.linalg.norm(f, axis=-1, keepdims=True) + EPS)

    fs, fq = normalise(support), normalise(query)
    targets_s = jax.nn.one_hot(support_labels, num_classes) - 1.0 / num_classes
    targets_q = jax.nn.one_hot(query_labels, num_classes) - 1.0 / num_classes
    gram = fs.T @ fs + ridge * jnp.eye(fs.shape[1], dtype=fs.dtype)
    weights = jnp.linalg.solve(gram, fs.T @ targets_s)
    pred = fq @ weights
    pred_n = pred / (jnp.linalg.norm(pred, axis=-1, keepdims=True) + EPS)
    targ_n = targets_q / jnp.linalg.norm(targets_q, axis=-1, keepdims=True)
    loss = jnp.mean(jnp.sum(jnp.square(pred_n - targ_n), axis=-1))
    accuracy = jnp.mean((jnp.argmax(pred, axis=-1) == query_labels).astype(jnp.float32))
    return loss, accuracy


# ----------------------------------------------------------------------------- the trainer


@dataclasses.dataclass(frozen=True)
class MetaSettings:
    """Settings of meta-training (the defaults are a modest digits run).

    Attributes:
      num_tasks: tasks trained in parallel (vmapped) per meta-step.
      unroll_length: inner steps per truncation (one meta-gradient).
      trajectory_length: inner steps of a task before it is replaced by a new one.
      batch_size: unlabelled examples per inner step.
      num_ways: classes per task.
      shots: labelled support examples per class for the ridge readout.
      queries: query examples per class scoring it.
      ridge: the ridge penalty.
      projection_prob: share of tasks seen through a random orthogonal projection.
      learning_rate: Adam's step on theta.
      clip_norm: global-norm clipping of the meta-gradient.
    """

    num_tasks: int = 8
    unroll_length: int = 10
    trajectory_length: int = 100
    batch_size: int = 32
    num_ways: int = 5
    shots: int = 10
    queries: int = 10
    ridge: float = 0.1
    projection_prob: float = 0.25
    learning_rate: float = 3e-3
    clip_norm: float = 1.0

    def __post_init__(self):
        for name in ("num_tasks", "unroll_length", "trajectory_length", "batch_size", "shots"):
            check_count(getattr(self, name), name, 1)
        check_count(self.num_ways, "num_ways", 2)
        check_count(self.queries, "queries", 1)
        if self.batch_size < 2:
            raise ValueError(
                f"`batch_size` must be >= 2 (the rule normalises over the batch); "
                f"got {self.batch_size}"
            )
        if self.trajectory_length < self.unroll_length:
            raise ValueError(
                f"`trajectory_length` ({self.trajectory_length}) must be at least "
                f"`unroll_length` ({self.unroll_length})"
            )
        check_nonnegative(self.ridge, "ridge")
        check_rate(self.projection_prob, "projection_prob")
        check_positive(self.learning_rate, "learning_rate")
        check_positive(self.clip_norm, "clip_norm")


class InnerState(NamedTuple):
    """One task's inner run, carried from truncation to truncation.

    Attributes:
      variables: the base network's variables.
      task: the task.
      step: inner steps taken on this task (it is replaced once ``step >= trajectory_length``).
      serial: how many tasks this slot has run (keys of new tasks fold it in).
    """

    variables: Variables
    task: Task
    step: Array
    serial: Array


class MetaState(NamedTuple):
    """Meta-training state: theta, Adam's state, the tasks' inner states and the meta-step."""

    theta: PyTree
    opt_state: PyTree
    inner: InnerState
    step: Array


class MetaTrainer(NamedTuple):
    """The pure functions of meta-training (build with :func:`meta_trainer`).

    Attributes:
      init: ``(key, theta=None) -> MetaState``.
      step: ``(MetaState, key) -> (MetaState, metrics)``, jitted; metrics ``meta_loss`` and
        ``meta_accuracy`` (means over the unroll and the tasks), ``grad_norm``.
      evaluate: ``(theta, key) -> metrics``, jitted: ``eval_tasks`` fresh tasks (classes of the
        evaluation split) whose base networks are trained from scratch for
        ``trajectory_length`` inner steps on the training split, then the meta-objective on
        episodes of the evaluation split (``loss``, ``accuracy``) and, for reference, that of the
        same networks untrained (``random_loss``, ``random_accuracy``: a random encoder).
      rule: the learned rule (theta read from its state).
      settings: the :class:`MetaSettings`.
    """

    init: Callable
    step: Callable
    evaluate: Callable
    rule: object
    settings: MetaSettings


def _select(done: Array, new: PyTree, old: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: jnp.where(done, a, b), new, old)


def meta_trainer(
    network: Network,
    train: TaskData,
    evaluation: TaskData | None = None,
    *,
    settings: MetaSettings | None = None,
    theta_dims: dict | None = None,
    vectorize: bool = True,
    eval_tasks: int = 16,
    eval_episodes: int = 4,
) -> MetaTrainer:
    """Builds meta-training of the learned rule for ``network`` (an ``mlp``) on ``train``.

    Args:
      network: the base network (its hidden layers are what the rule trains).
      train: the meta-training split (tasks, unlabelled inner batches and episodes).
      evaluation: the split the evaluation episodes come from (default ``train``); the
        evaluation's inner runs train on ``train``.
      settings: :class:`MetaSettings`.
      theta_dims: ``hidden``, ``channels``, ``rank`` of a fresh theta (:func:`learned.init_theta`).
      vectorize: vmap the tasks of a meta-step (``False``: one after another with ``lax.map``,
        the baseline of the throughput benchmark).
      eval_tasks: tasks of :attr:`MetaTrainer.evaluate`.
      eval_episodes: episodes per evaluation task.

    Raises:
      ValueError: a base network that is not an MLP, ``num_ways`` above the number of classes, or
        a bad setting (naming it), before compute.
    """
    settings = settings or MetaSettings()
    evaluation = train if evaluation is None else evaluation
    theta_dims = dict(theta_dims or {})
    if settings.num_ways > min(train.num_classes, evaluation.num_classes):
        raise ValueError(
            f"`num_ways` ({settings.num_ways}) exceeds the classes of the data "
            f"({min(train.num_classes, evaluation.num_classes)})"
        )
    check_count(eval_tasks, "eval_tasks", 1)
    check_count(eval_episodes, "eval_episodes", 1)
    shapes = jax.eval_shape(network.init, jax.random.key(0))
    learned.architecture_of(shapes)  # a ValueError for a network that is not an MLP
    if tuple(shapes["params"]["layers"]["0"]["kernel"].shape[:1]) != (
        math.prod(train.x.shape[1:]),
    ):
        raise ValueError(
            f"the network takes {shapes['params']['layers']['0']['kernel'].shape[0]} inputs but "
            f"the data has {math.prod(train.x.shape[1:])} values per example"
        )
    rule = learned.learned_unsupervised_rule(network.apply, init_fn=network.init, **theta_dims)
    s = settings
    optimizer = optax.chain(optax.clip_by_global_norm(s.clip_norm), optax.adam(s.learning_rate))

    def new_inner(key: Array, serial: Array, step: Array) -> InnerState:
        k_task, k_net = jax.random.split(key)
        task = sample_task(k_task, train, num_ways=s.num_ways, projection_prob=s.projection_prob)
        return InnerState(network.init(k_net), task, step, serial)

    def features(variables: Variables, x: Array) -> Array:
        return learned.features_of(variables["params"], x)

    def objective(variables: Variables, data: TaskData, task: Task, key: Array):
        xs, ys, xq, yq = episode(key, data, task, s.shots, s.queries)
        return ridge_meta_objective(
            features(variables, xs),
            ys,
            features(variables, xq),
            yq,
            num_classes=s.num_ways,
            ridge=s.ridge,
        )

    def inner_step(theta, variables, task, step, key):
        k_batch, k_rule = jax.random.split(key)
        x = unlabelled_batch(k_batch, train, task, s.batch_size)
        state = learned.LearnedRuleState(theta, StepCounter(step))
        variables, _, metrics = rule.update(variables, state, {PART: {"x": x}}, key=k_rule)
        return variables, metrics

    def truncation(theta, inner: InnerState, key: Array):
        """One task's unroll of ``unroll_length`` steps: (inner, losses, accuracies)."""
        done = inner.step >= s.trajectory_length
        fresh = new_inner(
            jax.random.fold_in(key, inner.serial + 1), inner.serial + 1, jnp.zeros((), jnp.int32)
        )
        inner = _select(done, fresh, inner)

        def body(carry, k):
            variables, step = carry
            k_step, k_obj = jax.random.split(k)
            variables, _ = inner_step(theta, variables, inner.task, step, k_step)
            loss, acc = objective(variables, train, inner.task, k_obj)
            return (variables, step + 1), (loss, acc)

        keys = jax.random.split(jax.random.fold_in(key, 0x5452), s.unroll_length)
        (variables, step), (losses, accs) = jax.lax.scan(body, (inner.variables, inner.step), keys)
        return inner._replace(variables=variables, step=step), losses, accs

    def meta_loss(theta, inner: InnerState, key: Array):
        keys = jax.random.split(key, s.num_tasks)
        if vectorize:
            inner, losses, accs = jax.vmap(truncation, in_axes=(None, 0, 0))(theta, inner, keys)
        else:
            inner, losses, accs = jax.lax.map(lambda a: truncation(theta, *a), (inner, keys))
        return jnp.mean(losses), (inner, jnp.mean(accs))

    def init(key: Array, theta: PyTree | None = None) -> MetaState:
        k_theta, k_tasks, k_offset = jax.random.split(key, 3)
        if theta is None:
            theta = learned.init_theta(k_theta, **theta_dims)
        # Staggered starts (multiples of the unroll), so tasks are replaced at different times.
        truncations = s.trajectory_length // s.unroll_length
        offsets = jax.random.randint(k_offset, (s.num_tasks,), 0, truncations) * s.unroll_length
        inner = jax.vmap(new_inner)(
            jax.random.split(k_tasks, s.num_tasks), jnp.zeros((s.num_tasks,), jnp.int32), offsets
        )
        return MetaState(theta, optimizer.init(theta), inner, jnp.zeros((), jnp.int32))

    @jax.jit
    def step(state: MetaState, key: Array):
        (loss, (inner, acc)), grads = jax.value_and_grad(meta_loss, has_aux=True)(
            state.theta, state.inner, key
        )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.theta)
        theta = optax.apply_updates(state.theta, updates)
        metrics = {
            "meta_loss": loss,
            "meta_accuracy": acc,
            "grad_norm": optax.global_norm(grads),
        }
        return MetaState(theta, opt_state, inner, state.step + 1), metrics

    @jax.jit
    def evaluate(theta: PyTree, key: Array) -> dict[str, Array]:
        def one(k):
            k_task, k_net, k_run, k_obj = jax.random.split(k, 4)
            task = sample_task(
                k_task, evaluation, num_ways=s.num_ways, projection_prob=s.projection_prob
            )

            def body(variables, kt):
                return inner_step(theta, variables, task, jnp.zeros((), jnp.int32), kt)[0], None

            start = network.init(k_net)
            variables, _ = jax.lax.scan(body, start, jax.random.split(k_run, s.trajectory_length))
            episodes = jax.random.split(k_obj, eval_episodes)
            trained = jax.vmap(lambda ke: objective(variables, evaluation, task, ke))(episodes)
            random = jax.vmap(lambda ke: objective(start, evaluation, task, ke))(episodes)
            return trained, random

        (losses, accs), (random_losses, random_accs) = jax.vmap(one)(
            jax.random.split(key, eval_tasks)
        )
        return {
            "loss": jnp.mean(losses),
            "accuracy": jnp.mean(accs),
            "random_loss": jnp.mean(random_losses),
            "random_accuracy": jnp.mean(random_accs),
        }

    return MetaTrainer(init, step, evaluate, rule, settings)


def meta_train(
    trainer: MetaTrainer,
    num_steps: int,
    *,
    key: Array,
    state: MetaState | None = None,
    history: dict | None = None,
    eval_every: int = 0,
    eval_key: Array | None = None,
    progress: Callable | None = None,
) -> tuple[MetaState, dict]:
    """Runs ``num_steps`` meta-steps (from ``state``, else a fresh ``trainer.init(key)``).

    Meta-step ``t`` uses key ``fold_in(key, t)``, so a run resumed from a saved state and
    history continues exactly as an uninterrupted one.

    Args:
      trainer: from :func:`meta_trainer`.
      num_steps: meta-steps to run (> 0).
      key: the run's key.
      state: where to start (a restored :class:`MetaState`).
      history: the history of the steps before ``state`` (continued, not copied).
      eval_every: evaluate theta (``trainer.evaluate`` with ``eval_key``: the same tasks every
        time) at every meta-step that is a multiple of ``eval_every`` (step 0 included) and
        after the last; 0: never.
      eval_key: the evaluation's key; default ``fold_in(key, 2**31 - 1)``.
      progress: ``(step, metrics) -> None`` after every meta-step.

    Returns:
      ``(state, history)``: ``history["meta_loss"]``, ``["meta_accuracy"]``, ``["grad_norm"]``
      per meta-step and ``["eval"]``, a list of ``{"step", "loss", "accuracy", "random_loss",
      "random_accuracy"}``.

    Raises:
      ValueError: ``num_steps`` < 1 or ``eval_every`` < 0.
    """
    num_steps = check_count(num_steps, "num_steps", 1)
    eval_every = check_count(eval_every, "eval_every", 0)
    state = trainer.init(key) if state is None else state
    eval_key = jax.random.fold_in(key, 0x7FFFFFFF) if eval_key is None else eval_key
    if history is None:
        history = {"meta_loss": [], "meta_accuracy": [], "grad_norm": [], "eval": []}

    def maybe_eval(step: int, last: bool) -> None:
        due = eval_every and (step % eval_every == 0 or last)
        if due and not any(e["step"] == step for e in history["eval"]):
            m = trainer.evaluate(state.theta, eval_key)
            history["eval"].append({"step": step, **{k: float(v) for k, v in m.items()}})

    start = int(state.step)
    maybe_eval(start, False)
    for t in range(start, start + num_steps):
        state, metrics = trainer.step(state, jax.random.fold_in(key, t))
        for k in ("meta_loss", "meta_accuracy", "grad_norm"):
            history[k].append(float(metrics[k]))
        if progress is not None:
            progress(t + 1, metrics)
        maybe_eval(t + 1, t + 1 == start + num_steps)
    return state, history


__all__ = [
    "InnerState",
    "MetaSettings",
    "MetaState",
    "MetaTrainer",
    "Task",
    "TaskData",
    "episode",
    "meta_train",
    "meta_trainer",
    "ridge_meta_objective",
    "sample_task",
    "task_data",
    "task_inputs",
    "unlabelled_batch",
]
