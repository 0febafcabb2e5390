"""Speed of the competition epsilon: binary-search counting vs comparing every model with every rule

Times :func:`jaxunlearn.audit.competition.epsilon_per_example` on ``--examples`` forget examples x
``--models`` models (random normal confidences, the retrained sample shifted by ``--shift``), then
times the literal transcription ``_epsilon_direct`` on a few of those examples and extrapolates its
cost to all of them.

Usage:
  PYTHONPATH=. python benchmarks/epsilon_speed.py [--examples 1000] [--models 512] [--direct 3]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from jaxunlearn import xla_flags
from jaxunlearn.audit.competition import _epsilon_direct, epsilon_per_example

xla_flags.set_cpu_flags()  # before JAX's first computation (jaxunlearn/xla_flags.py)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--models", type=int, default=512)
    parser.add_argument("--shift", type=float, default=0.5)
    parser.add_argument(
        "--direct", type=int, default=3, help="examples timed with the direct method"
    )
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    unlearned = rng.normal(0.0, 1.0, (args.models, args.examples))
    retrained = rng.normal(args.shift, 1.0, (args.models, args.examples))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{args.examples} examples x {args.models} models, shift {args.shift}, {cpus} CPUs")

    epsilon_per_example(unlearned[:, :2], retrained[:, :2])  # Warm-up (imports, page faults).
    start, cpu_start = time.perf_counter(), time.process_time()
    fast = epsilon_per_example(unlearned, retrained, num_threads=args.threads)
    fast_s, fast_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(
        f"fast   epsilon_per_example: {fast_s:8.2f} s total, {1e3 * fast_s / args.examples:8.2f} ms"
        f"/example (CPU {fast_cpu:.2f} s over all threads; mean eps {fast.mean():.3f})"
    )

    k = min(args.direct, args.examples)
    start = time.perf_counter()
    direct = _epsilon_direct(unlearned[:, :k], retrained[:, :k])
    direct_s = time.perf_counter() - start
    per_example = direct_s / k
    print(
        f"direct _epsilon_direct:     {direct_s:8.2f} s for {k} examples, "
        f"{1e3 * per_example:8.2f} ms/example -> {per_example * args.examples:8.1f} s extrapolated"
    )
    print(f"identical on the {k} timed examples: {np.array_equal(direct, fast[:k])}")
    print(f"speed ratio (direct / fast, per example): {per_example * args.examples / fast_s:8.1f}x")


if __name__ == "__main__":
    main()
