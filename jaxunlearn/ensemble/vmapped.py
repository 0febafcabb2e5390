"""N models in one compiled program: training, unlearning and evaluating ensembles with ``vmap``.

The strongest audits of unlearning compare *distributions* over many models: the NeurIPS 2023
competition retrains 512 oracles and runs the unlearning algorithm 512 times, KLoM uses 100 of
each, LiRA-style attacks need dozens of shadow models. Here an ensemble is one pytree whose leaves
carry a leading model axis ``[N, ...]``, and every function below runs :func:`jaxunlearn.train.fit`
(the one training loop) vmapped over that axis: one compile, one program, N models. Data
parallelism over a mesh's ``data`` axis composes with it (each model's batches are split over the
devices), and so do fit's orbax checkpoints.

Each model may also read its own index sets (``index`` arrays shaped ``[N, n]``): the models of a
membership-inference audit train on different random halves of the audited examples. All the sets
of one part then have the same size ``n``, which is what lets them share one program.

References:
  Triantafillou et al., "Are we making progress in unlearning? Findings from the first NeurIPS
  unlearning competition", arXiv 2406.09073 (2024): 512 unlearned and 512 retrained models.
  Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022 (shadow
  models on random halves of the data).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxunlearn import xla_flags
from jaxunlearn.core.checks import check_count
from jaxunlearn.core.types import Array, Network, UnlearningRule, Variables
from jaxunlearn.train import FitResult, fit, make_stream, multihost, records, steps_per_epoch

MIN_MODELS = 2
_TIMING_FILE = "timing.json"


def seed_keys(num_models: int, offset: int = 0) -> Array:
    """One PRNG key per model: ``key(offset), key(offset + 1), ...`` stacked as ``[num_models]``.

    Model ``m`` of an ensemble gets the same key as a single run seeded with ``offset + m``, so an
    ensemble member is reproducible on its own.
    """
    num_models = check_count(num_models, "num_models", 1)
    return jax.vmap(jax.random.key)(jnp.arange(num_models) + int(offset))


def num_models(tree) -> int:
    """Size of the leading model axis of an ensemble pytree (variables or keys)."""
    leaves = jax.tree.leaves(tree)
    if not leaves or any(np.ndim(leaf) == 0 for leaf in leaves):
        raise ValueError("An ensemble pytree needs a leading model axis on every leaf")
    return int(np.shape(leaves[0])[0])


def replicate(variables: Variables, count: int) -> Variables:
    """``count`` copies of one model as an ensemble: unlearning runs from a single original, as in
    the NeurIPS 2023 competition (one original model, 512 unlearning runs)."""
    count = check_count(count, "count", MIN_MODELS)
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (count, *jnp.shape(x))), variables)


def select(tree, models) -> Variables:
    """The ensemble restricted to the model indices ``models`` (e.g. the runs that finished)."""
    models = np.asarray(models)
    return jax.tree.map(lambda x: x[models], tree)


def rule_initializer(rule: UnlearningRule) -> Callable:
    """``(variables [N], keys [N]) -> state``: the rule's ``init`` vmapped and compiled. Keep it
    with the rule and pass it as ``init_program`` to :func:`train` / :func:`unlearn`, so that
    ensembles trained by the same rule object compile its ``init`` once (``fit`` compiles it on
    every call otherwise; ``retrain``'s init builds a whole network)."""
    return jax.jit(jax.vmap(lambda v, k: rule.init(v, key=k)))


@functools.lru_cache(maxsize=16)
def _initializer(init: Callable) -> Callable:
    """``init`` vmapped over keys and compiled once per network. Run eagerly, building N modules
    dispatches every initializer op on its own (about 8 s for 64 MLPs on 2 CPU cores, against 5 s
    to compile, and a compiled program lands in the binaries' persistent compilation cache); it
    compiles at LLVM -O1 (see ``xla_flags.initializer_compiler_options``)."""
    return jax.jit(jax.vmap(init), compiler_options=xla_flags.initializer_compiler_options())


def _check_keys(keys, min_models: int) -> int:
    shape = jnp.shape(keys)
    if not (hasattr(keys, "dtype") and jax.dtypes.issubdtype(keys.dtype, jax.dtypes.prng_key)):
        raise ValueError(
            "`keys` must be typed PRNG keys, one per model (see `seed_keys`); got "
            f"an array of dtype {getattr(keys, 'dtype', type(keys))}"
        )
    if len(shape) != 1:
        raise ValueError(f"`keys` must have shape [num_models] (one key per model); got {shape}")
    if shape[0] < min_models:
        raise ValueError(
            f"`keys` holds {shape[0]} model(s); an ensemble needs at least {min_models}."
        )
    return shape[0]


def _per_model_index(index: Mapping[str, object], count: int) -> tuple[dict, bool]:
    """Index sets as int32 arrays; when any part is per model ``[N, n]``, every part becomes one
    (fit's ``per_model_index`` applies to all parts), shared parts broadcast."""
    arrays = {name: np.asarray(ix) for name, ix in index.items()}
    for name, ix in arrays.items():
        if ix.ndim not in (1, 2) or not np.issubdtype(ix.dtype, np.integer):
            raise ValueError(
                f"`index[{name!r}]` must be integer indices shaped [n] (shared) or "
                f"[num_models, n] (one set per model); got {ix.dtype} {ix.shape}"
            )
        if ix.ndim == 2 and ix.shape[0] != count:
            raise ValueError(
                f"`index[{name!r}]` has sets for {ix.shape[0]} models but the ensemble has {count}"
            )
    per_model = any(ix.ndim == 2 for ix in arrays.values())
    if per_model:
        arrays = {
            name: np.broadcast_to(ix, (count, ix.shape[-1])) if ix.ndim == 1 else ix
            for name, ix in arrays.items()
        }
    return arrays, per_model


def _fit_ensemble(
    rule: UnlearningRule,
    variables: Variables,
    x,
    y,
    index,
    *,
    keys,
    batch_sizes: Mapping[str, int],
    num_steps: int,
    mesh,
    chunk_size,
    checkpoint_dir,
    progress,
    init_program=None,
    augment=None,
) -> FitResult:
    arrays, per_model = _per_model_index(index, num_models(keys))
    state = None if init_program is None else init_program(variables, keys)
    stream = make_stream(x, y, arrays)
    # fit resumes from the checkpoints but times only what it ran; keep a running total beside
    # them so an interrupted and resumed ensemble reports its whole cost.
    path = None if checkpoint_dir is None else os.path.join(checkpoint_dir, _TIMING_FILE)
    timing = {"runtime_s": 0.0, "compile_s": 0.0}
    if path is not None:  # a damaged file names itself (records.DamagedFileError)
        timing = records.read_json(path, default=timing)
    res = fit(
        rule,
        variables,
        stream,
        batch_sizes=batch_sizes,
        num_steps=num_steps,
        key=keys,
        ensemble=True,
        per_model_index=per_model,
        mesh=mesh,
        chunk_size=chunk_size,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        state=state,
        augment=augment,
    )
    if path is None:
        return res
    timing = {
        "runtime_s": timing["runtime_s"] + res.runtime_s,
        "compile_s": timing["compile_s"] + res.compile_s,
    }
    multihost.sync(f"read {path}")  # every process has read the old total before it is replaced
    multihost.write_json(path, timing)
    return res._replace(runtime_s=timing["runtime_s"], compile_s=timing["compile_s"])


def train(
    network: Network,
    rule: UnlearningRule,
    x,
    y,
    index,
    *,
    keys: Array,
    epochs: int,
    batch_size: int,
    mesh: Mesh | None = None,
    chunk_size: int | None = None,
    checkpoint_dir: str | None = None,
    progress: Callable | None = None,
    min_models: int = MIN_MODELS,
    init_program: Callable | None = None,
    augment: Callable | None = None,
) -> FitResult:
    """Trains one model from scratch per key, all in one vmapped program.

    Model ``m`` starts from ``network.init(keys[m])`` and runs ``rule`` (a training rule, e.g.
    ``rules.finetune(network.apply, learning_rate=..., train_mode=True)``) on batches of
    ``batch_size`` drawn from ``index`` (or from ``index[m]``). Its result equals a single
    :func:`~jaxunlearn.train.fit` of that model with key ``keys[m]`` up to float reassociation.

    Args:
      network: the functional model.
      rule: the training rule; it reads ``batch["retain"]``.
      x, y: the training inputs and targets (all models index into them).
      index: int indices into ``x`` shaped ``[n]`` (every model trains on the same set) or
        ``[N, n]`` (model ``m`` trains on ``index[m]``; equal sizes so that one program runs all).
      keys: ``[N]`` typed PRNG keys (see :func:`seed_keys`): initialisation, batch order and the
        rule's randomness of each model.
      epochs: passes over ``n`` examples; the run takes ``epochs * (n // batch_size)`` steps.
      batch_size: examples per step and model (divisible by the mesh's devices).
      mesh: a mesh with a ``data`` axis over which every model's batches are split.
      chunk_size: steps per compiled ``lax.scan`` call (see ``fit``).
      checkpoint_dir: orbax checkpoints of the whole ensemble; a rerun resumes there, and the
        reported run time adds up every invocation's.
      progress: ``fit``'s per-chunk callback.
      min_models: the smallest ensemble accepted (the experiment runner passes 1 to train a single
        seed the same way).
      init_program: the rule's compiled ``init`` (:func:`rule_initializer`), reused across calls;
        by default ``fit`` compiles it for this call.
      augment: ``fit``'s on-device augmentation of every training batch
        (:mod:`jaxunlearn.data.augment`); ``None``: none.

    Returns:
      fit's :class:`~jaxunlearn.train.FitResult`; ``variables`` has a leading ``[N]`` axis and
      ``diverged`` is a ``[N]`` bool array.

    Raises:
      ValueError: for fewer than ``min_models`` keys, index sets of the wrong shape, or a batch
        size larger than the index set.
    """
    count = _check_keys(keys, min_models)
    arrays, _ = _per_model_index({"retain": index}, count)
    epochs = check_count(epochs, "epochs", 0)
    num_steps = epochs * steps_per_epoch(arrays["retain"].shape[-1], int(batch_size))
    variables = _initializer(network.init)(keys)
    return _fit_ensemble(
        rule,
        variables,
        x,
        y,
        {"retain": index},
        keys=keys,
        batch_sizes={"retain": int(batch_size)},
        num_steps=num_steps,
        mesh=mesh,
        chunk_size=chunk_size,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        init_program=init_program,
        augment=augment,
    )


def unlearn(
    rule: UnlearningRule,
    variables: Variables,
    x,
    y,
    index: Mapping[str, object],
    *,
    keys: Array,
    batch_sizes: Mapping[str, int],
    num_steps: int,
    mesh: Mesh | None = None,
    chunk_size: int | None = None,
    checkpoint_dir: str | None = None,
    progress: Callable | None = None,
    min_models: int = MIN_MODELS,
    init_program: Callable | None = None,
    augment: Callable | None = None,
) -> FitResult:
    """Runs an unlearning rule from each of N starting models, all in one vmapped program.

    Args:
      rule: the unlearning rule (built for ``num_steps`` if its schedule needs it).
      variables: the starting models with a leading ``[N]`` axis (see :func:`replicate` for N
        runs from one model).
      x, y: the training inputs and targets.
      index: ``{"forget": ..., "retain": ...}`` int indices into ``x`` for the parts the rule
        reads; each ``[n]`` (shared) or ``[N, n]`` (model ``m`` forgets ``index["forget"][m]``).
      keys: ``[N]`` typed PRNG keys: batch order and the rule's randomness of each run.
      batch_sizes: ``{part: batch size}``.
      num_steps: updates per run.
      mesh, chunk_size, checkpoint_dir, progress, min_models, init_program, augment: as in
        :func:`train`.

    Returns:
      fit's :class:`~jaxunlearn.train.FitResult` with ``[N]``-leading variables.

    Raises:
      ValueError: for fewer than ``min_models`` models, keys that do not match the models, or
        malformed index sets.
    """
    count = _check_keys(keys, min_models)
    models = num_models(variables)
    if models != count:
        raise ValueError(f"`variables` holds {models} models but `keys` has {count} keys")
    return _fit_ensemble(
        rule,
        variables,
        x,
        y,
        index,
        keys=keys,
        batch_sizes=dict(batch_sizes),
        num_steps=int(num_steps),
        mesh=mesh,
        chunk_size=chunk_size,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        init_program=init_program,
        augment=augment,
    )
