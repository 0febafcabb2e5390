"""Regression audits: mean squared error of one model and of N (jaxunlearn.audit.regression)."""

import numpy as np

from jaxunlearn.audit.regression import mse, mse_per_model


def test_mse_per_model_equals_each_row_alone():
    rng = np.random.default_rng(1)
    targets = rng.normal(size=(1000, 1))  # long enough for pairwise summation
    predictions = rng.normal(size=(3, 1000, 1)).astype(np.float32)
    np.testing.assert_array_equal(
        mse_per_model(predictions, targets), [mse(p, targets) for p in predictions]
    )
    assert np.isnan(mse_per_model(predictions[:, :0], targets[:0])).all()
