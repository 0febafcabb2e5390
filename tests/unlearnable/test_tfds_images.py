"""The generators on a TFDS image dataset: cifar10 (32x32x3) under TFDS's mock data, offline."""

import jax
import numpy as np
import pytest
from unlearnable_testing import assert_in_budget

from jaxunlearn import data, models
from jaxunlearn.unlearnable import evaluate, registry

tfds = pytest.importorskip("tensorflow_datasets")


def test_every_generator_protects_mock_cifar10_within_budget():
    with tfds.testing.mock_data(num_examples=40, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = data.load("cifar10", max_train=40)
    x, y = ds.x_train, ds.y_train
    net = models.make_network("mlp", input_shape=ds.input_shape, num_outputs=10, hidden=(8,))
    surrogate = net.init(jax.random.key(0))
    settings = {
        "error_minimizing_noise": {
            "mode": "classwise",
            "max_rounds": 1,
            "train_steps": 1,
            "batch_size": 20,
        },
        "bayes_error_noise": {"steps": 1, "batch_size": 20},
        "text_conditioned_noise": {"steps": 2, "batch_size": 8},
        "ungeneralizable_examples": {"steps": 1, "batch_size": 20},
        "unlearnable_clusters": {
            "num_clusters": 3,
            "steps": 1,
            "kmeans_iterations": 2,
            "epsilon": 8 / 255,
        },
    }
    for name in registry.names():
        p = registry.protect(
            name, net, x, y, key=jax.random.key(1), surrogate=surrogate, **settings[name]
        )
        assert p.x.shape == x.shape == (40, 32, 32, 3)
        assert_in_budget(x, p.x, p.delta, 8 / 255)
    squeezed = np.asarray(evaluate.jpeg_compress(x, quality=10))
    assert squeezed.shape == x.shape and 0 <= squeezed.min() and squeezed.max() <= 1
