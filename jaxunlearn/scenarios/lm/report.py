"""The LM experiment's reports: the TOFU-style table and the forget quality vs utility plot.

The records are :class:`~jaxunlearn.scenarios.report.Record` rows (one per scenario, method and
seed; methods ``target``, ``retain``, ``retain (seed 1)`` and the rules), summarised over seeds by
:func:`~jaxunlearn.scenarios.report.summarize`. Forget quality is a p-value spanning many
decades, so it is printed in scientific notation and plotted on a log axis.
"""

from __future__ import annotations

import math

import numpy as np

from jaxunlearn.scenarios.report import DIVERGED_MARK, aligned, footnotes, summarize

TABLE_METRICS = (
    "forget_quality",
    "model_utility",
    "rouge_forget",
    "rouge_retain",
    "truth_ratio_forget",
    "prob_forget",
    "privleak",
    "VerbMem_f",
    "leak@1",
    "leak@4",
    "leak@16",
    "leak@64",
    "exact_memorization",
    "runtime_s",
)
# What each column means and which way is better, printed under the table.
LEGEND = {
    "forget_quality": "KS p-value of forget truth ratios vs the first retain model (higher = "
    "closer to never having seen the forget authors; the 'retain (seed 1)' row is the noise floor)",
    "model_utility": "harmonic mean of Prob, ROUGE-L recall, truth-ratio score on retain QA and "
    "utility facts (higher)",
    "rouge_forget": "ROUGE-L recall of greedy answers to forget questions (retain model's = ideal)",
    "rouge_retain": "ROUGE-L recall of greedy answers to retain questions (higher)",
    "truth_ratio_forget": "mean min(TR, 1/TR) on the forget set",
    "prob_forget": "mean p(answer)^(1/|answer|) on the forget set",
    "privleak": "MUSE: 100 (AUC - AUC_retain) / AUC_retain, Min-K% member AUC forget vs holdout "
    "(0 = ideal, > 0 = still a member)",
    "VerbMem_f": "MUSE: ROUGE-L F1 x 100 of the greedy continuation of the first half of each "
    "forget-author passage window vs its true rest (lower; retain model's = ideal)",
    "leak@k": "chance that one of k sampled answers leaks the key fact (lower; retain model's = "
    "the base rate)",
    "exact_memorization": "teacher-forced answer-token accuracy on the forget set",
}


def _fmt(metric: str, stat) -> str:
    if stat is None:
        return "-"
    mean, std, n = stat
    if math.isnan(mean):
        return "-"
    if metric == "forget_quality":
        return f"{mean:.2e}"
    if metric in ("privleak", "VerbMem_f", "runtime_s"):
        return f"{mean:.1f}" + (f"±{std:.1f}" if n > 1 else "")
    return f"{mean:.3f}" + (f"±{std:.3f}" if n > 1 else "")


def table(records, *, metrics=TABLE_METRICS, with_legend: bool = True) -> str:
    """The TOFU-style table: one row per (scenario, method), mean (± std over seeds)."""
    summary = summarize(records)
    present = {m for v in summary.values() for m in v["stats"]}
    cols = [m for m in metrics if m in present]
    header = ["scenario", "method", "ok/n", *cols]
    rows = []
    for (scen, method), v in summary.items():
        ok = v["n"] - v["diverged"]
        mark = DIVERGED_MARK if v["diverged_seeds"] else ""
        rows.append(
            [scen, method, f"{ok}/{v['n']}{mark}", *[_fmt(c, v["stats"].get(c)) for c in cols]]
        )
    out = aligned(header, rows)
    notes = footnotes(records)
    if notes:
        out += ["", *notes]
    if with_legend:
        out.append("")
        shown = set(cols) | ({"leak@k"} if any(c.startswith("leak@") for c in cols) else set())
        out += [f"  {k}: {v}" for k, v in LEGEND.items() if k in shown]
    return "\n".join(out)


def trajectory_plot(trajectories: dict, references: dict, path: str, *, title: str = "") -> str:
    """Forget quality (log) against model utility along every rule's run.

    Args:
      trajectories: ``{rule: [{"step", "forget_quality", "model_utility"}, ...]}`` (seed 0; the
        first point is the target before unlearning).
      references: ``{label: (forget_quality, model_utility)}`` drawn as markers (the target, the
        second retain seed).
      path: the PNG written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    floor = 1e-12
    for name, run in trajectories.items():
        points = [pt for pt in run if "forget_quality" in pt]  # diverged points have none
        if not points:
            continue
        fq = np.maximum([pt["forget_quality"] for pt in points], floor)
        mu = [pt["model_utility"] for pt in points]
        diverged = any(pt.get("diverged") for pt in run)
        (line,) = ax.plot(mu, fq, "-o", ms=3, label=name + (" (diverged)" if diverged else ""))
        ax.plot(mu[-1], fq[-1], "s", ms=6, color=line.get_color())
    for label, (fq, mu) in references.items():
        ax.plot(mu, max(fq, floor), "*", ms=12, color="black" if "target" in label else "grey")
        ax.annotate(label, (mu, max(fq, floor)), textcoords="offset points", xytext=(5, 5))
    ax.set_yscale("log")
    ax.set_xlabel("model utility")
    ax.set_ylabel("forget quality (KS p-value vs retain model)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(title or "forget quality vs model utility (circles: audit points; square: end)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
