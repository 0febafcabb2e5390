"""Gold-standard ensemble audits (competition score, KLoM), U-LiRA end to end, the gold config."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import gold as gold_config
from jaxunlearn import audit, data, models, rules
from jaxunlearn.audit import gold
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
    arrays = gold.per_example_arrays(ctx)
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


def test_bad_ensembles_are_rejected_with_the_argument_named():
    with pytest.raises(ValueError, match="equally many unlearned and oracle"):
        audit.run_ensemble(("competition",), _context(np.ones(4), np.ones(5)))
    with pytest.raises(ValueError, match="at least 2 unlearned models"):
        audit.run_ensemble(("klom",), _context(np.ones(1), np.ones(5)))
    with pytest.raises(ValueError, match="unlearned ensemble .* NaN or inf"):
        audit.run_ensemble(("competition",), _context([1.0, np.nan, 2.0], np.ones(3)))
    with pytest.raises(ValueError, match="member"):
        gold.ulira_attack(np.zeros((6, 4)), np.zeros((6, 5), bool))
    with pytest.raises(ValueError, match="NaN"):
        gold.ulira_attack(np.full((6, 4), np.nan), np.zeros((6, 4), bool))


def test_ulira_runs_end_to_end_on_a_tiny_problem():
    ds = data.load("digits")
    split = data.make_split(ds, data.ForgetSpec(kind="random", count=40), seed=0)
    net = models.make_network("mlp", input_shape=ds.input_shape, num_outputs=10, hidden=(16,))
    out = gold.run_ulira(
        net,
        ds,
        split,
        train_rule=rules.finetune(net.apply, learning_rate=0.05, train_mode=True),
        train_epochs=2,
        train_batch_size=64,
        rule=rules.gradient_ascent(net.apply, learning_rate=1e-3),
        batch_sizes={"forget": 8},
        num_steps=4,
        num_shadows=6,
        num_targets=20,
    )
    for name in ("auc", "tpr_at_1pct_fpr", "auc_before", "tpr_at_1pct_fpr_before"):
        assert 0.0 <= out[name] <= 1.0
    assert out["scores"].shape == out["member"].shape == (6, 20)
    assert np.isfinite(out["scores"]).all() and set(out["targets"]) <= set(split.forget)


def test_gold_config_validates_at_full_size():
    p = plan(gold_config.get_config())
    assert p.seeds == 32 and p.ensemble_audits == ("competition", "klom")
    assert p.ulira["shadows"] == 16 and p.ulira["scenarios"] == ("random_10pct",)
    assert set(gold_config.PER_MODEL_AUDITS) <= set(audit.names())


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"ulira_shadows": 5}, "ulira_shadows"),
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
    assert 0.0 <= ga["ulira_auc"] <= 1.0 and 0.0 <= by_method[("original", 0)]["ulira_auc"] <= 1
    assert ga["competition_score"] == by_method[("gradient_ascent", 3)]["competition_score"]
    with np.load(tmp_path / "ensemble" / "random_10pct" / "gradient_ascent.npz") as z:
        assert z["epsilon"].shape == z["forget_index"].shape
        assert z["confidence_oracle"].shape == (4, len(z["forget_index"]))
    assert os.path.getsize(tmp_path / "per_example.png") > 10_000
