"""Augmented views for self-supervised learning: jitted, keyed, on-device transforms.

A self-supervised rule (:mod:`jaxunlearn.repr`) sees two or more random *views* of each image
and learns what they share. Here a view is made on the device, from a PRNG key, by a *pipeline*:
a pure function ``pipeline(key, x) -> x_view`` over a batch ``x`` of ``[B, H, W, C]`` images in
[0, 1], which draws an independent transform for every example (one key per example, ``vmap``
over the batch). Everything is jittable and vmappable; no host round trip, no NumPy.

Transforms (each on one image ``[H, W, C]``, each with its probability of being applied):

* RGB (SimCLR / BYOL recipe): :func:`random_resized_crop`, :func:`horizontal_flip`,
  :func:`color_jitter`, :func:`grayscale`, :func:`gaussian_blur`.
* Small greyscale digits (8x8): :func:`random_shift`, :func:`elastic_noise`, :func:`cutout`;
  a horizontal flip would turn a 2 into a 5-like shape, so it is not used there.

Pipelines are registered by name (:func:`register`, :func:`get`, :func:`names`):
``"simclr_rgb"`` (crop, flip, colour jitter of strength 1 with p = 0.8, grayscale p = 0.2, blur
p = 0.5: SimCLR's ImageNet recipe; BYOL applies the same operations), ``"cifar_rgb"`` (jitter
strength 0.5 and no blur: SimCLR's CIFAR recipe), ``"digits"`` (shift, elastic noise,
cut-out), ``"grey"`` (a milder crop, elastic noise, cut-out for larger greyscale images),
``"noise"`` (Gaussian noise and feature dropout for non-image inputs) and ``"identity"``.
:func:`default_pipeline` chooses by input shape.

:func:`make_views` stacks ``num_views`` independent views into ``[V, B, ...]``.

Multi-crop (DINO, SwAV): every image pipeline has a ``"<name>_local"`` twin drawing small
crops resized to the full size (:func:`default_local_pipeline`).

Policy selection (SelfAugment): :func:`select_policy` scores candidate pipelines by the
rotation-prediction proxy (a short rotation-prediction run per policy, :func:`rotation_proxy`,
scored on held-out clean images) and returns the best one's name for a rule's ``views=``.

References:
  Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations" (SimCLR),
  ICML 2020, Appendix A (the augmentation recipe: crop scale (0.08, 1), jitter strength 0.8 with
  brightness/contrast/saturation 0.8*s and hue 0.2*s applied with p = 0.8, grayscale p = 0.2,
  blur sigma in [0.1, 2] with a kernel of 10% of the image side, p = 0.5; no blur on CIFAR).
  Grill et al., "Bootstrap Your Own Latent" (BYOL), NeurIPS 2020 (same operations).
  Simard, Steinkraus, Platt, "Best Practices for Convolutional Neural Networks Applied to Visual
  Document Analysis", ICDAR 2003 (elastic distortions of digits).
  DeVries and Taylor, "Improved Regularization of Convolutional Neural Networks with Cutout",
  arXiv 1708.04552 (2017).
  Caron et al., "Emerging Properties in Self-Supervised Vision Transformers" (DINO), ICCV 2021
  (multi-crop: local crops of scale (0.05, 0.4)).
  Reed et al., "SelfAugment: Automatic Augmentation Policies for Self-Supervised Learning",
  CVPR 2021 (rotation prediction as the label-free score of an augmentation policy).
  See ``shared/reference/unlearnable_and_representation.md`` (Part B) for the SSL losses.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.core.checks import check_count
from jaxunlearn.core.types import Array

# pipeline(key, x[B, ...]) -> views of x, same shape and dtype.
Pipeline = Callable[[Array, Array], Array]

# ITU-R 601 luma weights (what torchvision's rgb_to_grayscale uses).
_LUMA = (0.299, 0.587, 0.114)
_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_FROM_YIQ = np.linalg.inv(_TO_YIQ)


def _check_probability(p: float, name: str) -> None:
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"`{name}` must be a probability in [0, 1]; got {p}")


def _check_image(image: Array, fn: str) -> None:
    if image.ndim != 3:
        raise ValueError(f"{fn} takes one image shaped (H, W, C); got shape {image.shape}")


def _maybe(u: Array, p: float, transformed: Array, image: Array) -> Array:
    """``transformed`` if the uniform draw ``u`` falls below ``p``, else ``image``."""
    return jnp.where(u < p, transformed, image)


def _uniforms(key: Array, n: int) -> Array:
    # One draw of every uniform a transform needs: each random call is a threefry program of its
    # own, and a pipeline of a dozen of them takes seconds to compile.
    return jax.random.uniform(key, (n,))


# ------------------------------------------------------------------------------ RGB transforms


def random_resized_crop(
    key: Array,
    image: Array,
    *,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Array:
    """A random crop of ``scale`` of the area and aspect ``ratio``, resized back to ``H x W``.

    The crop's area fraction is uniform in ``scale``, its log aspect ratio uniform in
    ``log(ratio)`` (torchvision's ``RandomResizedCrop``); a crop that does not fit is clipped to
    the image instead of redrawn. Resizing is bilinear (``jax.image.scale_and_translate``).

    Args:
      key: PRNG key.
      image: ``[H, W, C]`` float image.
      scale: range of the crop's area as a fraction of the image's.
      ratio: range of the crop's width / height.
    """
    _check_image(image, "random_resized_crop")
    if not 0 < scale[0] <= scale[1] <= 1:
        raise ValueError(f"`scale` must satisfy 0 < min <= max <= 1; got {scale}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"`ratio` must satisfy 0 < min <= max; got {ratio}")
    height, width = image.shape[:2]
    u = _uniforms(key, 4)
    area = scale[0] + (scale[1] - scale[0]) * u[0]
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = jnp.exp(log_lo + (log_hi - log_lo) * u[1])
    # Crop sides as fractions of the image's sides.
    w = jnp.clip(jnp.sqrt(area * aspect), 1.0 / width, 1.0)
    h = jnp.clip(jnp.sqrt(area / aspect), 1.0 / height, 1.0)
    y0 = u[2] * (1.0 - h) * height
    x0 = u[3] * (1.0 - w) * width
    factors = jnp.stack([1.0 / h, 1.0 / w])
    return jax.image.scale_and_translate(
        image,
        image.shape,
        spatial_dims=(0, 1),
        scale=factors,
        translation=-jnp.stack([y0, x0]) * factors,
        method="linear",
        antialias=False,
    ).astype(image.dtype)


def horizontal_flip(key: Array, image: Array, *, p: float = 0.5) -> Array:
    """The image mirrored left-right with probability ``p``."""
    _check_image(image, "horizontal_flip")
    _check_probability(p, "p")
    return _maybe(_uniforms(key, 1)[0], p, image[:, ::-1], image)


def _gray(image: Array) -> Array:
    """``[H, W, 1]`` luma of an RGB image (the image itself if it has one channel)."""
    if image.shape[-1] == 1:
        return image
    return jnp.tensordot(image, jnp.asarray(_LUMA, image.dtype), axes=([-1], [0]))[..., None]


def _blend(a: Array, b: Array, factor: Array) -> Array:
    """``factor * a + (1 - factor) * b`` clipped to [0, 1] (torchvision's ``_blend``)."""
    return jnp.clip(factor * a + (1.0 - factor) * b, 0.0, 1.0)


def _rotate_hue(image: Array, shift: Array) -> Array:
    # A hue shift of ``shift`` turns (in units of a full turn) as a rotation of the chroma plane
    # of YIQ; close to the HSV hue shift of torchvision for small shifts, and differentiable.
    angle = 2.0 * jnp.pi * shift
    c, s = jnp.cos(angle), jnp.sin(angle)
    zero, one = jnp.zeros_like(c), jnp.ones_like(c)
    rot = jnp.stack(
        [jnp.stack([one, zero, zero]), jnp.stack([zero, c, -s]), jnp.stack([zero, s, c])]
    )
    matrix = jnp.asarray(_FROM_YIQ, image.dtype) @ rot @ jnp.asarray(_TO_YIQ, image.dtype)
    return jnp.clip(image @ matrix.T, 0.0, 1.0)


def color_jitter(
    key: Array,
    image: Array,
    *,
    brightness: float = 0.4,
    contrast: float = 0.4,
    saturation: float = 0.4,
    hue: float = 0.1,
    p: float = 0.8,
) -> Array:
    """Random brightness, contrast, saturation and hue changes, all applied with probability ``p``.

    Factors are uniform in ``[1 - s, 1 + s]`` (hue shift uniform in ``[-hue, hue]`` of a turn), as
    in torchvision's ``ColorJitter``, with the defaults of SimCLR's strength 0.5 (its CIFAR
    setting; ImageNet uses 1.0: 0.8/0.8/0.8/0.2). The four operations run in a fixed order
    (torchvision draws a random order); the hue shift is a rotation in YIQ space rather than an
    HSV round trip. A one-channel image gets brightness and contrast only.
    """
    _check_image(image, "color_jitter")
    _check_probability(p, "p")
    if not 0 <= hue <= 0.5:
        raise ValueError(f"`hue` must lie in [0, 0.5]; got {hue}")
    u = _uniforms(key, 5)

    def factor(v, strength):
        lo = max(0.0, 1.0 - strength)
        return lo + (1.0 + strength - lo) * v

    out = _blend(image, jnp.zeros_like(image), factor(u[1], brightness))
    out = _blend(out, jnp.mean(_gray(out)), factor(u[2], contrast))
    if image.shape[-1] == 3:
        out = _blend(out, _gray(out), factor(u[3], saturation))
        out = _rotate_hue(out, hue * (2.0 * u[4] - 1.0))
    return _maybe(u[0], p, out.astype(image.dtype), image)


def grayscale(key: Array, image: Array, *, p: float = 0.2) -> Array:
    """The image's luma copied to every channel, with probability ``p``."""
    _check_image(image, "grayscale")
    _check_probability(p, "p")
    return _maybe(_uniforms(key, 1)[0], p, jnp.broadcast_to(_gray(image), image.shape), image)


def gaussian_kernel(sigma: Array, size: int) -> Array:
    """A normalised 1-D Gaussian of ``size`` taps and standard deviation ``sigma`` (traced)."""
    offsets = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    weights = jnp.exp(-0.5 * jnp.square(offsets / sigma))
    return weights / weights.sum()


def _separable_blur(image: Array, kernel: Array) -> Array:
    """``image`` [H, W, C] convolved with ``kernel`` along H and W, with reflected borders."""
    pad = (kernel.shape[0] - 1) // 2
    padded = jnp.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    height, width = image.shape[:2]
    rows = sum(kernel[i] * padded[i : i + height] for i in range(kernel.shape[0]))
    return sum(kernel[i] * rows[:, i : i + width] for i in range(kernel.shape[0]))


def gaussian_blur(
    key: Array,
    image: Array,
    *,
    sigma: tuple[float, float] = (0.1, 2.0),
    kernel_size: int | None = None,
    p: float = 0.5,
) -> Array:
    """A Gaussian blur of ``sigma`` uniform in the range, with probability ``p``.

    Args:
      kernel_size: odd number of taps; by default about 10% of the image side (SimCLR), at
        least 3.
    """
    _check_image(image, "gaussian_blur")
    _check_probability(p, "p")
    if not 0 < sigma[0] <= sigma[1]:
        raise ValueError(f"`sigma` must satisfy 0 < min <= max; got {sigma}")
    size = kernel_size or max(3, int(0.1 * max(image.shape[:2])) // 2 * 2 + 1)
    if size % 2 == 0 or size < 1:
        raise ValueError(f"`kernel_size` must be a positive odd integer; got {size}")
    u = _uniforms(key, 2)
    s = sigma[0] + (sigma[1] - sigma[0]) * u[1]
    blurred = _separable_blur(image, gaussian_kernel(s, size)).astype(image.dtype)
    return _maybe(u[0], p, blurred, image)


# --------------------------------------------------------------------- small-image transforms


def random_shift(key: Array, image: Array, *, max_shift: int = 1) -> Array:
    """The image translated by whole pixels, uniform in ``[-max_shift, max_shift]`` along each
    axis, with zeros (background) shifted in."""
    _check_image(image, "random_shift")
    m = check_count(max_shift, "max_shift", 0)
    if m == 0:
        return image
    dy, dx = jnp.minimum(jnp.floor(_uniforms(key, 2) * (2 * m + 1)), 2 * m).astype(jnp.int32)
    padded = jnp.pad(image, ((m, m), (m, m), (0, 0)))
    return jax.lax.dynamic_slice(padded, (dy, dx, 0), image.shape)


def elastic_noise(
    key: Array, image: Array, *, alpha: float = 1.0, sigma: float = 1.0, p: float = 1.0
) -> Array:
    """An elastic distortion: every pixel moves along a smooth random displacement field.

    The field is white Gaussian noise smoothed by a Gaussian of ``sigma`` pixels, rescaled to a
    root-mean-square displacement of ``alpha`` pixels, and the image is resampled bilinearly along
    it with zeros outside (Simard et al., 2003, scaled to 8x8 digits).
    """
    _check_image(image, "elastic_noise")
    _check_probability(p, "p")
    if not (alpha >= 0 and sigma > 0):
        raise ValueError(f"`alpha` must be >= 0 and `sigma` > 0; got alpha={alpha}, sigma={sigma}")
    height, width, channels = image.shape
    size = 2 * int(math.ceil(2 * sigma)) + 1
    draws = jax.random.normal(key, (height * width * 2 + 1,))
    # The last normal draw decides whether to apply: P(N(0, 1) < Phi^-1(p)) = p.
    apply_draw, noise = draws[-1], draws[:-1].reshape(height, width, 2)
    field = _separable_blur(noise, gaussian_kernel(jnp.asarray(sigma, jnp.float32), size))
    rms = jnp.sqrt(jnp.mean(jnp.square(field)) + 1e-12)
    field = alpha * field / rms
    yy, xx = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    coords = [yy + field[..., 0], xx + field[..., 1]]
    warped = jnp.stack(
        [
            jax.scipy.ndimage.map_coordinates(image[..., c], coords, order=1, mode="constant")
            for c in range(channels)
        ],
        axis=-1,
    ).astype(image.dtype)
    u = jax.scipy.stats.norm.cdf(apply_draw)
    return _maybe(u, p, warped, image)


def cutout(key: Array, image: Array, *, size: int = 3, p: float = 0.5) -> Array:
    """A ``size x size`` square set to 0 at a uniform random centre (it may overlap the border),
    with probability ``p`` (DeVries and Taylor, 2017)."""
    _check_image(image, "cutout")
    _check_probability(p, "p")
    size = check_count(size, "size", 1)
    height, width = image.shape[:2]
    u = _uniforms(key, 3)
    cy = jnp.minimum(jnp.floor(u[1] * height), height - 1).astype(jnp.int32)
    cx = jnp.minimum(jnp.floor(u[2] * width), width - 1).astype(jnp.int32)
    yy, xx = jnp.meshgrid(jnp.arange(height), jnp.arange(width), indexing="ij")
    half = size // 2
    inside = (jnp.abs(yy - cy) <= half) & (jnp.abs(xx - cx) <= half)
    if size % 2 == 0:  # an even square extends one pixel less below/right of the centre
        inside &= (yy - cy < half) & (xx - cx < half)
    return _maybe(u[0], p, jnp.where(inside[..., None], 0.0, image).astype(image.dtype), image)


def feature_noise(key: Array, x: Array, *, std: float = 0.1, drop: float = 0.1) -> Array:
    """Gaussian noise of ``std`` times the example's scale, and a fraction ``drop`` of features
    zeroed: views of non-image inputs (tabular features)."""
    _check_probability(drop, "drop")
    k_noise, k_drop = jax.random.split(key)
    scale = jnp.sqrt(jnp.mean(jnp.square(x)) + 1e-12)
    noisy = x + std * scale * jax.random.normal(k_noise, x.shape, x.dtype)
    return jnp.where(jax.random.uniform(k_drop, x.shape) < drop, 0.0, noisy).astype(x.dtype)


# ------------------------------------------------------------------------------- pipelines


def compose(*transforms: Callable[[Array, Array], Array]) -> Pipeline:
    """A pipeline applying per-image ``transform(key, image)`` s in order, each example with keys
    of its own (the batch is vmapped)."""

    def one(key: Array, image: Array) -> Array:
        for k, transform in zip(jax.random.split(key, len(transforms)), transforms, strict=True):
            image = transform(k, image)
        return image

    def pipeline(key: Array, x: Array) -> Array:
        return jax.vmap(one)(jax.random.split(key, x.shape[0]), x)

    return pipeline


def _bound(fn, **kwargs):
    return lambda key, image: fn(key, image, **kwargs)


def _simclr(blur: bool, strength: float, scale: tuple[float, float] = (0.08, 1.0)) -> Pipeline:
    parts = [
        _bound(random_resized_crop, scale=scale),
        horizontal_flip,
        _bound(
            color_jitter,
            brightness=0.8 * strength,
            contrast=0.8 * strength,
            saturation=0.8 * strength,
            hue=0.2 * strength,
        ),
        grayscale,
    ]
    if blur:
        parts.append(gaussian_blur)
    return compose(*parts)


_PIPELINES: dict[str, Pipeline] = {
    "simclr_rgb": _simclr(blur=True, strength=1.0),
    "cifar_rgb": _simclr(blur=False, strength=0.5),
    "digits": compose(
        _bound(random_shift, max_shift=1),
        _bound(elastic_noise, alpha=0.5, sigma=1.0, p=0.8),
        _bound(cutout, size=3, p=0.5),
    ),
    "grey": compose(
        _bound(random_resized_crop, scale=(0.5, 1.0), ratio=(0.9, 1.1)),
        _bound(elastic_noise, alpha=1.0, sigma=2.0, p=0.5),
        _bound(cutout, size=8, p=0.5),
    ),
    "noise": compose(feature_noise),
    "identity": lambda key, x: x,
    # Multi-crop's small local views (DINO, SwAV): a small part of the image, resized to the
    # full size (the inputs of a flattening network keep one size), then the pipeline's other
    # transforms. DINO's local crops cover 5-40% of an ImageNet image; on 8x8 digits a crop
    # below about a third of the area keeps too little of the stroke to tell digits apart.
    "simclr_rgb_local": _simclr(blur=True, strength=1.0, scale=(0.05, 0.4)),
    "cifar_rgb_local": _simclr(blur=False, strength=0.5, scale=(0.14, 0.4)),
    "digits_local": compose(
        _bound(random_resized_crop, scale=(0.35, 0.6), ratio=(3 / 4, 4 / 3)),
        _bound(elastic_noise, alpha=0.5, sigma=1.0, p=0.5),
    ),
    "grey_local": compose(
        _bound(random_resized_crop, scale=(0.2, 0.5), ratio=(3 / 4, 4 / 3)),
        _bound(elastic_noise, alpha=1.0, sigma=2.0, p=0.5),
    ),
}


def register(name: str, pipeline: Pipeline) -> None:
    """Registers ``pipeline(key, x[B, ...]) -> views`` under a new ``name``."""
    if name in _PIPELINES:
        raise ValueError(f"View pipeline {name!r} is already registered")
    _PIPELINES[name] = pipeline


def names() -> list[str]:
    """Names of every registered view pipeline."""
    return sorted(_PIPELINES)


def get(name: str | Pipeline) -> Pipeline:
    """The pipeline named ``name`` (a callable is returned as it is)."""
    if callable(name):
        return name
    if name not in _PIPELINES:
        raise ValueError(f"Unknown view pipeline {name!r}; valid: {names()}")
    return _PIPELINES[name]


def default_pipeline(input_shape: Sequence[int] | None) -> str:
    """The pipeline for inputs of ``input_shape``: ``"simclr_rgb"`` for RGB images of 64 pixels
    or more a side, ``"cifar_rgb"`` for smaller RGB images, ``"digits"`` for one-channel images
    of at most 16 pixels a side, ``"grey"`` for larger ones, ``"noise"`` otherwise."""
    shape = tuple(input_shape or ())
    if len(shape) == 3 and shape[-1] == 3:
        return "simclr_rgb" if min(shape[:2]) >= 64 else "cifar_rgb"
    if len(shape) == 3 and shape[-1] == 1:
        return "digits" if max(shape[:2]) <= 16 else "grey"
    return "noise"


def default_local_pipeline(input_shape: Sequence[int] | None) -> str:
    """The multi-crop local-view pipeline for inputs of ``input_shape``: the
    :func:`default_pipeline` name with ``"_local"`` (small crops resized to the full size), or
    ``"noise"`` for non-image inputs."""
    name = default_pipeline(input_shape)
    return name if name == "noise" else f"{name}_local"


def make_views(pipeline: str | Pipeline, key: Array, x: Array, num_views: int = 2) -> Array:
    """``num_views`` independent views of the batch ``x``, stacked: ``[num_views, B, ...]``.

    Args:
      pipeline: a registered name or a ``pipeline(key, x) -> views`` function.
      key: PRNG key; view ``v`` uses ``split(key, num_views)[v]``.
      x: ``[B, ...]`` inputs (images in [0, 1]).
      num_views: number of views, at least 1.

    Raises:
      ValueError: for an unknown pipeline or ``num_views < 1``.
    """
    fn = get(pipeline)
    num_views = check_count(num_views, "num_views", 1)
    # One traced pipeline vmapped over the views (not one copy per view: compile time).
    return jax.vmap(fn, in_axes=(0, None))(jax.random.split(key, num_views), x)


# ------------------------------------------------------------ rotations and policy selection


def rotations(x: Array) -> tuple[Array, Array]:
    """``([4, B, H, W, C] rotated images, [4, B] labels)``: ``k`` quarter turns for label ``k``
    (the pretext task of Gidaris et al., ICLR 2018, and SelfAugment's proxy)."""
    if x.ndim != 4 or x.shape[1] != x.shape[2]:
        raise ValueError(
            f"rotation prediction needs square images [B, H, H, C]; got shape {tuple(x.shape)}"
        )
    rotated = jnp.stack([jnp.rot90(x, k, axes=(1, 2)) for k in range(4)])
    labels = jnp.broadcast_to(jnp.arange(4, dtype=jnp.int32)[:, None], rotated.shape[:2])
    return rotated, labels


def _rotation_loss_and_accuracy(apply, params, x: Array) -> tuple[Array, Array]:
    rotated, labels = rotations(x)
    logits = apply(params, rotated.reshape(-1, *x.shape[1:]))
    if logits.shape[-1] != 4:
        raise ValueError(f"the rotation proxy needs 4 outputs; `apply` gives {logits.shape[-1]}")
    log_p = jax.nn.log_softmax(logits.astype(jnp.float32), -1)
    labels = labels.reshape(-1)
    loss = -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], -1))
    return loss, jnp.mean(jnp.argmax(logits, -1) == labels)


