r"""Hyperparameter sweeps: one rule, a grid over one hyperparameter, every run in one program.

Unlearning results hinge on a learning rate or a loss weight (the SalUn and Unlearn-Sparse
maintainers answer most "forgetting does not work" reports with "tune the learning rate"). A sweep
builds the rule *inside* a ``jax.vmap`` over the grid values from the traced value (optax takes
traced learning rates) and runs all steps with the pure :func:`jaxunlearn.train.scan_steps`, nested
in a second ``vmap`` over seeds: the whole grid x seeds is one compiled program. That holds for
the hyperparameters the rule declares sweepable (:func:`jaxunlearn.rules.sweepable`, tested to
trace); any other (a phase length, a mask size, a kept-entry count) runs as one program holding
one unrolled run per value (``mode="unrolled"``). Every grid value first builds the rule eagerly,
so a factory's checks still run on the concrete values; factories therefore test a value only
when it is concrete (:func:`jaxunlearn.core.checks.concrete`).

The value is selected on a held-out **validation** split, never on the data it is reported on:
the scenario's test examples are split in half (stratified by label for classification, fixed
seed); UA, RA, validation TA and MIA-Efficacy (whose non-member set is then the validation half)
give each run's Avg. Gap to the retrain oracle evaluated the same way, averaged over seeds. The
value with the smallest gap is chosen, and its metrics are reported on the other half.

Run (on the default `digits` experiment; originals and oracles are restored from ``--workdir``
when ``experiments.main`` already trained them there):

    python -m experiments.sweep --config=experiments/configs/default.py --workdir=/tmp/ju_sweep \
        --scenario=class_0 --rule=gradient_ascent --param=learning_rate \
        --values=5e-4,1e-3,2e-3,4e-3,8e-3

It writes ``sweep.json`` (the dict :func:`run_sweep` returns), ``sweep.txt`` (the grid table,
also printed) and ``sweep.png`` (Avg. Gap against the value) into ``--workdir``.

References:
  Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023 (Avg. Gap; the
  learning-rate search of the Unlearn-Sparse / SalUn issues, e.g. Unlearn-WorstCase #1).
"""

from __future__ import annotations

import inspect
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn import audit as audit_lib
from jaxunlearn import rules as rules_lib
from jaxunlearn.audit import classification as cls
from jaxunlearn.core.tree import all_finite
from jaxunlearn.core.types import Array, Network, Variables
from jaxunlearn.data import Dataset, Split
from jaxunlearn.data import augment as augment_lib
from jaxunlearn.scenarios.plan import build_rule, rule_index
from jaxunlearn.train import Stream, make_stream, multihost, records, scan_steps

# Audits whose metrics make up each task's Avg. Gap (see ``audit.gap_metrics``).
_SELECTION_AUDITS = {
    "classification": ("accuracy", "mia_efficacy"),
    "regression": ("regression_error", "mia_auc"),
}
# Test-set metrics, renamed when they are measured on the validation half.
_VALIDATION_NAMES = {"TA": "TA_val", "test_mse": "val_mse"}


# --------------------------------------------------------------------------------------------------
# Validation of the request (before any compute).


def sweepable_hyperparameters(rule: str) -> list[str]:
    """The hyperparameters of rule ``rule`` a sweep takes: those it declares sweepable (traced,
    one vmapped program) and the other keywords with a number as default (one run per value)."""
    params = inspect.signature(rules_lib.get(rule).factory).parameters
    numeric = {
        k
        for k, p in params.items()
        if p.kind is p.KEYWORD_ONLY
        and k not in rules_lib.CONTEXT
        and isinstance(p.default, int | float)
        and not isinstance(p.default, bool)
    }
    return sorted(numeric | set(rules_lib.sweepable(rule)))


