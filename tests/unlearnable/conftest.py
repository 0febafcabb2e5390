"""Shared fixtures: a few hundred digits and a tiny MLP (every test here is seconds long)."""

import numpy as np
import pytest

from jaxunlearn import data, models


@pytest.fixture(scope="session")
def digits_small():
    ds = data.load("digits")
    return ds.x_train[:200], ds.y_train[:200], ds.x_test[:100], ds.y_test[:100]


@pytest.fixture(scope="session")
def tiny_net():
    return models.make_network("mlp", input_shape=(8, 8, 1), num_outputs=10, hidden=(16,))


def assert_in_budget(x, protected, delta, epsilon, value_range=(0.0, 1.0)):
    x, protected, delta = (np.asarray(a, np.float64) for a in (x, protected, delta))
    assert protected.min() >= value_range[0] and protected.max() <= value_range[1]
    np.testing.assert_allclose(protected - x, delta, atol=1e-7)
    assert np.abs(delta).max() <= epsilon + 1e-6
