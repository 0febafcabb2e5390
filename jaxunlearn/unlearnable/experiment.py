"""The unlearnable-examples experiment: protect a dataset, train victims, tabulate, plot.

For every method of the config (a registered generator with its settings), the training set is
protected; victims are trained from scratch on mixes of protected and clean data at each protected
fraction (1.0 = all protected), over ``seeds`` seeds, under each countermeasure, all fractions and
seeds of one (method, countermeasure) pair in one vmapped program
(:func:`~jaxunlearn.unlearnable.evaluate.train_victims`). References: victims trained on the
clean data (``clean``: the ``TA@0%`` column, under each countermeasure; adversarial training at
a method's own budget, when it differs from ``epsilon``, puts its clean reference in that method's
row) and on the clean part alone
(``clean_part_alone``: the accuracy a victim gets when the protected part teaches it nothing).

A clean validation set (``validation_fraction`` of the training data, never protected and never
trained on) serves the ``early_stopping`` countermeasure; the remaining training data is what is
protected. Writes into the workdir ``results.json`` (one record per method, countermeasure and
seed; ``TA@r%`` = clean test accuracy with a share ``r`` of the training set protected),
``results.txt`` (the table, also printed), ``results.png`` (accuracy vs protected fraction) and
``generation.json`` (per method: generation time, budget used, generator metrics, the kernel
Bayes-error estimate of the fully protected training set on pixels and on the clean surrogate's
features).

Run it with ``python -m experiments.main --config=experiments/configs/unlearnable.py
--workdir=/tmp/ue``.
"""

from __future__ import annotations

import math
import os
import sys
import time

import jax
import numpy as np

from jaxunlearn import data as data_lib
from jaxunlearn import ensemble
from jaxunlearn import models as models_lib
from jaxunlearn.core.checks import check_count
from jaxunlearn.scenarios import report, track_config
from jaxunlearn.train import records as records_lib
from jaxunlearn.unlearnable import budget, evaluate, registry
from jaxunlearn.unlearnable.bayes_error import kernel_bayes_error

REQUIRED = ("dataset", "model", "methods", "fractions", "countermeasures")
DEFAULTS = {
    "track": "unlearnable",
    "data_kwargs": {},
    "data_dir": "",
    "model_kwargs": {},
    "seeds": 3,
    "root_seed": 0,
    "validation_fraction": 0.1,
    "epsilon": 8 / 255,
    "victim": {},
    "distributed": False,
}
VICTIM_DEFAULTS = {
    "epochs": 30,
    "batch_size": 64,
    "learning_rate": 0.05,
    "adversarial_steps": 5,
    "jpeg_quality": 10,
}


def column(fraction: float) -> str:
    """The table column of a protected fraction: ``TA@50%``."""
    return f"TA@{round(100 * fraction):d}%"


def check_config(config) -> dict:
    """The config as a plain dict with defaults filled; a ``ValueError`` naming any bad setting,
    before compute."""
    cfg = track_config.with_defaults(config, REQUIRED, DEFAULTS, "unlearnable")
    data_lib.check_name(cfg["dataset"])
    models_lib.check_name(cfg["model"])
    cfg["seeds"] = check_count(cfg["seeds"], "seeds", 1)
    cfg["fractions"] = tuple(budget.check_fraction(f, "fractions") for f in cfg["fractions"])
    if not cfg["fractions"]:
        raise ValueError("`fractions` is empty; give protected fractions such as (1.0, 0.5)")
    for name in cfg["countermeasures"]:
        evaluate.check_countermeasure(name)
    if not 0.0 < float(cfg["validation_fraction"]) < 0.5:
        raise ValueError(
            f"`validation_fraction` must be in (0, 0.5); got {cfg['validation_fraction']}"
        )
    budget.check_epsilon(cfg["epsilon"])
    victim = track_config.plain(cfg["victim"])
    bad = sorted(set(victim) - set(VICTIM_DEFAULTS))
    if bad:
        raise ValueError(f"`victim` has unknown key(s) {bad}; valid: {sorted(VICTIM_DEFAULTS)}")
    cfg["victim"] = victim = {**VICTIM_DEFAULTS, **victim}
    for key in ("epochs", "batch_size", "adversarial_steps", "jpeg_quality"):
        check_count(victim[key], f"victim.{key}", 1)
    if victim["jpeg_quality"] > 100:
        raise ValueError(
            f"`victim.jpeg_quality` must be an integer in [1, 100]; got {victim['jpeg_quality']!r}"
        )
    if not math.isfinite(float(victim["learning_rate"])) or float(victim["learning_rate"]) <= 0:
        raise ValueError(
            f"`victim.learning_rate` must be positive and finite; got {victim['learning_rate']!r}"
        )
    methods = {}
    for label, entry in track_config.plain(cfg["methods"]).items():
        entry = track_config.plain(entry)
        if "generator" not in entry:
            raise ValueError(f"method {label!r} names no `generator`; valid: {registry.names()}")
        info = registry.get(entry["generator"])
        hparams = track_config.plain(entry.get("hparams"))
        registry.check_hparams(info.name, hparams, where=f"`methods.{label}.hparams`")
        budget.check_epsilon(hparams.get("epsilon", cfg["epsilon"]), f"{label}.epsilon")
        methods[label] = {"generator": entry["generator"], "hparams": hparams}
    if not methods:
        raise ValueError("The unlearnable config names no `methods`")
    cfg["methods"] = methods
    return cfg


