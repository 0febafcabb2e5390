"""Test setup: 8 fake CPU devices, so multi-device code is tested on a CPU-only machine."""

import os
import tempfile

from jaxunlearn import xla_flags

# Tests are dominated by compile time on XLA:CPU; LLVM's optimisation passes are most of it.
# Merged, not appended: a worker that inherits an XLA_FLAGS already holding them adds nothing.
os.environ["XLA_FLAGS"] = xla_flags.merge(
    os.environ.get("XLA_FLAGS", ""),
    {"xla_force_host_platform_device_count": "8", "xla_backend_optimization_level": "0"},
)
# The library's XLA:CPU flags (jaxunlearn/xla_flags.py), as in the binaries and benchmarks.
xla_flags.set_cpu_flags()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Programs that several tests (and the subprocesses of the binary and notebook tests) compile
# alike are compiled once per machine.
os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    os.path.join(tempfile.gettempdir(), "jaxunlearn-test-compile-cache"),
)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "1")
