"""The robust-LM experiment (jaxunlearn.scenarios.lm_robust) on the :tiny corpus and model."""

import json
import math
import os

import numpy as np
import pytest

from experiments.configs import lm_robust
from jaxunlearn import rules as rules_lib
from jaxunlearn.scenarios.lm_robust import (
    build_benchmark,
    extensions,
    is_lm_robust_config,
    robust_plan,
    run_lm_robust_experiment,
)
from jaxunlearn.scenarios.lm_robust import plan as plan_lib
from jaxunlearn.scenarios.lm_robust import report as report_lib
from jaxunlearn.scenarios.report import Record


def tiny(**overrides):
    """The :tiny variant on one device, with top-level overrides."""
    c = lm_robust.get_config("tiny")
    c.data_parallel = False
    for k, v in overrides.items():
        c[k] = v
    return c


@pytest.fixture(scope="module")
def bench():
    c = tiny()
    return build_benchmark(c.data_kwargs.to_dict(), c.variants.to_dict())


def test_rows_forget_one_form_and_the_oracle_none(bench):
    b, lm = bench, bench.lm
    # 20 authors x 2 facts + 4 utility facts; forget10 = authors 18, 19 (4 facts).
    assert b.forget_records.tolist() == [36, 37, 38, 39]
    n_qa_train = 44
    forms = len(b.train_forms) - 1  # cloze and multiple choice besides QA
    assert len(lm.train) == n_qa_train + forms * 40 + len(b.graph.facts)
    forget = lm.forget[b.split]
    # Unlearning forgets the QA rows of the forget authors and every graph fact touching them.
    qa_forget = forget[forget < n_qa_train]
    assert [b.questions[i] for i in qa_forget] == [
        b.corpus.records[r].question for r in b.forget_records
    ]
    assert len(forget) == 4 + len(b.graph_forget)
    graph_start = len(lm.x) - len(b.graph.facts)  # graph rows come last
    for row in b.graph_forget:
        fact = b.graph.facts[int(row) - graph_start]
        assert {18, 19} & set(fact.entities)
    # The oracle never sees a forget author's fact, in any form, nor their graph facts.
    oracle = lm.retain[b.split]
    graph_start = len(lm.x) - len(b.graph.facts)  # graph rows come last
    assert len(oracle) == len(lm.train) - 4 * len(b.train_forms) - len(b.graph_forget)
    assert not set(lm.author[oracle[oracle < graph_start]]) & {18, 19}
    for r in oracle[oracle >= graph_start]:
        assert not {18, 19} & set(b.graph.facts[int(r) - graph_start].entities)
    # The rules' retain part is QA form only: QA rows of retain authors, utility, graph facts.
    ur = b.unlearn_retain
    assert np.all((ur < n_qa_train) | (ur >= graph_start))
    assert not np.intersect1d(ur, forget).size
    # Every dependence group of the retain graph facts shares that many entities.
    forget_facts = [int(r) - graph_start for r in b.graph_forget]
    for d, rows in b.graph_retain.items():
        for r in rows[:5]:
            i = int(r) - graph_start
            assert b.graph.dependence(i, forget_facts) == d
    # The last owner holds exactly the forget authors; its QA answers are watermarked.
    assert set(b.owners.owners[b.forget_owner].authors) == {18, 19}
    answers = [lm.answers[i] for i in qa_forget]
    assert answers == [b.owners.answer(b.forget_owner, int(r)) for r in b.forget_records]
    # A multiple-choice row answers with the true option.
    mc = b.form_sets["forget"]["multiple_choice"]
    assert mc["options_x"].shape[:2] == (4, 4) and mc["correct"].shape == (4,)