class _Victims:
    """Victim rules and their compiled inits, built once per distinct setting."""

    def __init__(self, network, victim: dict, validation):
        self.network, self.victim, self.validation = network, victim, validation
        self._cache: dict = {}

    def train(self, countermeasure, datasets, y, keys, *, epsilon, index=None):
        n = len(y) if index is None else len(index)
        spe = evaluate.victim_steps_per_epoch(n, self.victim["batch_size"])
        # jpeg changes the data only: it shares plain training's rule and compiled program.
        same = "none" if countermeasure == "jpeg" else countermeasure
        cache_key = (same, round(float(epsilon), 8) if same == "adversarial_training" else 0, spe)
        if cache_key not in self._cache:
            rule = evaluate.victim_rule(
                self.network,
                same,
                learning_rate=self.victim["learning_rate"],
                epsilon=epsilon,
                adversarial_steps=int(self.victim["adversarial_steps"]),
                validation=self.validation,
                steps_per_epoch=spe,
            )
            self._cache[cache_key] = (rule, ensemble.rule_initializer(rule))
        rule, init = self._cache[cache_key]
        if countermeasure == "jpeg":
            quality = int(self.victim["jpeg_quality"])
            datasets = [np.asarray(evaluate.jpeg_compress(d, quality=quality)) for d in datasets]
        return evaluate.train_victims(
            self.network,
            rule,
            datasets,
            y,
            keys=keys,
            epochs=int(self.victim["epochs"]),
            batch_size=int(self.victim["batch_size"]),
            index=index,
            init_program=init,
        )


def _records(scenario, method, accuracy, diverged, columns, seeds):
    """One record per seed from ``[F, S]`` accuracies (``F`` = the columns)."""
    out = []
    for s in range(seeds):
        bad = bool(np.any(diverged[:, s]))
        metrics = {} if bad else {c: float(accuracy[f, s]) for f, c in enumerate(columns)}
        out.append(report.Record(scenario, method, s, "diverged" if bad else "ok", metrics))
    return out


