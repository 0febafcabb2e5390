"""SwAV: Sinkhorn-Knopp and the swapped-prediction loss against NumPy loops on tiny inputs, the
prototypes' freezing and normalisation, bad settings."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import models
from jaxunlearn import repr as R
from jaxunlearn.repr import clustering


def sinkhorn_loop(scores, epsilon, iterations):
    """main_swav.py's distributed_sinkhorn on one worker, element by element."""
    b, k = scores.shape
    q = np.exp(np.asarray(scores, np.float64) / epsilon).T  # [K, B]
    q = q / q.sum()
    for _ in range(iterations):
        for i in range(k):
            q[i] = q[i] / q[i].sum() / k
        for j in range(b):
            q[:, j] = q[:, j] / q[:, j].sum() / b
    return (q * b).T


SCORES = np.array([[0.9, 0.1, -0.3], [0.2, 0.8, 0.0], [0.5, 0.4, -0.9], [-0.1, 0.3, 0.7]])


@pytest.mark.parametrize("iterations", [0, 1, 3])
def test_sinkhorn_matches_the_reference_loop(iterations):
    got = np.asarray(
        clustering.sinkhorn_knopp(jnp.asarray(SCORES), epsilon=0.5, iterations=iterations)
    )
    np.testing.assert_allclose(got, sinkhorn_loop(SCORES, 0.5, iterations), rtol=1e-5)
    if iterations:
        np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-5)  # every example is assigned
    # With epsilon 0.05 the exponentials reach e^18; subtracting the max changes nothing.
    np.testing.assert_allclose(
        clustering.sinkhorn_knopp(jnp.asarray(SCORES), epsilon=0.05, iterations=3),
        sinkhorn_loop(SCORES, 0.05, 3),
        rtol=1e-4,
        atol=1e-7,
    )


def test_sinkhorn_spreads_a_batch_that_prefers_one_prototype():
    # All four examples score prototype 0 highest; the codes still share the batch out.
    scores = jnp.asarray([[1.0, 0.0], [0.9, 0.1], [0.8, 0.3], [0.7, 0.6]])
    q = np.asarray(clustering.sinkhorn_knopp(scores, epsilon=0.05, iterations=50))
    np.testing.assert_allclose(q.sum(0), [2.0, 2.0], rtol=1e-2)  # B / K per prototype
    assert q[0, 0] > 0.99 and q[3, 1] > 0.99  # the most and least prototype-0 examples


def test_swav_loss_on_two_views_of_two_examples_and_three_prototypes():
    scores = np.array(
        [[[0.9, 0.1, -0.3], [0.2, 0.8, 0.0]], [[0.5, 0.4, -0.9], [-0.1, 0.3, 0.7]]]
    )  # [V=2, B=2, K=3]
    t, eps = 0.1, 0.05

    def log_softmax(row):
        row = row / t
        return row - np.log(np.exp(row).sum())

    expected = 0.0
    for a, v in ((0, 1), (1, 0)):
        q = sinkhorn_loop(scores[a], eps, 3)
        expected += -np.mean([np.sum(q[b] * log_softmax(scores[v, b])) for b in range(2)])
    expected /= 2
    got = clustering.swav_loss(jnp.asarray(scores), temperature=t, epsilon=eps, iterations=3)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
    # Multi-crop: a third (local) view predicts both codes and is never assigned.
    three = np.concatenate([scores, scores[:1] * 0.5], 0)
    local = [log_softmax(three[2, b]) for b in range(2)]
    expected3 = 0.0
    for a in (0, 1):
        q = sinkhorn_loop(three[a], eps, 3)
        other = 1 - a
        sub = -np.mean([np.sum(q[b] * log_softmax(three[other, b])) for b in range(2)])
        sub += -np.mean([np.sum(q[b] * local[b]) for b in range(2)])
        expected3 += sub / 2
    got3 = clustering.swav_loss(jnp.asarray(three), temperature=t, epsilon=eps, num_assigned=2)
    np.testing.assert_allclose(float(got3), expected3 / 2, rtol=1e-5)
    # The codes are targets: no gradient flows through them.
    grad = jax.grad(lambda s: clustering.swav_loss(s, temperature=t))(jnp.asarray(scores))
    q0 = clustering.sinkhorn_knopp(jnp.asarray(scores[0]), epsilon=eps)
    p1 = jax.nn.softmax(jnp.asarray(scores[1]) / t, -1)
    np.testing.assert_allclose(grad[1], (p1 - q0) / t / 2 / 2, rtol=1e-4, atol=1e-6)