def test_plan_takes_every_registered_lm_rule():
    lm_rules = [n for n in rules_lib.names() if rules_lib.get(n).task == "language_model"]
    assert "npo" in lm_rules and "rocr" in lm_rules
    chosen = plan_lib.select_rules(("language_model",), ("gradient_ascent",), ("rmu",))
    assert chosen == (*[n for n in lm_rules if n != "rmu"], "gradient_ascent")
    # rule_defaults: a learning rate only for rules that take one; overrides merge hparams.
    entry = plan_lib.rule_entry(
        "rocr", {"epochs": 1, "hparams": {"learning_rate": 1e-3}}, {"hparams": {"layer": 0}}
    )
    assert entry == {"epochs": 1, "hparams": {"layer": 0}}
    entry = plan_lib.rule_entry(
        "npo", {"epochs": 1, "hparams": {"learning_rate": 1e-3}}, {"epochs": 2}
    )
    assert entry == {"epochs": 2, "hparams": {"learning_rate": 1e-3}}


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"audits": ("form_consistency", "nope")}, "`audits` names unknown"),
        ({"variants": {"train_forms": ("qa", "haiku")}}, "train_forms"),
        ({"variants": {"train_forms": ("cloze",)}}, "unlearn_form"),
        ({"analyses": ("untrac_not_registered",)}, "`analyses` names unregistered"),
        ({"rules": {"simnpo": {}}}, "not run"),
        ({"audit": {"gcg_budget": 0}}, "audit.gcg_budget"),
        ({"dataset": "cifar10"}, "fictitious_authors"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_configs_name_the_setting(bench, override, match):
    c = tiny().to_dict()
    c.update(override)
    with pytest.raises(ValueError, match=match):
        robust_plan(c, bench=bench)


def test_is_lm_robust_config():
    assert is_lm_robust_config(tiny()) and not is_lm_robust_config({"track": "lm"})


def _records():
    def rec(method, seed, **m):
        return Record("forget10", method, seed, "ok", m)

    return [
        rec("target", 0, **{"forget/qa": 1.0, "cv/cosine": 1.0, "icl/k_shot": 0.0}),
        rec("retain", 0, **{"forget/qa": 0.2, "cv/cosine": 0.0, "icl/k_shot": 0.05}),
        rec("npo", 0, **{"forget/qa": 0.5, "cv/cosine": 0.9, "icl/k_shot": 0.0}),
        rec("npo", 1, **{"forget/qa": 0.7, "cv/cosine": 0.9, "icl/k_shot": 0.0}),
    ]


def test_knowledge_left_hand_case(tmp_path):
    methods, metrics, means, share = report_lib.knowledge_left(_records())
    assert methods == ["target", "retain", "npo"]
    assert metrics == ["forget/qa", "icl/k_shot", "cv/cosine"]
    np.testing.assert_allclose(means[2], [0.6, 0.0, 0.9])
    # (0.6 - 0.2) / (1.0 - 0.2) = 0.5; (0.9 - 0) / (1 - 0) = 0.9; icl/k_shot's ends differ by
    # 0.05 < MIN_SPAN: not normalised.
    nan = np.nan
    np.testing.assert_allclose(share, [[1, nan, 1], [0, nan, 0], [0.5, nan, 0.9]])
    text = report_lib.table(_records())
    assert "0.600±0.100" in text and "cv/cosine [concept_vectors]" in text
    assert os.path.isfile(report_lib.heatmap(_records(), str(tmp_path / "h.png")))


def test_extension_registries_reject_duplicates():
    @extensions.register_analysis("_test_analysis")
    def first(plan, artefacts, log):
        return {}

    with pytest.raises(ValueError, match="already registered"):
        extensions.register_analysis("_test_analysis")(lambda p, a, log: {})
    del extensions.ANALYSES["_test_analysis"]


def test_tiny_run_end_to_end_and_rerun_restores(bench, tmp_path, capsys):
    calls = []

    @extensions.register_analysis("_count_rules")
    def count_rules(plan, artefacts, log):
        calls.append(1)
        return {"rules": len(plan.rules)}

    @extensions.register_wrapper("_identity")
    def identity(plan, target, *, key):
        return plan.network, target

    try:
        c = tiny(
            extra_rules=("gradient_ascent",),
            analyses=("_count_rules",),
            wrappers=("_identity",),
        )
        c.rules = {"gradient_ascent": c.rules["gradient_ascent"]}
        out = run_lm_robust_experiment(c, str(tmp_path), verbose=False, bench=bench)
        recs = {(r.method, r.seed): r for r in out["records"]}
        assert set(recs) == {
            ("target", 0),
            ("retain", 0),
            ("gradient_ascent", 0),
            ("gradient_ascent", 1),
            ("_identity", 0),
        }
        t, ident = recs[("target", 0)].metrics, recs[("_identity", 0)].metrics
        # Every audit's headline is present; the identity wrapper is the target, audited again.
        for _, metric, _, _ in report_lib.COLUMNS:
            assert metric in t, metric
        for k, v in t.items():
            assert math.isclose(v, ident[k], abs_tol=1e-5) or (
                math.isnan(v) and math.isnan(ident[k])
            )
        # The target's concept vectors are its own: cosine 1, no change; JS(retain, retain) = 0.
        assert t["cv/cosine"] == pytest.approx(1.0) and t["cv/projection_change"] == 0.0
        assert recs[("retain", 0)].metrics["js/forget"] == pytest.approx(0.0, abs=1e-6)
        assert 0.0 <= t["probe/last"] <= 1.0 and t["probe/chance"] == 0.25
        # Gradient ascent moved the weights.
        assert recs[("gradient_ascent", 0)].metrics["cv/l2"] > 0
        assert out["analyses"] == {"_count_rules": {"rules": 1}}
        data = json.load(open(tmp_path / "results.json"))
        assert len(data["records"]) == 5 and len(data["concepts"]) == 2
        assert os.path.isfile(tmp_path / "heatmap.png")
        assert "gradient_ascent" in open(tmp_path / "results.txt").read()
        # A rerun restores the models and every method's records: same numbers, nothing rerun.
        again = run_lm_robust_experiment(c, str(tmp_path), verbose=False, bench=bench)
        assert [r.metrics for r in again["records"]] == [r.metrics for r in out["records"]]
        assert len(calls) == 2  # analyses always run (they own their caching)
    finally:
        extensions.ANALYSES.pop("_count_rules", None)
        extensions.WRAPPERS.pop("_identity", None)


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="no-such-variant"):
        lm_robust.get_config("no-such-variant")
