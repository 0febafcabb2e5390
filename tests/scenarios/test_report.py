"""Reports: records to results.json, a table of mean ± std over seeds, and plots."""

import numpy as np
from report_testing import assert_png_with_content

from jaxunlearn.scenarios import Record, load_results, report


def _records():
    out = []
    for seed, (ua, ra) in enumerate([(10.0, 90.0), (20.0, 80.0)]):
        out.append(Record("class_0", "finetune", seed, "ok", {"UA": ua, "RA": ra}))
        out.append(Record("class_0", "retrain", seed, "ok", {"UA": 100.0, "RA": 99.0}))
    out.append(Record("class_0", "finetune", 2, "diverged", {"runtime_s": 1.0}))
    return out


def test_summary_and_table_average_the_finished_seeds_only():
    summary = report.summarize(_records())
    stats = summary[("class_0", "finetune")]
    assert stats["n"] == 3 and stats["diverged"] == 1
    assert stats["stats"]["UA"] == (15.0, 5.0, 2)
    text = report.table(_records())
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["scenario", "method", "ok/n", "UA", "RA"]
    assert "2/3†" in lines[2] and "15.00±5.00" in lines[2] and "85.00±5.00" in lines[2]
    # The diverged seed is named under the table.
    assert "† finetune on class_0: diverged on seeds [2]" in lines


def test_a_config_note_marks_the_method_and_becomes_a_footnote():
    records = _records()
    for r in records:
        if r.method == "finetune":
            r.note = "no stable learning rate forgets (sweep: lr <= 0.01 keeps UA 0)"
    lines = report.table(records).splitlines()
    assert lines[2].split()[1] == "finetune§" and lines[3].split()[1] == "retrain"
    assert (
        "§ finetune on class_0: no stable learning rate forgets (sweep: lr <= 0.01 keeps UA 0)"
        in lines
    )


def test_the_legend_explains_every_column_shown():
    text = report.table(_records(), with_legend=True)
    assert "ok/n: seeds audited / seeds run" in text and "mean±std over the ok seeds" in text
    assert "UA: better = closer to the oracle" in text and "RA: better = higher" in text
    assert "MIA_AUC" not in text  # only the columns shown


def test_the_plot_marks_diverged_methods(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [*_records(), Record("class_0", "gradient_ascent", 0, "diverged", {})]
    saved = []
    real = plt.Figure.savefig
    try:
        plt.Figure.savefig = lambda fig, *a, **k: saved.append(fig) or real(fig, *a, **k)
        report.plot(records, str(tmp_path / "p.png"))
    finally:
        plt.Figure.savefig = real
    ax = saved[0].axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert "diverged" in texts and "2/3 ok" in texts
    hatched = [p for p in ax.patches if p.get_hatch()]
    assert len(hatched) == 2 * 2  # finetune's and gradient_ascent's UA and RA bars


def test_write_all_round_trips_and_draws(tmp_path):
    paths = report.write_all(_records(), str(tmp_path), title="t", stream=open("/dev/null", "w"))
    assert load_results(paths["json"]) == _records()
    assert open(paths["table"]).read().strip() == report.table(_records(), with_legend=True)
    assert_png_with_content(paths["plot"])
    # No ensemble arrays in the workdir: no per-example plot.
    assert report.per_example_plot(_records(), str(tmp_path)) is None
    eps = np.linspace(0, 50, 20)
    (tmp_path / "ensemble" / "class_0").mkdir(parents=True)
    np.savez(tmp_path / "ensemble" / "class_0" / "finetune.npz", epsilon=eps, models=np.arange(8))
    path = report.per_example_plot(_records(), str(tmp_path))
    assert_png_with_content(path)
