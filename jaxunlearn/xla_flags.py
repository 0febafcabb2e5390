"""XLA:CPU settings that make our models train faster, merged into ``XLA_FLAGS`` before JAX starts.

XLA reads ``XLA_FLAGS`` once, when JAX creates its first backend, so :func:`set_cpu_flags` must run
before the first computation (before ``jax.devices()``, ``jnp.ones(...)``, a jitted call, ...);
importing JAX earlier is fine. The experiment binaries, the tests and the benchmarks call it first.
Library users who want the same speed call it at the top of their script.

What is set, and why (``benchmarks/step_speed.py`` measures it against XLA's defaults):

* ``--xla_cpu_experimental_ynn_fusion_type=`` (empty: no YNNPACK fusions). XLA:CPU hands
  convolutions, dots and their neighbouring element-wise ops to YNNPACK by default. On a small,
  shared CPU the YNNPACK fusions of ResNet-18's training step do more work than XLA's own
  (Eigen) kernels and degrade badly when the cores are busy with other processes: the issue that
  asked for this measured 9.4-10.9 s per ResNet-18 unlearning step with YNNPACK and 2.85 s without
  on 2 cores. Another project reports a YNNPACK-fusion miscompilation in jaxlib 0.11.2, so
  keeping it off also keeps CPU results on the well-trodden path.

A flag that the user's own ``XLA_FLAGS`` already names is left as the user set it, so any setting
here can be overridden one flag at a time (``XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=
individual_dot python ...``); ``JAXUNLEARN_XLA_CPU_FLAGS=0`` turns all of them off (XLA's own
defaults).
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Mapping, MutableMapping

# name -> value; an empty value is written as ``--name=``.
CPU_FLAGS: dict[str, str] = {
    "xla_cpu_experimental_ynn_fusion_type": "",
}

# Set to "0" (or "false", "no", "off") to keep XLA's defaults.
OPT_OUT_ENV = "JAXUNLEARN_XLA_CPU_FLAGS"


def flag_names(xla_flags: str) -> set[str]:
    """Names of the flags set in an ``XLA_FLAGS`` string (``--name=value`` or ``--name``)."""
    names = set()
    for token in xla_flags.split():
        if token.startswith("--"):
            names.add(token[2:].split("=", 1)[0])
    return names


def merge(xla_flags: str, flags: Mapping[str, str]) -> str:
    """``xla_flags`` with every flag of ``flags`` that it does not name already appended.

    The user's flags come first and are kept verbatim; merging twice adds nothing the second time.
    """
    present = flag_names(xla_flags)
    extra = [f"--{name}={value}" for name, value in flags.items() if name not in present]
    return " ".join([xla_flags.strip(), *extra]).strip()


def set_cpu_flags(environ: MutableMapping[str, str] | None = None) -> str:
    """Merges :data:`CPU_FLAGS` into ``environ["XLA_FLAGS"]`` (``os.environ`` by default).

    Call it before JAX's first computation. Flags the existing ``XLA_FLAGS`` names win; with
    ``JAXUNLEARN_XLA_CPU_FLAGS=0`` nothing is changed.

    Returns:
      The resulting ``XLA_FLAGS`` value.
    """
    environ = os.environ if environ is None else environ
    current = environ.get("XLA_FLAGS", "")
    if environ.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return current
    merged = merge(current, CPU_FLAGS)
    if merged != current:
        if environ is os.environ and _backend_started():
            warnings.warn(
                "jaxunlearn.xla_flags.set_cpu_flags() was called after JAX created its backend; "
                "XLA_FLAGS is read only once, so the CPU flags take effect in new processes only.",
                stacklevel=2,
            )
        environ["XLA_FLAGS"] = merged
    return merged


def initializer_compiler_options(environ: Mapping[str, str] | None = None) -> dict:
    """Compiler options for programs that only draw initial parameters (``ensemble.train``), on CPU.

    Their threefry code takes LLVM's -O3 seconds to compile; -O1 compiles it 1.3-6x faster on
    2 CPU cores and gave bit-identical parameters for the MLP, the CNN and ResNet-18. An
    ``XLA_FLAGS`` that sets ``--xla_backend_optimization_level`` itself (the tests use 0) wins.
    """
    environ = os.environ if environ is None else environ
    if "xla_backend_optimization_level" in flag_names(environ.get("XLA_FLAGS", "")):
        return {}
    import jax  # JAX runs by now: the caller is about to compile

    if jax.default_backend() != "cpu":  # measured on XLA:CPU only
        return {}
    return {"xla_backend_optimization_level": 1}


def _backend_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # a private API: never fail the caller over it
        return False
