"""Atomic JSON records: a killed writer leaves the old file, a damaged file is named."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from jaxunlearn.train import records


def test_round_trip_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "results.json"
    records.write_json(str(path), [{"a": 1.5, "b": [1, 2]}])
    records.write_json(str(path), {"b": 2})
    assert records.read_json(str(path)) == {"b": 2}
    assert os.listdir(path.parent) == ["results.json"]


def test_a_damaged_file_is_named(tmp_path):
    path = tmp_path / "results.json"
    path.write_text('[{"scenario": "class_0", "metr')
    with pytest.raises(records.DamagedFileError, match=str(path)) as e:
        records.read_json(str(path))
    assert isinstance(e.value, ValueError) and isinstance(e.value.__cause__, ValueError)
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(records.DamagedFileError, match=str(path)):
        records.read_json(str(path))


def test_a_missing_file_gives_the_default_or_file_not_found(tmp_path):
    assert records.read_json(str(tmp_path / "none.json"), default=[]) == []
    with pytest.raises(FileNotFoundError):
        records.read_json(str(tmp_path / "none.json"))


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "results.json"
    records.write_json(str(path), {"old": True})
    with pytest.raises(TypeError):
        records.write_json(str(path), {"new": object()})  # fails halfway through encoding
    assert records.read_json(str(path)) == {"old": True}
    assert os.listdir(tmp_path) == ["results.json"]


_KILLED_WRITER = textwrap.dedent(
    """
    import importlib.util, json, sys, time

    # records.py alone (it imports nothing of the package): no JAX start-up in the child.
    spec = importlib.util.spec_from_file_location("records", sys.argv[2])
    records = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(records)

    def half_then_hang(obj, f, **kw):  # the process dies with half the JSON on disk
        text = json.dumps(obj, **kw)
        f.write(text[: len(text) // 2])
        f.flush()
        print("half written", flush=True)
        time.sleep(600)

    json.dump = half_then_hang
    records.write_json(sys.argv[1], {"new": list(range(10000))})
    """
)


def test_kill_9_during_a_write_leaves_the_old_file_intact(tmp_path):
    path = tmp_path / "results.json"
    records.write_json(str(path), {"old": True})
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(path), records.__file__],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "half written"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    with open(path) as f:
        assert json.load(f) == {"old": True}
    # The half-written temporary file is beside it, never under the record's name.
    leftovers = [name for name in os.listdir(tmp_path) if name != "results.json"]
    assert leftovers and all(name.endswith(".tmp") for name in leftovers), leftovers
    records.write_json(str(path), {"again": 1})
    assert records.read_json(str(path)) == {"again": 1}
