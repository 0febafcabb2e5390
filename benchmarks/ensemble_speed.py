"""Training 64 `digits` MLPs: one vmapped program vs the same 64 trained one after another.

Both sides run the same code, :func:`jaxunlearn.train.fit` with the default experiment's recipe
(MLP 128-128, SGD lr 0.05, momentum 0.9, weight decay 5e-4, batch 64, ``--epochs`` passes over the
1,437 training images): once as ``jaxunlearn.ensemble.train`` over 64 keys, once as 64 single
``fit`` calls. The sequential baseline is not handicapped: ``fit`` reuses the compiled program of
a previous call with the same rule and argument types, so it compiles once, like the vmapped
side. The script prints wall-clock totals (compilation included), execution alone, and what the
sequential side would cost if every call compiled (the first call's compile time x 64).

It also prints the FLOP roofline of this machine: the floating-point work of one training step
(XLA's cost analysis of the compiled step) times the steps of all models, divided by the best
matrix-multiply throughput XLA reaches here on large operands. No schedule of the same arithmetic
can beat that time, so ``sequential execution / roofline time`` caps any speed-up from batching
the models. On a 2-core CPU the sequential loop runs at a quarter to a third of that rate (the
MLP's small matmuls are what limit it, and XLA's batched matmuls over the model axis run at the
same rate), so even perfect batching stays far below 10x there; on an accelerator, where one small
model leaves the chip idle, vmap gives large factors (see the README).

Usage:
  PYTHONPATH=. python benchmarks/ensemble_speed.py [--models 64] [--epochs 30]
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import data, ensemble, models, rules
from jaxunlearn.train import fit, make_stream, sample_batch


def step_flops(rule, variables, stream, batch_size: int) -> float:
    """Floating-point operations of one compiled update of one model (XLA cost analysis)."""
    state = rule.init(variables, key=jax.random.key(0))

    def step(v, s, k):
        batch = sample_batch(stream, {"retain": batch_size}, k, jnp.zeros((), jnp.int32))
        return rule.update(v, s, batch, key=k)

    cost = jax.jit(step).lower(variables, state, jax.random.key(1)).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def peak_matmul_flops(repeats: int = 20) -> float:
    """The best FLOP/s that XLA reaches here on large float32 matrix products."""
    best = 0.0
    for m, k, n in ((4096, 128, 128), (1024, 1024, 1024), (2048, 512, 512)):
        a, b = jnp.ones((m, k)), jnp.ones((k, n))
        dot = jax.jit(jnp.dot)
        dot(a, b).block_until_ready()
        start = time.perf_counter()
        for _ in range(repeats):
            out = dot(a, b)
        out.block_until_ready()
        best = max(best, 2 * m * k * n * repeats / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args()

    ds = data.load("digits")
    net = models.make_network("mlp", input_shape=ds.input_shape, num_outputs=ds.num_outputs,
                              hidden=(128, 128))
    rule = rules.finetune(net.apply, learning_rate=0.05, momentum=0.9, weight_decay=5e-4,
                          train_mode=True)
    index = np.arange(len(ds.y_train))
    keys = ensemble.seed_keys(args.models)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.models} MLPs, {args.epochs} epochs of {len(index)} examples, batch "
          f"{args.batch_size}; devices {jax.devices()}; CPUs {os.cpu_count()}, load {load:.1f}")

    start = time.perf_counter()
    vm = ensemble.train(net, rule, ds.x_train, ds.y_train, index, keys=keys, epochs=args.epochs,
                        batch_size=args.batch_size)
    jax.block_until_ready(vm.variables)
    vm_wall = time.perf_counter() - start
    print(f"vmapped   : {vm_wall:8.1f} s wall ({vm.compile_s:.1f} s compile, {vm.runtime_s:.1f} s "
          f"execution, {vm.steps} steps)", flush=True)

    stream = make_stream(ds.x_train, ds.y_train, {"retain": index})
    start = time.perf_counter()
    seq_run, seq_compile, first_compile, last = 0.0, 0.0, None, None
    for m in range(args.models):
        last = fit(rule, net.init(keys[m]), stream, batch_sizes={"retain": args.batch_size},
                   num_steps=vm.steps, key=keys[m])
        seq_run += last.runtime_s
        seq_compile += last.compile_s
        first_compile = last.compile_s if first_compile is None else first_compile
    jax.block_until_ready(last.variables)
    seq_wall = time.perf_counter() - start
    print(f"sequential: {seq_wall:8.1f} s wall ({seq_compile:.1f} s compile, {seq_run:.1f} s "
          f"execution, {args.models} fit calls)")

    same = all(np.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(
        jax.tree.leaves(ensemble.select(vm.variables, args.models - 1)),
        jax.tree.leaves(last.variables), strict=True))
    every_call_compiles = seq_run + args.models * first_compile
    print(f"last model identical in both (float tolerance): {same}")
    print(f"speed-up, wall clock (both compile once): {seq_wall / vm_wall:6.2f}x")
    print(f"speed-up, execution only:                 {seq_run / vm.runtime_s:6.2f}x")
    print(f"speed-up if every sequential fit compiled: "
          f"{every_call_compiles / (vm.compile_s + vm.runtime_s):6.2f}x "
          f"({every_call_compiles:.0f} s = {args.models} x {first_compile:.1f} s compile + "
          f"{seq_run:.1f} s)")

    flops = step_flops(rule, net.init(keys[0]), stream, args.batch_size)
    peak = peak_matmul_flops()
    roofline_s = flops * vm.steps * args.models / peak
    print(f"roofline: {flops / 1e6:.2f} MFLOP per step x {vm.steps} steps x {args.models} models "
          f"at the best matmul rate here ({peak / 1e9:.0f} GFLOP/s) = {roofline_s:.1f} s; the "
          f"sequential loop runs at {flops * vm.steps * args.models / seq_run / 1e9:.0f} GFLOP/s")
    print(f"largest speed-up any batching could give on this machine (sequential execution / "
          f"roofline): {seq_run / roofline_s:6.2f}x")


if __name__ == "__main__":
    main()
