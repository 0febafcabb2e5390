"""Training and generation speed of the transformer: fused programs against step-by-step baselines.

Three measurements, in one process, on a Llama-style decoder (``make_network("transformer")``):

* **training tokens/s**: next-token cross-entropy with AdamW (a rule built by
  ``core.rule.rule_from_loss``), ``--steps`` updates on batches of ``--batch`` sequences of
  ``--max_len`` tokens, (a) fused in one compiled ``lax.scan`` by ``train.fit`` and (b) a Python
  loop calling one jitted step (batch gather + update) per step, the un-fused baseline;
* **generated tokens/s**: ``--batch`` prompts of ``--prompt_len`` tokens continued by
  ``--new_tokens`` greedy tokens, (a) by ``models.generation.generate`` (KV cache, one compiled
  ``while_loop``) and (b) the naive baseline that re-runs the full jitted forward pass on the whole
  sequence for every new token (no cache);
* **model FLOPs utilisation**: ``6 N`` FLOPs per trained token and ``2 N`` per generated token
  (``N`` = parameters that take part in matmuls, i.e. all but the input embedding; attention's
  ``T``-dependent FLOPs are left out, as in Kaplan et al.'s count) over a peak: ``--peak_tflops``
  if given, else the measured rate of a jitted float32 ``--matmul_size``-square matmul on this
  machine (so "MFU" on a CPU is relative to what XLA's matmul reaches here, not a datasheet).

Times are medians over ``--rounds`` repetitions after a compile-and-warm-up call, the compared
paths run in turns so that load from other processes falls on both alike; compile times are
reported apart. Each rate is given per wall second and per CPU second of this process (all
threads): on a shared machine the CPU figure measures the work done, which wall time mixes with
waiting, and its MFU is taken against the matmul's FLOPs per CPU second. A trained token is one of
the ``batch x max_len`` positions (padding included). Both training paths start from the same
variables and run the same batches with the same keys; the script prints both final losses, and
whether the cached and the naive greedy decoding produced the same tokens.

Usage:
  PYTHONPATH=. python benchmarks/lm_speed.py [--d_model 64 --num_layers 2 --max_len 64
      --batch 16 --steps 20 --prompt_len 16 --new_tokens 32 --rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from jaxunlearn import xla_flags

xla_flags.set_cpu_flags()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from jaxunlearn import models  # noqa: E402
from jaxunlearn.core import losses  # noqa: E402
from jaxunlearn.core.rule import rule_from_loss  # noqa: E402
from jaxunlearn.models import generation, transformer  # noqa: E402
from jaxunlearn.train import fit, make_stream, sample_batch  # noqa: E402


def _median_time(fn, rounds: int) -> float:
    """Median wall seconds of ``fn()`` (which blocks on its result) after one warm-up call."""
    return _in_turns({"f": fn}, rounds)["f"][0]


def _in_turns(fns: dict, rounds: int) -> dict:
    """``{name: (median wall s, median CPU s)}`` of each blocking ``fn()``, run in turns (one
    call of each per round, after a warm-up call of each) so that load from other processes
    falls on all of them alike. CPU time is this process's (all threads): on a shared machine
    it measures the work done, which wall time mixes with waiting."""
    for fn in fns.values():
        fn()
    wall = {name: [] for name in fns}
    cpu = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {n: (statistics.median(wall[n]), statistics.median(cpu[n])) for n in fns}


def matmul_peak(size: int, rounds: int) -> tuple[float, float]:
    """FLOPs per wall second and per CPU second of a jitted float32 ``size x size`` matmul."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    wall, cpu = _in_turns({"matmul": lambda: jax.block_until_ready(f(a))}, max(rounds, 5))["matmul"]
    return 2 * size**3 / wall, 2 * size**3 / cpu


