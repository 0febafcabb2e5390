"""Faults and changed configs in a workdir: nothing stale is reused, nothing fails silently.

A rerun with a changed rule hyperparameter, training recipe or seed count recomputes exactly what
changed (and what depends on it) and matches a clean run; a garbled records file is recomputed
with a warning naming it; a second process on a workdir fails at once; a diverged original stops
its scenario's rules.
"""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from experiments.configs import default
from jaxunlearn.scenarios import run_experiment
from jaxunlearn.scenarios.lock import LOCK_NAME, StaleLockWarning, WorkdirLockedError, workdir_lock
from jaxunlearn.scenarios.runner import DamagedRecordsWarning

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMES = ("runtime_s", "compile_s")


def _config():
    """The smoke config (one epoch, class 0) with two rules, so that one can change alone."""
    c = default.get_config("smoke")
    c.data_parallel = False
    c.rules.finetune = {"epochs": 0.25, "retain_batch_size": 64, "hparams": {"learning_rate": 0.01}}
    return c


def _run(c, workdir, capsys):
    records = run_experiment(c, str(workdir))
    err = capsys.readouterr().err
    lines = [ln.strip() for ln in err.splitlines() if not ln.lstrip().startswith("[")]
    return records, lines


def _said(lines, prefix):
    """The log line about one artefact or method (``prefix``: e.g. ``"neggrad_plus:"``)."""
    found = [ln for ln in lines if ln.startswith(prefix)]
    assert found, (prefix, lines)
    return found


def _values(records):
    return {
        (r.scenario, r.method, r.seed): (
            r.status,
            r.fingerprint,
            {k: v for k, v in r.metrics.items() if k not in TIMES},
        )
        for r in records
    }


def test_changed_configs_recompute_exactly_what_changed_and_match_a_clean_run(tmp_path, capsys):
    work = tmp_path / "work"
    c = _config()
    first, _ = _run(c, work, capsys)
    assert {r.fingerprint for r in first} and all(r.fingerprint for r in first)

    # A rule hyperparameter: only that rule's records are recomputed.
    c.rules.neggrad_plus.hparams.learning_rate = 0.03
    second, lines = _run(c, work, capsys)
    said = _said(lines, "neggrad_plus:")[0]
    assert "rule.hparams.learning_rate: 0.01 -> 0.03" in said and "recomputing" in said
    for name in ("finetune:", "retrain:", "original:"):
        assert all("matches" in ln for ln in _said(lines, name)), lines
    assert not any("training" in ln for ln in lines), lines
    before, after = _values(first), _values(second)
    assert before[("class_0", "finetune", 0)] == after[("class_0", "finetune", 0)]
    assert before[("class_0", "neggrad_plus", 0)] != after[("class_0", "neggrad_plus", 0)]

    # The training recipe: originals, oracles and every rule's records.
    c.train.epochs = 2
    _, lines = _run(c, work, capsys)
    assert any("retraining" in ln and "train.epochs: 1 -> 2" in ln for ln in lines), lines
    assert any(ln.startswith("class_0/oracles: config changed") for ln in lines), lines
    for name in ("finetune:", "neggrad_plus:", "retrain:"):
        assert "original.train.epochs: 1 -> 2" in _said(lines, name)[0], lines

    # More seeds: no shape error, everything recomputed.
    c.seeds = 2
    rerun, lines = _run(c, work, capsys)
    assert any("seeds: 1 -> 2" in ln for ln in _said(lines, "originals:")), lines

    clean, _ = _run(c, tmp_path / "clean", capsys)
    assert _values(rerun) == _values(clean)
    assert len(rerun) == 4 * 2