def check_grid(rule: str, param: str, values: Sequence[Any]) -> tuple[float, ...]:
    """Validates a sweep request and returns the grid as floats.

    Raises:
      ValueError: unknown rule (listing the rules), a ``param`` the rule does not take or that is
        not numeric (listing the rule's numeric hyperparameters), an empty grid, a non-numeric or
        non-finite value, or a non-positive learning rate.
    """
    valid = sweepable_hyperparameters(rule)
    if param not in valid:
        raise ValueError(f"Rule {rule!r} has no numeric hyperparameter {param!r}; valid: {valid}")
    values = list(values)
    if not values:
        raise ValueError(f"The grid of {param!r} values is empty")
    try:
        grid = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"Grid values of {param!r} must be numbers; got {values}") from None
    if not all(math.isfinite(v) for v in grid):
        raise ValueError(f"Grid values of {param!r} must be finite; got {list(grid)}")
    if "learning_rate" in param and min(grid) <= 0:
        raise ValueError(f"Learning rates must be positive; got {param}={list(grid)}")
    return grid


def _typed(rule: str, param: str, value: float):
    default = inspect.signature(rules_lib.get(rule).factory).parameters[param].default
    return int(value) if isinstance(default, int) and not isinstance(default, bool) else value


# --------------------------------------------------------------------------------------------------
# The one compiled program.


def grid_variables(
    network: Network,
    stream: Stream,
    originals: Variables,
    keys: Array,
    *,
    rule: str,
    param: str,
    values: Sequence[float],
    rule_config: Mapping[str, Any] | None = None,
    forget_classes: tuple[int, ...] = (),
    augment: Callable | None = None,
):
    """Runs rule ``rule`` for every grid value and seed in one compiled program.

    Args:
      network: the functional model.
      stream: data and ``forget``/``retain`` index sets (see :func:`~jaxunlearn.train.make_stream`).
      originals: the starting variables, with a leading seed axis.
      keys: one PRNG key per seed (as :func:`~jaxunlearn.train.fit` takes them).
      rule, param, values: the rule's registry name, the swept hyperparameter and its grid.
      rule_config: the rule's config entry (``epochs``, ``<part>_batch_size``, ``hparams``),
        scheduled and built as the experiment runner does (:func:`~jaxunlearn.scenarios.plan.
        build_rule`) for the index sets of ``stream`` (those of
        :func:`~jaxunlearn.scenarios.plan.rule_index`, with the entry it returns, to reproduce
        the runner); ``param`` in its ``hparams`` is replaced.
      forget_classes: the forgotten classes of a class-wise scenario (``Split.classes``).
      augment: the batches' on-device augmentation (:mod:`jaxunlearn.data.augment`), as the
        experiment's runs use it; ``None``: none.

    Returns:
      ``(variables, metrics, info)``: variables with leading ``[len(values), seeds]`` axes,
      per-step metrics ``[len(values), seeds, num_steps]`` and ``info`` with ``mode`` (``"vmap"``
      or ``"unrolled"``), ``compile_s``, ``runtime_s`` and ``finite`` (``[values, seeds]`` bool).
    """
    if not len(values):
        raise ValueError("`values` is empty: give at least one grid value")
    rule_config = dict(rule_config or {})
    sizes = {part: int(ix.shape[-1]) for part, ix in stream.index.items()}
    build = lambda value: build_rule(
        rule, network, rule_config, sizes, forget_classes=forget_classes, **{param: value}
    )
    _, batch_sizes, num_steps = build(_typed(rule, param, values[0]))

    def run(value, variables, key, stream):
        v, _, metrics = scan_steps(
            build(value)[0],
            variables,
            stream,
            batch_sizes=batch_sizes,
            num_steps=num_steps,
            key=key,
            augment=augment,
        )
        return v, metrics, all_finite(v["params"])

    per_seed = jax.vmap(run, in_axes=(None, 0, 0, None))
    grid = jnp.asarray(values, jnp.float32)
    t0 = time.perf_counter()
    if param in rules_lib.sweepable(rule):  # declared traceable: one vmap over the grid
        program = jax.jit(jax.vmap(per_seed, in_axes=(0, None, None, None)))
        compiled = program.lower(grid, originals, keys, stream).compile()
        mode = "vmap"
    else:
        # A value that fixes a phase length, a count or a shape: one program with one run per
        # value instead of a vmap over them.
        def unrolled(grid, originals, keys, stream):
            del grid
            outs = [per_seed(_typed(rule, param, v), originals, keys, stream) for v in values]
            return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)

        compiled = jax.jit(unrolled).lower(grid, originals, keys, stream).compile()
        mode = "unrolled"
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    variables, metrics, finite = jax.block_until_ready(compiled(grid, originals, keys, stream))
    info = {
        "mode": mode,
        "compile_s": compile_s,
        "runtime_s": time.perf_counter() - t0,
        "finite": np.asarray(finite),
    }
    return variables, metrics, info