@functools.cache
def _net():
    backbone = models.make_network("mlp", input_shape=(8, 8, 1), num_outputs=10, hidden=(16,))
    return R.encoder("swav", backbone, width=16)


def test_prototypes_are_normalised_and_frozen_for_the_first_steps():
    net = _net()
    rule = R.make(
        "swav",
        net,
        n_prototypes=5,
        freeze_prototypes_steps=2,
        num_local_views=1,
        views="identity",
        local_views="identity",
    )
    v = net.init(jax.random.key(0))
    s = rule.init(v, key=jax.random.key(1))
    assert s.prototypes.shape == (128, 5)
    np.testing.assert_allclose(np.linalg.norm(s.prototypes, axis=0), 1.0, rtol=1e-5)
    x = jax.random.uniform(jax.random.key(2), (8, 8, 8, 1))
    update = jax.jit(lambda v, s, k: rule.update(v, s, {"retain": {"x": x}}, key=k))
    protos = [s.prototypes]
    for i in range(3):
        v, s, m = update(v, s, jax.random.key(10 + i))
        assert np.isfinite(float(m["loss"])) and 0 < float(m["code_entropy"]) <= np.log(5) + 1e-5
        protos.append(s.prototypes)
    # Frozen: only renormalised (rounding); then released.
    np.testing.assert_allclose(protos[1], protos[0], atol=1e-6)
    np.testing.assert_allclose(protos[2], protos[0], atol=1e-6)
    assert float(jnp.abs(protos[3] - protos[2]).max()) > 1e-4
    assert int(s.step.count) == 3


@pytest.mark.parametrize(
    "setting, value",
    [
        ("temperature", 0.0),
        ("temperature", -0.1),
        ("epsilon", 0.0),
        ("epsilon", -0.05),
        ("n_prototypes", 1),
        ("sinkhorn_iterations", 0),
        ("num_views", 1),
    ],
)
def test_bad_settings_name_the_setting(setting, value):
    with pytest.raises(ValueError, match=f"`{setting}`"):
        R.make("swav", _net(), **{setting: value})


# --------------------------------------------------------------------------- DeeperCluster


def test_spherical_kmeans_on_two_hand_made_groups():
    points = jnp.asarray([[1.0, 0.1], [2.0, 0.0], [1.0, -0.1], [0.1, 1.0], [0.0, 3.0], [9.0, 9.0]])
    weights = jnp.asarray([1.0, 1.0, 1.0, 1.0, 1.0, 0.0])  # the last row is not in the bank
    # One seed per group and one that no point is nearest to (an empty cluster keeps it).
    seeds = jnp.asarray([[1.0, 0.5], [0.5, 1.0], [-1.0, 0.0]])
    centroids, assign = clustering.spherical_kmeans(points, weights, seeds, iterations=3)
    np.testing.assert_array_equal(assign[:5], [0, 0, 0, 1, 1])
    unit = np.asarray(points) / np.linalg.norm(points, axis=1, keepdims=True)
    for c, rows in ((0, [0, 1, 2]), (1, [3, 4])):
        mean = unit[rows].sum(0)  # the unweighted row 5 would pull both toward the diagonal
        np.testing.assert_allclose(centroids[c], mean / np.linalg.norm(mean), rtol=1e-5)
    np.testing.assert_allclose(centroids[2], [-1.0, 0.0])


