"""Records and their reports: ``results.json``, a terminal table, a plot, per-example plots.

A :class:`Record` is one audited model (scenario, method, seed); the runner produces them, this
module writes, reads, summarises and draws them. It imports nothing from the runner.

A record's ``status`` is ``ok``, ``diverged`` (non-finite parameters or outputs: not audited) or
``skipped`` (a rule not run because the original it starts from diverged). The table counts the
``ok`` ones (``ok/n``) and marks the others with a footnote; the plot hatches the bars of a method
with diverged seeds and labels a method with none audited.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxunlearn.train import records as records_lib


@dataclasses.dataclass
class Record:
    """One row of ``results.json``: a method's audited model on one scenario and seed."""

    scenario: str
    method: str
    seed: int
    status: str
    metrics: dict[str, float]
    fingerprint: str = ""  # of the config fields that determine it (scenarios.fingerprint)
    # The config's `note` on this method and scenario (e.g. a learning-rate cliff found by the
    # sweep); the table marks the method and prints the note as a footnote.
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_results(path: str) -> list[Record]:
    """Reads ``results.json`` (or a finished rule's records file) back into records.

    Raises:
      DamagedFileError: (a ``ValueError``) the file is not valid JSON; the message names it.
    """
    data = records_lib.read_json(path)
    if isinstance(data, dict):  # a records file: {"fingerprint", "fields", "records"}
        data = data["records"]
    return [Record(**r) for r in data]


def _not_ok(records) -> dict[tuple[str, str, str], list[int]]:
    groups: dict[tuple[str, str, str], list[int]] = {}
    for r in records:
        if r.status != "ok":
            groups.setdefault((r.method, r.scenario, r.status), []).append(r.seed)
    return groups


def _describe(method: str, scen: str, status: str, seeds: list[int]) -> str:
    if status == "skipped":
        return f"{method} on {scen}: not run on seeds {seeds} (the original diverged)"
    return f"{method} on {scen}: {status} on seeds {seeds}"


def divergence_lines(records) -> list[str]:
    """One line per (method, scenario) with seeds that diverged or were skipped."""
    return [_describe(*key, seeds) for key, seeds in _not_ok(records).items()]


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
        out[key] = {
            "stats": stats,
            "n": len(recs),
            "diverged": len(recs) - len(ok),
            "diverged_seeds": [r.seed for r in recs if r.status == "diverged"],
            "skipped_seeds": [r.seed for r in recs if r.status == "skipped"],
        }
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
PLOT_METRICS = ("UA", "RA", "TA", "MIA_efficacy", "Avg_gap")
# Plotted (on their own scale) when none of PLOT_METRICS is present: regression experiments.
REGRESSION_PLOT_METRICS = ("forget_mse", "retain_mse", "test_mse")


def _fmt(stat) -> str:
    if stat is None:
        return "-"
    mean, std, n = stat
    if math.isnan(mean):
        return "-"
    return f"{mean:.2f}±{std:.2f}" if n > 1 else f"{mean:.2f}"


# Which direction is better, per metric, for the legend.
_BETTER = {
    "UA": "closer to the oracle (100 - forget accuracy: the oracle's is what unseen data gets)",
    "RA": "higher (accuracy on the retain set)",
    "TA": "higher (accuracy on the test set)",
    "forget_mse": "closer to the oracle (error on the forget set)",
    "retain_mse": "lower (error on the retain set)",
    "test_mse": "lower (error on the test set)",
    "MIA_efficacy": "closer to the oracle (share of forget examples a membership attack calls "
    "non-members)",
    "MIA_AUC": "closer to the oracle (loss-threshold membership AUC, forget vs. test; 50 = as "
    "unfamiliar as unseen data; on class forgetting the oracle is near 0: nothing of the class "
    "remains to be a member, the test examples are the remaining classes', and the never-seen "
    "class has the higher loss)",
    "Avg_gap": "lower (mean |metric - oracle's| over the gap metrics)",
    "runtime_s": "lower (seconds per model)",
}
DIVERGED_MARK, SKIPPED_MARK, NOTE_MARK = "†", "‡", "§"


