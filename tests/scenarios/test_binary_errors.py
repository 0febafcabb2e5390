"""The binaries end a configuration or I/O error with one line naming the setting or path.

Every case fails before any compute (flag parsing, the plan, the workdir checks), so the
subprocesses run side by side in seconds.
"""

import importlib.util
import os
import re
import subprocess
import sys

from jaxunlearn.scenarios import workdir_lock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = "--config=experiments/configs/default.py:tiny"


def _start(binary, *args, **env):
    return subprocess.Popen(
        [sys.executable, "-m", f"experiments.{binary}", *args],
        cwd=ROOT,
        env={**os.environ, "JAXUNLEARN_VERBOSE": "", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc):
    out, err = proc.communicate(timeout=300)
    return proc.returncode, out, err


def test_configuration_and_io_errors_are_one_line_and_verbose_shows_the_traceback(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    work = f"--workdir={tmp_path / 'work'}"
    sweep = ("--scenario=class_0", "--rule=gradient_ascent")
    cases = {
        # (binary, args): what the one line names
        ("main", TINY, work, "--config.sedds=3"): ["'sedds'", '"seeds"'],
        ("main", TINY, work, "--config.scenarios.class_0.fractoin=0.1"): ["'fractoin'"],
        ("main", "--config=experiments/configs/nope.py", work): ["--config", "nope.py"],
        ("main", TINY, f"--workdir={a_file}"): [f"--workdir={a_file}", "is a file"],
        ("main", TINY, work, "--config.train.learning_rate=nan"): ["'retrain'", "nan"],
        ("sweep", TINY, work, *sweep, "--values=1e-3,nan"): ["finite", "learning_rate"],
        ("sweep", TINY, work, "--scenario=class_9", "--rule=finetune", "--values=1e-3"): [
            "class_9"
        ],
    }
    if importlib.util.find_spec("tensorflow_datasets"):  # the README's TFDS route
        tfds_dir = str(tmp_path / "tfds")
        case = ("main", TINY, work, "--config.dataset=mnist", f"--config.data_dir={tfds_dir}")
        cases[case] = [f"data_dir='{tfds_dir}'", "not prepared"]
    busy = tmp_path / "busy"  # held by this process while the binaries run
    busy.mkdir()
    cases[("main", TINY, f"--workdir={busy}")] = [str(busy), f"pid {os.getpid()}", "in use"]
    verbose = [
        _start("main", TINY, work, "--config.train.epochs=0", "--verbose"),
        _start("main", TINY, work, "--config.train.epochs=0", JAXUNLEARN_VERBOSE="1"),
    ]
    with workdir_lock(str(busy)):
        procs = {case: _start(case[0], *case[1:]) for case in cases}
        results = {case: _finish(proc) for case, proc in procs.items()}
    for case, (rc, _, err) in results.items():
        # absl log lines of the libraries (a TFDS warning) are not part of the error
        lines = [ln for ln in err.strip().splitlines() if not re.match(r"[IWE]\d{4} ", ln)]
        assert rc == 1, (case, err[-2000:])
        assert len(lines) == 1 and lines[0].startswith("error: "), (case, err[-2000:])
        for word in cases[case]:
            assert word in lines[0], (case, lines[0])
        assert "Traceback" not in err and not os.path.exists(tmp_path / "work" / "checkpoints")
    # --verbose, or JAXUNLEARN_VERBOSE=1: the traceback.
    for proc in verbose:
        rc, _, err = _finish(proc)
        assert rc != 0 and "Traceback" in err and "train.epochs" in err, err[-2000:]
