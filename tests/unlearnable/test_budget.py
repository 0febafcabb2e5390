import math

import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.unlearnable import budget


@pytest.mark.parametrize("bad", [0, -0.1, math.nan, math.inf, "8/255", True, None])
def test_epsilon_must_be_positive_and_finite(bad):
    with pytest.raises(ValueError, match="`epsilon` must be a positive finite number"):
        budget.check_epsilon(bad)


@pytest.mark.parametrize("bad", [-0.01, 1.5, math.nan, "half"])
def test_fraction_must_be_in_the_unit_interval(bad):
    with pytest.raises(ValueError, match="`fraction` must be"):
        budget.check_fraction(bad)
    assert budget.check_fraction(0) == 0.0 and budget.check_fraction(1) == 1.0


def test_projection_linf_clips_and_l2_rescales_per_example():
    d = jnp.array([[3.0, -4.0], [0.1, 0.0]])
    np.testing.assert_allclose(budget.project(d, 0.5, "linf"), [[0.5, -0.5], [0.1, 0.0]])
    # ||(3, -4)|| = 5 -> scaled to norm 1; (0.1, 0) is inside the ball and stays.
    np.testing.assert_allclose(budget.project(d, 1.0, "l2"), [[0.6, -0.8], [0.1, 0.0]], rtol=1e-6)
    with pytest.raises(ValueError, match="norm"):
        budget.check_norm("l1")


def test_apply_perturbation_clips_to_the_value_range_inside_the_budget():
    x = jnp.array([[0.0, 1.0, 0.5, 0.99]])
    p = budget.apply_perturbation(x, jnp.array([[-0.2, 0.2, 0.2, 0.2]]), 0.1)
    np.testing.assert_allclose(p.x, [[0.0, 1.0, 0.6, 1.0]], atol=1e-7)
    np.testing.assert_allclose(p.delta, [[0.0, 0.0, 0.1, 0.01]], atol=1e-6)


def test_images_outside_the_range_are_rejected():
    with pytest.raises(ValueError, match="value range"):
        budget.check_images(np.full((2, 3), 1.5))
    with pytest.raises(ValueError, match="`value_range`"):
        budget.check_value_range((1.0, 0.0))
    with pytest.raises(ValueError, match="integer labels"):
        budget.check_images(np.zeros((2, 3)), np.zeros(3, np.int32))


def test_padded_batches_cover_every_index_without_repeats_inside_a_batch():
    b = budget.padded_batches(5, 2)
    np.testing.assert_array_equal(b, [[0, 1], [2, 3], [4, 0]])
    assert budget.padded_batches(3, 10).shape == (1, 3)
