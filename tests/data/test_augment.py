"""On-device augmentation (jaxunlearn.data.augment): crops are shifted windows with zero borders,
flips mirror, the composition and the registry."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxunlearn.data import augment


def _images(b=64, h=5, w=6, c=2):
    # Every pixel distinct and non-zero, so a window's position can be read back.
    return jnp.arange(1, b * h * w * c + 1, dtype=jnp.float32).reshape(b, h, w, c)


def _window_offset(out, image, padding):
    """The (dy, dx) whose window of the zero-padded image equals ``out``, or None."""
    h, w, _ = image.shape
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    for dy, dx in itertools.product(range(2 * padding + 1), repeat=2):
        if np.array_equal(padded[dy : dy + h, dx : dx + w], out):
            return dy, dx
    return None


def test_random_crop_is_a_shifted_window_with_zeros_at_the_border():
    images = _images(b=200)
    out = np.asarray(jax.jit(augment.random_crop, static_argnums=2)(images, jax.random.key(0), 2))
    assert out.shape == images.shape and out.dtype == images.dtype
    offsets = [_window_offset(o, i, 2) for o, i in zip(out, np.asarray(images), strict=True)]
    assert None not in offsets
    # Every one of the 5 x 5 corners {0..2p}^2 is drawn (torchvision: randint(0, 2p + 1)).
    assert set(offsets) == set(itertools.product(range(5), repeat=2))
    # Hand check of one image shifted by (dy, dx) = (0, 4): two zero rows on top, the first two
    # columns cut off, two zero columns on the right.
    k = offsets.index((0, 4))
    expected = np.zeros_like(out[k])
    expected[2:, :4] = np.asarray(images)[k, :3, 2:]
    np.testing.assert_array_equal(out[k], expected)


def test_random_crop_torchvision_default_padding_and_checks():
    images = _images(b=8, h=32, w=32, c=3)
    out = augment.random_crop(images, jax.random.key(1))  # padding=4
    assert all(_window_offset(o, i, 4) for o, i in zip(out, np.asarray(images), strict=True))
    np.testing.assert_array_equal(augment.random_crop(images, jax.random.key(1), padding=0), images)
    with pytest.raises(ValueError, match="padding"):
        augment.random_crop(images, jax.random.key(0), padding=-1)
    with pytest.raises(ValueError, match=r"image batch \[B, H, W, C\]"):
        augment.random_crop(jnp.zeros((4, 10)), jax.random.key(0))


def test_horizontal_flip_mirrors_each_image_or_keeps_it():
    images = _images(b=400)
    out = np.asarray(augment.horizontal_flip(images, jax.random.key(3)))
    mirrored = np.asarray(images)[:, :, ::-1, :]
    flipped = np.all(out == mirrored, axis=(1, 2, 3))
    kept = np.all(out == np.asarray(images), axis=(1, 2, 3))
    assert np.all(flipped ^ kept)  # each image exactly one of the two
    assert 0.4 < flipped.mean() < 0.6
    # Hand check: the mirror reverses the width axis.
    np.testing.assert_array_equal(mirrored[0, 0, :, 0], np.asarray(images)[0, 0, ::-1, 0])
    np.testing.assert_array_equal(augment.horizontal_flip(images, jax.random.key(3), p=0.0), images)
    np.testing.assert_array_equal(
        augment.horizontal_flip(images, jax.random.key(3), p=1.0), mirrored
    )
    with pytest.raises(ValueError, match="p"):
        augment.horizontal_flip(images, jax.random.key(0), p=1.5)


def test_cifar_is_crop_then_flip_and_deterministic_from_the_key():
    images = _images(b=100, h=8, w=8, c=3)
    a = np.asarray(jax.jit(augment.cifar)(images, jax.random.key(5)))
    np.testing.assert_array_equal(a, augment.cifar(images, jax.random.key(5)))
    assert not np.array_equal(a, augment.cifar(images, jax.random.key(6)))
    crop_key, flip_key = jax.random.split(jax.random.key(5))
    by_hand = augment.horizontal_flip(
        augment.random_crop(images, crop_key, padding=4), flip_key, p=0.5
    )
    np.testing.assert_array_equal(a, by_hand)
    # Each output is a window of the padded image, mirrored or not.
    for o, i in zip(a, np.asarray(images), strict=True):
        assert _window_offset(o, i, 4) or _window_offset(o[:, ::-1], i, 4)


def test_registry_names_defaults_and_errors():
    assert augment.names() == ("crop", "crop_flip", "none")
    assert augment.get("crop_flip") is augment.cifar
    images = _images(b=4)
    np.testing.assert_array_equal(augment.get("none")(images, jax.random.key(0)), images)
    with pytest.raises(ValueError, match=r"Unknown augmentation 'flip'.*'crop_flip'.*'none'"):
        augment.get("flip")
    # "auto": crop + flip on the CIFARs as the references; nothing on digits-like or tabular data.
    assert augment.resolve("auto", "cifar10") == augment.resolve("auto", "cifar100") == "crop_flip"
    for name in ("digits", "diabetes", "mnist", "fashion_mnist", "svhn_cropped"):
        assert augment.resolve("auto", name) == "none"
    assert augment.resolve("crop", "svhn_cropped", (32, 32, 3)) == "crop"
    with pytest.raises(ValueError, match=r"'auto', 'crop'"):
        augment.resolve("random_erasing", "cifar10")
    with pytest.raises(ValueError, match="diabetes.*'none'"):
        augment.resolve("crop_flip", "diabetes", (10,))
