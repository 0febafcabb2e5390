"""Unlearnable examples: generation time per 1,000 images, and the ensemble speed-up for victims.

1. Each generator protects the `digits` training set (1,437 images) with the defaults of
   ``experiments/configs/unlearnable.py``; the first call compiles, the second reuses the program
   (generators cache their compiled program by their static settings), so the second call's time
   is the generation cost; it is reported per 1,000 images. Error-minimising noise runs until its
   stopping rule, so its time also depends on how many rounds that takes (printed).
2. Victims: ``--seeds`` MLP victims (128-128, 30 epochs, batch 64) trained on the fully protected
   set, once as one vmapped program (``evaluate.train_victims``, i.e. ``ensemble.train``) and once
   as a host loop of single-model ``fit`` calls over the seeds (same rule object: the loop
   compiles once too). Execution and compile times are printed for both.

Usage:
  PYTHONPATH=. python benchmarks/unlearnable_speed.py [--seeds 8] [--epochs 30]
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

from jaxunlearn import data, ensemble, models, xla_flags
from jaxunlearn.train import fit, make_stream, steps_per_epoch
from jaxunlearn.unlearnable import evaluate, registry

xla_flags.set_cpu_flags()

GENERATORS = {
    "em_samplewise": ("error_minimizing_noise", {"mode": "samplewise", "learning_rate": 0.05}),
    "em_classwise": ("error_minimizing_noise", {"mode": "classwise", "learning_rate": 0.05}),
    "bayes_error": ("bayes_error_noise", {}),
    "clusters": ("unlearnable_clusters", {"epsilon": 8 / 255}),
    "text_conditioned": ("text_conditioned_noise", {}),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    ds = data.load("digits")
    net = models.make_network("mlp", input_shape=ds.input_shape, num_outputs=10)
    x, y = ds.x_train, ds.y_train
    n = len(y)
    rule = evaluate.victim_rule(net, "none")
    surrogate = evaluate.train_victims(
        net, rule, [x], y, keys=ensemble.seed_keys(1, 1000), epochs=args.epochs, batch_size=64
    )
    surrogate = jax.tree.map(lambda a: a[0], surrogate.variables)
    print(f"backend: {jax.default_backend()}, {n} digits training images")
    print(f"{'generator':16s} {'first call (s)':>15s} {'run (s)':>8s} {'s / 1000 images':>16s}")
    protected = None
    for label, (name, hparams) in GENERATORS.items():
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            p = registry.protect(
                name, net, x, y, key=jax.random.key(0), surrogate=surrogate, **hparams
            )
            jax.block_until_ready(p.x)
            times.append(time.perf_counter() - t0)
        protected = p.x if label == "em_classwise" else protected
        print(
            f"{label:16s} {times[0]:15.2f} {times[1]:8.2f} {1000 * times[1] / n:16.2f}  {p.metrics}"
        )

    keys = ensemble.seed_keys(args.seeds)
    t0 = time.perf_counter()
    res = evaluate.train_victims(
        net, rule, [np.asarray(protected)], y, keys=keys, epochs=args.epochs, batch_size=64
    )
    vmapped_wall = time.perf_counter() - t0
    stream = make_stream(np.asarray(protected), y, {"retain": np.arange(n)})
    num_steps = args.epochs * steps_per_epoch(n, 64)
    loop_run = loop_compile = 0.0
    t0 = time.perf_counter()
    for s in range(args.seeds):
        variables = net.init(keys[s])
        r = fit(
            rule, variables, stream, batch_sizes={"retain": 64}, num_steps=num_steps, key=keys[s]
        )
        loop_run += r.runtime_s
        loop_compile += r.compile_s
    loop_wall = time.perf_counter() - t0
    print(f"\nvictims: {args.seeds} seeds x {num_steps} steps")
    print(
        f"  vmapped ensemble: run {res.runtime_s:.2f}s, compile {res.compile_s:.2f}s, "
        f"wall {vmapped_wall:.2f}s"
    )
    print(
        f"  host loop of fit: run {loop_run:.2f}s, compile {loop_compile:.2f}s, "
        f"wall {loop_wall:.2f}s"
    )
    print(
        f"  speed-up (execution): {loop_run / max(res.runtime_s, 1e-9):.2f}x; "
        f"(wall): {loop_wall / max(vmapped_wall, 1e-9):.2f}x"
    )


if __name__ == "__main__":
    main()
