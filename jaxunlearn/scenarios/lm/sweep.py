r"""Hyperparameter sweeps of LM rules: a grid over one or two hyperparameters, one program.

Defaults that collapse the model and hyperparameters that do not transfer are the most common
complaints of OpenUnlearning's users (``shared/reference/lm_unlearning.md`` section 6). A sweep
runs a rule from the target for every point of a grid (e.g. learning rate x NPO's beta) and every
seed as one compiled program: the rule is built *inside* a ``jax.vmap`` over the grid from the
traced values (the hyperparameters the rule declares sweepable, :func:`jaxunlearn.rules.
sweepable`) and run by the pure :func:`jaxunlearn.train.scan_steps`, nested in a ``vmap`` over
seeds, exactly as the classifier sweep (:mod:`jaxunlearn.scenarios.sweep`) does for one value.

Selection happens on a **validation** split, never on what is reported: the split's forget
authors are halved (the first half validates), and so are the audited retain questions and the
utility facts (alternate rows). On the validation half each grid point gets forget quality (KS
p-value of truth ratios against the first retain model on the same rows) and model utility; the
chosen point is the one with the highest forget quality among those that keep at least
``utility_floor`` (default 0.9) of the target's validation model utility (the highest utility when
none does). It is reported on the other half.

    python -m experiments.sweep --config=experiments/configs/lm_fictitious.py --workdir=/tmp/ju_lm \
        --scenario=forget10 --rule=npo --param=learning_rate --values=1e-4,3e-4,1e-3 \
        --param2=beta --values2=0.05,0.1,0.5

Writes ``sweep.json``, ``sweep.txt`` and ``sweep.png`` (forget quality against model utility of
every grid point, the chosen one marked) into the workdir; the target and retain models are
restored from an ``experiments.main`` run there (or trained and checkpointed).
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import rules as rules_lib
from jaxunlearn.audit import lm as lm_audit
from jaxunlearn.core.tree import all_finite
from jaxunlearn.scenarios.lm import evaluate
from jaxunlearn.scenarios.lm.artefacts import LMArtefacts, model
from jaxunlearn.scenarios.lm.plan import lm_plan
from jaxunlearn.scenarios.lm.runner import build_lm_run
from jaxunlearn.scenarios.lock import workdir_lock
from jaxunlearn.train import multihost, records, scan_steps


def check_grid(rule: str, grid: Mapping[str, Sequence[float]]) -> dict[str, tuple[float, ...]]:
    """Validates an LM sweep request: every parameter declared sweepable by ``rule`` (so the
    grid is one vmapped program), every grid non-empty, finite, learning rates positive."""
    valid = rules_lib.sweepable(rule)
    if not grid:
        raise ValueError("the sweep grid is empty: give --param and --values")
    out = {}
    for param, values in grid.items():
        if param not in valid:
            raise ValueError(
                f"Rule {rule!r}: {param!r} is not a sweepable hyperparameter (the LM sweep vmaps "
                f"over traced values); sweepable: {list(valid)}"
            )
        try:
            vals = tuple(float(v) for v in values)
        except (TypeError, ValueError):
            raise ValueError(f"Grid values of {param!r} must be numbers; got {values}") from None
        if not vals or not all(math.isfinite(v) for v in vals):
            raise ValueError(f"Grid values of {param!r} must be finite and non-empty; got {vals}")
        if "learning_rate" in param and min(vals) <= 0:
            raise ValueError(f"Learning rates must be positive; got {param}={list(vals)}")
        out[param] = vals
    return out


def validation_rows(p, split: str) -> dict[str, dict[str, np.ndarray]]:
    """``{"val": {...}, "test": {...}}`` each with ``forget``, ``retain`` and ``utility`` rows:
    the first half of the forget authors validates, the rest is reported on; audited retain
    questions and utility facts alternate."""
    b = p.benchmark
    forget = b.forget[split]
    authors = b.authors_of(forget)
    if len(authors) < 2:
        raise ValueError(
            f"Split {split!r} has {len(authors)} forget author(s); a sweep needs at least 2 "
            "(half validate the choice, half report it)"
        )
    half = authors[: len(authors) // 2]
    val_f = b.rows_of_authors(half, forget)
    test_f = np.setdiff1d(forget, val_f).astype(np.int32)
    retain = evaluate.retain_rows(p, split)
    return {
        "val": {"forget": val_f, "retain": retain[0::2], "utility": b.utility[0::2]},
        "test": {"forget": test_f, "retain": retain[1::2], "utility": b.utility[1::2]},
    }


def _audit(p, variables, split, rows, ref_tr) -> dict[str, float]:
    tr, _ = evaluate.truth_ratios(p, variables, rows["forget"])
    comps = evaluate.utility_components(
        p, variables, split, retain=rows["retain"], utility=rows["utility"]
    )
    return {
        "forget_quality": lm_audit.forget_quality(tr, ref_tr),
        "model_utility": evaluate.model_utility(comps),
        "truth_ratio_forget": float(lm_audit.forget_truth_ratio(tr)),
    }


def grid_variables(p, art, split: str, rule: str, grid: Mapping[str, Sequence[float]]):
    """Runs ``rule`` from the target for every point of the product ``grid`` and every seed in
    one compiled program. Returns ``(points, variables [G, S, ...], finite [G, S], info)``."""
    b = p.benchmark
    names = list(grid)
    points = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())]
    entry = p.entry(split, rule) if rule in p.entries[split] else p.entry(p.main_scenario, rule)
    forget, retain = b.forget[split], b.retain[split]
    _, stream, batch_sizes, num_steps = build_lm_run(p, rule, entry, forget, retain, **points[0])
    start = jax.tree.map(lambda x: jnp.repeat(x[:1], p.seeds, 0), art.target().variables)
    keys = art.keys("unlearn", p.seeds)

    def run(values, variables, key, stream):
        built = build_lm_run(p, rule, entry, forget, retain, stream=False, **values)[0]
        v, _, _ = scan_steps(
            built, variables, stream, batch_sizes=batch_sizes, num_steps=num_steps, key=key
        )
        return v, all_finite(v["params"])

    per_seed = jax.vmap(run, in_axes=(None, 0, 0, None))
    program = jax.jit(jax.vmap(per_seed, in_axes=(0, None, None, None)))
    values = {n: jnp.asarray([pt[n] for pt in points], jnp.float32) for n in names}
    t0 = time.perf_counter()
    compiled = program.lower(values, start, keys, stream).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    variables, finite = jax.block_until_ready(compiled(values, start, keys, stream))
    info = {"compile_s": compile_s, "runtime_s": time.perf_counter() - t0, "steps": num_steps}
    return points, variables, np.asarray(finite), info


def sweep(p, art, split: str, rule: str, grid, *, utility_floor: float = 0.9) -> dict:
    """The sweep of ``rule`` on ``split`` over ``grid``: every point audited on the validation
    half, the chosen one reported on the test half (see the module docstring)."""
    grid = check_grid(rule, grid)
    halves = validation_rows(p, split)
    ref = model(art.retain(split).variables, 0)
    ref_tr = {h: evaluate.truth_ratios(p, ref, rows["forget"])[0] for h, rows in halves.items()}
    target = model(art.target().variables)
    target_val = _audit(p, target, split, halves["val"], ref_tr["val"])
    points, variables, finite, info = grid_variables(p, art, split, rule, grid)
    rows = []
    for g, point in enumerate(points):
        per_seed = []
        for s in range(p.seeds):
            if not finite[g, s]:
                continue
            v = jax.tree.map(lambda x, g=g, s=s: x[g, s], variables)
            try:
                per_seed.append(_audit(p, v, split, halves["val"], ref_tr["val"]))
            except (ValueError, FloatingPointError):  # non-finite scores: a diverged run
                continue
        row = {"point": point, "ok": len(per_seed), "seeds": p.seeds}
        for key in ("forget_quality", "model_utility", "truth_ratio_forget"):
            row[key] = float(np.mean([m[key] for m in per_seed])) if per_seed else math.nan
        rows.append(row)
    ok = [r for r in rows if r["ok"]]
    if not ok:
        raise ValueError(f"Every grid point of {rule!r} diverged; lower the learning rates")
    floor = utility_floor * target_val["model_utility"]
    keep = [r for r in ok if r["model_utility"] >= floor]
    chosen = (
        max(keep, key=lambda r: r["forget_quality"])
        if keep
        else max(ok, key=lambda r: r["model_utility"])
    )
    g = rows.index(chosen)
    test = []
    for s in range(p.seeds):
        if finite[g, s]:
            v = jax.tree.map(lambda x, s=s: x[g, s], variables)
            test.append(_audit(p, v, split, halves["test"], ref_tr["test"]))
    reported = {k: float(np.mean([m[k] for m in test])) for k in test[0]} if test else {}
    return {
        "scenario": split,
        "rule": rule,
        "grid": {k: list(v) for k, v in grid.items()},
        "utility_floor": utility_floor,
        "target_validation": target_val,
        "target_test": _audit(p, target, split, halves["test"], ref_tr["test"]),
        "rows": rows,
        "chosen": chosen["point"],
        "chosen_by": "max forget quality with utility >= floor" if keep else "max utility",
        "test": reported,
        "info": info,
    }


def table(result: Mapping) -> str:
    """The grid as text: one row per point, the chosen one marked ``*``."""
    names = list(result["grid"])
    header = [*names, "ok", "FQ (val)", "MU (val)"]
    lines = []
    for r in result["rows"]:
        mark = "*" if r["point"] == result["chosen"] else " "
        lines.append(
            [*(f"{r['point'][n]:g}" for n in names), f"{r['ok']}/{r['seeds']}"]
            + [f"{r['forget_quality']:.2e}", f"{r['model_utility']:.3f}{mark}"]
        )
    widths = [max(len(x) for x in col) for col in zip(header, *lines, strict=True)]
    fmt = lambda row: "  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True))
    out = [f"{result['rule']} on {result['scenario']}: grid over {names}", fmt(header)]
    out += [fmt(row) for row in lines]
    t, tv = result["test"], result["target_test"]
    out.append(
        f"chosen {result['chosen']} ({result['chosen_by']}, floor "
        f"{result['utility_floor']:g} x target's validation utility "
        f"{result['target_validation']['model_utility']:.3f})"
    )
    if t:
        out.append(
            f"test half: forget quality {t['forget_quality']:.2e} "
            f"(target {tv['forget_quality']:.2e}), model utility {t['model_utility']:.3f} "
            f"(target {tv['model_utility']:.3f})"
        )
    return "\n".join(out)


def plot(result: Mapping, path: str) -> str:
    """Forget quality (log) against model utility of every grid point on the validation half."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for r in result["rows"]:
        if not r["ok"]:
            continue
        chosen = r["point"] == result["chosen"]
        fq = max(r["forget_quality"], 1e-12)
        ax.plot(r["model_utility"], fq, "s" if chosen else "o", ms=9 if chosen else 5)
        label = ", ".join(f"{k}={v:g}" for k, v in r["point"].items())
        ax.annotate(label, (r["model_utility"], fq), fontsize=6)
    tv = result["target_validation"]
    ax.plot(tv["model_utility"], max(tv["forget_quality"], 1e-12), "*", ms=12, color="black")
    ax.set_yscale("log")
    ax.set_xlabel("model utility (validation)")
    ax.set_ylabel("forget quality (validation)")
    ax.set_title(f"{result['rule']} on {result['scenario']} (square: chosen; star: target)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_lm_sweep(
    config,
    workdir: str,
    *,
    scenario: str,
    rule: str,
    grid: Mapping[str, Sequence[float]],
    utility_floor: float = 0.9,
    verbose: bool = True,
) -> dict:
    """Plans ``config`` (an LM config), sweeps ``rule`` on ``scenario`` and writes the report."""
    p = lm_plan(config)
    if scenario not in p.scenarios:
        raise ValueError(f"--scenario={scenario!r} is not one of the config's {list(p.scenarios)}")
    if rule not in p.rules:
        raise ValueError(f"--rule={rule!r} is not configured in `rules`; configured: {p.rules}")
    check_grid(rule, grid)
    verbose = verbose and multihost.is_primary()
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)
    os.makedirs(workdir, exist_ok=True)
    with workdir_lock(workdir):
        art = LMArtefacts(p, workdir, verbose=verbose, log=log)
        result = sweep(p, art, scenario, rule, grid, utility_floor=utility_floor)
        if multihost.is_primary():
            records.write_json(os.path.join(workdir, "sweep.json"), result, indent=1)
            text = table(result)
            with open(os.path.join(workdir, "sweep.txt"), "w") as f:
                f.write(text + "\n")
            plot(result, os.path.join(workdir, "sweep.png"))
            if verbose:
                print(text, flush=True)
    return result