def proxy_mlp(hidden: int = 64) -> tuple[Callable, Callable]:
    """``(init(key, input_shape), apply(params, x))`` of the default proxy network: one ReLU
    hidden layer on the flattened image and 4 outputs (PyTorch's uniform initialisation)."""

    def init(key: Array, input_shape: Sequence[int]) -> dict:
        fan_in = int(np.prod(input_shape))
        keys = jax.random.split(key, 4)
        b1, b2 = 1.0 / math.sqrt(fan_in), 1.0 / math.sqrt(hidden)
        return {
            "w1": jax.random.uniform(keys[0], (fan_in, hidden), jnp.float32, -b1, b1),
            "b1": jax.random.uniform(keys[1], (hidden,), jnp.float32, -b1, b1),
            "w2": jax.random.uniform(keys[2], (hidden, 4), jnp.float32, -b2, b2),
            "b2": jax.random.uniform(keys[3], (4,), jnp.float32, -b2, b2),
        }

    def apply(params: dict, x: Array) -> Array:
        h = jax.nn.relu(x.reshape(x.shape[0], -1).astype(jnp.float32) @ params["w1"] + params["b1"])
        return h @ params["w2"] + params["b2"]

    return init, apply


def rotation_proxy(
    pipeline: str | Pipeline,
    key: Array,
    x_train: Array,
    x_eval: Array,
    *,
    params,
    apply: Callable,
    steps: int = 100,
    batch_size: int = 64,
    learning_rate: float = 0.1,
) -> tuple[Array, Array]:
    """SelfAugment's rotation proxy of one augmentation policy: ``(loss, accuracy)`` of rotation
    prediction on the clean held-out ``x_eval`` after ``steps`` of SGD on rotated views of
    ``x_train`` drawn by ``pipeline``. Pure and jittable (``pipeline`` and ``apply`` static).

    Args:
      pipeline: the candidate policy (a name or ``pipeline(key, x) -> views``).
      key: draws the batches and the views (the same key for every candidate compares them
        on the same batches).
      x_train, x_eval: ``[N, H, H, C]`` square images.
      params: the proxy network's starting parameters.
      apply: ``apply(params, x) -> [N, 4]`` rotation logits.
      steps, batch_size, learning_rate: the short SGD run (plain SGD: no optimizer state).
    """
    fn = get(pipeline)
    n = x_train.shape[0]

    def step(params, k):
        k_idx, k_view = jax.random.split(k)
        idx = jax.random.randint(k_idx, (batch_size,), 0, n)
        views = fn(k_view, x_train[idx])
        grads = jax.grad(lambda p: _rotation_loss_and_accuracy(apply, p, views)[0])(params)
        return jax.tree.map(lambda p, g: p - learning_rate * g, params, grads), None

    params, _ = jax.lax.scan(step, params, jax.random.split(key, steps))
    return _rotation_loss_and_accuracy(apply, params, x_eval)


