"""Meta-training throughput of the learned unsupervised rule: tasks vmapped vs one after another.

One meta-step of :mod:`jaxunlearn.repr.meta` unrolls ``--unroll`` inner steps (the learned
rule's update of a base MLP on a batch of ``--batch`` digits, then the few-shot ridge
meta-objective) for each of ``--tasks`` tasks and differentiates through the unroll. The same
meta-step is compiled twice: with the tasks vmapped (one batched program, the default of
``meta_trainer``) and with the tasks run one after another by ``lax.map`` inside the same jitted
step. Reported: inner steps per second (``tasks x unroll`` per meta-step, meta-gradient
included), compile time excluded; each variant is timed over ``--repeats`` meta-steps after one
warm-up step.

Usage:
  PYTHONPATH=. python benchmarks/learned_rule_speed.py [--tasks 8] [--unroll 10] [--batch 32]
      [--hidden 64,32] [--theta_hidden 16] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import jax

from jaxunlearn import data, models
from jaxunlearn.repr import meta
from jaxunlearn.xla_flags import set_cpu_flags


def inner_steps_per_second(trainer: meta.MetaTrainer, repeats: int) -> tuple[float, float]:
    """``(inner steps/s, compile-and-first-step seconds)`` of ``trainer``'s meta-step."""
    state = trainer.init(jax.random.key(0))
    t0 = time.perf_counter()
    state, _ = trainer.step(state, jax.random.key(1))
    jax.block_until_ready(state)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(repeats):
        state, _ = trainer.step(state, jax.random.key(2 + i))
    jax.block_until_ready(state)
    per_step = (time.perf_counter() - t0) / repeats
    s = trainer.settings
    return s.num_tasks * s.unroll_length / per_step, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--unroll", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", default="64,32", help="the base MLP's hidden widths")
    parser.add_argument("--theta_hidden", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    set_cpu_flags()
    ds = data.load("digits")
    train = meta.task_data(ds.x_train, ds.y_train)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    network = models.make_network("mlp", input_shape=ds.input_shape, num_outputs=10, hidden=hidden)
    settings = meta.MetaSettings(
        num_tasks=args.tasks,
        unroll_length=args.unroll,
        trajectory_length=max(100, args.unroll),
        batch_size=args.batch,
    )
    print(
        f"backend: {jax.default_backend()}, base MLP 64-{'-'.join(map(str, hidden))}, "
        f"{args.tasks} tasks x {args.unroll} inner steps (batch {args.batch}) per meta-step"
    )
    print("| tasks | inner steps/s | compile + first step (s) |")
    print("|---|---|---|")
    rates = {}
    for label, vectorize in (("vmapped", True), ("one after another (lax.map)", False)):
        trainer = meta.meta_trainer(
            network,
            train,
            settings=settings,
            theta_dims={"hidden": args.theta_hidden},
            vectorize=vectorize,
        )
        rate, first = inner_steps_per_second(trainer, args.repeats)
        rates[vectorize] = rate
        print(f"| {label} | {rate:.0f} | {first:.0f} |", flush=True)
    print(f"vmapped / sequential: {rates[True] / rates[False]:.2f}x")


if __name__ == "__main__":
    main()
