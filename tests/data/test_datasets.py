"""``digits(image_size=..., channels=...)``: the upsampled digits of the unlearnable-examples
experiment at CIFAR-10's resolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn import data
from jaxunlearn.data import datasets
from jaxunlearn.scenarios import track_config


@pytest.fixture(scope="module")
def native():
    return datasets.digits()


def test_the_default_is_the_native_8x8_grey_set(native):
    from sklearn.datasets import load_digits

    assert native.x_train.shape == (1437, 8, 8, 1) and native.x_test.shape == (360, 8, 8, 1)
    assert native.x_train.dtype == np.float32
    # Bit-identical to the original pixels / 16 (the explicit defaults too).
    images = {im.tobytes() for im in (load_digits().images / 16.0).astype(np.float32)}
    assert all(img[..., 0].tobytes() in images for img in native.x_train[:50])
    explicit = datasets.digits(image_size=8, channels=1)
    np.testing.assert_array_equal(explicit.x_train, native.x_train)
    np.testing.assert_array_equal(explicit.y_test, native.y_test)


def test_upsampling_by_hand(native):
    # 8 -> 16 pixels: output i samples the input at (i + 0.5) / 2 - 0.5, clamped to [0, 7]:
    # -0.25 -> pixel 0, 0.25 -> 0.75 * p0 + 0.25 * p1, 0.75 -> 0.25 * p0 + 0.75 * p1, ...
    x = native.x_train[0, ..., 0].astype(np.float64)
    weights = np.zeros((16, 8))
    for i in range(16):
        pos = min(max((i + 0.5) / 2 - 0.5, 0.0), 7.0)
        lo = int(np.floor(pos))
        weights[i, lo] += 1 - (pos - lo)
        weights[i, min(lo + 1, 7)] += pos - lo
    np.testing.assert_allclose(weights[:3, :2], [[1, 0], [0.75, 0.25], [0.25, 0.75]])
    expected = weights @ x @ weights.T
    big = datasets.digits(image_size=16)
    np.testing.assert_allclose(big.x_train[0, ..., 0], expected, atol=1e-6)


def test_upsampled_digits_match_jax_resize_and_keep_the_split(native):
    big = datasets.digits(image_size=32, channels=3)
    assert big.x_train.shape == (1437, 32, 32, 3) and big.x_test.shape == (360, 32, 32, 3)
    assert big.x_train.dtype == np.float32 and big.input_shape == (32, 32, 3)
    assert 0.0 <= big.x_train.min() and big.x_train.max() <= 1.0
    assert big.x_train.max() == 1.0  # full-intensity strokes survive the interpolation
    np.testing.assert_array_equal(big.y_train, native.y_train)  # the same split, same order
    np.testing.assert_array_equal(big.x_train[..., 0], big.x_train[..., 2])  # grey in RGB
    ref = jax.image.resize(jnp.asarray(native.x_test[:20]), (20, 32, 32, 1), "linear")
    np.testing.assert_allclose(big.x_test[:20, ..., :1], np.asarray(ref), atol=1e-6)
    # No shift: the ink's centre of mass stays where it was (in units of the 8x8 grid).
    grid8, grid32 = np.arange(8) + 0.5, (np.arange(32) + 0.5) / 4
    rows8 = (native.x_test[..., 0].sum(2) * grid8).sum(1) / native.x_test[..., 0].sum((1, 2))
    rows32 = (big.x_test[..., 0].sum(2) * grid32).sum(1) / big.x_test[..., 0].sum((1, 2))
    assert np.abs(rows8 - rows32).max() < 0.1


def test_data_kwargs_reach_the_digits_loader():
    cfg = {"dataset": "digits", "data_kwargs": {"image_size": 16}, "data_dir": ""}
    ds = track_config.load_dataset(cfg)
    assert ds.input_shape == (16, 16, 1)
    assert data.load("digits", image_size=12, channels=3).input_shape == (12, 12, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": 4}, r"`image_size` must be in \[8, 128\].*only upsampled\); got 4"),
        ({"image_size": 512}, r"`image_size` must be in \[8, 128\]"),
        ({"image_size": 32.0}, r"`image_size` must be an integer"),
        ({"image_size": True}, r"`image_size` must be an integer"),
        ({"channels": 2}, r"`channels` must be 1 or 3; got 2"),
        ({"channels": 0}, r"`channels` must be 1 or 3"),
    ],
)
def test_bad_sizes_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        datasets.digits(**kwargs)
