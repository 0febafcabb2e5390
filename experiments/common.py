"""Set-up shared by the experiment binaries: quiet logging and a persistent compilation cache.

Small experiments spend much of their time compiling (the default experiment: about half of its
minute on 2 CPU cores). JAX's persistent compilation cache keeps every compiled program on disk,
so a rerun (another workdir, a changed hyperparameter, another seed count) compiles only what
changed. ``--compilation_cache_dir`` chooses the directory (default: ``$JAX_COMPILATION_CACHE_DIR``
if set, else ``~/.cache/jaxunlearn/xla``); an empty value turns the cache off.
"""

from __future__ import annotations

import os

from absl import flags, logging

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


def set_up() -> None:
    """Call first in a binary's ``main``: WARNING logging unless ``--verbosity`` is given (orbax
    logs every save at INFO), and the persistent compilation cache."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    import jax

    path = COMPILATION_CACHE_DIR.value
    if not path:
        jax.config.update("jax_enable_compilation_cache", False)
        return
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", _MIN_COMPILE_S)
