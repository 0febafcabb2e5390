"""The per-model audit registry over N models: AuditContext rows, run_models, run."""

import functools

import jax
import numpy as np
import pytest

from jaxunlearn import audit, data, models
from jaxunlearn.audit import registry

CLASSIFICATION_AUDITS = (
    "accuracy",
    "mia_efficacy",
    "mia_auc",
    "runtime",
    "representation",
    "zrf",
    "relearn",
)


@functools.cache
def _problem():
    """A synthetic 3-class problem and three randomly initialised MLPs per model kind (no
    training: the audits only need N different models)."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)).astype(np.float32)
    y_train, y_test = rng.integers(0, 3, 150), rng.integers(0, 3, 90)
    x_train = centres[y_train] + rng.normal(size=(150, 8)).astype(np.float32)
    x_test = centres[y_test] + rng.normal(size=(90, 8)).astype(np.float32)
    ds = data.Dataset(
        "blobs", x_train, y_train.astype(np.int32), x_test, y_test.astype(np.int32), 3
    )
    split = data.make_split(ds, data.ForgetSpec("class", classes=(0,)), seed=0)
    net = models.make_network("mlp", input_shape=(8,), num_outputs=3, hidden=(16,))
    stacks = {
        kind: jax.vmap(net.init)(jax.random.split(jax.random.key(k), 3))
        for k, kind in enumerate(("unlearned", "original", "oracle"))
    }
    return ds, split, net, stacks


def _row(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


def _shared(**kwargs):
    ds, split, net, stacks = _problem()
    predictions = audit.make_predictions(net, ds, split, stacks)
    groups = {k: k for k in stacks}
    return audit.AuditContext(net, ds, split, predictions=predictions, groups=groups, **kwargs)


def test_run_models_equals_each_row_audited_alone():
    ds, split, net, stacks = _problem()
    ctx = _shared(runtime_s=2.5, compile_s=1.0, extra={"seed": np.arange(3)})
    assert ctx.num_models == 3
    assert ctx.logits("forget").shape == (3, len(split.forget), 3)
    assert ctx.features("retain", "oracle").shape[:2] == (3, len(split.retain))
    metrics = audit.run_models(CLASSIFICATION_AUDITS, ctx)
    assert all(v.shape == (3,) for v in metrics.values())
    assert len(set(metrics["RA"].tolist())) > 1  # three different models, three rows
    np.testing.assert_array_equal(metrics["runtime_s"], [2.5] * 3)
    for i in range(3):
        # The same shared arrays, narrowed to row i: bit for bit the vectorised values.
        assert audit.run(CLASSIFICATION_AUDITS, ctx.take([i])) == {
            k: v[i] for k, v in metrics.items()
        }
        # A one-model context built from row i's variables predicts again: equal to rounding.
        alone = audit.AuditContext(
            net,
            ds,
            split,
            _row(stacks["unlearned"], i),
            original=_row(stacks["original"], i),
            oracle=_row(stacks["oracle"], i),
            runtime_s=2.5,
            compile_s=1.0,
            extra={"seed": i},
        )
        one = audit.run(CLASSIFICATION_AUDITS, alone)
        assert set(one) == set(metrics)
        for k, v in one.items():
            assert v == pytest.approx(metrics[k][i], rel=1e-5, abs=1e-4), k


def test_rows_seeds_and_per_row_settings():
    ctx = _shared(
        rows=np.array([2, 0]),
        runtime_s=np.array([1.0, 2.0, 3.0]),
        extra={"seed": np.array([7, 8, 9])},
    )
    full = _shared()
    np.testing.assert_array_equal(ctx.logits("test"), full.logits("test")[[2, 0]])
    np.testing.assert_array_equal(ctx.seeds, [9, 7])
    np.testing.assert_array_equal(audit.run_models(("runtime",), ctx)["runtime_s"], [3.0, 1.0])
    np.testing.assert_array_equal(full.seeds, [0, 0, 0])
    sub = ctx.take(np.array([False, True]))
    np.testing.assert_array_equal(sub.rows, [0])
    assert jax.tree.leaves(sub.models("oracle"))[0].shape[0] == 1
    np.testing.assert_array_equal(
        jax.tree.leaves(ctx.model("original", 0))[0],
        jax.tree.leaves(_problem()[3]["original"])[0][2],
    )
    assert full.logits("forget") is full.predictions.logits("unlearned", "forget")  # no copy


def test_outputs_finite_flags_each_model():
    ds, split, net, stacks = _problem()
    broken = jax.tree.map(lambda x: x.at[1].set(np.nan), stacks["unlearned"])
    predictions = audit.make_predictions(net, ds, split, {"runs": broken})
    ctx = audit.AuditContext(net, ds, split, predictions=predictions, groups={"unlearned": "runs"})
    np.testing.assert_array_equal(ctx.outputs_finite(), [True, False, True])
    with pytest.raises(ValueError, match="NaN or inf"):
        audit.run_models(("accuracy",), ctx)
    ok = audit.run_models(("accuracy",), ctx.take(ctx.outputs_finite()))
    assert ok["RA"].shape == (2,)
    # run_finite: the finite models audited together, each as run_models gives it; None elsewhere.
    finite = audit.run_finite(("accuracy",), ctx)
    assert finite[1] is None and finite[0]["RA"] == ok["RA"][0] and finite[2]["RA"] == ok["RA"][1]
    flagged = audit.run_finite(("accuracy",), ctx, [True, True, False])  # model 2 flagged
    assert flagged[1] is None and flagged[2] is None and flagged[0] == finite[0]
    assert audit.run_finite(("accuracy",), ctx, False) == [None, None, None]


def test_run_is_for_one_model_and_contexts_are_checked(monkeypatch):
    ds, split, net, stacks = _problem()
    with pytest.raises(ValueError, match="run_models"):
        audit.run(("accuracy",), _shared())
    with pytest.raises(ValueError, match="oracle model"):
        one = _row(stacks["unlearned"], 0)
        audit.run(("relearn",), audit.AuditContext(net, ds, split, one, original=one))
    with pytest.raises(ValueError, match="not both"):
        _shared(variables=_row(stacks["unlearned"], 0))
    with pytest.raises(ValueError, match="out of range"):
        _shared(rows=np.array([3]))
    with pytest.raises(ValueError, match="unlearned"):
        audit.AuditContext(net, ds, split, predictions=_shared().predictions, groups={})
    with pytest.raises(ValueError, match="needs the model under audit"):
        audit.AuditContext(net, ds, split)
    # An audit must give one value per model.
    monkeypatch.setitem(registry._REGISTRY, "scalar", lambda ctx: {"x": 1.0})
    with pytest.raises(ValueError, match=r"'scalar' gave 'x' of shape \(\)"):
        audit.run_models(("scalar",), _shared())
