"""A multi-process (multi-controller) job on one CPU box: two processes of the experiment binary,
joined by ``jax.distributed`` through ``launch/local.sh``, with one data mesh over both processes'
devices. They must finish, report and write files once, agree with a single-process run, and
resume an interrupted run from its orbax checkpoints."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "experiments/configs/default.py:smoke"
TIMEOUT_S = 300


def _start(cmd, local_devices: int, **env):
    env = dict(os.environ, PYTHON=sys.executable, LOCAL_DEVICES=str(local_devices), **env)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "").replace(
        "--xla_force_host_platform_device_count=8", ""
    )
    return subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _finish(proc) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and every process it started
        out, err = proc.communicate()
        pytest.fail(f"timed out after {TIMEOUT_S}s:\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return out, err


def _two_processes(workdir: str, *flags: str, **env):
    return _start(["bash", "launch/local.sh", "2", CONFIG, workdir, *flags], local_devices=2, **env)


SWEEP = ("--scenario=class_0", "--rule=neggrad_plus", "--param=learning_rate", "--values=1e-3,1e-2")


def _metrics(workdir: str) -> dict:
    with open(os.path.join(workdir, "results.json")) as f:
        records = json.load(f)
    timing = ("runtime_s", "compile_s")
    return {
        (r["scenario"], r["method"], r["seed"], r["status"]): {
            k: v for k, v in r["metrics"].items() if k not in timing
        }
        for r in records
    }


def _assert_close(a: dict, b: dict, tol: float = 1e-3) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].keys() == b[key].keys(), key
        for m in a[key]:
            assert a[key][m] == pytest.approx(b[key][m], abs=tol), (key, m)


def test_two_processes_report_once_match_one_process_and_resume(tmp_path):
    multi, single = str(tmp_path / "multi"), str(tmp_path / "single")
    # The same 4 devices in one process (a plain run, no jax.distributed) and over two processes:
    # the same sharding, so the same numbers up to float reassociation.
    reference = _start(
        [sys.executable, "-m", "experiments.main", f"--config={CONFIG}", f"--workdir={single}"],
        local_devices=4,
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
    )
    out, err = _finish(_two_processes(multi))
    _finish(reference)

    # Process 0 reports; process 1 runs every program with it but prints and writes nothing.
    assert "neggrad_plus" in out and "[class_0/retrain] step 20/20" in err
    with open(os.path.join(multi, "logs", "process_1.log")) as f:
        other = f.read()
    assert "step" not in other and "neggrad_plus" not in other and "wrote" not in other, other
    for name in ("results.json", "results.txt", "results.png", "records/class_0/neggrad_plus.json"):
        assert os.path.exists(os.path.join(multi, name)), name
    first = _metrics(multi)
    assert {k[1] for k in first} == {"original", "retrain", "neggrad_plus"}
    assert all(k[3] == "ok" for k in first)
    _assert_close(first, _metrics(single))

    # An interruption after the oracle's first checkpoint (step 11 of 20) and before the rule
    # finished: both processes resume the oracle at step 11 and rerun the rule.
    ckpt = os.path.join(multi, "checkpoints", "class_0", "retrain")
    steps = [n for n in os.listdir(ckpt) if n.isdigit() or n == "timing.json"]
    assert sorted(steps) == ["11", "20", "timing.json"]
    assert "fingerprint.json" in os.listdir(ckpt)  # the oracles' config fields (resumed: same)
    shutil.rmtree(os.path.join(ckpt, "20"))
    for name in ("results.json", "results.txt", "results.png", "records/class_0/neggrad_plus.json"):
        os.remove(os.path.join(multi, name))
    out, err = _finish(_two_processes(multi))
    assert "[original]" not in err  # restored whole
    assert "[class_0/retrain] step 20/20" in err and "step 11/20" not in err
    assert "[class_0/neggrad_plus] step 5/5" in err
    _assert_close(_metrics(multi), first, tol=1e-6)

    # A sweep as the same two processes (originals and oracles restored from the checkpoints):
    # process 0 alone writes the report, which equals one process's on the same devices.
    sweeps = _two_processes(multi, *SWEEP, BINARY="experiments.sweep")
    reference = _start(
        [
            sys.executable,
            "-m",
            "experiments.sweep",
            f"--config={CONFIG}",
            f"--workdir={single}",
            *SWEEP,
        ],
        local_devices=4,
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
    )
    _finish(sweeps)
    _finish(reference)
    with open(os.path.join(multi, "logs", "process_1.log")) as f:
        assert "chosen" not in f.read()
    grids = []
    for workdir in (multi, single):
        with open(os.path.join(workdir, "sweep.json")) as f:
            grid = json.load(f)["grid"]
        grids.append([x for g in grid for x in (g["value"], g["gap"], g["metrics"]["UA"]["mean"])])
    assert grids[0] == pytest.approx(grids[1], abs=1e-3)
