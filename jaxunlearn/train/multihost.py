"""One job over many processes (multi-host, multi-controller): who writes, what reaches the host.

After ``jax.distributed.initialize()`` every process runs the same program on its own devices,
and arrays placed on the global ``data`` mesh span devices of all processes. The library keeps
parameters, rule state and metrics replicated, so every process can read them; what it must not
do is let every process write the same files or take its own decision about what to run next
(a process that skips a step its peers run waits forever in their collectives). The helpers here
are the whole of that discipline, and each is a no-op in a single-process run.

The workdir of a multi-process job must be one directory that every process reads and writes
(a GCS bucket, NFS): orbax writes checkpoints collectively into it, and the non-primary processes
read what the primary wrote (finished records, timing totals).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxunlearn.train import records


def is_primary() -> bool:
    """Whether this process writes files and prints progress: process 0, or the only one."""
    return jax.process_index() == 0


def fetch(x) -> np.ndarray:
    """A host copy of ``x``, also when it spans devices of other processes.

    A replicated array (or one local to this process) is copied from a local device; an array
    sharded over other processes' devices is gathered, which is a collective: every process must
    call this for the same array.
    """
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)


def agree(value: Any) -> Any:
    """The primary process's ``value`` (a pytree of scalars or arrays), on every process.

    For decisions read from the filesystem or the clock (e.g. "is this rule already finished?"),
    so that all processes take the same branch.
    """
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return jax.tree.map(np.asarray, multihost_utils.broadcast_one_to_all(value))


def sync(name: str) -> None:
    """Waits until every process reaches the barrier ``name`` (e.g. before reading a file the
    primary writes next)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` to ``path`` as JSON from the primary process only, atomically (a reader
    never sees half a file; see :func:`jaxunlearn.train.records.write_json`); creates the parent
    directory."""
    if not is_primary():
        return
    records.write_json(path, obj)
