"""The notebooks in colabs/ run top to bottom."""

import os

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("01_quickstart.ipynb", ("random_label", "UA")),
        ("02_gold_audits.ipynb", ("retrain (other seeds)", "neggrad_plus", "KLoM median")),
        ("03_lm_unlearning.ipynb", ("exact match", "retain (seed 1)", "npo", "forget_quality")),
        ("04_representation.ipynb", ("random init", "ssl_ascent", "CKA_oracle_forget")),
        ("05_unlearnable.ipynb", ("100% protected", "clean half alone", "kernel Bayes error")),
    ],
)
def test_notebook_runs_top_to_bottom(name, expected):
    path = os.path.join(ROOT, "colabs", name)
    nb = nbformat.read(path, as_version=4)
    NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": os.path.dirname(path)}},
    ).execute()
    outputs = "".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
    )
    assert all(text in outputs for text in expected)
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))
