import jax
import jax.numpy as jnp
import numpy as np
import pytest
from unlearnable_testing import assert_in_budget

from jaxunlearn.unlearnable import kmeans, unlearnable_clusters


def test_kmeans_recovers_separated_blobs():
    key = jax.random.key(0)
    centres = jnp.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    f = jnp.repeat(centres, 30, axis=0) + 0.1 * jax.random.normal(key, (90, 2))
    found, assign = kmeans(f, 3, key=key)
    truth = np.repeat(np.arange(3), 30)
    # One found cluster per blob, whatever the numbering.
    assert all(len(set(np.asarray(assign)[truth == c])) == 1 for c in range(3))
    assert len(set(np.asarray(assign).tolist())) == 3
    np.testing.assert_allclose(np.sort(np.asarray(found)[:, 0]), [0, 0, 10], atol=0.1)


def test_clusters_are_label_agnostic_and_within_budget(digits_small, tiny_net):
    x, y, _, _ = digits_small
    v = tiny_net.init(jax.random.key(0))
    kw = dict(
        key=jax.random.key(1),
        surrogate=v,
        num_clusters=4,
        steps=3,
        epsilon=8 / 255,
        kmeans_iterations=3,
    )
    p = unlearnable_clusters(tiny_net, x, y, **kw)
    assert_in_budget(x, p.x, p.delta, 8 / 255)
    q = unlearnable_clusters(tiny_net, x, np.zeros_like(y), **kw)  # labels are never read
    np.testing.assert_array_equal(p.x, q.x)
    # Images kept away from 0 and 1 are never clipped: one perturbation per cluster.
    mid = 0.25 + 0.5 * np.asarray(x)
    r = unlearnable_clusters(tiny_net, mid, None, **kw)
    patterns = []  # distinct up to float32 rounding of (x + delta) - x
    for d in np.asarray(r.delta):
        if not any(np.abs(d - q).max() < 1e-6 for q in patterns):
            patterns.append(d)
    assert 2 <= len(patterns) <= 4
    assert np.abs(np.asarray(r.delta)).max() <= 8 / 255 + 1e-6


def test_more_clusters_than_examples_is_an_error(digits_small, tiny_net):
    x, y, _, _ = digits_small
    v = tiny_net.init(jax.random.key(0))
    with pytest.raises(ValueError, match="`num_clusters` \\(11\\) is larger than the number"):
        unlearnable_clusters(tiny_net, x[:10], key=jax.random.key(0), surrogate=v, num_clusters=11)
    with pytest.raises(ValueError, match="`epsilon`"):
        unlearnable_clusters(tiny_net, x, key=jax.random.key(0), surrogate=v, epsilon=0)