def legend(cols) -> str:
    """The table's legend: ``ok/n``, ``±``, the markers, and which direction is better per
    column shown."""
    lines = [
        "ok/n: seeds audited / seeds run; "
        f"{DIVERGED_MARK} some diverged (non-finite parameters or outputs; not audited), "
        f"{SKIPPED_MARK} not run (the original diverged), {NOTE_MARK} see the note below the "
        "table (a setting the config states, e.g. no stable learning rate forgets).",
        "mean±std over the ok seeds (std: population std over seeds; no ± with one seed). "
        "original = before unlearning, retrain = the oracle retrained without the forget set.",
    ]
    lines += [f"  {c}: better = {_BETTER[c]}" for c in cols if c in _BETTER]
    return "\n".join(lines)


def notes(records) -> dict[tuple[str, str], str]:
    """``{(scenario, method): note}`` for the methods whose config entry states a note."""
    return {(r.scenario, r.method): r.note for r in records if r.note}


def footnotes(records) -> list[str]:
    """The table's footnotes: which seeds diverged or were skipped, per method and scenario,
    then the config's notes."""
    lines = [
        f"{SKIPPED_MARK if key[2] == 'skipped' else DIVERGED_MARK} {_describe(*key, seeds)}"
        for key, seeds in _not_ok(records).items()
    ]
    return lines + [f"{NOTE_MARK} {m} on {s}: {n}" for (s, m), n in notes(records).items()]


def aligned(header: list, rows: list[list]) -> list[str]:
    """Text lines of a table: the first two columns (scenario, method) left-aligned, the rest
    right-aligned, a rule under the header and a blank line between scenarios."""
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
    return out


def table(records, metrics=TABLE_METRICS, *, with_legend: bool = False) -> str:
    """Mean ± std over seeds per (scenario, method) as aligned text; methods with diverged or
    skipped seeds are marked, with a footnote naming the seeds. ``with_legend`` adds
    :func:`legend` below."""
    summary = summarize(records)
    noted = notes(records)
    present = {m for v in summary.values() for m in v["stats"]}
    cols = [m for m in metrics if m in present]
    cols += sorted(m for m in present if m not in cols and m != "compile_s")
    header = ["scenario", "method", "ok/n", *cols]
    rows = []
    for (scen, method), v in summary.items():
        rows.append(
            [
                scen,
                method + (NOTE_MARK if (scen, method) in noted else ""),
                f"{v['n'] - v['diverged']}/{v['n']}"
                + (DIVERGED_MARK if v["diverged_seeds"] else "")
                + (SKIPPED_MARK if v["skipped_seeds"] else ""),
                *[_fmt(v["stats"].get(c)) for c in cols],
            ]
        )
    out = aligned(header, rows)
    below = footnotes(records)
    if below:
        out += ["", *below]
    if with_legend:
        out += ["", legend(cols)]
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
            bars = ax.bar(
                xs + j * width - 0.4 + width / 2,
                [s[0] for s in stats],
                width,
                yerr=[s[1] for s in stats],
                label=metric,
                capsize=2,
            )
            for bar, m in zip(bars, methods, strict=True):
                if summary[(scen, m)]["diverged"]:  # partly diverged: hatched
                    bar.set_hatch("//")
        for x, m in zip(xs, methods, strict=True):
            v = summary[(scen, m)]
            if v["diverged"]:
                ok = v["n"] - v["diverged"]
                text = "not run" if v["skipped_seeds"] and not v["diverged_seeds"] else "diverged"
                text = text if not ok else f"{ok}/{v['n']} ok"
                ax.text(
                    x,
                    2 if percent else 0,
                    text,
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    color="crimson",
                )
        ax.set_xticks(xs)
        ax.set_xticklabels(methods, rotation=30, ha="right")
        ax.set_title(scen)
        if percent:
            ax.set_ylim(0, 105)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("percent" if percent else "mean squared error")
    if metrics:
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
    records_lib.write_json(paths["json"], [r.to_json() for r in records], indent=1)
    text = table(records, with_legend=True)
    with open(paths["table"], "w") as f:
        f.write(text + "\n")
    plot(records, paths["plot"], title=title)
    print(text, file=stream or sys.stdout, flush=True)
    print(f"\nwrote {paths['json']}, {paths['table']}, {paths['plot']}", file=stream or sys.stdout)
    return paths