# --------------------------------------------------------------------------------------------------
# Selection on a validation split.


def validation_split(
    dataset: Dataset, split: Split, *, fraction: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Splits the scenario's test indices into ``(validation, held-out test)``.

    Stratified by label for classification; deterministic from ``seed``.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"The validation `fraction` must lie in (0, 1); got {fraction}")
    from sklearn.model_selection import train_test_split

    test = np.asarray(split.test)
    labels = dataset.y_test[test] if dataset.task == "classification" else None
    val, rest = train_test_split(test, train_size=fraction, stratify=labels, random_state=seed)
    return np.sort(val).astype(np.int32), np.sort(rest).astype(np.int32)


def _evaluations(network, dataset, split, audits, groups, *, on: np.ndarray, test_forget: bool):
    """``evaluate(group, ok=None) -> [metrics or None per seed]`` over one shared
    :class:`~jaxunlearn.ensemble.Predictions` of the model ``groups`` on the split with ``on`` as
    its test set: the audits run once over the group's seeds that are ``ok`` (all when ``None``)
    and have finite outputs; the others (diverged) give ``None``."""
    part = split._replace(
        test=on, test_forget=split.test_forget if test_forget else split.test_forget[:0]
    )
    predictions = audit_lib.make_predictions(network, dataset, part, groups)

    def evaluate(group: str, ok=None) -> list[dict[str, float] | None]:
        ctx = audit_lib.AuditContext(
            network=network,
            dataset=dataset,
            split=part,
            predictions=predictions,
            groups={"unlearned": group},
        )
        return audit_lib.run_finite(audits, ctx, ok)

    return evaluate


