"""Wall-clock time of the default experiment (issue: under 3 minutes on a 2-core CPU).

    python benchmarks/default_runtime.py [--config=experiments/configs/default.py]

Runs the experiment binary twice, each time in a fresh process and a fresh workdir, exactly as the
README's quickstart does, and prints the elapsed seconds (start-up, compilation and all runs
included): first with an empty persistent compilation cache (a first run on a new machine), then
with the cache the first run filled (any later run, e.g. with another workdir or seed count).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(config: str, cache: str) -> float:
    with tempfile.TemporaryDirectory() as workdir:
        t0 = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "experiments.main",
                f"--config={config}",
                f"--workdir={workdir}",
                f"--compilation_cache_dir={cache}",
            ],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default="experiments/configs/default.py")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        cold = run(args.config, cache)
        warm = run(args.config, cache)
    print(
        f"{args.config}: {cold:.1f} s wall clock with an empty compilation cache, {warm:.1f} s "
        f"with a warm one ({cold / warm:.2f}x), on {os.cpu_count()} CPU cores"
    )


if __name__ == "__main__":
    main()
