"""Ensemble audits (competition score, KLoM, U-LiRA), the gold config end to end."""

import jax.numpy as jnp
import numpy as np
import pytest
from report_testing import assert_png_with_content

from experiments.configs import gold as gold_config
from jaxunlearn import audit, ensemble
from jaxunlearn.audit import ensemble_audits
from jaxunlearn.core.types import Network, Outputs
from jaxunlearn.data.datasets import Dataset
from jaxunlearn.data.forget import Split
from jaxunlearn.scenarios import plan, run_experiment

C = 5


def _scaled_one_hot_network() -> Network:
    """logits = s * x for one-hot inputs x: every example's margin is ``s - log(C - 1)``."""

    def apply(variables, x, *, train=False):
        del train
        logits = variables["params"]["s"] * x
        return Outputs(logits, logits)

    return Network(lambda key: {"params": {"s": jnp.ones(())}}, apply, "scaled", C)


def _context(unlearned_scales, oracle_scales, *, records=None) -> audit.EnsembleContext:
    y = np.arange(40) % C
    x = np.eye(C, dtype=np.float32)[y]
    ds = Dataset("one_hot", x, y.astype(np.int32), x[:10], y[:10].astype(np.int32), C)
    split = Split(np.arange(10), np.arange(10, 40), np.arange(10), np.arange(0))
    stack = lambda s: {"params": {"s": jnp.asarray(s, jnp.float32)}}
    n_u, n_o = len(unlearned_scales), len(oracle_scales)
    return audit.EnsembleContext(
        network=_scaled_one_hot_network(),
        dataset=ds,
        split=split,
        unlearned=stack(unlearned_scales),
        oracle=stack(oracle_scales),
        records=records or [{"RA": 90.0, "TA": 80.0}] * n_u,
        oracle_records=[{"RA": 90.0, "TA": 80.0}] * n_o,
        method="m",
    )


def test_identical_ensembles_score_full_and_klom_zero():
    scales = np.linspace(2.0, 6.0, 8)
    ctx = _context(scales, scales)
    metrics = audit.run_ensemble(("competition", "klom"), ctx)
    assert metrics["epsilon_mean"] == 0.0 and metrics["forget_score"] == 1.0
    assert metrics["competition_score"] == pytest.approx(1.0)
    for part in ("forget", "retain", "test"):
        assert metrics[f"klom_{part}_mean"] == 0.0 and metrics[f"klom_{part}_p95"] == 0.0
    arrays = ensemble_audits.per_example_arrays(ctx)
    assert arrays["epsilon"].shape == (10,) and arrays["confidence_unlearned"].shape == (8, 10)
    assert arrays["klom_retain"].shape == (30,) and len(arrays["retain_sample"]) == 30


def test_separated_ensembles_score_zero_and_accuracy_ratios_scale_the_score():
    rng = np.random.default_rng(0)
    ctx = _context(10 + rng.uniform(0, 1, 8), rng.uniform(0, 1, 8))
    metrics = audit.run_ensemble(("competition", "klom"), ctx)
    assert metrics["epsilon_median"] == 50.0 and metrics["forget_score"] == 0.0
    assert metrics["competition_score"] == 0.0
    assert metrics["klom_forget_mean"] > 5.0
    # Same confidences, worse accuracies: the final score scales by RA_u/RA_r * TA_u/TA_r.
    scales = np.linspace(2.0, 6.0, 8)
    worse = _context(scales, scales, records=[{"RA": 45.0, "TA": 40.0}] * 8)
    assert audit.run_ensemble(("competition",), worse)["competition_score"] == pytest.approx(0.25)


def test_klom_published_is_the_other_direction():
    rng = np.random.default_rng(1)
    ctx = _context(3 + rng.uniform(0, 1, 8), 2 + rng.uniform(0, 2, 6))
    metrics = audit.run_ensemble(("klom", "klom_published"), ctx)
    arrays = ensemble_audits.per_example_arrays(ctx)
    u = audit.margins(np.asarray(ctx.logits("forget", "unlearned")), ctx.data("forget")[1])
    o = audit.margins(np.asarray(ctx.logits("forget", "oracle")), ctx.data("forget")[1])
    np.testing.assert_array_equal(arrays["klom_forget"], audit.klom(u, o))
    np.testing.assert_array_equal(
        arrays["klom_pub_forget"], audit.klom(u, o, direction="oracle_vs_unlearned")
    )
    assert metrics["klom_pub_forget_mean"] != metrics["klom_forget_mean"]
    assert {"klom_pub_retain_p95", "klom_pub_test_mean"} <= set(metrics)


def test_bad_ensembles_are_rejected_with_the_argument_named():
    with pytest.raises(ValueError, match="equally many unlearned and oracle"):
        audit.run_ensemble(("competition",), _context(np.ones(4), np.ones(5)))
    with pytest.raises(ValueError, match="at least 2 unlearned models"):
        audit.run_ensemble(("klom",), _context(np.ones(1), np.ones(5)))
    with pytest.raises(ValueError, match="unlearned ensemble .* NaN or inf"):
        audit.run_ensemble(("competition",), _context([1.0, np.nan, 2.0], np.ones(3)))
    with pytest.raises(ValueError, match="member"):
        ensemble_audits.ulira_attack(np.zeros((6, 4)), np.zeros((6, 5), bool))
    with pytest.raises(ValueError, match="NaN"):
        ensemble_audits.ulira_attack(np.full((6, 4), np.nan), np.zeros((6, 4), bool))