def _stats(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = sorted({k for r in rows for k in r})
    out = {}
    for k in keys:
        vals = np.array([r[k] for r in rows if k in r], float)
        out[k] = {"mean": float(np.mean(vals)), "std": float(np.std(vals)), "n": int(vals.size)}
    return out


def _rename(stats: dict, names: Mapping[str, str]) -> dict:
    return {names.get(k, k): v for k, v in stats.items()}


def _seed(tree, *index):
    return jax.tree.map(lambda x: x[index], tree)


def sweep(
    network: Network,
    dataset: Dataset,
    split: Split,
    originals: Variables,
    oracles: Variables,
    keys: Array,
    *,
    rule: str,
    param: str,
    values: Sequence[float],
    rule_config: Mapping[str, Any] | None = None,
    val_fraction: float = 0.5,
    val_seed: int = 0,
    return_variables: bool = False,
    augment: Callable | None = None,
) -> dict[str, Any]:
    """Sweeps ``param`` of ``rule`` and picks the value closest to the retrain oracle.

    Args:
      network, dataset, split: the model, data and forget scenario.
      originals: the trained models, leading seed axis.
      oracles: models retrained on the retain set, leading seed axis (seed ``s`` is compared with
        oracle ``s``).
      keys: one unlearning PRNG key per seed.
      rule, param, values: the rule, the swept hyperparameter and its grid.
      rule_config: ``{"epochs", "forget_batch_size", "retain_batch_size", "hparams"}`` as in an
        experiment config (batch sizes default to 64, epochs to 1).
      val_fraction, val_seed: size and seed of the validation half of the test indices.
      return_variables: also return the unlearned variables under ``"variables"`` (``[values,
        seeds, ...]``; not JSON).
      augment: the batches' augmentation (see :func:`grid_variables`).

    Returns:
      A JSON-ready dict: the request and schedule, ``mode``, timings, the oracle's and original's
      validation metrics, ``grid`` (per value: metrics mean/std over seeds on validation, ``gap``,
      ``diverged``) and ``best`` (the argmin-gap value, its validation gap, and its metrics, the
      oracle's and its gap measured on the held-out test half).
    """
    grid = check_grid(rule, param, values)
    hparams = dict(dict(rule_config or {}).get("hparams") or {})
    hparams.pop(param, None)
    # The index sets the runner draws the rule's batches from (a rule's own sets, validation
    # parts) and the entry for them.
    index, rc = rule_index(
        rule,
        dict(rule_config or {}),
        split.forget,
        split.retain,
        labels=dataset.y_train,
        num_classes=network.num_outputs,
        forget_classes=split.classes,
    )
    # The scenario's sets stay in the stream for the parts the rule does not read (their sizes
    # give the rule the forget set's share of the training set).
    index = {"forget": split.forget, "retain": split.retain, **index}
    sizes = {part: len(ix) for part, ix in index.items()}
    for v in grid:  # the factory's own checks, on concrete values, before any compute
        _, batch_sizes, num_steps = build_rule(
            rule,
            network,
            rc,
            sizes,
            forget_classes=split.classes,
            **{param: _typed(rule, param, v)},
        )
    val_idx, test_idx = validation_split(dataset, split, fraction=val_fraction, seed=val_seed)
    task = dataset.task
    audits = _SELECTION_AUDITS[task]
    gap_keys = audit_lib.gap_metrics(task)

    stream = make_stream(dataset.x_train, dataset.y_train, index)
    variables, metrics, run_info = grid_variables(
        network,
        stream,
        originals,
        keys,
        rule=rule,
        param=param,
        values=grid,
        rule_config=rc,
        forget_classes=split.classes,
        augment=augment,
    )
    seeds = int(jax.tree.leaves(keys)[0].shape[0])
    groups = {"oracle": oracles, "original": originals}
    groups.update({f"value{k}": _seed(variables, k) for k in range(len(grid))})
    evaluate = _evaluations(network, dataset, split, audits, groups, on=val_idx, test_forget=False)
    oracle_val = evaluate("oracle")
    original_val = evaluate("original")
    for s, r in enumerate(original_val):
        r["Avg_gap"] = cls.avg_gap(r, oracle_val[s], gap_keys)
    rows_grid, gaps = [], []
    for k, value in enumerate(grid):
        rows = []
        for s, r in enumerate(evaluate(f"value{k}", run_info["finite"][k])):
            if r is None:  # diverged: non-finite parameters or outputs
                continue
            r["Avg_gap"] = cls.avg_gap(r, oracle_val[s], gap_keys)
            if "loss" in metrics:
                r["final_loss"] = float(np.asarray(metrics["loss"])[k, s, -1])
            rows.append(r)
        diverged = seeds - len(rows)
        gap = float(np.mean([r["Avg_gap"] for r in rows])) if rows and not diverged else math.inf
        gaps.append(gap)
        rows_grid.append(
            {
                "value": value,
                "metrics": _rename(_stats(rows), _VALIDATION_NAMES),
                "gap": gap,
                "diverged": diverged,
            }
        )
    best = int(np.argmin(gaps))
    result: dict[str, Any] = {
        "rule": rule,
        "param": param,
        "values": list(grid),
        "dataset": dataset.name,
        "task": task,
        "seeds": seeds,
        "hparams": hparams,
        "batch_sizes": batch_sizes,
        "num_steps": num_steps,
        "mode": run_info["mode"],
        "compile_s": run_info["compile_s"],
        "runtime_s": run_info["runtime_s"],
        "gap_metrics": list(gap_keys),
        "validation": {"size": len(val_idx), "test_size": len(test_idx), "seed": val_seed},
        "oracle_val": _rename(_stats(oracle_val), _VALIDATION_NAMES),
        "original_val": _rename(_stats(original_val), _VALIDATION_NAMES),
        "grid": rows_grid,
    }
    if math.isfinite(gaps[best]):
        test_groups = {"oracle": oracles, "best": _seed(variables, best)}
        evaluate = _evaluations(
            network, dataset, split, audits, test_groups, on=test_idx, test_forget=True
        )
        oracle_test = evaluate("oracle")
        chosen = []
        for s, r in enumerate(evaluate("best")):
            if r is not None:  # finite on the validation half, so almost surely here too
                r["Avg_gap"] = cls.avg_gap(r, oracle_test[s], gap_keys)
                chosen.append(r)
        result["best"] = {
            "value": grid[best],
            "index": best,
            "val_gap": gaps[best],
            "test": _stats(chosen),
            "oracle_test": _stats(oracle_test),
        }
    else:
        result["best"] = None  # every value diverged on some seed
    if return_variables:
        result["variables"] = variables
    return result


# --------------------------------------------------------------------------------------------------
# Reports.


def _fmt(stat: Mapping[str, float] | None) -> str:
    if not stat or not math.isfinite(stat["mean"]):
        return "-"
    return f"{stat['mean']:.2f}±{stat['std']:.2f}" if stat["n"] > 1 else f"{stat['mean']:.2f}"


def grid_table(result: Mapping[str, Any]) -> str:
    """The grid as aligned text: one row per value (validation metrics), the chosen value marked,
    then the chosen value's metrics on the held-out test half."""
    keys = [_VALIDATION_NAMES.get(k, k) for k in result["gap_metrics"]]
    header = [result["param"], *keys, "Avg_gap", "diverged", ""]
    rows = [["oracle", *[_fmt(result["oracle_val"].get(k)) for k in keys], "0.00", "-", ""]]
    best = result["best"]["index"] if result["best"] else -1
    for i, row in enumerate(result["grid"]):
        rows.append(
            [
                f"{row['value']:.4g}",
                *[_fmt(row["metrics"].get(k)) for k in keys],
                f"{row['gap']:.2f}",
                str(row["diverged"]),
                "<- chosen" if i == best else "",
            ]
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)).rstrip()
    out = [
        f"sweep of {result['rule']}.{result['param']} on {result['dataset']} "
        f"({result['seeds']} seeds, {result['num_steps']} steps, one {result['mode']} "
        f"program, compile {result['compile_s']:.1f}s, run {result['runtime_s']:.1f}s)",
        f"selection on a validation half of the test set ({result['validation']['size']} "
        "examples):",
        line(header),
        line(["-" * w for w in widths]),
        *map(line, rows),
    ]
    if best >= 0:
        test = result["best"]["test"]
        names = [*result["gap_metrics"], "Avg_gap"]
        out.append(
            f"\nchosen {result['param']}={result['best']['value']:.4g}, on the held-out "
            f"test half ({result['validation']['test_size']} examples): "
            + ", ".join(f"{k} {_fmt(test.get(k))}" for k in names)
            + "; oracle: "
            + ", ".join(
                f"{k} {_fmt(result['best']['oracle_test'].get(k))}" for k in result["gap_metrics"]
            )
        )
    else:
        out.append("\nevery value diverged on some seed: nothing chosen")
    return "\n".join(out)


