"""Records and their reports: ``results.json``, a terminal table, a plot, per-example plots.

A :class:`Record` is one audited model (scenario, method, seed); the runner produces them, this
module writes, reads, summarises and draws them. It imports nothing from the runner.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np


@dataclasses.dataclass
class Record:
    """One row of ``results.json``: a method's audited model on one scenario and seed."""

    scenario: str
    method: str
    seed: int
    status: str
    metrics: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_results(path: str) -> list[Record]:
    """Reads ``results.json`` (or a finished rule's records file) back into records."""
    with open(path) as f:
        return [Record(**r) for r in json.load(f)]


def summarize(records: list[Record]) -> Mapping:
    """``{(scenario, method): {metric: (mean, std, n)}}`` over seeds with status ok."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r.scenario, r.method), []).append(r)
    out = {}
    for key, recs in groups.items():
        ok = [r for r in recs if r.status == "ok"]
        metrics = sorted({m for r in ok for m in r.metrics})
        stats = {}
        for m in metrics:
            vals = np.array([r.metrics[m] for r in ok if m in r.metrics], float)
            stats[m] = (float(np.mean(vals)), float(np.std(vals)), len(vals))
        out[key] = {"stats": stats, "n": len(recs), "diverged": len(recs) - len(ok)}
    return out


TABLE_METRICS = (
    "UA",
    "RA",
    "TA",
    "forget_mse",
    "retain_mse",
    "test_mse",
    "MIA_efficacy",
    "MIA_AUC",
    "Avg_gap",
    "runtime_s",
)
PLOT_METRICS = ("UA", "RA", "TA", "MIA_efficacy")
# Plotted (on their own scale) when none of PLOT_METRICS is present: regression experiments.
REGRESSION_PLOT_METRICS = ("forget_mse", "retain_mse", "test_mse")


def _fmt(stat) -> str:
    if stat is None:
        return "-"
    mean, std, n = stat
    if math.isnan(mean):
        return "-"
    return f"{mean:.2f}±{std:.2f}" if n > 1 else f"{mean:.2f}"


def table(records, metrics=TABLE_METRICS) -> str:
    """Mean ± std over seeds per (scenario, method) as aligned text."""
    summary = summarize(records)
    present = {m for v in summary.values() for m in v["stats"]}
    cols = [m for m in metrics if m in present]
    cols += sorted(m for m in present if m not in cols and m != "compile_s")
    header = ["scenario", "method", "ok/n", *cols]
    rows = []
    for (scen, method), v in summary.items():
        rows.append(
            [
                scen,
                method,
                f"{v['n'] - v['diverged']}/{v['n']}",
                *[_fmt(v["stats"].get(c)) for c in cols],
            ]
        )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(
        str(c).rjust(w) if i > 1 else str(c).ljust(w)
        for i, (c, w) in enumerate(zip(r, widths, strict=True))
    )
    out = [line(header), line(["-" * w for w in widths])]
    last = None
    for r in rows:
        if last is not None and r[0] != last:
            out.append("")
        out.append(line(r))
        last = r[0]
    return "\n".join(out)


def plot(records, path: str, *, title: str = "", metrics=PLOT_METRICS) -> str:
    """Grouped bars (mean ± std over seeds) of ``metrics`` per method, one panel per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = summarize(records)
    scenarios = list(dict.fromkeys(s for s, _ in summary))
    present = lambda names: [m for m in names if any(m in v["stats"] for v in summary.values())]
    percent = present(metrics)
    metrics = percent or present(REGRESSION_PLOT_METRICS)
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6.5 * len(scenarios), 4.2), squeeze=False)
    for ax, scen in zip(axes[0], scenarios, strict=True):
        methods = [m for s, m in summary if s == scen]
        width = 0.8 / max(len(metrics), 1)
        xs = np.arange(len(methods))
        for j, metric in enumerate(metrics):
            stats = [summary[(scen, m)]["stats"].get(metric, (np.nan, 0.0, 0)) for m in methods]
            ax.bar(
                xs + j * width - 0.4 + width / 2,
                [s[0] for s in stats],
                width,
                yerr=[s[1] for s in stats],
                label=metric,
                capsize=2,
            )
        ax.set_xticks(xs)
        ax.set_xticklabels(methods, rotation=30, ha="right")
        ax.set_title(scen)
        if percent:
            ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("percent" if percent else "mean squared error")
    axes[0][-1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# Per-example arrays of the ensemble audits that ``per_example_plot`` draws, with axis labels.
PER_EXAMPLE_QUANTITIES = (
    ("epsilon", "per-example epsilon (competition)"),
    ("klom_forget", "KLoM per forget example (nats)"),
)


def per_example_plot(
    records, workdir: str, *, title: str = "", quantities=PER_EXAMPLE_QUANTITIES
) -> str | None:
    """Distributions over forget examples of the ensemble audits' per-example values.

    One row per quantity (the competition's epsilon, KLoM), one panel per scenario, one box per
    method (whiskers 5-95%, white dot = mean) over its examples, with every example drawn as a
    point. Reads the arrays the runner stores in ``workdir/ensemble/<scenario>/<method>.npz`` for
    the methods of ``records``; on the epsilon row a dashed line marks ``ceil(ln(N - 1))``, from
    which an example earns no forgetting-score points.

    Returns:
      The path of ``workdir/per_example.png``, or ``None`` when no arrays exist.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arrays: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    for key in dict.fromkeys((r.scenario, r.method) for r in records):
        path = os.path.join(workdir, "ensemble", key[0], f"{key[1]}.npz")
        if os.path.exists(path):
            with np.load(path) as z:
                arrays[key] = {name: z[name] for name in z.files}
    rows = [(q, label) for q, label in quantities if any(q in a for a in arrays.values())]
    if not rows:
        return None
    scenarios = list(dict.fromkeys(s for s, _ in arrays))
    fig, axes = plt.subplots(
        len(rows),
        len(scenarios),
        squeeze=False,
        figsize=(1.0 + 5.5 * len(scenarios), 3.6 * len(rows)),
    )
    rng = np.random.default_rng(0)
    for i, (quantity, label) in enumerate(rows):
        for ax, scen in zip(axes[i], scenarios, strict=True):
            methods = [m for s, m in arrays if s == scen and quantity in arrays[(s, m)]]
            values = [arrays[(scen, m)][quantity] for m in methods]
            if values:
                ax.boxplot(
                    values,
                    whis=(5, 95),
                    showmeans=True,
                    showfliers=False,
                    meanprops={"marker": "o", "markerfacecolor": "white"},
                )
                for j, v in enumerate(values, start=1):
                    ax.scatter(j + rng.uniform(-0.18, 0.18, len(v)), v, s=4, alpha=0.35)
                ax.set_xticks(range(1, len(methods) + 1), methods, rotation=30, ha="right")
            if quantity == "epsilon" and methods:
                n_models = len(arrays[(scen, methods[0])].get("models", ()))
                if n_models > 2:
                    ax.axhline(math.ceil(math.log(n_models - 1)), color="grey", ls="--", lw=1)
            ax.set_title(scen)
            ax.set_ylabel(label)
            ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = os.path.join(workdir, "per_example.png")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_all(records, workdir: str, *, title: str = "", stream=None) -> dict[str, str]:
    """Writes ``results.json``, ``results.txt`` and ``results.png`` and prints the table."""
    paths = {
        "json": os.path.join(workdir, "results.json"),
        "table": os.path.join(workdir, "results.txt"),
        "plot": os.path.join(workdir, "results.png"),
    }
    with open(paths["json"], "w") as f:
        json.dump([r.to_json() for r in records], f, indent=1, default=float)
    text = table(records)
    with open(paths["table"], "w") as f:
        f.write(text + "\n")
    plot(records, paths["plot"], title=title)
    print(text, file=stream or sys.stdout, flush=True)
    print(f"\nwrote {paths['json']}, {paths['table']}, {paths['plot']}", file=stream or sys.stdout)
    return paths