def run(config, workdir: str, *, stream=None, log=None) -> list[report.Record]:
    """Runs the experiment of ``config`` and writes its results into ``workdir``.

    Returns:
      The records (also in ``results.json``).
    """
    cfg = check_config(config)
    log = log or (lambda m: print(m, file=sys.stderr, flush=True))
    ds = track_config.load_dataset(cfg)
    if ds.task != "classification" or len(ds.input_shape) != 3:
        raise ValueError(f"dataset {cfg['dataset']!r} is not an image classification dataset")
    network = models_lib.make_network(
        cfg["model"],
        input_shape=ds.input_shape,
        num_outputs=ds.num_outputs,
        **track_config.plain(cfg["model_kwargs"]),
    )
    root = jax.random.key(int(cfg["root_seed"]))
    n_all = len(ds.y_train)
    order = np.asarray(jax.random.permutation(jax.random.fold_in(root, 1), n_all))
    n_val = int(round(cfg["validation_fraction"] * n_all))
    val, pool = np.sort(order[:n_val]), np.sort(order[n_val:])
    x, y = ds.x_train[pool].astype(np.float32), ds.y_train[pool].astype(np.int32)
    x_val, y_val = ds.x_train[val], ds.y_train[val]
    n = len(y)
    seeds = int(cfg["seeds"])
    keys = ensemble.seed_keys(seeds, int(cfg["root_seed"]))
    fractions = cfg["fractions"]
    columns = [column(f) for f in fractions]
    masks = [evaluate.protected_subset(n, f, key=jax.random.fold_in(root, 2)) for f in fractions]
    victims = _Victims(network, cfg["victim"], (x_val, y_val))
    os.makedirs(workdir, exist_ok=True)
    records: list[report.Record] = []

    def test(res):
        acc = evaluate.test_accuracy(network, res.variables, ds.x_test, ds.y_test)
        return acc.reshape(-1, seeds), np.asarray(res.diverged).reshape(-1, seeds)

    # References: clean training (every countermeasure) and the clean part alone.
    t0 = time.perf_counter()
    for cm in cfg["countermeasures"]:
        acc, div = test(victims.train(cm, [x], y, keys, epsilon=cfg["epsilon"]))
        records += _records("clean", cm, acc, div, [column(0.0)], seeds)
    # One record per seed holds every fraction's clean-part-alone accuracy.
    partial = [(f, m) for f, m in zip(fractions, masks, strict=True) if m.any() and not m.all()]
    if partial:
        accs, divs = [], []
        for _, mask in partial:
            acc, div = test(
                victims.train(
                    "none", [x], y, keys, epsilon=cfg["epsilon"], index=np.flatnonzero(~mask)
                )
            )
            accs.append(acc[0])
            divs.append(div[0])
        records += _records(
            "clean_part_alone",
            "none",
            np.stack(accs),
            np.stack(divs),
            [column(f) for f, _ in partial],
            seeds,
        )
    log(f"  [unlearnable] references trained in {time.perf_counter() - t0:.1f}s")

    surrogate = None
    if any(registry.get(m["generator"]).needs_surrogate for m in cfg["methods"].values()):
        res = victims.train(
            "none",
            [x],
            y,
            ensemble.seed_keys(1, int(cfg["root_seed"]) + 1000),
            epsilon=cfg["epsilon"],
        )
        surrogate = jax.tree.map(lambda a: a[0], res.variables)
    features = None if surrogate is None else np.asarray(network.apply(surrogate, x).features)

    generation = {}
    for label, entry in cfg["methods"].items():
        info = registry.get(entry["generator"])
        hparams = {"epsilon": cfg["epsilon"], **entry["hparams"]}
        key = jax.random.fold_in(root, 3)
        t0 = time.perf_counter()
        if info.mix_aware:  # optimised for each mix: the estimate sees the clean rows too
            protected = [
                registry.protect(
                    info.name, network, x, y, key=key, surrogate=surrogate, protect=m, **hparams
                )
                for m in masks
            ]
        else:
            protected = [
                registry.protect(info.name, network, x, y, key=key, surrogate=surrogate, **hparams)
            ] * len(masks)
        gen_s = time.perf_counter() - t0
        full = protected[int(np.argmax(fractions))]
        stats = {
            "generator": info.name,
            "hparams": {k: v for k, v in hparams.items()},
            "generation_s": gen_s,
            "generation_s_per_1000": 1000 * gen_s / (n * (len(masks) if info.mix_aware else 1)),
            "max_abs_delta_x255": float(255 * np.abs(np.asarray(full.delta)).max()),
            "mean_abs_delta_x255": float(255 * np.abs(np.asarray(full.delta)).mean()),
            "generator_metrics": full.metrics,
            "bayes_error_pixels": float(kernel_bayes_error(full.x, y, num_classes=ds.num_classes)),
        }
        if surrogate is not None:
            feats = network.apply(surrogate, full.x).features
            stats["bayes_error_surrogate_features"] = float(
                kernel_bayes_error(feats, y, num_classes=ds.num_classes)
            )
        generation[label] = stats
        log(f"  [unlearnable] {label}: generated in {gen_s:.1f}s {full.metrics}")
        datasets = [evaluate.mix(x, p.x, m) for p, m in zip(protected, masks, strict=True)]
        for cm in cfg["countermeasures"]:
            t0 = time.perf_counter()
            # Adversarial training at a budget other than the clean reference's gets its own
            # clean reference (TA@0% of this row), trained in the same program.
            own = cm == "adversarial_training" and not math.isclose(
                hparams["epsilon"], cfg["epsilon"]
            )
            sets, cols = ([x], [column(0.0)]) if own else ([], [])
            acc, div = test(victims.train(cm, sets + datasets, y, keys, epsilon=hparams["epsilon"]))
            records += _records(label, cm, acc, div, cols + columns, seeds)
            log(
                f"  [unlearnable] {label} / {cm}: "
                f"{dict(zip(cols + columns, acc.mean(1).round(1).tolist(), strict=True))} "
                f"({time.perf_counter() - t0:.1f}s)"
            )

    generation["_references"] = {
        "bayes_error_pixels_clean": float(kernel_bayes_error(x, y, num_classes=ds.num_classes)),
        "bayes_error_surrogate_features_clean": (
            None
            if features is None
            else float(kernel_bayes_error(features, y, num_classes=ds.num_classes))
        ),
        "train_examples": n,
        "validation_examples": len(val),
        "test_examples": len(ds.y_test),
    }
    write(records, generation, workdir, cfg, stream=stream)
    return records