def plot_gap(result: Mapping[str, Any], path: str) -> str:
    """Avg. Gap (validation, mean ± std over seeds) against the swept value, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.array([r["value"] for r in result["grid"]], float)
    ys = np.array([r["gap"] for r in result["grid"]], float)
    err = np.array([r["metrics"].get("Avg_gap", {}).get("std", 0.0) for r in result["grid"]])
    ok = np.isfinite(ys)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.errorbar(xs[ok], ys[ok], yerr=err[ok], marker="o", capsize=3)
    if result["best"]:
        ax.scatter(
            [result["best"]["value"]],
            [result["best"]["val_gap"]],
            s=120,
            facecolors="none",
            edgecolors="red",
            label="chosen",
            zorder=3,
        )
        ax.legend()
    if np.all(xs > 0) and xs.max() / xs.min() >= 10:
        ax.set_xscale("log")
    ax.set_xlabel(result["param"])
    ax.set_ylabel("Avg. Gap to retrain (validation)")
    where = "/".join(str(result[k]) for k in ("dataset", "scenario") if result.get(k))
    ax.set_title(f"{result['rule']} on {where}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_sweep(result: Mapping[str, Any], workdir: str, *, stream=None) -> dict[str, str]:
    """Writes ``sweep.json``, ``sweep.txt`` and ``sweep.png`` into ``workdir``; prints the table."""
    os.makedirs(workdir, exist_ok=True)
    paths = {
        "json": os.path.join(workdir, "sweep.json"),
        "table": os.path.join(workdir, "sweep.txt"),
        "plot": os.path.join(workdir, "sweep.png"),
    }
    plain = json.loads(
        json.dumps({k: v for k, v in result.items() if k != "variables"}, default=float)
    )
    records.write_json(paths["json"], plain, indent=1)
    text = grid_table(plain)
    with open(paths["table"], "w") as f:
        f.write(text + "\n")
    plot_gap(plain, paths["plot"])
    print(text, file=stream or sys.stdout, flush=True)
    return paths


# --------------------------------------------------------------------------------------------------
# From an experiment config.


def run_sweep(
    config,
    workdir: str,
    *,
    scenario: str,
    rule: str,
    param: str,
    values: Sequence[Any],
    val_fraction: float = 0.5,
    val_seed: int = 0,
    verbose: bool = True,
) -> dict[str, Any]:
    """Sweeps ``param`` of ``rule`` on one scenario of an experiment config and writes the report.

    The rule's epochs, batch sizes and other hyperparameters come from ``config.rules[rule]``
    (defaults when absent). Originals and retrain oracles are trained, or restored from the
    checkpoints :func:`~jaxunlearn.scenarios.run_experiment` leaves in the same ``workdir``, and
    the unlearning keys are the experiment's, so the grid point equal to the config's value
    reproduces the experiment's run.

    Returns:
      The dict of :func:`sweep` (also written to ``workdir/sweep.json``).
    """
    import ml_collections

    from jaxunlearn.scenarios.lock import workdir_lock
    from jaxunlearn.scenarios.plan import RETRAIN, plain, plan, scenario_entry

    check_grid(rule, param, values)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"`val_fraction` must lie in (0, 1); got {val_fraction}")
    scenarios = plain(config.scenarios)
    if scenario not in scenarios:
        raise ValueError(f"Unknown scenario {scenario!r}; the config has {sorted(scenarios)}")
    cfg = ml_collections.ConfigDict(plain(config))
    cfg.scenarios = {scenario: scenarios[scenario]}
    rule_cfgs = plain(config.rules)
    cfg.rules = {
        name: scenario_entry(rule_cfgs.get(name) or {}, scenario)
        for name in dict.fromkeys((RETRAIN, rule))
    }
    p = plan(cfg)
    os.makedirs(workdir, exist_ok=True)
    with workdir_lock(workdir):
        return _run_sweep(
            p, workdir, scenario, rule, param, values, val_fraction, val_seed, verbose
        )


def _run_sweep(p, workdir, scenario, rule, param, values, val_fraction, val_seed, verbose):
    from jaxunlearn.scenarios.artefacts import Artefacts

    split = p.splits[scenario]
    verbose = verbose and multihost.is_primary()
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)
    log(
        f"sweep: {rule}.{param} over {list(values)} on {p.dataset.name}/{scenario}, {p.seeds} seeds"
    )
    # The experiment's artefacts (restored from its checkpoints in the same workdir when their
    # fingerprints match) and keys.
    art = Artefacts(p, workdir, verbose=verbose, log=log)
    orig, oracle = art.originals(), art.oracles(scenario)
    # The originals and oracles train on the data mesh over every process's devices; the grid is
    # small, so each process runs it on its own copies (the same program, the same results) and
    # process 0 writes the report.
    local = lambda tree: jax.tree.map(multihost.fetch, tree)
    result = sweep(
        p.network,
        p.dataset,
        split,
        local(orig.variables),
        local(oracle.variables),
        art.keys("unlearn"),
        rule=rule,
        param=param,
        values=values,
        rule_config=p.entry(scenario, rule),
        val_fraction=val_fraction,
        val_seed=val_seed,
        augment=augment_lib.get(p.augmentation),
    )
    result["scenario"] = scenario
    # What the numbers depend on: the artefacts' and the rule entry's config fields, the request.
    from jaxunlearn.scenarios import fingerprint as fp_lib

    result["fingerprint"] = fp_lib.digest(
        {
            "original": fp_lib.original_fields(p),
            "oracle": fp_lib.oracle_fields(p, scenario),
            "rule": {"name": rule, **fp_lib.resolved_entry(p.entry(scenario, rule))},
            "request": {"param": param, "values": list(values), "val_fraction": val_fraction},
            "val_seed": val_seed,
        }
    )
    if multihost.is_primary():
        write_sweep(result, workdir, stream=None if verbose else io.StringIO())
    return result
