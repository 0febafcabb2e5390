"""On-device data augmentation: pure, keyed transforms of an image batch, applied inside the loop.

The reference codebases train, retrain and unlearn on CIFAR-10/100 with torchvision's
``RandomCrop(32, padding=4)`` followed by ``RandomHorizontalFlip()`` on every training batch
(OPTML-Group Unlearn-Sparse / Unlearn-Saliency ``dataset.py``, SSD ``src/datasets.py``,
SCRUB's and the NeurIPS 2023 starting kit's loaders); their SVHN loaders use no augmentation
(Unlearn-Sparse ``svhn_dataloaders``: ``ToTensor()`` only), and flipping a digit changes what it
is. Here the same transforms are pure functions of ``(images, key)``, jittable and vmappable, so
:func:`jaxunlearn.train.fit` applies them to each batch on the device, inside its ``lax.scan``,
with a key derived from the run's key and the step: an interrupted and resumed run augments
exactly as an uninterrupted one, and every model of an ensemble draws its own augmentations.

Images are ``[B, H, W, C]`` (the layout of :class:`~jaxunlearn.data.Dataset`). Each transform
draws one random choice per image.

Registry: :func:`get` maps a name (``"none"``, ``"crop"``, ``"crop_flip"``) to its
``(images, key) -> images`` function; :func:`default_for` names the default of a dataset.

>>> import jax, jax.numpy as jnp
>>> images = jnp.ones((2, 32, 32, 3))
>>> out = get("crop_flip")(images, jax.random.key(0))   # same shape, shifted and mirrored
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxunlearn.core.checks import check_count
from jaxunlearn.core.types import Array

Augmentation = Callable[[Array, Array], Array]


def _check_images(images, name: str = "images") -> None:
    if jnp.ndim(images) != 4:
        raise ValueError(
            f"`{name}` must be an image batch [B, H, W, C]; got shape {jnp.shape(images)}. "
            "Augmentation applies to image datasets only (use augmentation 'none')."
        )


def random_crop(images: Array, key: Array, padding: int = 4) -> Array:
    """Zero-pads each image by ``padding`` pixels on every side and crops a random window of
    the original size: torchvision's ``RandomCrop(size, padding=padding)`` (its default
    ``fill=0``, ``padding_mode="constant"``).

    The window's top-left corner is drawn uniformly from ``{0, ..., 2 * padding}`` in each
    direction, independently per image, so an image is shifted by up to ``padding`` pixels and
    the uncovered border is zeros.

    Args:
      images: ``[B, H, W, C]`` batch.
      key: PRNG key.
      padding: pixels of zero padding on each side (non-negative, static).

    Returns:
      ``[B, H, W, C]``, the same dtype.

    References:
      torchvision ``transforms.RandomCrop``; Unlearn-Sparse ``dataset.py``
      (``RandomCrop(32, padding=4)``).
    """
    _check_images(images)
    padding = check_count(padding, "padding", 0)
    if padding == 0:
        return images
    b, h, w, _ = images.shape
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(key, (b, 2), 0, 2 * padding + 1)

    def crop(image, offset):
        return jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (h, w, image.shape[-1]))

    return jax.vmap(crop)(padded, offsets)


def horizontal_flip(images: Array, key: Array, p: float = 0.5) -> Array:
    """Mirrors each image left-right with probability ``p``, independently per image:
    torchvision's ``RandomHorizontalFlip(p)``.

    Args:
      images: ``[B, H, W, C]`` batch.
      key: PRNG key.
      p: probability of flipping an image, in ``[0, 1]``.

    Returns:
      ``[B, H, W, C]``, the same dtype.
    """
    _check_images(images)
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"`p` must lie in [0, 1]; got {p}")
    flip = jax.random.bernoulli(key, p, (images.shape[0],))
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1, :], images)


def cifar(images: Array, key: Array) -> Array:
    """The references' CIFAR training augmentation: :func:`random_crop` with ``padding=4``, then
    :func:`horizontal_flip` with ``p=0.5`` (torchvision's ``Compose`` order)."""
    crop_key, flip_key = jax.random.split(key)
    return horizontal_flip(random_crop(images, crop_key, padding=4), flip_key)


def crop(images: Array, key: Array) -> Array:
    """:func:`random_crop` with ``padding=4`` and no flip: shifts without mirroring, for data
    whose meaning a mirror changes (digits, house numbers)."""
    return random_crop(images, key, padding=4)


def none(images: Array, key: Array) -> Array:
    """No augmentation: ``images`` unchanged."""
    del key
    return images


_REGISTRY: dict[str, Augmentation] = {"none": none, "crop": crop, "crop_flip": cifar}

# Datasets whose default is not "none": the TFDS CIFARs, as in the reference codebases. MNIST,
# Fashion-MNIST and SVHN keep "none" (the references train SVHN unaugmented; mirrored digits
# change class), and so do the in-memory `digits` and `diabetes`.
_DATASET_DEFAULTS = {"cifar10": "crop_flip", "cifar100": "crop_flip"}

# A config's augmentation that means "the dataset's default" (see `resolve`).
AUTO = "auto"


def names() -> tuple[str, ...]:
    """The registered augmentation names."""
    return tuple(sorted(_REGISTRY))


def get(name: str) -> Augmentation:
    """The augmentation registered as ``name``: an ``(images, key) -> images`` function.

    Raises:
      ValueError: for an unknown name, listing the valid ones.
    """
    if name not in _REGISTRY:
        raise ValueError(f"Unknown augmentation {name!r}; valid: {list(names())}")
    return _REGISTRY[name]


def default_for(dataset: str) -> str:
    """The default augmentation of dataset ``dataset``: ``"crop_flip"`` for CIFAR-10/100,
    ``"none"`` for every other dataset."""
    return _DATASET_DEFAULTS.get(dataset, "none")


def resolve(name: str, dataset: str, input_shape: tuple[int, ...] | None = None) -> str:
    """A config's augmentation name resolved for ``dataset``: ``"auto"`` becomes
    :func:`default_for`'s choice; other names are checked against the registry and, when
    ``input_shape`` is given, against the data (anything but ``"none"`` needs images
    ``[H, W, C]``).

    Raises:
      ValueError: for an unknown name or an augmentation of non-image data.
    """
    name = str(name)
    if name == AUTO:
        return default_for(dataset)
    if name not in _REGISTRY:
        raise ValueError(f"Unknown augmentation {name!r}; valid: {[AUTO, *names()]}")
    if name != "none" and input_shape is not None and len(input_shape) != 3:
        raise ValueError(
            f"Augmentation {name!r} transforms images [H, W, C]; dataset {dataset!r} has inputs "
            f"of shape {tuple(input_shape)}. Use augmentation 'none'."
        )
    return name
