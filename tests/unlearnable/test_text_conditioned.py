import jax
import numpy as np
import pytest
from unlearnable_testing import assert_in_budget

from jaxunlearn.unlearnable import text_conditioned_noise
from jaxunlearn.unlearnable.text_conditioned import text_features

FAST = dict(steps=3, batch_size=16)


def test_text_features_are_normalised_trigram_counts():
    f = text_features(["ab", "ab", "the digit one"], buckets=64)
    # " ab " has the trigrams " ab" and "ab ": two unit counts -> each 1/sqrt(2).
    assert sorted(f[0][f[0] > 0].tolist()) == pytest.approx([2**-0.5, 2**-0.5])
    np.testing.assert_array_equal(f[0], f[1])
    np.testing.assert_allclose(np.linalg.norm(f, axis=1), 1.0, rtol=1e-6)


def test_noise_depends_on_the_class_text_never_on_the_images(digits_small, tiny_net):
    x, y, _, _ = digits_small
    p = text_conditioned_noise(tiny_net, x, y, key=jax.random.key(0), **FAST)
    assert_in_budget(x, p.x, p.delta, 8 / 255)
    # Other images of the same classes, kept away from 0 and 1 (no clipping): the same noise.
    a = 0.25 + 0.5 * np.asarray(x)
    b = 0.25 + 0.5 * np.asarray(x[::-1])
    pa = text_conditioned_noise(tiny_net, a, y, key=jax.random.key(0), **FAST)
    pb = text_conditioned_noise(tiny_net, b, y, key=jax.random.key(0), **FAST)
    np.testing.assert_allclose(pa.delta, pb.delta, atol=1e-6)
    i, j = np.flatnonzero(y == 2)[:2]
    np.testing.assert_allclose(pa.delta[i], pa.delta[j], atol=1e-6)  # one pattern per class
    k = np.flatnonzero(y == 5)[0]
    assert not np.allclose(pa.delta[i], pa.delta[k])


def test_descriptions_are_checked(digits_small, tiny_net):
    x, y, _, _ = digits_small
    with pytest.raises(ValueError, match="`descriptions` must give 10 classes"):
        text_conditioned_noise(tiny_net, x, y, key=jax.random.key(0), descriptions=["a"] * 3)
    with pytest.raises(ValueError, match="`descriptions` are needed for 3 classes"):
        text_conditioned_noise(tiny_net, x, y % 3, key=jax.random.key(0), num_classes=3)
    with pytest.raises(ValueError, match="`epsilon`"):
        text_conditioned_noise(tiny_net, x, y, key=jax.random.key(0), epsilon=float("nan"))