def test_pca_whiten_gives_unit_covariance_over_the_weighted_rows():
    rng = np.random.default_rng(0)
    points = rng.normal(size=(40, 3)) @ np.array([[3.0, 0, 0], [1.0, 0.5, 0], [0, 0, 0.1]])
    weights = np.ones(40)
    weights[30:] = 0.0
    points[30:] = 100.0  # rows left out must not move the statistics
    white = np.asarray(clustering.pca_whiten(jnp.asarray(points), jnp.asarray(weights), eps=0.0))
    kept = white[:30]
    np.testing.assert_allclose(kept.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(kept.T @ kept / 30, np.eye(3), atol=1e-4)


def test_deepcluster_clusters_its_bank_and_resets_the_classifier():
    backbone = models.make_network("mlp", input_shape=(8, 8, 1), num_outputs=10, hidden=(16,))
    net = R.encoder("deepcluster", backbone, width=16)
    rule = R.make(
        "deepcluster", net, num_examples=12, n_clusters=3, recluster_every=2, views="identity"
    )
    v = net.init(jax.random.key(0))
    s = rule.init(v, key=jax.random.key(1))
    assert s.classifier.shape == (16, 12) and s.bank.shape == (12, 16)
    x = jax.random.uniform(jax.random.key(2), (12, 8, 8, 1))
    update = jax.jit(
        lambda v, s, i, k: rule.update(v, s, {"retain": {"x": x[i], "index": i}}, key=k)
    )
    first, second = jnp.arange(6), jnp.arange(6, 12)
    v0 = v
    v, s, m = update(v, s, first, jax.random.key(3))
    assert float(m["clustered"]) == 0 and float(m["loss"]) == pytest.approx(
        float(m["rotation_loss"])
    )
    np.testing.assert_array_equal(s.seen, [1] * 6 + [0] * 6)
    # The bank holds the backbone features of the un-rotated views, from before the step.
    np.testing.assert_allclose(s.bank[:6], net.apply(v0, x[:6]).features, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(s.bank[6:], 0.0)
    v, s, m = update(v, s, second, jax.random.key(4))
    before_reset = s.classifier
    v, s, m = update(v, s, first, jax.random.key(5))  # step 2: cluster the full bank first
    assert float(m["clustered"]) == 1
    assert set(np.asarray(s.assignments).tolist()) <= {0, 1, 2}
    assert not np.allclose(s.classifier, before_reset, atol=0.05)  # a fresh top layer
    # With K x 4 classes the joint loss is no longer the rotation loss alone.
    assert float(m["loss"]) > float(m["rotation_loss"])


def test_deepcluster_bad_settings():
    backbone = models.make_network("mlp", input_shape=(8, 8, 1), num_outputs=10, hidden=(16,))
    net = R.encoder("deepcluster", backbone, width=16)
    with pytest.raises(ValueError, match="`num_examples`"):
        R.make("deepcluster", net)
    with pytest.raises(ValueError, match="`n_clusters`"):
        R.make("deepcluster", net, num_examples=10, n_clusters=1)
    with pytest.raises(ValueError, match="`num_examples`"):
        R.make("deepcluster", net, num_examples=5, n_clusters=10)
    with pytest.raises(ValueError, match="`recluster_every`"):
        R.make("deepcluster", net, num_examples=10, recluster_every=0)
    rule = R.make("deepcluster", net, num_examples=10, n_clusters=2)
    v = net.init(jax.random.key(0))
    with pytest.raises(ValueError, match="'index'"):
        jax.eval_shape(
            lambda v: rule.update(
                v,
                rule.init(v, key=jax.random.key(0)),
                {"retain": {"x": jnp.zeros((4, 8, 8, 1))}},
                key=jax.random.key(1),
            ),
            v,
        )


@pytest.mark.parametrize("name", ["swav", "deepcluster"])
def test_the_loss_turns_around_for_self_supervised_unlearning(name):
    from jaxunlearn.repr import unlearning

    backbone = models.make_network("mlp", input_shape=(8, 8, 1), num_outputs=10, hidden=(16,))
    net = R.encoder(name, backbone, width=16)
    data = {"num_examples": 64} if name == "deepcluster" else {}
    rule = R.make(name, net, views="identity", **data)
    v = net.init(jax.random.key(0))
    x = jax.random.uniform(jax.random.key(2), (16, 8, 8, 1))
    part = {"x": x[:8], "index": jnp.arange(8)}
    objective = unlearning.ssl_objective(rule, name=name)
    state = objective.init(v, key=jax.random.key(1))
    grads, metrics = jax.jit(lambda v, s: objective.grads(v, s, part, key=jax.random.key(3)))(
        v, state
    )
    # The gradient is the rule's own loss gradient for the network's params, the prototypes or
    # classifier held: the rule's update reports the same loss on the same views.
    assert jax.tree.structure(grads) == jax.tree.structure(v["params"])
    _, _, m = jax.jit(lambda v, s: rule.update(v, s, {"retain": part}, key=jax.random.key(3)))(
        v, state
    )
    assert float(metrics["loss"]) == pytest.approx(float(m["loss"]), rel=1e-5)
    ascent = unlearning.self_supervised_ascent(rule, name=name)
    batch = {"forget": part, "retain": {"x": x[8:], "index": jnp.arange(8, 16)}}
    s0 = ascent.init(v, key=jax.random.key(4))
    v1, _, m1 = jax.jit(lambda v, s: ascent.update(v, s, batch, key=jax.random.key(5)))(v, s0)
    assert np.isfinite(float(m1["forget_loss"])) and np.isfinite(float(m1["retain_loss"]))
    assert max(jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), v, v1))) > 0