class PolicyScores(NamedTuple):
    """What :func:`select_policy` found.

    Attributes:
      best: the name of the chosen policy.
      names: the candidates' names, in order.
      rotation_loss: ``[P]`` held-out rotation cross-entropy per candidate.
      rotation_accuracy: ``[P]`` held-out rotation accuracy per candidate.
    """

    best: str
    names: tuple[str, ...]
    rotation_loss: np.ndarray
    rotation_accuracy: np.ndarray


def select_policy(
    candidates: Sequence[str] | Mapping[str, Pipeline],
    x: Array,
    *,
    key: Array,
    steps: int = 100,
    batch_size: int = 64,
    learning_rate: float = 0.1,
    eval_fraction: float = 0.25,
    criterion: str = "accuracy",
    network: tuple[Callable, Callable] | None = None,
) -> PolicyScores:
    """SelfAugment-style choice of an augmentation policy by the rotation-prediction proxy.

    Every candidate trains the same proxy network from the same start, on the same batches, for
    ``steps`` of rotation prediction on its views (:func:`rotation_proxy`); the candidate
    whose network best predicts the rotations of the held-out clean images (the last
    ``eval_fraction`` of ``x``) wins: highest accuracy (``criterion="accuracy"``, ties broken by
    the lower loss) or lowest loss (``"loss"``). SelfAugment found that rotation prediction
    correlates with the supervised evaluation across policies, so needs no labels; it scores a
    self-supervised encoder trained under each policy, which this short proxy run stands in for.
    The result's ``best`` is a pipeline name for the rules' ``views=``.

    Args:
      candidates: pipeline names, or ``{name: pipeline}``; at least one.
      x: ``[N, H, H, C]`` square images in [0, 1] (N >= 8).
      key: PRNG key (the proxy's initialisation, batches and views).
      steps, batch_size, learning_rate: the proxy's SGD run.
      eval_fraction: the share of ``x`` held out for scoring, in (0, 1).
      criterion: ``"accuracy"`` or ``"loss"``.
      network: ``(init(key, input_shape), apply(params, x) -> [N, 4] logits)``; default
        :func:`proxy_mlp`.

    Returns:
      :class:`PolicyScores`.

    References:
      Reed et al., "SelfAugment: Automatic Augmentation Policies for Self-Supervised Learning",
      CVPR 2021 (rotation prediction as the label-free evaluation of an augmentation policy).
    """
    if isinstance(candidates, Mapping):
        named = dict(candidates)
    else:
        named = {c if isinstance(c, str) else f"policy_{i}": c for i, c in enumerate(candidates)}
    if not named:
        raise ValueError("`candidates` must name at least one augmentation policy")
    pipelines = {name: get(fn) for name, fn in named.items()}
    if criterion not in ("accuracy", "loss"):
        raise ValueError(f"`criterion` must be 'accuracy' or 'loss'; got {criterion!r}")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"`eval_fraction` must lie in (0, 1); got {eval_fraction}")
    steps = check_count(steps, "steps", 1)
    batch_size = check_count(batch_size, "batch_size", 1)
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"`learning_rate` must be finite and > 0; got {learning_rate}")
    x = jnp.asarray(x)
    n_eval = int(round(eval_fraction * x.shape[0]))
    if x.shape[0] < 8 or not 1 <= n_eval < x.shape[0]:
        raise ValueError(f"`x` needs at least 8 images to train and score on; got {x.shape[0]}")
    init, apply = network if network is not None else proxy_mlp()
    k_init, k_run = jax.random.split(key)
    params = init(k_init, x.shape[1:])
    x_train, x_eval = x[:-n_eval], x[-n_eval:]
    scores = [
        jax.jit(
            functools.partial(
                rotation_proxy,
                pipeline,
                apply=apply,
                steps=int(steps),
                batch_size=int(batch_size),
                learning_rate=learning_rate,
            )
        )(k_run, x_train, x_eval, params=params)
        for pipeline in pipelines.values()
    ]
    losses = np.asarray([float(s[0]) for s in scores])
    accuracies = np.asarray([float(s[1]) for s in scores])
    if criterion == "accuracy":
        order = np.lexsort((losses, -accuracies))  # last key first: accuracy, then loss
    else:
        order = np.argsort(losses, kind="stable")
    names_ = tuple(pipelines)
    return PolicyScores(names_[int(order[0])], names_, losses, accuracies)
