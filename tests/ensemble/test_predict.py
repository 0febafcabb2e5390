"""The one predict path: vmapped, batched, cached per (model group, data part), traced once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import audit, data, ensemble, models
from jaxunlearn.core.types import Network


def _counting_network(net: Network):
    traces = []

    def apply(variables, x, *, train=False):
        traces.append(x.shape)  # runs at trace time only
        return net.apply(variables, x, train=train)

    return net._replace(apply=apply), traces


@pytest.fixture(scope="module")
def problem():
    ds = data.load("digits")
    net = models.make_network("mlp", input_shape=ds.input_shape, num_outputs=10, hidden=(16,))
    variables = jax.vmap(net.init)(ensemble.seed_keys(3))
    return ds, net, variables


def test_predictor_equals_each_model_applied_alone_and_traces_few_shapes(problem):
    ds, net, variables = problem
    counting, traces = _counting_network(net)
    predictor = ensemble.Predictor(counting, batch_size=64)
    x = ds.x_test[:150]  # two full batches of 64 and a short one of 22, padded to 32
    logits, features = predictor(variables, x)
    assert logits.shape == (3, 150, 10) and features.shape == (3, 150, 16)
    for m in range(3):
        single = net.apply(jax.tree.map(lambda v, m=m: v[m], variables), jnp.asarray(x))
        np.testing.assert_allclose(logits[m], single.logits, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(features[m], single.features, rtol=1e-5, atol=1e-5)
    assert sorted(shape[0] for shape in traces) == [32, 64]  # one trace per batch shape
    n_traces = len(traces)
    predictor(variables, ds.x_test[150:300])  # same shapes: no new trace
    predictor(variables, ds.x_test[:20])  # 20 -> padded to 32: compiled already
    assert len(traces) == n_traces
    empty, _ = predictor(variables, x[:0])
    assert empty.shape == (3, 0, 10)


def test_predictions_are_computed_once_per_group_and_part(problem):
    ds, net, variables = problem
    predictions = ensemble.Predictions(
        ensemble.Predictor(net), parts={"test": ds.x_test[:40]}, groups={"a": variables}
    )
    first = predictions.logits("a", "test")
    assert predictions.logits("a", "test") is first  # the cached array, not a recomputation
    feats = predictions.features("a", "test")
    assert feats.shape == (3, 40, 16) and predictions.features("a", "test") is feats
    assert predictions.logits("a", "test") is first  # features did not replace the logits
    # A subset part is sliced from its part's cached outputs, or computed alone: the same values.
    rows = np.array([3, 0, 17])
    predictions.add_subset("test@rows", "test", rows)
    np.testing.assert_array_equal(predictions.logits("a", "test@rows"), first[:, rows])
    predictions.add_group("b", variables)
    np.testing.assert_allclose(predictions.logits("b", "test@rows"), first[:, rows], atol=1e-6)
    np.testing.assert_array_equal(predictions.logits("b", "test"), first)
    predictions.drop_group("b")
    with pytest.raises(ValueError, match="Unknown model group 'b'"):
        predictions.logits("b", "test")
    with pytest.raises(ValueError, match="Unknown data part 'train'"):
        predictions.logits("a", "train")
    with pytest.raises(ValueError, match="already defined"):
        predictions.add_group("a", variables)
    with pytest.raises(ValueError, match="leading model axis"):
        predictions.add_group("scalar", {"w": jnp.float32(1.0)})


def test_per_model_contexts_read_their_rows_of_the_shared_arrays(problem):
    ds, net, variables = problem
    split = data.make_split(ds, data.ForgetSpec("class", classes=(0,)))
    predictions = audit.make_predictions(net, ds, split, {"runs": variables})
    ctx = audit.AuditContext(net, ds, split, predictions=predictions, groups={"unlearned": "runs"})
    shared = audit.run_models(("accuracy",), ctx)
    shared = [{k: float(v[m]) for k, v in shared.items()} for m in range(3)]
    alone = [
        audit.run(
            ("accuracy",),
            audit.AuditContext(net, ds, split, jax.tree.map(lambda v, m=m: v[m], variables)),
        )
        for m in range(3)
    ]
    assert shared == alone
    assert len({r["RA"] for r in shared}) > 1  # three different models, three rows
