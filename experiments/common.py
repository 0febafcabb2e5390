"""Set-up shared by the experiment binaries: the tracks, logging, the compilation cache,
multi-process jobs.

:data:`TRACKS` names, for each ``config.track``, the experiment that runs it and the plan that
checks a config of it without training (:func:`plan`).

Small experiments spend much of their time compiling (the default experiment: about half of its
minute on 2 CPU cores). JAX's persistent compilation cache keeps every compiled program on disk,
so a rerun (another workdir, a changed hyperparameter, another seed count) compiles only what
changed. ``--compilation_cache_dir`` chooses the directory (default: ``$JAX_COMPILATION_CACHE_DIR``
if set, else ``~/.cache/jaxunlearn/xla``); an empty value turns the cache off.

A job over several processes (hosts) sets ``--config.distributed=True`` in every process: on TPU
VMs, Slurm and Open MPI JAX finds the others itself; elsewhere each process also gets
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``.

Errors of configuration and I/O (a missing or broken config file, an unknown config key, a bad
value, a workdir that is a file, not writable or in use, a damaged checkpoint) end a binary with
one line naming the setting or path and exit status 1 (:func:`run`); ``--verbose`` or
``JAXUNLEARN_VERBOSE=1`` shows the traceback instead.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
from collections.abc import Callable

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
VERBOSE = flags.DEFINE_boolean(
    "verbose",
    False,
    "Show the traceback of a configuration or I/O error (or JAXUNLEARN_VERBOSE=1).",
)
# Errors a binary reports in one line: configuration (ValueError; KeyError and AttributeError of
# an unknown ml_collections key) and I/O (OSError: missing files, workdir, lock, checkpoints; a
# TFDS dataset not prepared under `data_dir`).
USER_ERRORS = (ValueError, OSError, KeyError, AttributeError)
_HINT = "(--verbose or JAXUNLEARN_VERBOSE=1 shows the traceback)"


@dataclasses.dataclass(frozen=True)
class Track:
    """One experiment track: where its runner and its plan live.

    Attributes:
      module: the module holding both functions.
      run: the name of ``run(config, workdir)``, the experiment (it calls ``plan`` first).
      plan: the name of ``plan(config)``: every default filled in and every check run, the
        dataset loaded and what will be trained built (abstractly), nothing trained or generated;
        it returns the track's plan and raises a ``ValueError`` naming a setting that cannot run.
    """

    module: str
    run: str
    plan: str

    def runner(self) -> Callable:
        """The function ``run(config, workdir)``."""
        return getattr(importlib.import_module(self.module), self.run)

    def planner(self) -> Callable:
        """The function ``plan(config)``."""
        return getattr(importlib.import_module(self.module), self.plan)


# config.track -> the experiment that runs it and the plan that validates its config.
TRACKS = {
    "classifier": Track("jaxunlearn.scenarios", "run_experiment", "plan"),
    "lm": Track("jaxunlearn.scenarios.lm", "run_lm_experiment", "lm_plan"),
    "lm_robust": Track("jaxunlearn.scenarios.lm_robust", "run_lm_robust_experiment", "robust_plan"),
    "ssl": Track("jaxunlearn.scenarios.ssl", "run", "plan"),
    # Config checks only: the dataset is loaded and the generators built by `run`.
    "unlearnable": Track("jaxunlearn.unlearnable.experiment", "run", "check_config"),
    "learned_rule": Track("jaxunlearn.scenarios.learned_rule", "run", "plan"),
}


def track(config) -> str:
    """The config's track (``config.track``; the classifier experiment when unset), checked."""
    name = config.get("track", "classifier") if hasattr(config, "get") else "classifier"
    if name not in TRACKS:
        raise ValueError(f"Unknown config.track {name!r}; valid tracks: {sorted(TRACKS)}")
    return name


def plan(config):
    """``config`` validated by its track's plan, without training: the track's plan object
    (:class:`jaxunlearn.scenarios.Plan`, ``LMPlan``, ``RobustPlan``, ``SSLPlan``,
    ``LearnedRulePlan``; the unlearnable track's checked config dict)."""
    return TRACKS[track(config)].planner()(config)


def verbose(argv=None) -> bool:
    """Whether tracebacks are wanted: ``--verbose`` or ``JAXUNLEARN_VERBOSE`` set (not 0)."""
    env = os.environ.get("JAXUNLEARN_VERBOSE", "").strip().lower()
    if env not in ("", "0", "false", "no"):
        return True
    if flags.FLAGS.is_parsed():
        return VERBOSE.value
    return any(a in ("--verbose", "--verbose=true", "--verbose=1") for a in argv or sys.argv)


def one_line(error: BaseException) -> str:
    """``error``'s message on one line (an ml_collections key error's "did you mean" kept; a
    config file's traceback cut to its last line)."""
    key_error = isinstance(error, KeyError | AttributeError)
    inner: object = error
    while isinstance(inner, BaseException) and inner.args:  # ConfigDict wraps its KeyError
        inner = inner.args[0]
    text = str(inner) if key_error else str(error)
    lines = [ln.strip() for ln in (text or type(error).__name__).splitlines() if ln.strip()]
    if "Failed loading config file" in text:  # ml_collections: the attempted paths, then why
        return f"--config: cannot load the config file: {lines[-1]}"
    if any(ln.startswith("Traceback") for ln in lines):  # a config file raised: its own error
        lines = [lines[0], lines[-1]]
    if key_error:
        return f"unknown config key {'; '.join(lines)}"
    return " ".join(lines)


def fail(error: BaseException, argv=None):
    """Exits with one line about ``error`` (or re-raises it when :func:`verbose`)."""
    if verbose(argv):
        raise error
    print(f"error: {one_line(error)} {_HINT}", file=sys.stderr, flush=True)
    sys.exit(1)


def parse_flags(argv):
    """absl's flag parsing, with a config file that cannot be loaded or an unknown or badly
    typed ``--config.*`` key reported in one line."""
    try:
        args = flags.FLAGS(argv)
        for name in ("config",):
            if name in flags.FLAGS:
                getattr(flags.FLAGS, name)  # a config file that failed to load raises here
        return args
    except Exception as e:  # noqa: BLE001  (every error here comes from the flags or the file)
        fail(e, argv)


def run(main) -> None:
    """``app.run(main)`` with configuration and I/O errors reported in one line."""

    def guarded(argv):
        try:
            return main(argv)
        except Exception as e:
            from jaxunlearn.data.tfds_datasets import DatasetNotPreparedError

            if isinstance(e, (*USER_ERRORS, DatasetNotPreparedError)):
                fail(e)
            raise

    app.run(guarded, flags_parser=parse_flags)


def check_workdir(path: str) -> str:
    """``path`` as a workdir: created if missing; a ``ValueError`` naming it when it is a file
    or not writable."""
    if not path:
        raise ValueError("--workdir is empty; give a directory for checkpoints and results")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--workdir={path} is a file, not a directory")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--workdir={path} cannot be created ({e.strerror})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ValueError(f"--workdir={path} is not writable")
    return path


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
