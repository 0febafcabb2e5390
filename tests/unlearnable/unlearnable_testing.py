"""Checks shared by the unlearnable-example tests."""

import numpy as np


def assert_in_budget(x, protected, delta, epsilon, value_range=(0.0, 1.0)):
    """Protected images inside the value range, ``delta == protected - x`` and
    ``|delta| <= epsilon`` (up to float32 rounding of ``x + delta``)."""
    x, protected, delta = (np.asarray(a, np.float64) for a in (x, protected, delta))
    assert protected.min() >= value_range[0] and protected.max() <= value_range[1]
    np.testing.assert_allclose(protected - x, delta, atol=1e-7)
    assert np.abs(delta).max() <= epsilon + 1e-6
