"""Shared fixtures: a few hundred digits and a tiny MLP (every test here is seconds long)."""

import pytest

from jaxunlearn import data, models


@pytest.fixture(scope="session")
def digits_small():
    ds = data.load("digits")
    return ds.x_train[:200], ds.y_train[:200], ds.x_test[:100], ds.y_test[:100]


@pytest.fixture(scope="session")
def tiny_net():
    return models.make_network("mlp", input_shape=(8, 8, 1), num_outputs=10, hidden=(16,))
