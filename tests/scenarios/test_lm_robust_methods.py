"""The robust-LM experiment's wrappers and analyses (jaxunlearn.scenarios.lm_robust.methods), each
on the :tiny corpus with a freshly initialised d_model-16 transformer and a few steps."""

import jax
import numpy as np
import pytest

from experiments.configs import lm_robust
from jaxunlearn.audit import attribution
from jaxunlearn.audit.lm_robust import key_fact_accuracy
from jaxunlearn.scenarios.lm_robust import build_benchmark, extensions, methods, robust_plan
from jaxunlearn.scenarios.lm_robust import report as report_lib
from jaxunlearn.scenarios.report import Record


@pytest.fixture(scope="module")
def plan():
    c = lm_robust.get_config("tiny")
    c.data_parallel = False
    c.wrappers = ("eco",)
    c.analyses = ("untrac", "synthetic_forget_set")
    c.methods = {
        "eco": {"steps": 2},
        "untrac": {"train_steps": 4, "unlearn_steps": 2, "batch_size": 4},
        "synthetic_forget_set": {"samples": 2, "max_new_tokens": 4, "steps": 2, "batch_size": 4},
    }
    bench = build_benchmark(c.data_kwargs.to_dict(), c.variants.to_dict())
    return robust_plan(c, bench=bench)


@pytest.fixture(scope="module")
def target(plan):
    return plan.network.init(jax.random.key(1))


def test_the_three_methods_are_registered_with_their_defaults(plan):
    assert "eco" in extensions.WRAPPERS
    assert {"untrac", "synthetic_forget_set"} <= set(extensions.ANALYSES)
    s = methods.settings(plan, "untrac")
    assert s["train_steps"] == 4 and s["unlearn_learning_rate"] == 1e-3  # given, default
    with pytest.raises(ValueError, match=r"methods.untrac.*\['steps'\]"):
        extensions.settings("untrac", {"steps": 3})


def test_eco_wrapper_guards_the_target_without_changing_it(plan, target):
    network, variables, info = extensions.WRAPPERS["eco"](plan, target, key=jax.random.key(0))
    assert variables is target and network.name.endswith("+eco")
    assert len(info["sigma_history"]) == 3 and len(info["objective_history"]) == 3
    assert info["sigma"] >= 0.1  # ECO's floor is the starting sigma
    assert 0.0 <= info["flag_rate_retain"] <= 1.0 and 0.0 <= info["flag_rate_forget"] <= 1.0
    # The guard adds noise to flagged rows only: the share of retain rows it changes is at most
    # the classifier's retain flag rate over prompts and full rows (x2: rows are half of them).
    b = plan.bench
    x = b.lm.x[b.unlearn_retain]
    plain = plan.network.apply(target, x).logits
    guarded = network.apply(target, x).logits
    changed = ~np.all(np.isclose(plain, guarded, atol=1e-5), axis=(1, 2))
    assert np.all(np.isfinite(guarded))
    assert changed.mean() <= 2 * info["flag_rate_retain"] + 1e-6
    text = methods.eco_report({**info, "not_applicable": ["concept_vectors", "adversarial"]})
    assert "n/a in the table: concept_vectors, adversarial" in text


def test_untrac_analysis_ranks_author_datasets(plan):
    b = plan.bench
    rows = methods.qa_train_rows(b)
    # 20 authors x 2 facts + 4 utility facts, all trained on.
    assert len(rows) == 44 and set(rows) <= set(b.lm.train.tolist())
    r = extensions.ANALYSES["untrac"](plan, None, lambda *a: None)
    # 20 authors in 5 datasets of 4 authors x 2 facts.
    assert r["datasets"] == 5 and r["rows_per_dataset"] == 8
    assert len(r["exact"]) == len(r["untrac"]) == len(r["untrac_inv"]) == 5
    assert r["spearman_untrac"] == pytest.approx(attribution.spearman(r["untrac"], r["exact"]))
    assert r["spearman_inv"] == pytest.approx(attribution.spearman(r["untrac_inv"], r["exact"]))
    text = methods.untrac_report(r)
    # The head line, the header, its rule, one row per dataset, the Spearman line.
    assert "Spearman with exact retraining" in text and len(text.splitlines()) == 9


class _Artefacts:
    def __init__(self, variables):
        self.variables = jax.tree.map(lambda a: a[None], variables)

    def target(self):
        return self


def test_synthetic_forget_set_analysis(plan, target):
    b = plan.bench
    r = extensions.ANALYSES["synthetic_forget_set"](plan, _Artefacts(target), lambda *a: None)
    forget_authors = {b.corpus.authors[a].name for a in (18, 19)}
    assert set(r["authors"]) == forget_authors
    for a in r["authors"].values():
        assert 1 <= a["kept"] <= a["sampled"] == 2 * 13  # 13 prompt templates x 2 samples
    assert r["true"]["rows"] == len(b.lm.forget[plan.split])
    assert r["synthetic"]["rows"] == sum(a["kept"] for a in r["authors"].values())
    # "original" is the target's key-fact accuracy on the 4 forget QA facts.
    qa = np.arange(36, 40)  # forget10 = the records of authors 18, 19: QA rows 36..39
    correct = key_fact_accuracy(plan.network, target, b.lm.x[qa], b.lm.y[qa], b.key_mask[qa])
    assert r["original"]["forget_accuracy"] == pytest.approx(float(np.mean(correct)))
    for name in ("original", "true", "synthetic"):
        assert 0.0 <= r[name]["retain_accuracy"] <= 1.0
    assert "synthetic_forget_set: npo for 2 steps" in methods.synthetic_forget_report(r)


def test_table_marks_not_applicable_cells():
    recs = [
        Record("forget10", "target", 0, "ok", {"forget/qa": 1.0, "cv/cosine": 1.0}),
        Record("forget10", "eco", 0, "ok", {"forget/qa": 0.25}),
    ]
    lines = report_lib.table(recs, not_applicable={"eco": ["concept_vectors"]}).splitlines()
    eco_line = next(x for x in lines if x.startswith("forget10  eco"))
    assert eco_line.split()[3:5] == ["0.250", "n/a"]
    assert any("n/a: an inference-time wrapper (eco)" in x for x in lines)
