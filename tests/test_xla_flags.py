"""The XLA:CPU flags are merged into XLA_FLAGS once, and a user's own setting of a flag wins."""

import os

import pytest

from jaxunlearn import xla_flags

YNN = "xla_cpu_experimental_ynn_fusion_type"


def test_sets_every_flag_on_an_empty_environment():
    env = {}
    value = xla_flags.set_cpu_flags(env)
    assert env["XLA_FLAGS"] == value
    assert xla_flags.flag_names(value) == set(xla_flags.CPU_FLAGS)
    assert f"--{YNN}=" in value.split()


def test_keeps_other_flags_and_appends_once():
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    first = xla_flags.set_cpu_flags(env)
    assert first.startswith("--xla_force_host_platform_device_count=8 ")
    assert xla_flags.set_cpu_flags(env) == first  # idempotent
    assert first.count(f"--{YNN}") == 1


def test_user_setting_of_the_same_flag_wins():
    env = {"XLA_FLAGS": f"--{YNN}=individual_dot"}
    assert xla_flags.set_cpu_flags(env) == f"--{YNN}=individual_dot"


def test_opt_out_keeps_xla_defaults():
    env = {"XLA_FLAGS": "--xla_backend_optimization_level=0", xla_flags.OPT_OUT_ENV: "0"}
    assert xla_flags.set_cpu_flags(env) == "--xla_backend_optimization_level=0"
    assert env["XLA_FLAGS"] == "--xla_backend_optimization_level=0"


def test_flag_names_reads_bare_and_valued_flags():
    assert xla_flags.flag_names(" --a=1  --b --c= x ") == {"a", "b", "c"}


def test_the_test_process_runs_with_the_flags():
    if os.environ.get(xla_flags.OPT_OUT_ENV, "1") in ("0", "false", "no", "off"):
        pytest.skip("run with XLA's defaults")
    assert f"--{YNN}=" in os.environ["XLA_FLAGS"].split()  # set by conftest.py


def test_initializer_options_respect_a_users_optimization_level():
    assert xla_flags.initializer_compiler_options({}) == {"xla_backend_optimization_level": 1}
    env = {"XLA_FLAGS": "--xla_backend_optimization_level=0"}
    assert xla_flags.initializer_compiler_options(env) == {}
