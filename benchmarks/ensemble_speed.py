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

It then sets the vmapped program against the same 64 models stacked by hand in eager PyTorch
(weights ``[models, in, out]``, ``torch.baddbmm`` over the model axis, one ``torch.optim.SGD``
over the stacked tensors, each model its own per-epoch batch order), when ``--torch_python``
(default: this interpreter) can import torch; torch is not a dependency of jaxunlearn, so point
it at a scratch environment. It runs in its own process with ``torch.set_num_threads(2)``. Both
sides are reported in GFLOP/s (the XLA cost of one step of one model x steps x models / seconds)
next to the best matmul rate of XLA (and of PyTorch) on this machine, and in CPU seconds of
each process (all threads), which other processes' load on a shared machine does not inflate.
The JAX side runs with :func:`jaxunlearn.xla_flags.set_cpu_flags` (``JAXUNLEARN_XLA_CPU_FLAGS=0``:
XLA's defaults).

Usage:
  PYTHONPATH=. python benchmarks/ensemble_speed.py [--models 64] [--epochs 30]
      [--torch_python /tmp/torchenv/bin/python] [--skip_sequential]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import data, ensemble, models, rules, xla_flags
from jaxunlearn.train import fit, make_stream, sample_batch

xla_flags.set_cpu_flags()  # before JAX's first computation (jaxunlearn/xla_flags.py)


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


TORCH_CHILD = r"""
import json, sys, time
import numpy as np
import torch

args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
data = np.load(args["data"])
x_all = torch.from_numpy(data["x"].reshape(len(data["x"]), -1))
y_all = torch.from_numpy(data["y"].astype(np.int64))
index = torch.from_numpy(data["index"].astype(np.int64))
models, batch, steps, sizes = args["models"], args["batch_size"], args["steps"], args["sizes"]
gen = torch.Generator().manual_seed(0)


def stacked(fan_in, fan_out):  # PyTorch's nn.Linear initialisation, one slice per model
    bound = fan_in ** -0.5
    w = (torch.rand(models, fan_in, fan_out, generator=gen) * 2 - 1) * bound
    b = (torch.rand(models, 1, fan_out, generator=gen) * 2 - 1) * bound
    return [w.requires_grad_(), b.requires_grad_()]


params = [p for a, b in zip(sizes[:-1], sizes[1:]) for p in stacked(a, b)]
opt = torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=5e-4)
per_epoch = len(index) // batch


def step(rows):
    h, y = x_all[rows], y_all[rows]  # [models, batch, features], [models, batch]
    for layer in range(0, len(params), 2):
        h = torch.baddbmm(params[layer + 1], h, params[layer])
        if layer + 2 < len(params):
            h = torch.relu(h)
    # The mean loss of each model, summed: every model gets its own gradient.
    loss = torch.nn.functional.cross_entropy(h.flatten(0, 1), y.flatten(), reduction="sum") / batch
    opt.zero_grad()
    loss.backward()
    opt.step()


a, b = torch.ones(2048, 2048), torch.ones(2048, 2048)
torch.mm(a, b)
t0 = time.perf_counter()
for _ in range(5):
    torch.mm(a, b)
peak = 2 * 2048**3 * 5 / (time.perf_counter() - t0)

start, cpu_start = time.perf_counter(), time.process_time()
for s in range(steps):
    if s % per_epoch == 0:
        order = torch.argsort(torch.rand(models, len(index), generator=gen), dim=1)
    rows = index[order[:, (s % per_epoch) * batch : (s % per_epoch + 1) * batch]]
    step(rows)
wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
print(json.dumps({"wall": wall, "cpu": cpu, "peak": peak, "torch": torch.__version__,
                  "threads": torch.get_num_threads()}))
"""


def torch_stacked(python: str, x, y, index, *, models, batch_size, steps, sizes, threads=2):
    """Wall seconds of the hand-stacked PyTorch ensemble (in ``python``'s own process), or None."""
    if subprocess.run([python, "-c", "import torch"], capture_output=True).returncode:
        print(f"torch is not importable by {python}: PyTorch comparison skipped")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "data.npz")
        np.savez(path, x=np.asarray(x, np.float32), y=np.asarray(y), index=np.asarray(index))
        spec = dict(
            data=path,
            models=models,
            batch_size=batch_size,
            steps=steps,
            sizes=list(sizes),
            threads=threads,
        )
        proc = subprocess.run(
            [python, "-c", TORCH_CHILD, json.dumps(spec)], capture_output=True, text=True
        )
    if proc.returncode:
        print(f"PyTorch ensemble failed:\n{proc.stderr[-2000:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument(
        "--torch_python",
        default=sys.executable,
        help="Interpreter that can import torch (a scratch environment).",
    )
    parser.add_argument(
        "--skip_sequential",
        action="store_true",
        help="Skip the 64 sequential fits (the vmapped-vs-PyTorch part only).",
    )
    args = parser.parse_args()

    ds = data.load("digits")
    hidden = (128, 128)
    net = models.make_network(
        "mlp", input_shape=ds.input_shape, num_outputs=ds.num_outputs, hidden=hidden
    )
    rule = rules.finetune(
        net.apply,
        learning_rate=0.05,
        optimizer={"momentum": 0.9, "weight_decay": 5e-4},
        train_mode=True,
    )
    index = np.arange(len(ds.y_train))
    keys = ensemble.seed_keys(args.models)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{args.models} MLPs, {args.epochs} epochs of {len(index)} examples, batch "
        f"{args.batch_size}; devices {jax.devices()}; CPUs {os.cpu_count()}, load {load:.1f}; "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}"
    )

    start, cpu_start = time.perf_counter(), time.process_time()
    vm = ensemble.train(
        net,
        rule,
        ds.x_train,
        ds.y_train,
        index,
        keys=keys,
        epochs=args.epochs,
        batch_size=args.batch_size,
    )
    jax.block_until_ready(vm.variables)
    vm_wall, vm_cpu = time.perf_counter() - start, time.process_time() - cpu_start
    print(
        f"vmapped   : {vm_wall:8.1f} s wall ({vm.compile_s:.1f} s compile, {vm.runtime_s:.1f} s "
        f"execution, {vm.steps} steps)",
        flush=True,
    )

    stream = make_stream(ds.x_train, ds.y_train, {"retain": index})
    flops = step_flops(rule, net.init(keys[0]), stream, args.batch_size)
    total_flops = flops * vm.steps * args.models
    peak = peak_matmul_flops()
    print(
        f"work: {flops / 1e6:.2f} MFLOP per step and model (XLA cost analysis) x {vm.steps} "
        f"steps x {args.models} models = {total_flops / 1e9:.0f} GFLOP; best XLA matmul rate "
        f"here {peak / 1e9:.0f} GFLOP/s"
    )
    print(
        f"vmapped rate: {total_flops / vm.runtime_s / 1e9:.1f} GFLOP/s in execution "
        f"({100 * total_flops / vm.runtime_s / peak:.0f}% of the matmul peak), "
        f"{total_flops / vm_wall / 1e9:.1f} GFLOP/s over the wall clock",
        flush=True,
    )

    if not args.skip_sequential:
        start = time.perf_counter()
        seq_run, seq_compile, first_compile, last = 0.0, 0.0, None, None
        for m in range(args.models):
            last = fit(
                rule,
                net.init(keys[m]),
                stream,
                batch_sizes={"retain": args.batch_size},
                num_steps=vm.steps,
                key=keys[m],
            )
            seq_run += last.runtime_s
            seq_compile += last.compile_s
            first_compile = last.compile_s if first_compile is None else first_compile
        jax.block_until_ready(last.variables)
        seq_wall = time.perf_counter() - start
        print(
            f"sequential: {seq_wall:8.1f} s wall ({seq_compile:.1f} s compile, {seq_run:.1f} s "
            f"execution, {args.models} fit calls)"
        )

        same = all(
            np.allclose(a, b, rtol=1e-4, atol=1e-5)
            for a, b in zip(
                jax.tree.leaves(ensemble.select(vm.variables, args.models - 1)),
                jax.tree.leaves(last.variables),
                strict=True,
            )
        )
        every_call_compiles = seq_run + args.models * first_compile
        print(f"last model identical in both (float tolerance): {same}")
        print(f"speed-up, wall clock (both compile once): {seq_wall / vm_wall:6.2f}x")
        print(f"speed-up, execution only:                 {seq_run / vm.runtime_s:6.2f}x")
        print(
            f"speed-up if every sequential fit compiled: "
            f"{every_call_compiles / (vm.compile_s + vm.runtime_s):6.2f}x "
            f"({every_call_compiles:.0f} s = {args.models} x {first_compile:.1f} s compile + "
            f"{seq_run:.1f} s)"
        )
        roofline_s = total_flops / peak
        print(
            f"roofline: {total_flops / 1e9:.0f} GFLOP at {peak / 1e9:.0f} GFLOP/s = "
            f"{roofline_s:.1f} s; the sequential loop runs at {total_flops / seq_run / 1e9:.0f} "
            f"GFLOP/s; largest speed-up any batching could give on this machine (sequential "
            f"execution / roofline): {seq_run / roofline_s:6.2f}x"
        )

    res = torch_stacked(
        args.torch_python,
        ds.x_train,
        ds.y_train,
        index,
        models=args.models,
        batch_size=args.batch_size,
        steps=vm.steps,
        sizes=(int(np.prod(ds.input_shape)), *hidden, ds.num_outputs),
    )
    if res is not None:
        rate = total_flops / res["wall"]
        print(
            f"PyTorch {res['torch']} stacked by hand ({res['threads']} threads): "
            f"{res['wall']:.1f} s wall, {rate / 1e9:.1f} GFLOP/s ({100 * rate / peak:.0f}% of "
            f"XLA's matmul peak; PyTorch's own 2048x2048 matmul: {res['peak'] / 1e9:.0f} "
            f"GFLOP/s)"
        )
        print(
            f"vmapped vs hand-stacked PyTorch: {res['wall'] / vm_wall:.2f}x over the wall clock "
            f"(compilation included), {res['wall'] / vm.runtime_s:.2f}x in execution; CPU "
            f"seconds of the process (all threads; what other load on a shared machine cannot "
            f"inflate): PyTorch {res['cpu']:.1f} s, vmapped {vm_cpu:.1f} s with compilation, "
            f"{res['cpu'] / vm_cpu:.2f}x (> 1: JAX faster); load now {os.getloadavg()[0]:.1f}"
        )


if __name__ == "__main__":
    main()
