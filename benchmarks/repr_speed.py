"""Steps per second of every representation-learning rule against a plain supervised step.

For each model (the digits MLP 64-128-128-10 and the digits CNN, inputs 8x8x1) and each rule of
``jaxunlearn.repr``, runs ``train.fit`` (steps fused in one ``lax.scan``, the way every rule
runs) on the encoder the rule reads (``repr.encoder(name, network, width=...)``), with a retain
batch of ``--batch`` digits, and reports steps/s with compile time excluded. The baseline is
supervised training (``rules.finetune``: cross-entropy, SGD) of the same backbone on the same
batch size; ``ratio`` = baseline steps/s / rule steps/s, i.e. how many supervised steps one rule
step costs (views drawn on device, two or more forward passes, heads, EMA target).

Usage:
  PYTHONPATH=. python benchmarks/repr_speed.py [--models mlp,cnn] [--steps 200] [--batch 256]
      [--rules simclr,byol] [--width 256]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from jaxunlearn import data, models, rules
from jaxunlearn import repr as R
from jaxunlearn.train import fit, make_stream
from jaxunlearn.xla_flags import set_cpu_flags

OPTIONS = {"mlp": {"hidden": (128, 128)}, "cnn": {}}


def steps_per_second(rule, network, stream, *, steps: int, batch: int) -> float:
    variables = network.init(jax.random.key(0))
    res = fit(
        rule,
        variables,
        stream,
        batch_sizes={"retain": batch},
        num_steps=steps,
        key=jax.random.key(1),
        chunk_size=steps,
    )
    # A second run of the same program: the first one's runtime includes first-call overheads.
    res = fit(
        rule,
        variables,
        stream,
        batch_sizes={"retain": batch},
        num_steps=steps,
        key=jax.random.key(2),
        chunk_size=steps,
    )
    return steps / res.runtime_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp,cnn")
    # The learned rule is meta-trained first (benchmarks/learned_rule_speed.py,
    # experiments/configs/learned_rule.py) and trains MLPs only.
    default_rules = [n for n in R.names() if n != "learned_unsupervised_rule"]
    parser.add_argument("--rules", default=",".join(default_rules))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    args = parser.parse_args()
    set_cpu_flags()
    ds = data.load("digits")
    stream = make_stream(ds.x_train, ds.y_train, {"retain": np.arange(len(ds.y_train))})
    print(f"backend: {jax.default_backend()}, batch {args.batch}, {args.steps} fused steps")
    print("| model | rule | steps/s | supervised steps/s | ratio |")
    print("|---|---|---|---|---|")
    for model in args.models.split(","):
        backbone = models.make_network(
            model, input_shape=ds.input_shape, num_outputs=10, **OPTIONS[model]
        )
        base = steps_per_second(
            rules.finetune(backbone.apply), backbone, stream, steps=args.steps, batch=args.batch
        )
        for name in args.rules.split(","):
            net = R.encoder(name, backbone, width=args.width)
            rule = R.make(name, net, num_steps=args.steps)
            sps = steps_per_second(rule, net, stream, steps=args.steps, batch=args.batch)
            print(f"| {model} | {name} | {sps:.1f} | {base:.1f} | {base / sps:.2f} |", flush=True)


if __name__ == "__main__":
    main()
