"""Per-step time of unlearning rules on the MLP, the CNN and ResNet-18: XLA flags on/off, PyTorch.

Times one update of gradient ascent, random labels and SCRUB (built with ``rules.make``) on the
digits MLP (8x8x1 inputs, 64-128-128-10) and on the CNN and ResNet-18 at CIFAR shape (32x32x3),
with a forget batch and a retain batch of 64 examples each (random labels read both: 128
examples per forward pass). Three settings run side by side, each in its own subprocess because
XLA reads ``XLA_FLAGS`` once per process, and in turns (``--rounds``), so that load from other
processes on a shared machine falls on all of them alike:

* ``jax default``: XLA's own CPU defaults (``JAXUNLEARN_XLA_CPU_FLAGS=0``);
* ``jax flags``: with :func:`jaxunlearn.xla_flags.set_cpu_flags`, as the binaries run;
* ``torch``: the same models, losses, optimizers and batch in eager PyTorch with
  ``torch.set_num_threads(--threads)``, when ``--torch_python`` (default: this interpreter) can
  import torch. Torch is not a dependency of jaxunlearn: point ``--torch_python`` at a scratch
  environment (``python3 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch numpy``).
  Without torch those columns are skipped.

BatchNorm runs as the three rules run it: the model being updated in training mode (batch
statistics, as the reference code's ``model.train()``: ``TRAIN_MODE``; the JAX side checks it
against each rule's ``train_mode`` default), SCRUB's frozen teacher in inference mode.
A JAX step is one call of the jitted ``rule.update`` (dispatch included); for the MLP and the CNN
the script also times steps fused in one ``lax.scan``, as ``train.fit`` runs them. Reported: the
median wall time per step over all rounds, the median CPU time of the process per step (the work
done, less sensitive to other processes' load than wall time), and the ratios.

Usage:
  PYTHONPATH=. python benchmarks/step_speed.py [--models mlp,cnn,resnet18] [--rounds 2]
      [--rules gradient_ascent,random_label,scrub] [--torch_python /tmp/torchenv/bin/python]
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

MODELS = ("mlp", "cnn", "resnet18")
RULES = ("gradient_ascent", "random_label", "scrub")
BATCH = 64
SHAPES = {"mlp": (8, 8, 1), "cnn": (32, 32, 3), "resnet18": (32, 32, 3)}
REPEATS = {"mlp": 300, "cnn": 20, "resnet18": 3}
SCAN_STEPS = {"mlp": 100, "cnn": 10}  # steps fused in one lax.scan (no scan for ResNet-18)
NUM_CLASSES = 10
# Hyperparameters shared by both implementations (the factories' paper defaults).
SGD = {"gradient_ascent": 1e-4, "random_label": 0.01}  # momentum 0.9, weight decay 5e-4
# BatchNorm mode of the updated model: each rule's ``train_mode`` default (checked in run_jax).
TRAIN_MODE = {"gradient_ascent": True, "random_label": True, "scrub": True}
SCRUB = {"lr": 5e-4, "weight_decay": 0.1, "alpha": 0.5, "gamma": 1.0, "temperature": 2.0}


def batch_arrays(model: str) -> dict:
    """The same forget and retain batches for every setting (NHWC float32, int32 labels)."""
    rng = np.random.default_rng(0)
    shape = SHAPES[model]
    return {
        part: {
            "x": rng.normal(size=(BATCH, *shape)).astype(np.float32),
            "y": rng.integers(0, NUM_CLASSES, BATCH).astype(np.int32),
        }
        for part in ("forget", "retain")
    }


def _timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn()`` (which blocks until its result is ready)."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


# ----------------------------------------------------------------------------------------------
# JAX
# ----------------------------------------------------------------------------------------------


def _time_jax_rule(jax, rule, variables, batch, model: str) -> dict:
    """Compile time, and wall and CPU time of one jitted update (and of fused updates)."""
    state = rule.init(variables, key=jax.random.key(1))
    key = jax.random.key(2)
    t0 = time.perf_counter()
    step = jax.jit(rule.update).lower(variables, state, batch, key=key).compile()
    compile_s = time.perf_counter() - t0
    wall, cpu = _timed(
        lambda: jax.block_until_ready(step(variables, state, batch, key=key)), REPEATS[model]
    )
    rec = {"step": wall, "cpu": cpu, "compile": compile_s}
    if model in SCAN_STEPS:
        n = SCAN_STEPS[model]

        def steps(v, s):
            def body(carry, i):
                v, s, m = rule.update(*carry, batch, key=jax.random.fold_in(key, i))
                return (v, s), m["loss"]

            return jax.lax.scan(body, (v, s), jax.numpy.arange(n))

        fused = jax.jit(steps).lower(variables, state).compile()
        fwall, fcpu = _timed(
            lambda: jax.block_until_ready(fused(variables, state)), max(3, REPEATS[model] // n)
        )
        rec.update(fused_step=fwall / n, fused_cpu=fcpu / n)
    return rec


def run_jax(models, rule_names, use_flags: bool) -> dict:
    if use_flags:
        from jaxunlearn import xla_flags

        xla_flags.set_cpu_flags()
    import jax

    from jaxunlearn import models as jmodels
    from jaxunlearn import rules

    out = {"xla_flags": os.environ.get("XLA_FLAGS", "")}
    for model in models:
        net = jmodels.make_network(model, input_shape=SHAPES[model], num_outputs=NUM_CLASSES)
        variables = net.init(jax.random.key(0))
        full = jax.tree.map(jax.numpy.asarray, batch_arrays(model))
        for name in rule_names:
            # One long epoch: SCRUB stays in its max-step epochs for every timed step, as the
            # PyTorch side's step (a max step and a min step) does.
            rule = rules.make(name, net, num_steps=10_000, steps_per_epoch=10_000)
            default = inspect.signature(rules.get(name).factory).parameters["train_mode"].default
            if default != TRAIN_MODE[name]:
                raise AssertionError(f"{name}'s train_mode default is {default}; update TRAIN_MODE")
            batch = {"forget": full["forget"]} if name == "gradient_ascent" else full
            out[f"{model}/{name}"] = _time_jax_rule(jax, rule, variables, batch, model)
    return out


# ----------------------------------------------------------------------------------------------
# PyTorch (eager), the same architectures with PyTorch's layouts
# ----------------------------------------------------------------------------------------------


def _torch_models(torch, model: str):
    nn = torch.nn
    if model == "mlp":
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(64, 128),
            nn.ReLU(),
            nn.Linear(128, 128),
            nn.ReLU(),
            nn.Linear(128, NUM_CLASSES),
        )
    if model == "cnn":
        # SAME pooling of even sizes = PyTorch's floor pooling: 32 -> 16 -> 8.
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(8 * 8 * 64, 128),
            nn.ReLU(),
            nn.Linear(128, NUM_CLASSES),
        )

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
                )

        def forward(self, x):
            h = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(h)) + self.shortcut(x))

    class ResNet18(nn.Module):  # kuangliu/pytorch-cifar, as jaxunlearn.models.ResNet18
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            widths, blocks, cin = (64, 128, 256, 512), [], 64
            for i, w in enumerate(widths):
                blocks += [Block(cin, w, 1 if i == 0 else 2), Block(w, w, 1)]
                cin = w
            self.blocks = nn.Sequential(*blocks)
            self.linear = nn.Linear(512, NUM_CLASSES)

        def forward(self, x):
            h = self.blocks(torch.relu(self.bn1(self.conv1(x))))
            return self.linear(torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1))

    return ResNet18()


def _torch_step(torch, model: str, name: str, batch: dict):
    """One eager update of rule ``name`` as jaxunlearn computes it."""
    F = torch.nn.functional
    net = _torch_models(torch, model).train(TRAIN_MODE[name])
    if name == "scrub":
        teacher = _torch_models(torch, model).eval()
        teacher.load_state_dict(net.state_dict())
        opt = torch.optim.Adam(net.parameters(), lr=SCRUB["lr"], weight_decay=SCRUB["weight_decay"])
    else:
        opt = torch.optim.SGD(net.parameters(), lr=SGD[name], momentum=0.9, weight_decay=5e-4)

    def image(x):
        return (
            torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
            if model != "mlp"
            else (torch.from_numpy(x))
        )

    xf, yf = image(batch["forget"]["x"]), torch.from_numpy(batch["forget"]["y"]).long()
    xr, yr = image(batch["retain"]["x"]), torch.from_numpy(batch["retain"]["y"]).long()
    generator = torch.Generator().manual_seed(0)
    temperature = SCRUB["temperature"]

    def kl(student, teacher_logits):
        return F.kl_div(
            F.log_softmax(student / temperature, -1),
            F.log_softmax(teacher_logits / temperature, -1),
            reduction="batchmean",
            log_target=True,
        ) * (temperature**2)

    def step():
        if name == "gradient_ascent":
            opt.zero_grad()
            (-F.cross_entropy(net(xf), yf)).backward()
            opt.step()
        elif name == "random_label":
            rand = torch.randint(0, NUM_CLASSES, yf.shape, generator=generator)
            opt.zero_grad()
            F.cross_entropy(net(torch.cat([xf, xr])), torch.cat([rand, yr])).backward()
            opt.step()
        else:  # SCRUB in its max-step epochs: a max step on forget, then a min step on retain
            with torch.no_grad():
                t_forget = teacher(xf)
            opt.zero_grad()
            (-kl(net(xf), t_forget)).backward()
            opt.step()
            with torch.no_grad():
                t_retain = teacher(xr)
            opt.zero_grad()
            student = net(xr)
            loss = SCRUB["gamma"] * F.cross_entropy(student, yr) + SCRUB["alpha"] * kl(
                student, t_retain
            )
            loss.backward()
            opt.step()

    return step


def run_torch(models, rule_names, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    for model in models:
        batch = batch_arrays(model)
        for name in rule_names:
            step = _torch_step(torch, model, name, batch)
            wall, cpu = _timed(step, REPEATS[model])
            out[f"{model}/{name}"] = {"step": wall, "cpu": cpu}
    return out


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------

SETTINGS = ("jax_default", "jax_flags", "torch")


def _child(setting: str, args, python: str) -> dict | None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p
        for p in (
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            env.get("PYTHONPATH"),
        )
        if p
    )
    if setting == "jax_default":
        env["JAXUNLEARN_XLA_CPU_FLAGS"] = "0"
    cmd = [
        python,
        os.path.abspath(__file__),
        "--child",
        setting,
        "--models",
        args.models,
        "--rules",
        args.rules,
        "--threads",
        str(args.threads),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        print(f"[{setting}] failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _has_torch(python: str) -> bool:
    return subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads.")
    parser.add_argument(
        "--torch_python",
        default=sys.executable,
        help="Interpreter that can import torch (a scratch environment).",
    )
    parser.add_argument("--child", choices=SETTINGS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    models, rule_names = args.models.split(","), args.rules.split(",")

    if args.child:
        if args.child == "torch":
            result = run_torch(models, rule_names, args.threads)
        else:
            result = run_jax(models, rule_names, use_flags=args.child == "jax_flags")
        print(json.dumps(result))
        return

    settings = ["jax_default", "jax_flags"]
    if _has_torch(args.torch_python):
        settings.append("torch")
    else:
        print(f"torch is not importable by {args.torch_python}: PyTorch columns skipped")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"{os.cpu_count()} CPUs, load {load:.1f} at start; {args.rounds} rounds of "
        f"{', '.join(settings)}, each in its own process"
    )
    runs = {s: [] for s in settings}
    for r in range(args.rounds):
        for s in settings:
            res = _child(s, args, args.torch_python if s == "torch" else sys.executable)
            if res is not None:
                runs[s].append(res)
        print(f"  round {r + 1}/{args.rounds} done, load {os.getloadavg()[0]:.1f}", flush=True)
    if runs["jax_flags"]:
        print(f"flags: XLA_FLAGS={runs['jax_flags'][0]['xla_flags']!r}")
    if runs.get("torch"):
        print(f"torch {runs['torch'][0]['torch']} with {runs['torch'][0]['threads']} threads")

    def med(setting, key, field):
        values = [r[key][field] for r in runs.get(setting, []) if key in r and field in r[key]]
        return statistics.median(values) if values else float("nan")

    header = (
        f"{'model/rule':26s} {'default ms':>11s} {'flags ms':>9s} {'def/flags':>9s} "
        f"{'torch ms':>9s} {'torch/flags':>11s} {'fused ms':>9s} {'torch/fused':>11s} "
        f"| CPU s: {'def/flags':>9s} {'torch/flags':>11s}"
    )
    print(header)
    for model in models:
        for name in rule_names:
            key = f"{model}/{name}"
            d, f, t = (med(s, key, "step") for s in ("jax_default", "jax_flags", "torch"))
            fused = med("jax_flags", key, "fused_step")
            dc, fc, tc = (med(s, key, "cpu") for s in ("jax_default", "jax_flags", "torch"))
            print(
                f"{key:26s} {d * 1e3:11.2f} {f * 1e3:9.2f} {d / f:9.2f} {t * 1e3:9.2f} "
                f"{t / f:11.2f} {fused * 1e3:9.3f} {t / fused:11.2f} | {dc / fc:16.2f} "
                f"{tc / fc:11.2f}"
            )
    print(
        "ratios > 1: the flags' JAX step is faster; 'fused' = per step inside one lax.scan, "
        "as train.fit runs steps. Wall times are medians over rounds of per-process medians."
    )


if __name__ == "__main__":
    main()