def test_a_garbled_records_file_is_recomputed_with_a_warning(tmp_path, capsys):
    c = _config()
    c.rules = {"retrain": {}, "finetune": c.rules.finetune}
    first, _ = _run(c, tmp_path, capsys)
    path = tmp_path / "records" / "class_0" / "finetune.json"
    path.write_bytes(path.read_bytes()[:40] + b"\x00garbled")
    with pytest.warns(DamagedRecordsWarning, match=str(path)):
        second, lines = _run(c, tmp_path, capsys)
    assert "damaged" in _said(lines, "finetune:")[0]
    assert _values(first) == _values(second)
    assert json.loads(path.read_text())["fingerprint"] == first[-1].fingerprint


def test_a_second_process_on_the_workdir_fails_at_once(tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from jaxunlearn.scenarios.lock import workdir_lock\n"
            "with workdir_lock(sys.argv[1]):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(60)\n",
            str(tmp_path),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        with pytest.raises(WorkdirLockedError) as e:
            run_experiment(_config(), str(tmp_path), verbose=False)
        assert time.perf_counter() - t0 < 30  # the plan, no training
        message = str(e.value)
        assert str(tmp_path) in message and f"pid {holder.pid}" in message
        assert socket.gethostname() in message
        assert not (tmp_path / "checkpoints").exists()
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed (-9): its lock is free, and the next run takes it over, saying so.
    with pytest.warns(StaleLockWarning, match=f"pid {holder.pid}"), workdir_lock(str(tmp_path)):
        pass
    # Released cleanly: taken again without a warning.
    with workdir_lock(str(tmp_path)):
        text = (tmp_path / LOCK_NAME).read_text()
        assert json.loads(text)["pid"] == os.getpid()
    assert (tmp_path / LOCK_NAME).read_text() == ""


def test_a_diverged_original_stops_its_scenario(tmp_path, capsys):
    c = _config()
    c.train.learning_rate = 1e6
    records, lines = _run(c, tmp_path, capsys)
    status = {r.method: r.status for r in records}
    assert status == {
        "original": "diverged",
        "retrain": "diverged",
        "neggrad_plus": "skipped",
        "finetune": "skipped",
    }
    assert any("the original diverged on seeds [0]" in ln for ln in lines), lines
    table = (tmp_path / "results.txt").read_text()
    assert "0/1†" in table and "0/1‡" in table
    assert "original on class_0: diverged on seeds [0]" in table
    assert "neggrad_plus on class_0: not run on seeds [0] (the original diverged)" in table


def test_without_flock_the_lock_file_names_a_live_or_dead_holder(tmp_path, monkeypatch):
    # On a filesystem without flock the lock file's contents decide: a holder on this host whose
    # pid is not alive is stale (taken over, with a warning); a live one blocks.
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "no locks")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    path = tmp_path / LOCK_NAME
    path.write_text(json.dumps({"pid": dead.pid, "host": host}))
    with pytest.warns(StaleLockWarning, match=f"pid {dead.pid}"), workdir_lock(str(tmp_path)):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    path.write_text(json.dumps({"pid": os.getppid(), "host": host}))
    with pytest.raises(WorkdirLockedError, match=f"pid {os.getppid()} on host {host}"):
        with workdir_lock(str(tmp_path)):
            pass
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere"}))  # another host: cannot tell
    with pytest.raises(WorkdirLockedError, match="elsewhere"):
        with workdir_lock(str(tmp_path)):
            pass


def test_a_diverged_oracle_leaves_its_seeds_out_of_the_comparisons(tmp_path, capsys):
    c = _config()
    c.rules.retrain = {"hparams": {"learning_rate": 1e6}}  # the oracles only
    records, lines = _run(c, tmp_path, capsys)
    status = {r.method: r.status for r in records}
    assert status == {
        "original": "ok",
        "retrain": "diverged",
        "neggrad_plus": "ok",
        "finetune": "ok",
    }
    assert any("the oracle (retrain) diverged on seeds [0]" in ln for ln in lines), lines
    for r in records:  # audited, but no Avg. Gap against a diverged oracle
        assert "Avg_gap" not in r.metrics
        assert r.status != "ok" or "UA" in r.metrics