def _ulira_context(member, in_logit: float, out_logit: float) -> audit.EnsembleContext:
    """An ensemble context whose shadows come from a provider, as the runner's artefacts give
    them: shadow ``m`` has logit ``in_logit`` on the true class of its in examples (``member``)
    and ``out_logit`` on the others (examples are one-hot inputs, weights one row per example)."""
    num_shadows, k = member.shape
    y = np.arange(k) % C
    x = np.eye(k, dtype=np.float32)
    ds = Dataset("rows", x, y.astype(np.int32), x[:4], y[:4].astype(np.int32), C)
    split = Split(np.arange(k), np.arange(0), np.arange(4), np.arange(0))
    net = Network(
        lambda key: {"params": {"w": jnp.zeros((k, C))}},
        lambda v, x, *, train=False: Outputs(x @ v["params"]["w"], x),
        "rows",
        C,
    )
    true = np.eye(C, dtype=np.float32)[y]  # [k, C]
    w = np.where(member[:, :, None], in_logit, out_logit) * true[None]
    shadows = ensemble.Shadows(
        {"params": {"w": jnp.asarray(w)}}, member, np.arange(k), split.retain
    )
    zeros = {"params": {"w": jnp.zeros((3, k, C))}}
    return audit.EnsembleContext(
        network=net,
        dataset=ds,
        split=split,
        unlearned=zeros,
        oracle=zeros,
        method="m",
        shadows=lambda: shadows,
    )


def test_ulira_is_a_registered_audit_of_the_shadows_the_context_provides():
    member = ensemble.membership_design(8, 20, seed=0)
    # Shadows that still know their in examples: every unlearned example is exposed.
    ctx = _ulira_context(member, in_logit=6.0, out_logit=1.0)
    metrics = audit.run_ensemble(("ulira",), ctx)
    assert metrics == {"ulira_auc": 1.0, "ulira_tpr_at_1pct_fpr": 1.0}
    arrays = ensemble_audits.per_example_arrays(ctx)
    assert arrays["ulira_scores"].shape == (8, 20) and (arrays["ulira_member"] == member).all()
    # Shadows that forgot (in examples look like never-seen ones): the attack is a coin flip.
    ctx = _ulira_context(member, in_logit=1.0, out_logit=1.0)
    assert audit.run_ensemble(("ulira",), ctx)["ulira_auc"] == 0.5
    # No shadows for this method: no metrics, nothing computed.
    ctx.shadows = lambda: None
    assert audit.run_ensemble(("ulira",), ctx) == {}


def test_gold_config_validates_at_full_size():
    p = plan(gold_config.get_config())
    assert p.seeds == 32 and p.originals == "per_run"
    assert p.ensemble_audits == ("competition", "klom", "klom_published", "ulira")
    assert p.ulira["shadows"] == 16 and p.ulira["scenarios"] == ("random_10pct",)
    assert set(gold_config.PER_MODEL_AUDITS) <= set(audit.names())


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"ulira_shadows": 5}, "ulira_shadows"),
        ({"ulira_shadows": 0}, "names 'ulira' and `ulira_shadows` is positive"),
        ({"ensemble_audits": ("competition",)}, "names 'ulira'"),
        ({"ulira_rules": ("retrain",)}, "ulira_rules"),
        ({"ulira_scenarios": ("nowhere",)}, "ulira_scenarios"),
        ({"ulira_targets": 1000}, "ulira_targets"),
        ({"ensemble_audits": ("competition", "vibes")}, "valid ensemble audits"),
        ({"seeds": 1}, "seeds"),
    ],
)
def test_bad_gold_options_fail_before_compute(overrides, message):
    c = gold_config.get_config("tiny")
    for k, v in overrides.items():
        c[k] = v
    with pytest.raises(ValueError, match=message):
        plan(c)


def test_gold_experiment_records_ensemble_metrics_arrays_and_plot(tmp_path):
    c = gold_config.get_config("tiny")
    c.data_parallel = False
    c.scenarios = {"random_10pct": c.scenarios.random_10pct.to_dict()}
    c.rules = {"retrain": {}, "gradient_ascent": c.rules.gradient_ascent.to_dict()}
    c.audits = ("accuracy",)
    records = run_experiment(c, str(tmp_path), verbose=False)
    by_method = {(r.method, r.seed): r.metrics for r in records}
    ga = by_method[("gradient_ascent", 0)]
    for name in (
        "competition_score",
        "forget_score",
        "epsilon_mean",
        "klom_forget_p95",
        "klom_test_mean",
        "ulira_auc",
        "ulira_tpr_at_1pct_fpr",
    ):
        assert np.isfinite(ga[name]), name
    assert ga["competition_score"] == by_method[("gradient_ascent", 3)]["competition_score"]
    for method in ("original", "gradient_ascent"):
        with np.load(tmp_path / "ensemble" / "random_10pct" / f"{method}.npz") as z:
            assert z["epsilon"].shape == z["forget_index"].shape
            assert z["confidence_oracle"].shape == (4, len(z["forget_index"]))
            # U-LiRA: 6 shadows x 64 targets of the forget set; the recorded AUC is the ROC of
            # the stored scores (the original's: of shadows that never unlearned).
            assert z["ulira_scores"].shape == z["ulira_member"].shape == (6, 64)
            assert set(z["ulira_targets"]) <= set(z["forget_index"])
            auc = audit.roc_auc(z["ulira_scores"], z["ulira_member"])
            assert by_method[(method, 0)]["ulira_auc"] == pytest.approx(auc)
    assert "ulira_auc" not in by_method[("retrain", 0)]
    assert_png_with_content(str(tmp_path / "per_example.png"))
