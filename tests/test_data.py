"""Datasets and forget specifications."""

import numpy as np
import pytest

from jaxunlearn import data


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def test_digits_is_fixed_stratified_split(digits):
    again = data.load("digits")
    assert digits.x_train.shape == (1437, 8, 8, 1) and digits.x_test.shape == (360, 8, 8, 1)
    np.testing.assert_array_equal(digits.y_train, again.y_train)
    assert 0.0 <= digits.x_train.min() and digits.x_train.max() <= 1.0
    train_freq = np.bincount(digits.y_train) / len(digits.y_train)
    test_freq = np.bincount(digits.y_test) / len(digits.y_test)
    np.testing.assert_allclose(train_freq, test_freq, atol=0.01)


def test_diabetes_is_standardised_regression():
    ds = data.load("diabetes")
    assert ds.task == "regression" and ds.num_outputs == 1
    assert abs(ds.y_train.mean()) < 1e-5 and abs(ds.y_train.std() - 1) < 1e-4


@pytest.mark.parametrize(
    "spec",
    [
        data.ForgetSpec("random", fraction=0.1),
        data.ForgetSpec("random", count=7),
        data.ForgetSpec("class", classes=(0,)),
        data.ForgetSpec("class", classes=(3, 5)),
    ],
)
def test_split_is_disjoint_covering_and_deterministic(digits, spec):
    split = data.make_split(digits, spec, seed=3)
    n = len(digits.y_train)
    assert len(np.intersect1d(split.forget, split.retain)) == 0
    np.testing.assert_array_equal(np.union1d(split.forget, split.retain), np.arange(n))
    again = data.make_split(digits, spec, seed=3)
    np.testing.assert_array_equal(split.forget, again.forget)
    assert len(np.intersect1d(split.test, split.test_forget)) == 0
    np.testing.assert_array_equal(
        np.union1d(split.test, split.test_forget), np.arange(len(digits.y_test))
    )
    if spec.kind == "class":
        assert set(digits.y_train[split.forget]) == set(spec.classes)
        assert not set(digits.y_test[split.test]) & set(spec.classes)
    else:
        expected = spec.count if spec.count else round(spec.fraction * n)
        assert len(split.forget) == expected
        other = data.make_split(digits, spec, seed=4)
        assert not np.array_equal(split.forget, other.forget)


@pytest.mark.parametrize(
    "spec, message",
    [
        (data.ForgetSpec("random", fraction=0.0), "fraction"),
        (data.ForgetSpec("random", fraction=1.5), "fraction"),
        (data.ForgetSpec("random", fraction=1e-5), "empty"),
        (data.ForgetSpec("random", count=0), "empty"),
        (data.ForgetSpec("class", classes=(10,)), "classes"),
        (data.ForgetSpec("class", classes=()), "classes"),
        (data.ForgetSpec("class", classes=tuple(range(10))), "every class"),
        (data.ForgetSpec("sideways"), "valid kinds"),
    ],
)
def test_bad_forget_specs_are_rejected(digits, spec, message):
    with pytest.raises(ValueError, match=message):
        data.make_split(digits, spec)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="digits"):
        data.load("imagenet-22k")


@pytest.mark.parametrize(
    "spec, message",
    [
        (data.ForgetSpec("random", count=3.7), "whole number"),
        (data.ForgetSpec("random", count=True), "whole number"),
        (data.ForgetSpec("random", fraction="0.1"), "fraction"),
        (data.ForgetSpec("random", fraction=0.1, classes=(0,)), "does not use `classes`"),
        (data.ForgetSpec("class", classes=(0,), fraction=0.1), "does not use fraction"),
        (data.ForgetSpec("class", classes=(0,), count=5), "does not use count"),
        (data.ForgetSpec("class", classes=(1.5,)), "integer class labels"),
        (data.ForgetSpec("class", classes=("0",)), "integer class labels"),
    ],
)
def test_non_integral_counts_and_unused_fields_are_rejected(digits, spec, message):
    with pytest.raises(ValueError, match=message):
        data.make_split(digits, spec)


def test_forget_spec_from_config_rejects_unknown_keys_and_keeps_bad_counts():
    with pytest.raises(ValueError, match="'fractoin'; did you mean 'fraction'"):
        data.ForgetSpec.from_config({"kind": "random", "fractoin": 0.1})
    # A whole number read from a config is an int; 3.7 stays 3.7 (for validate to reject), not 3.
    assert data.ForgetSpec.from_config({"kind": "random", "count": 40.0}).count == 40
    assert data.ForgetSpec.from_config({"kind": "random", "count": 3.7}).count == 3.7
    assert data.ForgetSpec.from_config({"kind": "class", "classes": 1.5}).classes == (1.5,)