def _corpus(spec, n: int, seed: int = 0):
    """Random right-padded token sequences and their pre-shifted labels."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, spec.vocab_size, (n, spec.max_len)).astype(np.int32)
    lengths = rng.integers(spec.max_len // 2, spec.max_len + 1, n)
    tokens[np.arange(spec.max_len)[None] >= lengths[:, None]] = spec.pad_id
    labels = np.full_like(tokens, losses.IGNORE_INDEX)
    labels[:, :-1] = np.where(tokens[:, 1:] != spec.pad_id, tokens[:, 1:], losses.IGNORE_INDEX)
    return tokens, labels


def train_speed(net, variables, args) -> dict:
    """Tokens/s of ``train.fit`` (scan-fused) and of a Python loop of jitted steps."""

    def loss_fn(v, batch, *, reference, step, key):
        del reference, step, key
        part = batch["retain"]
        return losses.supervised(net.apply(v, part["x"]).logits, part["y"]), {}

    rule = rule_from_loss(loss_fn, optax.adamw(1e-3), keep_reference=False)
    tokens, labels = _corpus(net.spec, 4 * args.batch)
    stream = make_stream(tokens, labels, {"retain": np.arange(len(tokens))})
    sizes = {"retain": args.batch}
    key = jax.random.key(1)

    state = jax.jit(lambda v: rule.init(v, key=key))(variables)  # both paths start from it

    def fused():
        return fit(
            rule, variables, stream, state=state, batch_sizes=sizes, num_steps=args.steps,
            key=key, chunk_size=args.steps,
        )  # fmt: skip

    t0 = time.perf_counter()
    first = fused()
    fused_compile = time.perf_counter() - t0 - first.runtime_s

    @jax.jit
    def step(v, s, i):  # fit's batches and per-step keys
        batch = sample_batch(stream, sizes, jax.random.fold_in(key, 0), i)
        return rule.update(v, s, batch, key=jax.random.fold_in(jax.random.fold_in(key, 1), i))

    def loop():
        v, s = variables, state
        for i in range(args.steps):
            v, s, m = step(v, s, jnp.int32(i))
        return jax.block_until_ready((v, m["loss"]))

    t0 = time.perf_counter()
    step.lower(variables, state, jnp.int32(0)).compile()
    loop_compile = time.perf_counter() - t0
    times = _in_turns(
        {"fused": lambda: jax.block_until_ready(fused().variables), "loop": loop}, args.rounds
    )
    tokens = args.batch * net.spec.max_len * args.steps
    return {
        "fused_tokens_per_s": tokens / times["fused"][0],
        "loop_tokens_per_s": tokens / times["loop"][0],
        "fused_tokens_per_cpu_s": tokens / times["fused"][1],
        "loop_tokens_per_cpu_s": tokens / times["loop"][1],
        "fused_compile_s": fused_compile,
        "loop_compile_s": loop_compile,
        "fused_final_loss": float(first.metrics["loss"][-1]),
        "loop_final_loss": float(loop()[1]),
    }


def generation_speed(net, variables, args) -> dict:
    """Generated tokens/s of the KV-cached loop and of re-running the full forward per token."""
    spec = net.spec
    prompts = np.asarray(_corpus(spec, args.batch, seed=2)[0][:, : args.prompt_len])
    prompts[:, 0] = np.maximum(prompts[:, 0], 1)  # no empty prompt
    lengths = (np.arange(1, args.prompt_len + 1)[None] * (prompts != spec.pad_id)).max(1)
    total = args.prompt_len + args.new_tokens

    def cached():
        out = generation.generate(
            net, variables, prompts, key=jax.random.key(0), max_new_tokens=args.new_tokens
        )
        return jax.block_until_ready(out.tokens)

    t0 = time.perf_counter()
    cached_tokens = np.asarray(cached())[:, 0]
    cached_compile = time.perf_counter() - t0

    apply = jax.jit(net.apply)
    rows = np.arange(args.batch)

    def naive():
        seq = np.zeros((args.batch, total), np.int32)
        seq[:, : args.prompt_len] = prompts
        seq = jnp.asarray(seq)
        out = []
        for i in range(args.new_tokens):
            logits = apply(variables, seq).logits[rows, lengths + i - 1]
            token = jnp.argmax(logits, -1).astype(jnp.int32)
            seq = seq.at[rows, lengths + i].set(token)
            out.append(token)
        return np.asarray(jnp.stack(out, 1))

    t0 = time.perf_counter()
    naive_tokens = naive()
    naive_compile = time.perf_counter() - t0
    times = _in_turns({"cached": cached, "naive": naive}, args.rounds)
    new = args.batch * args.new_tokens
    return {
        "cached_tokens_per_s": new / times["cached"][0],
        "naive_tokens_per_s": new / times["naive"][0],
        "cached_tokens_per_cpu_s": new / times["cached"][1],
        "naive_tokens_per_cpu_s": new / times["naive"][1],
        "cached_first_call_s": cached_compile,
        "naive_first_call_s": naive_compile,
        "same_tokens": bool(np.array_equal(cached_tokens, naive_tokens)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vocab_size", type=int, default=256)
    parser.add_argument("--max_len", type=int, default=64)
    parser.add_argument("--d_model", type=int, default=64)
    parser.add_argument("--num_layers", type=int, default=2)
    parser.add_argument("--num_heads", type=int, default=4)
    parser.add_argument("--num_kv_heads", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--prompt_len", type=int, default=16)
    parser.add_argument("--new_tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--matmul_size", type=int, default=1024)
    parser.add_argument("--peak_tflops", type=float, default=None)
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()

    net = models.make_network(
        "transformer",
        vocab_size=args.vocab_size,
        max_len=args.max_len,
        d_model=args.d_model,
        num_layers=args.num_layers,
        num_heads=args.num_heads,
        num_kv_heads=args.num_kv_heads,
        dtype=args.dtype,
    )
    variables = net.init(jax.random.key(0))
    n_matmul = transformer.num_params(net.spec, embeddings=False)
    if args.peak_tflops:  # a datasheet figure: per wall second; CPU-time MFU is then skipped
        peak, peak_cpu, peak_source = args.peak_tflops * 1e12, float("nan"), "given"
    else:
        peak, peak_cpu = matmul_peak(args.matmul_size, args.rounds)
        peak_source = f"measured {args.matmul_size}^2 f32 matmul"
    train = train_speed(net, variables, args)
    gen = generation_speed(net, variables, args)
    result = {
        "device": str(jax.devices()[0]),
        "spec": {k: getattr(net.spec, k) for k in transformer.option_names()},
        "params": transformer.num_params(net.spec),
        "matmul_params": n_matmul,
        "peak_flops": peak,
        "peak_flops_per_cpu_s": peak_cpu,
        "peak_source": peak_source,
        "train": train,
        "generate": gen,
    }

    def mfu(tokens_per_s, per_token, peak=peak):
        return per_token * n_matmul * tokens_per_s / peak

    rows = [
        ("train, scan-fused (fit)", train, "fused", 6, train["fused_compile_s"]),
        ("train, loop of jitted steps", train, "loop", 6, train["loop_compile_s"]),
        ("generate, KV cache (1 program)", gen, "cached", 2, gen["cached_first_call_s"]),
        ("generate, full forward per token", gen, "naive", 2, gen["naive_first_call_s"]),
    ]
    print(
        f"device {result['device']}; {result['params']:,} parameters ({n_matmul:,} in matmuls); "
        f"peak {peak / 1e9:.1f} GFLOP/s, {peak_cpu / 1e9:.1f} GFLOP/CPU-s ({peak_source})"
    )
    print(
        f"{'path':34s} {'tokens/s':>10s} {'tokens/CPU-s':>13s} {'MFU':>7s} {'CPU MFU':>8s} "
        f"{'compile/first s':>16s}"
    )
    for name, rec, path, per_token, compile_s in rows:
        wall, cpu = rec[f"{path}_tokens_per_s"], rec[f"{path}_tokens_per_cpu_s"]
        print(
            f"{name:34s} {wall:10,.0f} {cpu:13,.0f} {mfu(wall, per_token):7.2%} "
            f"{mfu(cpu, per_token, peak_cpu):8.2%} {compile_s:16.2f}"
        )

    def speedup(rec, a, b):
        wall = rec[f"{a}_tokens_per_s"] / rec[f"{b}_tokens_per_s"]
        cpu = rec[f"{a}_tokens_per_cpu_s"] / rec[f"{b}_tokens_per_cpu_s"]
        return f"{wall:.2f}x / {cpu:.2f}x"

    print(
        f"speed-up (wall / CPU): training {speedup(train, 'fused', 'loop')}, generation "
        f"{speedup(gen, 'cached', 'naive')}; "
        f"final loss fused {train['fused_final_loss']:.4f} vs loop {train['loop_final_loss']:.4f}; "
        f"cached and naive greedy tokens equal: {gen['same_tokens']}"
    )
    for name, rec, path, per_token, _ in rows:
        result.setdefault("mfu", {})[name] = mfu(rec[f"{path}_tokens_per_s"], per_token)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
