"""Wall-clock time of the default experiment (issue: under 3 minutes on a 2-core CPU).

    python benchmarks/default_runtime.py [--config=experiments/configs/default.py]

Runs the experiment binary in a fresh process and a fresh workdir, exactly as the README's
quickstart does, and prints the elapsed seconds (start-up, compilation and all runs included).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="experiments/configs/default.py")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "experiments.main",
                f"--config={args.config}",
                f"--workdir={workdir}",
            ],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        elapsed = time.perf_counter() - t0
    print(f"{args.config}: {elapsed:.1f} s wall clock on {os.cpu_count()} CPU cores")


if __name__ == "__main__":
    main()
