"""Set-up shared by the experiment binaries: logging, the compilation cache, multi-process jobs.

Small experiments spend much of their time compiling (the default experiment: about half of its
minute on 2 CPU cores). JAX's persistent compilation cache keeps every compiled program on disk,
so a rerun (another workdir, a changed hyperparameter, another seed count) compiles only what
changed. ``--compilation_cache_dir`` chooses the directory (default: ``$JAX_COMPILATION_CACHE_DIR``
if set, else ``~/.cache/jaxunlearn/xla``); an empty value turns the cache off.

A job over several processes (hosts) sets ``--config.distributed=True`` in every process: on TPU
VMs, Slurm and Open MPI JAX finds the others itself; elsewhere each process also gets
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``.
"""

from __future__ import annotations

import os

from absl import app, flags, logging

from jaxunlearn import xla_flags

# The library's XLA:CPU settings (jaxunlearn/xla_flags.py), before JAX creates its backend: the
# binaries import this module first. A user's own XLA_FLAGS setting of a flag wins.
xla_flags.set_cpu_flags()

_DEFAULT_CACHE = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
    os.path.expanduser("~"), ".cache", "jaxunlearn", "xla"
)
# Programs that compile faster than this are not worth a disk round trip.
_MIN_COMPILE_S = 0.1

COMPILATION_CACHE_DIR = flags.DEFINE_string(
    "compilation_cache_dir",
    _DEFAULT_CACHE,
    "Persistent XLA compilation cache ('' disables it).",
)


# With --config.distributed=True on a cluster that JAX does not detect (TPU VMs, Slurm and Open MPI
# are detected): process 0's host:port, the number of processes and this one's id.
COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Coordinator host:port.")
NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's id, 0 to num_processes-1.")


def set_up(config) -> None:
    """Call first in a binary's ``main``: WARNING logging unless ``--verbosity`` is given (orbax
    logs every save at INFO), the persistent compilation cache, and ``jax.distributed`` when
    ``config.distributed`` is set."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    import jax

    distributed = bool(config.get("distributed", False))
    process_flags = (COORDINATOR.value, NUM_PROCESSES.value, PROCESS_ID.value)
    if not distributed and any(v is not None for v in process_flags):
        raise app.UsageError(
            "--coordinator_address/--num_processes/--process_id need --config.distributed=True"
        )
    _compilation_cache(jax)
    if distributed:
        jax.distributed.initialize(
            coordinator_address=COORDINATOR.value,
            num_processes=NUM_PROCESSES.value,
            process_id=PROCESS_ID.value,
        )


def _compilation_cache(jax) -> None:
    path = COMPILATION_CACHE_DIR.value
    if not path:
        jax.config.update("jax_enable_compilation_cache", False)
        return
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", _MIN_COMPILE_S)