LEGEND = (
    "TA@r% = clean test accuracy (percent, mean±std over seeds) of a victim trained from scratch "
    "when a share r of its training set is protected (TA@0%: clean training; in a method's row, "
    "adversarial training at that method's budget). Rows: generator "
    "(scenario column) x countermeasure (method column); clean_part_alone = trained on the "
    "unprotected part only (what the victim gets if protected data teaches nothing). Lower is "
    "better for the data owner."
)


def write(records, generation, workdir, cfg, *, stream=None) -> dict[str, str]:
    """``results.json``, ``results.txt`` (printed too), ``results.png`` and
    ``generation.json``."""
    paths = {
        "json": os.path.join(workdir, "results.json"),
        "table": os.path.join(workdir, "results.txt"),
        "plot": os.path.join(workdir, "results.png"),
        "generation": os.path.join(workdir, "generation.json"),
    }
    records_lib.write_json(paths["json"], [r.to_json() for r in records], indent=1)
    records_lib.write_json(paths["generation"], generation, indent=1)
    columns = [column(0.0)] + [column(f) for f in cfg["fractions"]]
    lines = [report.table(records, metrics=tuple(columns)), "", LEGEND, ""]
    lines.append(
        "generation (per method): seconds per 1,000 images, max |delta| x 255, "
        "kernel Bayes-error estimate of the fully protected set (pixels / surrogate "
        "features)"
    )
    for label, g in generation.items():
        if label.startswith("_"):
            continue
        lines.append(
            f"  {label:24s} {g['generation_s_per_1000']:8.2f}s  {g['max_abs_delta_x255']:6.2f}  "
            f"{g['bayes_error_pixels']:.3f} / "
            f"{g.get('bayes_error_surrogate_features', float('nan')):.3f}"
            f"  {g['generator_metrics']}"
        )
    ref = generation.get("_references", {})
    if ref:
        lines.append(
            f"  {'clean data':24s} {'':8s}   {'':6s}  {ref['bayes_error_pixels_clean']:.3f} / "
            f"{ref['bayes_error_surrogate_features_clean'] or float('nan'):.3f}"
        )
    text = "\n".join(lines)
    with open(paths["table"], "w") as f:
        f.write(text + "\n")
    plot(records, paths["plot"], cfg["fractions"], list(cfg["countermeasures"]))
    print(text, file=stream or sys.stdout, flush=True)
    print(f"\nwrote {', '.join(paths.values())}", file=stream or sys.stdout)
    return paths


def plot(records, path: str, fractions, countermeasures) -> str:
    """Clean test accuracy vs protected fraction: one panel per countermeasure, one line per
    method starting from clean training (at 0: the row's own ``TA@0%`` where it has one, i.e.
    adversarial training at the method's budget); the clean part alone (dashed) on the plain
    training panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = report.summarize(records)
    xs = sorted({0.0, *fractions})
    fig, axes = plt.subplots(
        1, len(countermeasures), figsize=(4.2 * len(countermeasures), 3.8), squeeze=False
    )
    methods = [
        s
        for s in dict.fromkeys(r.scenario for r in records)
        if s not in ("clean", "clean_part_alone")
    ]
    for ax, cm in zip(axes[0], countermeasures, strict=True):
        clean = summary.get(("clean", cm), {}).get("stats", {}).get(column(0.0))
        for method in methods:
            stats = summary.get((method, cm), {}).get("stats", {})
            start = stats.get(column(0.0), clean)  # a row's own clean reference, if it has one
            pts = [(0.0, start)] + [(f, stats.get(column(f))) for f in fractions]
            pts = sorted((f, s) for f, s in pts if s is not None)
            ax.errorbar(
                [100 * f for f, _ in pts],
                [s[0] for _, s in pts],
                yerr=[s[1] for _, s in pts],
                marker="o",
                capsize=2,
                label=method,
            )
        part = summary.get(("clean_part_alone", "none"), {}).get("stats", {})
        if cm == "none" and part:  # the reference is trained without countermeasures
            pts = [(0.0, clean)] + [(f, part[column(f)]) for f in fractions if column(f) in part]
            pts = sorted((f, s) for f, s in pts if s is not None)
            ax.plot(
                [100 * f for f, _ in pts], [s[0] for _, s in pts], "k--", label="clean part alone"
            )
        ax.set_title(cm)
        ax.set_xlabel("protected share of the training set (%)")
        ax.set_xticks([100 * f for f in xs])
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("clean test accuracy (%)")
    handles, labels = axes[0][0].get_legend_handles_labels()  # the panel with every line
    axes[0][-1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
