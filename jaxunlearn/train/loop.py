"""The one training loop: runs any rule (training, retraining, unlearning) over a batch stream.

Training the original model, retraining an oracle and unlearning are all "a rule applied for N
steps to variables, over batches drawn from index sets of an in-memory dataset". :func:`fit` does
that with the steps fused into ``lax.scan`` chunks, batches gathered on device from per-epoch
permutations (a pure function of the key and the step number, so a resumed run sees exactly the
batches an uninterrupted run would), optional on-device augmentation of every batch
(:mod:`jaxunlearn.data.augment`, keyed the same way), optional data parallelism over a ``data``
mesh axis, optional ``vmap`` over an ensemble of models, orbax checkpoints after every chunk,
and a divergence check that stops a run whose parameters turn NaN or inf.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxunlearn.core.checks import check_count
from jaxunlearn.core.rule import is_step_counter
from jaxunlearn.core.tree import all_finite
from jaxunlearn.core.types import Array, PyTree, UnlearningRule, Variables
from jaxunlearn.train import multihost, sharding, stream_checks


class Stream(NamedTuple):
    """Device-resident data and the index sets that batch parts are drawn from.

    Attributes:
      x: inputs of the whole (training) set.
      y: targets of the whole set.
      index: ``{part name: int32 indices into x/y}``, e.g. ``{"forget": ..., "retain": ...}``. Each
        index array may carry a leading model axis when :func:`fit` runs an ensemble with
        ``per_model_index=True``.
      extra: ``{field name: array}`` of further per-example data, as long as ``x`` (a language
        model's alternative answers, a fixed wrong label per example, ...). A batch part holds
        ``x``, ``y``, ``index`` (the rows' positions in ``x``) and every extra field, gathered at
        the same rows.
    """

    x: Array
    y: Array
    index: Mapping[str, Array]
    extra: Mapping[str, Array] = {}

    def with_index(self, index: Mapping[str, Array]) -> Stream:
        """The same data with other index sets."""
        return Stream(self.x, self.y, index, self.extra)


def make_stream(
    x, y, index: Mapping[str, Any], *, extra: Mapping[str, Any] | None = None
) -> Stream:
    """Builds a :class:`Stream` from NumPy or JAX arrays (``extra``: see :class:`Stream`)."""
    stream_checks.check_stream(x, y, index, extra)  # equal lengths, indices in [0, len(x))
    return Stream(
        jnp.asarray(x),
        jnp.asarray(y),
        {k: jnp.asarray(v, jnp.int32) for k, v in index.items()},
        {k: jnp.asarray(v) for k, v in (extra or {}).items()},
    )


def steps_per_epoch(size: int, batch_size: int) -> int:
    """Full batches in one pass over ``size`` examples (the last partial batch is dropped)."""
    return max(size // batch_size, 1)


def _epoch_permutation(key: Array, part: int, epoch: Array, n: int) -> Array:
    """The order in which part number ``part`` (of the sorted part names) is read in ``epoch``."""
    return jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, part), epoch), n)


def _gather(stream: Stream, name: str, size: int, perm: Array, pos: Array):
    rows = stream.index[name][jax.lax.dynamic_slice(perm, (pos * size,), (size,))]
    part = {"x": stream.x[rows], "y": stream.y[rows], "index": rows}
    part.update({field: values[rows] for field, values in stream.extra.items()})
    return part


def sample_batch(stream: Stream, batch_sizes: Mapping[str, int], key: Array, step: Array):
    """The batch of ``step``: for each part, a slice of that part's permutation for this epoch."""
    batch = {}
    for i, (name, size) in enumerate(sorted(batch_sizes.items())):
        n = stream.index[name].shape[0]
        spe = steps_per_epoch(n, size)
        perm = _epoch_permutation(key, i, step // spe, n)
        batch[name] = _gather(stream, name, size, perm, step % spe)
    return batch


def check_batch_sizes(
    batch_sizes: Mapping[str, int], sizes: Mapping[str, int], num_devices: int = 1
) -> None:
    """Rejects batch sizes that are not integers >= 1, larger than their data, or not divisible
    by the devices."""
    for name, bs in batch_sizes.items():
        if name not in sizes:
            raise ValueError(
                f"No index set named {name!r} for its batch size; have {sorted(sizes)}"
            )
        bs = check_count(bs, f"batch_sizes[{name!r}]", 1)
        if bs > sizes[name]:
            raise ValueError(
                f"`{name}` batch size {bs} is larger than the {name} data ({sizes[name]} examples)."
            )
        if bs % num_devices:
            raise ValueError(
                f"`{name}` batch size {bs} is not divisible by the {num_devices} "
                "devices of the data mesh."
            )


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      variables: the final variables (with a leading model axis for ensembles).
      state: the final rule state.
      metrics: ``{name: np.ndarray [steps_run, ...]}``, per-step metrics of this invocation.
      diverged: bool (``np.ndarray [num_models]`` for ensembles): parameters became non-finite.
      steps: number of steps completed (including those restored from a checkpoint).
      runtime_s: wall-clock seconds of execution, compile time excluded.
      compile_s: seconds spent compiling.
    """

    variables: Variables
    state: PyTree
    metrics: dict[str, np.ndarray]
    diverged: Any
    steps: int
    runtime_s: float
    compile_s: float


@dataclasses.dataclass
class Progress:
    """Prints one line per chunk to stderr: ``label: step/total (pct) metrics elapsed``."""

    label: str = "fit"
    enabled: bool = True
    stream: Any = None

    def __call__(self, step: int, total: int, metrics: Mapping[str, float], elapsed: float):
        if not self.enabled:
            return
        shown = " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
        print(
            f"  [{self.label}] step {step}/{total} ({100 * step / max(total, 1):.0f}%) {shown} "
            f"{elapsed:.1f}s",
            file=self.stream or sys.stderr,
            flush=True,
        )


def data_mesh(num_devices: int | None = None) -> Mesh:
    """A 1-D mesh with a ``data`` axis over the first ``num_devices`` devices (all by default,
    every host's after ``jax.distributed.initialize()``), with automatic sharding propagation
    (``AxisType.Auto``)."""
    devices = jax.devices()[: num_devices or jax.device_count()]
    return jax.make_mesh(
        (len(devices),), ("data",), devices=devices, axis_types=(jax.sharding.AxisType.Auto,)
    )


def _auto(mesh: Mesh | None) -> Mesh | None:
    # Batches are placed with sharding constraints, which need Auto axes; a mesh built with
    # Explicit axes (the jax.make_mesh default) is converted, same devices, same names.
    if mesh is None:
        return None
    return Mesh(
        mesh.devices,
        mesh.axis_names,
        axis_types=(jax.sharding.AxisType.Auto,) * len(mesh.axis_names),
    )


def _data_sharding(mesh: Mesh | None):
    if mesh is None:
        return None
    return NamedSharding(mesh, PartitionSpec("data"))


def _augmented(batch: dict, augment: Callable, key: Array) -> dict:
    """``batch`` with every part's inputs ``x`` augmented, part ``j`` (of the sorted part names)
    with key ``fold_in(key, j)``: independent draws per part, and per step through ``key``."""
    return {
        name: {**batch[name], "x": augment(batch[name]["x"], jax.random.fold_in(key, j))}
        for j, name in enumerate(sorted(batch))
    }


def _chunk_fn(
    rule: UnlearningRule,
    batch_sizes: Mapping[str, int],
    chunk_size: int,
    num_steps: int,
    mesh: Mesh | None,
    metric_shapes: PyTree,
    carry_shardings: tuple[PyTree, PyTree] | None = None,
    augment: Callable | None = None,
):
    batch_sharding = _data_sharding(mesh)

    def chunk(variables, state, stream, key, start):
        data_key, rule_key = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
        augment_key = jax.random.fold_in(key, 2)

        parts = sorted(batch_sizes.items())
        sizes = [stream.index[name].shape[0] for name, _ in parts]
        spes = [steps_per_epoch(n, size) for n, (_, size) in zip(sizes, parts, strict=True)]

        def body(carry, i):
            v, s, perms = carry
            step = start + i
            # The same batches as ``sample_batch``, but each epoch's permutation (a sort over the
            # whole index set) is drawn once per epoch instead of at every step: it was half of
            # the step time of a small model. The predicate does not depend on the model, so
            # under an ensemble ``vmap`` this stays a real branch.
            perms = tuple(
                jax.lax.cond(
                    (i == 0) | (step % spe == 0),
                    lambda j=j, spe=spe, n=n: _epoch_permutation(data_key, j, step // spe, n),
                    lambda j=j: perms[j],
                )
                for j, (spe, n) in enumerate(zip(spes, sizes, strict=True))
            )

            def run(c):
                v, s = c
                batch = {
                    name: _gather(stream, name, size, perms[j], step % spes[j])
                    for j, (name, size) in enumerate(parts)
                }
                if batch_sharding is not None:
                    batch = jax.lax.with_sharding_constraint(
                        batch, jax.tree.map(lambda _: batch_sharding, batch)
                    )
                if augment is not None:
                    batch = _augmented(batch, augment, jax.random.fold_in(augment_key, step))
                v, s, m = rule.update(v, s, batch, key=jax.random.fold_in(rule_key, step))
                if carry_shardings is not None:  # sharded parameters stay sharded
                    v, s = jax.lax.with_sharding_constraint((v, s), carry_shardings)
                return (v, s), m

            def skip(c):
                return c, jax.tree.map(lambda sd: jnp.zeros(sd.shape, sd.dtype), metric_shapes)

            (v, s), m = jax.lax.cond(step < num_steps, run, skip, (v, s))
            return (v, s, perms), m

        no_perms = tuple(jnp.arange(n) for n in sizes)  # placeholders of the permutations' type
        (variables, state, _), metrics = jax.lax.scan(
            body, (variables, state, no_perms), jnp.arange(chunk_size)
        )
        if carry_shardings is not None:  # the next chunk is compiled for these placements
            variables, state = jax.lax.with_sharding_constraint((variables, state), carry_shardings)
        return variables, state, metrics, all_finite(variables["params"])

    return chunk


def _shared_counters(state: PyTree) -> tuple[bool, ...]:
    """Which leaves of a rule state are :class:`~jaxunlearn.core.rule.StepCounter` counts.

    Every model of an ensemble takes its updates together, so a declared step counter holds the
    same value in all of them; no value is read from the device to decide it.
    """
    marks = jax.tree.map(
        lambda node: jax.tree.map(lambda _: is_step_counter(node), node),
        state,
        is_leaf=is_step_counter,
    )
    return tuple(bool(m) for m in jax.tree.leaves(marks))


def _vmap_models(chunk: Callable, shared: tuple[bool, ...], index_axes: Mapping[str, Any]):
    """``chunk`` vmapped over the leading model axis, with the ``shared`` state leaves unmapped.

    vmap turns a ``lax.cond`` or ``lax.switch`` on a mapped value into a ``select`` that runs every
    branch, so a rule's phase switch or one-shot edit on its step counter would cost all branches
    at every step. The shared counters therefore enter as one scalar (model 0's, equal to all
    others) and stay unmapped through the scan as long as their updates read only unmapped values;
    they leave broadcast back to ``[N]``, so the program takes and returns the usual ensemble
    state. A rule whose counter update reads a model's data is a bug in the rule: tracing then
    fails (vmap cannot return a mapped value unmapped).
    """

    def run(variables, state, stream, key, start):
        leaves, treedef = jax.tree.flatten(state)
        axes = treedef.unflatten([None if s else 0 for s in shared])
        inner = treedef.unflatten([x[0] if s else x for x, s in zip(leaves, shared, strict=True)])
        variables, inner, metrics, finite = jax.vmap(
            chunk,
            in_axes=(0, axes, Stream(None, None, index_axes, None), 0, None),
            out_axes=(0, axes, 0, 0),
        )(variables, inner, stream, key, start)
        state = treedef.unflatten(
            [
                jnp.broadcast_to(y, x.shape) if s else y
                for x, y, s in zip(leaves, jax.tree.leaves(inner), shared, strict=True)
            ]
        )
        return variables, state, metrics, finite

    return run


# Compiled chunk programs of recent fits, oldest first (see ``fit``).
_COMPILED: collections.OrderedDict = collections.OrderedDict()
_COMPILED_CAPACITY = 8
# (rule.init, ensemble) -> its jitted (and, for ensembles, vmapped) form, so that fitting the same
# rule again reuses the compiled initialiser instead of tracing and compiling a new one.
_INITS: collections.OrderedDict = collections.OrderedDict()


def _jitted_init(init, ensemble: bool):
    fn = _INITS.get((init, ensemble))
    if fn is None:
        one = lambda v, k: init(v, key=k)  # noqa: E731
        fn = jax.jit(jax.vmap(one) if ensemble else one)  # compiled: some rules build models
        _INITS[(init, ensemble)] = fn
        while len(_INITS) > _COMPILED_CAPACITY:
            _INITS.popitem(last=False)
    return fn


def _signature(tree: PyTree) -> tuple:
    """Structure, abstract types and placements of ``tree``: what a compiled program accepts."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((jax.typeof(x), getattr(x, "sharding", None)) for x in leaves)


def fit(
    rule: UnlearningRule,
    variables: Variables,
    stream: Stream,
    *,
    batch_sizes: Mapping[str, int],
    num_steps: int,
    key: Array,
    state: PyTree | None = None,
    chunk_size: int | None = None,
    mesh: Mesh | None = None,
    ensemble: bool = False,
    per_model_index: bool = False,
    checkpoint_dir: str | None = None,
    progress: Callable | None = None,
    augment: Callable | None = None,
) -> FitResult:
    """Applies ``rule`` to ``variables`` for ``num_steps`` steps.

    Args:
      rule: the rule to run (a training rule or an unlearning rule).
      variables: starting variables; with ``ensemble=True`` every leaf has a leading model axis.
      stream: device-resident data and index sets (see :func:`make_stream`).
      batch_sizes: ``{part: batch size}`` for the parts the rule reads, e.g.
        ``{"forget": 32, "retain": 64}``.
      num_steps: number of updates.
      key: PRNG key of the run (one key per model when ``ensemble=True``); batches and the rule's
        per-step keys derive from it and the step number.
      state: the rule state to start from; ``rule.init(variables, key=key)`` by default.
      chunk_size: steps fused in one compiled ``lax.scan`` call (progress and checkpoints happen
        between chunks); defaults to about a tenth of the run.
      mesh: a mesh with a ``data`` axis: batches are split over it. Variables already sharded
        over this mesh (:func:`~jaxunlearn.train.sharding.shard_variables`) keep their sharding,
        and the rule state's leaves that mirror them take the same
        (:func:`~jaxunlearn.train.sharding.state_shardings`); everything else is replicated.
        With ``ensemble`` everything but the batches is replicated.
      ensemble: vmap the whole loop over a leading model axis of variables, state and key.
        The rule state's :class:`~jaxunlearn.core.rule.StepCounter` leaves stay unmapped inside
        the program, so the rule's branches on them stay branches instead of selects that run
        every branch; the returned state still has the model axis on every leaf.
      per_model_index: with ``ensemble``, index arrays of ``stream`` also carry the model axis
        (each model draws from its own index sets).
      checkpoint_dir: orbax checkpoint directory; the run resumes from its latest checkpoint.
      progress: ``(step, total, metrics, elapsed)`` callback after every chunk.
      augment: ``(images, key) -> images`` (see :mod:`jaxunlearn.data.augment`) applied on the
        device to the inputs ``x`` of every batch part at every step, inside the compiled scan;
        the key of step ``t`` and part ``j`` is ``fold_in(fold_in(fold_in(key, 2), t), j)``, so
        parts, steps and ensemble models draw independently and a resumed run augments as an
        uninterrupted one. Only the training batches are augmented. ``None``: no augmentation.

    Returns:
      A :class:`FitResult`. A call with the same ``rule`` object, settings and argument types as
      one of the last few calls reuses its compiled program (``compile_s`` is then 0).
    """
    num_steps = check_count(num_steps, "num_steps", 0)
    sizes = {k: int(v.shape[-1]) for k, v in stream.index.items()}
    mesh = _auto(mesh)
    num_devices = 1 if mesh is None else int(mesh.shape["data"])
    check_batch_sizes(batch_sizes, sizes, num_devices)
    stream = stream.with_index({k: stream.index[k] for k in batch_sizes})
    chunk_size = int(chunk_size or max(1, math.ceil(num_steps / 10)))

    if state is None:
        state = _jitted_init(rule.init, ensemble)(variables, key)
    placed = carry = None
    if mesh is not None:
        replicated = NamedSharding(mesh, PartitionSpec())
        placed = (replicated, replicated)
        if not ensemble:
            kept = sharding.placements(variables, mesh)
            placed = (kept, sharding.state_shardings(state, kept, mesh))
            carry = placed if sharding.is_sharded(kept) else None
        variables, state = jax.device_put((variables, state), placed)
        stream = jax.device_put(stream, replicated)

    manager = None
    start = 0
    if checkpoint_dir is not None:
        from jaxunlearn.train import checkpoint as ckpt

        manager = ckpt.manager(checkpoint_dir)
        restored = ckpt.restore_latest(manager, {"variables": variables, "state": state})
        if restored is not None:
            start, tree = restored
            variables, state = tree["variables"], tree["state"]
            if mesh is not None:
                variables, state = jax.device_put((variables, state), placed)

    def one_update(v, s, k, index):
        batch = sample_batch(stream.with_index(index), batch_sizes, k, jnp.zeros((), jnp.int32))
        return rule.update(v, s, batch, key=k)[2]

    one_update = stream_checks.naming_missing_parts(one_update, batch_sizes)  # no bare KeyError
    index_axes = {k: (0 if per_model_index else None) for k in stream.index}
    shared = _shared_counters(state) if ensemble else ()

    def build():
        if ensemble:
            metric_shapes = jax.eval_shape(
                lambda v, s, k, ix: jax.tree.map(
                    lambda m: m[0], jax.vmap(one_update, in_axes=(0, 0, 0, index_axes))(v, s, k, ix)
                ),
                variables,
                state,
                key,
                dict(stream.index),
            )
        else:
            metric_shapes = jax.eval_shape(one_update, variables, state, key, dict(stream.index))
        chunk = _chunk_fn(
            rule, batch_sizes, chunk_size, num_steps, mesh, metric_shapes, carry, augment=augment
        )
        args = (variables, state, stream, key, jnp.asarray(start, jnp.int32))
        if not ensemble:
            return jax.jit(chunk).lower(*args).compile()
        return jax.jit(_vmap_models(chunk, shared, index_axes)).lower(*args).compile()

    # A second fit of the same rule object on arguments of the same types reuses the program
    # (e.g. models trained one after another, or a resumed run in the same process).
    program = (
        rule.init,
        rule.update,
        tuple(sorted(batch_sizes.items())),
        chunk_size,
        num_steps,
        mesh,
        ensemble,
        per_model_index,
        shared,
        augment,
        _signature((variables, state, stream, key)),
    )
    compile_s = 0.0
    compiled = _COMPILED.get(program)
    diverged = np.zeros(jax.tree.leaves(key)[0].shape[:1], bool) if ensemble else False
    history: list[dict[str, np.ndarray]] = []
    t_run = 0.0
    step = start
    while step < num_steps:
        if compiled is None:
            t0 = time.perf_counter()
            compiled = build()
            compile_s = time.perf_counter() - t0
            _COMPILED[program] = compiled
            while len(_COMPILED) > _COMPILED_CAPACITY:
                _COMPILED.popitem(last=False)
        t0 = time.perf_counter()
        variables, state, metrics, finite = compiled(
            variables, state, stream, key, jnp.asarray(step, jnp.int32)
        )
        finite = multihost.fetch(finite)
        t_run += time.perf_counter() - t0
        ran = min(chunk_size, num_steps - step)
        step += ran
        metrics = {
            k: multihost.fetch(v)[..., :ran] if ensemble else multihost.fetch(v)[:ran]
            for k, v in metrics.items()
        }
        history.append(metrics)
        if manager is not None:
            ckpt.save(manager, step, {"variables": variables, "state": state})
        if progress is not None:
            progress(
                step,
                num_steps,
                {k: float(np.nanmean(v)) for k, v in metrics.items()},
                t_run + compile_s,
            )
        diverged = ~finite
        if np.all(diverged):
            break
    if manager is not None:
        manager.wait_until_finished()
        manager.close()
    axis = -1 if ensemble else 0
    merged = (
        {k: np.concatenate([h[k] for h in history], axis) for k in history[0]} if history else {}
    )
    return FitResult(
        variables, state, merged, diverged if ensemble else bool(diverged), step, t_run, compile_s
    )


def scan_steps(
    rule: UnlearningRule,
    variables: Variables,
    stream: Stream,
    *,
    batch_sizes: Mapping[str, int],
    num_steps: int,
    key: Array,
    state: PyTree | None = None,
    mesh: Mesh | None = None,
    augment: Callable | None = None,
):
    """All ``num_steps`` updates in one ``lax.scan``: a pure, traceable version of :func:`fit`.

    Use it inside ``jax.vmap`` (e.g. over a grid of hyperparameters that the rule is built from
    inside the vmapped function) or ``jax.jit``. Batches (and their ``augment``ation) are exactly
    those :func:`fit` draws.

    Returns:
      ``(variables, state, metrics)`` with metrics stacked over steps.
    """
    if state is None:
        state = rule.init(variables, key=key)
    mesh = _auto(mesh)
    stream = stream.with_index({k: stream.index[k] for k in batch_sizes})

    def one_update(v, s, k):
        batch = sample_batch(stream, batch_sizes, k, jnp.zeros((), jnp.int32))
        return rule.update(v, s, batch, key=k)[2]

    metric_shapes = jax.eval_shape(one_update, variables, state, key)
    chunk = _chunk_fn(
        rule, batch_sizes, int(num_steps), int(num_steps), mesh, metric_shapes, augment=augment
    )
    variables, state, metrics, _ = chunk(variables, state, stream, key, jnp.zeros((), jnp.int32))
    return variables, state, metrics
