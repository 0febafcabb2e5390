"""``digits(image_size=..., channels=..., canvas=...)``: the upsampled digits of the
unlearnable-examples experiment at CIFAR-10's resolution, and the translated digits."""

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
        ({"canvas": 7}, r"`canvas` must be None or an integer in \[image_size=8, 128\].*got 7"),
        ({"image_size": 16, "canvas": 12}, r"`canvas` .*\[image_size=16, 128\]"),
        ({"canvas": 256}, r"`canvas` must be"),
        ({"canvas": 16.0}, r"`canvas` must be"),
        ({"canvas": True}, r"`canvas` must be"),
    ],
)
def test_bad_sizes_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        datasets.digits(**kwargs)


def _outside(image, a, b):
    """``image`` with its 8x8 window at ``(a, b)`` blanked."""
    rest = image.copy()
    rest[a : a + 8, b : b + 8] = 0
    return rest


def test_translated_digits_paste_each_digit_whole_at_a_random_position(native):
    moved = datasets.digits(canvas=14, placement_seed=3)
    assert moved.x_train.shape == (1437, 14, 14, 1) and moved.x_test.shape == (360, 14, 14, 1)
    np.testing.assert_array_equal(moved.y_train, native.y_train)  # the same split, same order
    corners = set()
    for big, small in [(moved.x_train[i], native.x_train[i]) for i in range(0, 1437, 7)] + [
        (moved.x_test[i], native.x_test[i]) for i in range(0, 360, 7)
    ]:
        # Exactly one 8x8 window holds the native digit, and nothing lies outside it.
        hits = [
            (a, b)
            for a in range(7)
            for b in range(7)
            if np.array_equal(big[a : a + 8, b : b + 8], small) and not _outside(big, a, b).any()
        ]
        assert hits, "a digit is not pasted whole"
        corners.add(hits[0])
    assert len(corners) > 30  # positions spread over the 7x7 possible corners
    rows = moved.x_train[..., 0].sum(2)  # ink lands in every row somewhere across the set
    assert (rows.sum(0) > 0).all()
    # Deterministic per seed; another seed moves the digits.
    np.testing.assert_array_equal(datasets.digits(canvas=14, placement_seed=3).x_test, moved.x_test)
    assert not np.array_equal(datasets.digits(canvas=14, placement_seed=4).x_test, moved.x_test)
    # A canvas of the image's own size places nothing.
    np.testing.assert_array_equal(datasets.digits(canvas=8).x_train, native.x_train)


def test_translated_digits_combine_with_upsampling_and_channels():
    d = datasets.digits(image_size=16, channels=3, canvas=24)
    assert d.x_train.shape == (1437, 24, 24, 3)
    np.testing.assert_array_equal(d.x_train[..., 0], d.x_train[..., 1])
    up = datasets.digits(image_size=16)
    # Every pasted 16x16 digit carries all of the upsampled image's ink.
    np.testing.assert_allclose(
        d.x_train[:40, ..., 0].sum((1, 2)), up.x_train[:40, ..., 0].sum((1, 2)), rtol=1e-5
    )
