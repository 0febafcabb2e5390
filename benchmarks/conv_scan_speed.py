"""Gradient-ascent steps of the CNN and ResNet-18 with XLA's and jaxunlearn's convolution gradients.

On XLA:CPU, JAX's own convolution gradients run 15-100x slower inside ``lax.scan`` (a while loop,
as :func:`jaxunlearn.train.fit` runs its steps) than in a jitted step;
:mod:`jaxunlearn.models.conv` gives the models' convolutions a custom VJP that avoids that.
This times, side by side in one process and in turns (the switch is read at trace time), one
jitted ``rule.update`` of gradient ascent (batch 64, CIFAR shape 32x32x3, inference mode) and
``--scan_steps`` updates fused in one ``lax.scan``, with ``models.conv.USE_CUSTOM_GRAD`` "off"
(XLA's gradients) and "on", and checks that both give the same parameters.

Usage:
  PYTHONPATH=. python benchmarks/conv_scan_speed.py [--models cnn,resnet18] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

from jaxunlearn import xla_flags

xla_flags.set_cpu_flags()

import jax  # noqa: E402
import numpy as np  # noqa: E402

from jaxunlearn import models, rules  # noqa: E402
from jaxunlearn.models import conv  # noqa: E402


def _time(fn, rounds: int, warmup: bool):
    """Median seconds of ``fn()`` over ``rounds`` calls, and its last result."""
    if warmup:  # compiled ahead of time: the warm-up call only warms caches
        jax.block_until_ready(fn())
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def _bench(model: str, args, rng) -> None:
    net = models.make_network(model, input_shape=(32, 32, 3), num_outputs=10)
    variables = net.init(jax.random.key(0))
    batch = {
        "forget": {
            "x": jax.numpy.asarray(rng.normal(size=(64, 32, 32, 3)).astype(np.float32)),
            "y": jax.numpy.asarray(rng.integers(0, 10, 64).astype(np.int32)),
        }
    }
    rule = rules.make("gradient_ascent", net, num_steps=10_000, steps_per_epoch=10_000)
    state = rule.init(variables, key=jax.random.key(1))
    key = jax.random.key(2)
    n = args.scan_steps

    compiled, results = {}, {}
    for mode in ("on", "off"):
        # The switch is read when a step is traced, and jit reuses the trace of a function it has
        # seen: each setting traces new functions.
        conv.USE_CUSTOM_GRAD = mode

        def update(*args, **kwargs):
            return rule.update(*args, **kwargs)

        def steps(v, s):
            def body(carry, i):
                v, s, _ = rule.update(*carry, batch, key=jax.random.fold_in(key, i))
                return (v, s), None

            return jax.lax.scan(body, (v, s), jax.numpy.arange(n))[0]

        compiled[mode] = (
            jax.jit(update).lower(variables, state, batch, key=key).compile(),
            jax.jit(steps).lower(variables, state).compile(),
        )
    conv.USE_CUSTOM_GRAD = "auto"
    warmup = not args.no_warmup
    for mode, (step, fused) in compiled.items():
        jit_s, _ = _time(
            lambda step=step: step(variables, state, batch, key=key), args.rounds, warmup
        )
        scan_s, out = _time(lambda fused=fused: fused(variables, state), args.rounds, warmup)
        results[mode] = (jit_s, scan_s / n, out[0])
        print(f"{model} {mode:>3}: jitted step {jit_s:.3f} s, in lax.scan {scan_s / n:.3f} s/step")
    diff = max(
        float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-30))
        for a, b in zip(
            jax.tree.leaves(results["off"][2]), jax.tree.leaves(results["on"][2]), strict=True
        )
    )
    off, on = results["off"], results["on"]
    print(
        f"{model}: custom gradients {off[1] / on[1]:.1f}x faster in lax.scan, jitted step "
        f"{off[0] / on[0]:.2f}x; largest relative parameter difference {diff:.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="cnn,resnet18")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--scan_steps", type=int, default=2)
    parser.add_argument("--no_warmup", action="store_true", help="for ResNet-18's slow scan")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for model in args.models.split(","):
        _bench(model, args, rng)


if __name__ == "__main__":
    main()
