"""The robust-LM experiment's reports: the rule x audit table and its heat map.

Rows are the target, the retain model (exact unlearning) and every rule (mean ± std over the
seeds, :func:`~jaxunlearn.scenarios.report.summarize`); columns are the metrics of
:data:`~jaxunlearn.scenarios.lm_robust.audits.COLUMNS`. The heat map colours each cell by how much
of the target's value is left, ``(m - m_retain) / (m_target - m_retain)``: 0 = the retain model's
value (what exact unlearning gives), 1 = the target's (nothing forgotten), and prints the raw mean
in the cell (blank colour where target and retain differ by less than :data:`MIN_SPAN`: no
scale). Only the columns that measure knowledge of the forget facts are mapped; utility and gap
columns are in the table.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from jaxunlearn.scenarios.lm_robust.audits import COLUMNS, with_derived
from jaxunlearn.scenarios.report import DIVERGED_MARK, aligned
from jaxunlearn.scenarios.report import summarize as _summarize

MIN_SPAN = 0.1  # |target - retain| below which a column is not normalised (blank cell)


def summarize(records):
    """:func:`~jaxunlearn.scenarios.report.summarize` with the derived metrics added."""
    return _summarize([dataclasses.replace(r, metrics=with_derived(r.metrics)) for r in records])


TARGET, RETAIN = "target", "retain"


def _fmt(stat) -> str:
    if stat is None or math.isnan(stat[0]):
        return "-"
    mean, std, n = stat
    return f"{mean:.3f}" + (f"±{std:.3f}" if n > 1 else "")


def table(records, *, with_legend: bool = True) -> str:
    """The rule x audit table (mean ± std over seeds) with its legend."""
    summary = summarize(records)
    present = {m for v in summary.values() for m in v["stats"]}
    cols = [c for c in COLUMNS if c[1] in present]
    header = ["scenario", "method", "ok/n", *[c[1] for c in cols], "runtime_s"]
    rows = []
    for (scenario, method), v in summary.items():
        ok = v["n"] - v["diverged"]
        mark = DIVERGED_MARK if v["diverged_seeds"] else ""
        rt = v["stats"].get("runtime_s")
        rows.append(
            [
                scenario,
                method,
                f"{ok}/{v['n']}{mark}",
                *[_fmt(v["stats"].get(c[1])) for c in cols],
                "-" if rt is None else f"{rt[0]:.1f}",
            ]
        )
    out = aligned(header, rows)
    if with_legend:
        out.append("")
        out += [f"  {metric} [{audit}]: {meaning}" for audit, metric, meaning, _ in cols]
        out.append(
            "  rows: target = before unlearning; retain = trained without the forget facts (the "
            "exact-unlearning reference); rules: mean ± std over seeds"
        )
    return "\n".join(out)


def knowledge_left(records) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """``(methods, metrics, means [m, k], share [m, k])`` of the heat-map columns: the means and
    the share of the target's value left, ``(m - retain) / (target - retain)`` (nan where the two
    differ by less than :data:`MIN_SPAN`)."""
    summary = summarize(records)
    present = {m for v in summary.values() for m in v["stats"]}
    metrics = [c[1] for c in COLUMNS if c[1] in present and c[3]]
    methods = [method for (_, method) in summary]
    by = {method: v["stats"] for (_, method), v in summary.items()}
    means = np.array([[by[m].get(k, (math.nan,))[0] for k in metrics] for m in methods], np.float64)
    if TARGET in by and RETAIN in by:
        t = means[methods.index(TARGET)]
        r = means[methods.index(RETAIN)]
        span = t - r
        with np.errstate(invalid="ignore", divide="ignore"):
            share = np.where(np.abs(span) >= MIN_SPAN, (means - r) / span, math.nan)
    else:
        share = np.full_like(means, math.nan)
    return methods, metrics, means, share


def heatmap(records, path: str, *, title: str = "") -> str:
    """The heat map of :func:`knowledge_left` (colour) with the raw means (text), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods, metrics, means, share = knowledge_left(records)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(metrics), 1.2 + 0.38 * len(methods)))
    im = ax.imshow(np.clip(share, -0.5, 1.5), cmap="RdYlGn_r", vmin=-0.5, vmax=1.5, aspect="auto")
    for i in range(len(methods)):
        for j in range(len(metrics)):
            if not math.isnan(means[i, j]):
                ax.text(j, i, f"{means[i, j]:.2f}", ha="center", va="center", fontsize=6)
    ax.set_xticks(range(len(metrics)), metrics, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(methods)), methods, fontsize=7)
    cbar = fig.colorbar(im, ax=ax, fraction=0.03)
    cbar.set_label("share of the target's value left (0 = retain model)", fontsize=7)
    ax.set_title(title or "rule x audit: (value - retain) / (target - retain)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
