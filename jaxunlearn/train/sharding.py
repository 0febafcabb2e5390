"""Parameters and optimizer state sharded over a ``(data, model)`` mesh (FSDP, tensor parallel).

Every parameter of the transformer has logical axis names, one per dimension
(:func:`jaxunlearn.models.transformer.logical_axes`: ``"vocab"``, ``"embed"``, ``"heads"``,
``"kv_heads"``, ``"mlp"``, ``"norm"``). A rule table maps logical names to mesh axes, as in
google/maxtext: by default the residual width ``embed`` is split over ``data`` (fully sharded
data parallelism: each data replica holds a slice of every matrix, gathered when used) and the
head, MLP and vocabulary widths over ``model`` (tensor parallelism, Megatron-style column/row
splits). A dimension that the mesh axis does not divide stays whole, so any small model runs on
any mesh. :func:`jaxunlearn.train.fit` keeps the shardings it is given: variables placed by
:func:`shard_variables`, the rule state (optimizer moments, reference copies) following the
parameter each leaf mirrors (:func:`state_shardings`), batches split over ``data``.

>>> mesh = make_mesh(model=4)                                # doctest: +SKIP
>>> variables = shard_variables(network, variables, mesh)    # doctest: +SKIP
>>> fit(rule, variables, stream, mesh=mesh, ...)             # doctest: +SKIP

References:
  Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models",
  SC 2020 (FSDP); Shoeybi et al., "Megatron-LM: Training Multi-Billion Parameter Language Models
  Using Model Parallelism", 2019 (tensor parallelism); google/maxtext's logical axis rules.
  ``../shared/reference/lm_unlearning.md`` (why: 7-8B models do not fit one 40 GB device).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxunlearn.core.types import Network, PyTree

DATA, MODEL = "data", "model"

# Logical axis -> mesh axis (None: not split). maxtext's default rules with its `fsdp` axis
# merged into `data` and `tensor` named `model`.
DEFAULT_RULES: Mapping[str, str | None] = {
    "embed": DATA,
    "vocab": MODEL,
    "heads": MODEL,
    "kv_heads": MODEL,
    "mlp": MODEL,
    "norm": None,
}


def make_mesh(data: int | None = None, model: int = 1, *, devices=None) -> Mesh:
    """A 2-D mesh with axes ``("data", "model")`` and automatic sharding propagation.

    Args:
      data: size of the ``data`` axis (batches and, under FSDP, parameter slices); by default
        all devices not used by ``model``.
      model: size of the ``model`` axis (tensor parallelism).
      devices: the devices to use (``jax.devices()`` by default).

    Raises:
      ValueError: a non-positive size, or more devices asked for than there are.
    """
    devices = list(jax.devices() if devices is None else devices)
    if not (isinstance(model, int) and model >= 1):
        raise ValueError(f"`model` must be a positive integer; got {model!r}.")
    if data is None:
        data = len(devices) // model
    if not (isinstance(data, int) and data >= 1):
        raise ValueError(
            f"`data` must be a positive integer; got {data!r} (model={model}, "
            f"{len(devices)} devices)."
        )
    if data * model > len(devices):
        raise ValueError(
            f"A {data} x {model} (data, model) mesh needs {data * model} devices; there are "
            f"{len(devices)}."
        )
    grid = np.asarray(devices[: data * model], dtype=object).reshape(data, model)
    return Mesh(grid, (DATA, MODEL), axis_types=(jax.sharding.AxisType.Auto,) * 2)


def partition_spec(
    axes: Sequence[str | None],
    shape: Sequence[int],
    mesh: Mesh,
    rules: Mapping[str, str | None] = DEFAULT_RULES,
) -> PartitionSpec:
    """The :class:`PartitionSpec` of an array of ``shape`` with logical ``axes``.

    A logical name maps to its mesh axis under ``rules`` when the mesh has that axis, the axis
    divides the dimension and no earlier dimension already uses it; otherwise the dimension is
    not split.
    """
    if len(axes) != len(shape):
        raise ValueError(f"Logical axes {tuple(axes)} do not match an array of shape {shape}.")
    used: set[str] = set()
    spec = []
    for name, size in zip(axes, shape, strict=True):
        axis = rules.get(name) if name is not None else None
        if axis is None or axis not in mesh.shape or axis in used or size % mesh.shape[axis]:
            spec.append(None)
        else:
            spec.append(axis)
            used.add(axis)
    return PartitionSpec(*spec)


def logical_axes(network: Network) -> PyTree | None:
    """The logical axis names of ``network``'s parameters (a pytree like ``params``), or ``None``
    for a network that declares none (the classifiers: replicated)."""
    if network.name == "transformer" and network.spec is not None:
        from jaxunlearn.models import transformer

        return transformer.logical_axes(network.spec)
    return None


def param_shardings(
    network: Network,
    mesh: Mesh,
    *,
    rules: Mapping[str, str | None] = DEFAULT_RULES,
    axes: PyTree | None = None,
) -> dict:
    """A :class:`NamedSharding` for every leaf of ``network``'s variables.

    Args:
      network: the network (its parameter shapes are read abstractly; nothing is allocated).
      mesh: the mesh (see :func:`make_mesh`).
      rules: logical axis name -> mesh axis name (``None``: not split).
      axes: logical axes of the parameters (a pytree like ``params`` with a tuple per leaf);
        :func:`logical_axes` of the network by default. Parameters without axes are replicated.

    Returns:
      A pytree shaped like ``network.init(key)`` (``{"params": ..., "batch_stats": ...}``).
    """
    _check_rules(rules, mesh)
    shapes = jax.eval_shape(network.init, jax.random.key(0))
    axes = logical_axes(network) if axes is None else axes
    by_path = {} if axes is None else _by_path(axes, is_leaf=lambda x: isinstance(x, tuple))

    def place(path, leaf):
        keys = _keys(path)
        names = by_path.get(keys[1:]) if keys[:1] == ("params",) else None
        if names is None:
            return NamedSharding(mesh, PartitionSpec())
        return NamedSharding(mesh, partition_spec(names, leaf.shape, mesh, rules))

    return jax.tree_util.tree_map_with_path(place, shapes)


def shard_variables(
    network: Network,
    variables: PyTree,
    mesh: Mesh,
    *,
    rules: Mapping[str, str | None] = DEFAULT_RULES,
) -> PyTree:
    """``variables`` placed on ``mesh`` by :func:`param_shardings`."""
    return jax.device_put(variables, param_shardings(network, mesh, rules=rules))


def placements(tree: PyTree, mesh: Mesh) -> PyTree:
    """The sharding ``fit`` keeps for each leaf of ``tree``: a leaf already sharded over a mesh
    with the same devices and axis names keeps its partitioning (on ``mesh``); every other leaf
    is replicated."""

    def place(leaf):
        current = getattr(leaf, "sharding", None)
        if (
            isinstance(current, NamedSharding)
            and current.mesh.axis_names == mesh.axis_names
            and current.mesh.devices.shape == mesh.devices.shape
            and list(current.mesh.device_ids.flat) == list(mesh.device_ids.flat)
        ):
            return NamedSharding(mesh, current.spec)
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(place, tree)


def state_shardings(state: PyTree, variable_shardings: PyTree, mesh: Mesh) -> PyTree:
    """Shardings of a rule state that mirror the variables'.

    An optimizer's moments, a frozen reference copy or a saliency mask hold one leaf per
    parameter, at a path that ends with the parameter's path (``...mu["params"]["layers"]...``)
    and with its shape: such a leaf takes that parameter's sharding. Other leaves (step counts,
    scalars, a rule's own buffers) are replicated.

    Args:
      state: the rule state (arrays or ``jax.ShapeDtypeStruct``).
      variable_shardings: shardings of the variables (e.g. :func:`placements`).
      mesh: the mesh the replicated leaves go on.
    """
    table: dict[tuple, Any] = {}
    flat, _ = jax.tree_util.tree_flatten_with_path(
        variable_shardings, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding)
    )
    # Keyed by the full variables path and by the path inside the collection (an optimizer over
    # params alone); "params" entries win over other collections'.
    for path, sharding in sorted(flat, key=lambda ps: _keys(ps[0])[:1] == ("params",)):
        keys = _keys(path)
        table[keys] = sharding
        table[keys[1:]] = sharding
    replicated = NamedSharding(mesh, PartitionSpec())

    def place(path, leaf):
        keys = _keys(path)
        shape = tuple(np.shape(leaf))
        for start in range(len(keys)):
            sharding = table.get(keys[start:])
            if sharding is not None and len(keys) - start >= 2:
                if _fits(sharding, shape, mesh):
                    return NamedSharding(mesh, sharding.spec)
                break
        return replicated

    return jax.tree_util.tree_map_with_path(place, state)


def is_sharded(shardings: PyTree) -> bool:
    """Whether any leaf of a pytree of shardings is split over some mesh axis."""
    return any(
        any(axis is not None for axis in s.spec)
        for s in jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
        if isinstance(s, NamedSharding)
    )


def _fits(sharding, shape: tuple, mesh: Mesh) -> bool:
    spec = tuple(getattr(sharding, "spec", ()))
    if len(spec) > len(shape):
        return False
    for axis, size in zip(spec, shape, strict=False):
        names = (axis,) if isinstance(axis, str) else tuple(axis or ())
        if size % int(np.prod([mesh.shape[n] for n in names], dtype=int)):
            return False
    return True


def _check_rules(rules: Mapping[str, str | None], mesh: Mesh) -> None:
    bad = {k: v for k, v in rules.items() if v is not None and v not in mesh.axis_names}
    if bad:
        raise ValueError(
            f"`rules` map logical axes to mesh axes the mesh lacks: {bad}; the mesh has "
            f"{mesh.axis_names}."
        )


def _key(entry) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _keys(path) -> tuple[str, ...]:
    return tuple(_key(e) for e in path)


def _by_path(tree: PyTree, *, is_leaf=None) -> dict[tuple[str, ...], Any]:
    flat, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    return {_keys(p): leaf for p, leaf in flat}
