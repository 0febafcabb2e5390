"""Text-conditioned class-wise noise: T2UE's zero-contact idea, with no pretrained model.

T2UE (Ma, Huang et al., arXiv 2508.03091) protects a class without ever seeing its images: a
text-to-image model maps the class's *text description* into noise space, and the noise is
optimised in an error-minimisation framework. Here, offline and small:

- a class description is featurised as a bag of hashed character trigrams (``buckets`` dims,
  L2-normalised; no vocabulary, nothing pretrained);
- a small text encoder (one ReLU layer) and a noise generator (one linear layer to the image shape,
  ``epsilon * tanh``) map it to the class's perturbation ``delta_c``;
- encoder, generator and a surrogate classifier (``network``, fresh) are trained *together* to
  minimise the surrogate's cross-entropy on ``clip(proxy + delta_c)`` where the proxy images are
  uniform noise over the value range, never the data (the min-min of error-minimising noise with
  the data replaced by data-free proxies): the noise of each description becomes a pattern a
  classifier picks up on any background;
- every training image of class ``c`` gets ``delta_c`` from the class's descriptions (their mean
  embedding), clipped to the value range. The images never enter the optimisation.

What differs from the paper: no CLIP or text-to-image model (nothing can be downloaded here); the
text encoder is trained here, on the descriptions given (several per class); proxies are uniform
noise instead of public images; the evaluation is supervised classification, not CLIP retrieval.

References:
  Ma, Huang, et al., "T2UE: Generating Unlearnable Examples from Text Descriptions",
  arXiv 2508.03091 (2025). Huang et al., "Unlearnable Examples", ICLR 2021 (the min-min).
  ``../shared/reference/unlearnable_and_representation.md``, Part A4.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn.core import losses
from jaxunlearn.core.checks import check_count
from jaxunlearn.core.types import Array, Network
from jaxunlearn.unlearnable import budget

_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Default descriptions for ten digit classes (`digits`, MNIST, SVHN).
DIGIT_DESCRIPTIONS = tuple(
    (f"the digit {name}", f"a handwritten {i}", f"the number {name} written by hand")
    for i, name in enumerate(_NAMES)
)


def text_features(texts: Sequence[str], buckets: int = 256) -> np.ndarray:
    """``[len(texts), buckets]`` L2-normalised counts of hashed character trigrams (CRC32),
    of each lower-cased text padded with a space on both sides."""
    out = np.zeros((len(texts), buckets), np.float32)
    for i, text in enumerate(texts):
        padded = f" {text.lower()} "
        for j in range(len(padded) - 2):
            out[i, zlib.crc32(padded[j : j + 3].encode()) % buckets] += 1.0
        norm = np.linalg.norm(out[i])
        if norm > 0:
            out[i] /= norm
    return out


def _check_descriptions(descriptions, num_classes: int) -> list[list[str]]:
    if descriptions is None:
        if num_classes != len(DIGIT_DESCRIPTIONS):
            raise ValueError(
                f"`descriptions` are needed for {num_classes} classes (the defaults describe ten "
                "digits): give one or more strings per class"
            )
        descriptions = DIGIT_DESCRIPTIONS
    descriptions = [[d] if isinstance(d, str) else list(d) for d in descriptions]
    if len(descriptions) != num_classes or not all(
        d and all(isinstance(t, str) and t.strip() for t in d) for d in descriptions
    ):
        raise ValueError(
            f"`descriptions` must give {num_classes} classes at least one non-empty string each"
        )
    return descriptions


def text_conditioned_noise(
    network: Network,
    x,
    y,
    *,
    key: Array,
    descriptions: Sequence | None = None,
    epsilon: float = 8 / 255,
    steps: int = 300,
    batch_size: int = 64,
    learning_rate: float = 1e-2,
    embed_dim: int = 32,
    buckets: int = 256,
    num_classes: int | None = None,
    value_range=budget.VALUE_RANGE,
) -> budget.Protection:
    """Class-wise noise generated from each class's text description alone.

    Args:
      network: the surrogate's architecture (trained from scratch inside, on proxies only).
      x: ``[n, ...]`` images to protect, inside ``value_range`` (only the noise is added to them).
      y: ``[n]`` integer labels (which class's noise each image gets).
      key: PRNG key.
      descriptions: per class, a string or a list of strings; ten digit descriptions by default.
      epsilon: the L-infinity budget.
      steps: joint Adam steps of the encoder, the generator and the surrogate.
      batch_size: proxy images per step.
      learning_rate: Adam's step size.
      embed_dim: the text embedding's size.
      buckets: hashed trigram buckets of the text features.
      num_classes: default ``network.num_outputs``.
      value_range: the images' ``(low, high)``.

    Returns:
      A :class:`~jaxunlearn.unlearnable.budget.Protection`; ``metrics`` holds the surrogate's
      ``proxy_accuracy`` on noise-only proxies at the end (how learnable the noise is).
    """
    epsilon = budget.check_epsilon(epsilon)
    value_range = budget.check_value_range(value_range)
    x, y = budget.check_images(x, y, value_range)
    num_classes = int(num_classes or network.num_outputs)
    descriptions = _check_descriptions(descriptions, num_classes)
    steps = check_count(steps, "steps", 1)
    batch_size = check_count(batch_size, "batch_size", 1)
    low, high = value_range
    shape = x.shape[1:]
    size = math.prod(shape)
    texts = [t for d in descriptions for t in d]
    owner = np.array([c for c, d in enumerate(descriptions) for _ in d], np.int32)
    feats = jnp.asarray(text_features(texts, buckets))
    owner_j = jnp.asarray(owner)
    opt = optax.adam(learning_rate)

    def noise(params, f):
        h = jax.nn.relu(f @ params["enc_w"] + params["enc_b"])
        return epsilon * jnp.tanh(h @ params["gen_w"] + params["gen_b"]).reshape(-1, *shape)

    def run(x, y, key, feats, owner):
        init_key, net_key, data_key = jax.random.split(key, 3)
        k1, k2 = jax.random.split(init_key)
        params = {
            "enc_w": jax.random.normal(k1, (buckets, embed_dim)) * np.sqrt(2.0 / buckets),
            "enc_b": jnp.zeros((embed_dim,)),
            "gen_w": jax.random.normal(k2, (embed_dim, size)) / np.sqrt(embed_dim),
            "gen_b": jnp.zeros((size,)),
            "surrogate": network.init(net_key)["params"],
        }
        variables = network.init(net_key)

        def loss(p, proxies, which):
            delta = noise(p, feats[which])
            inputs = jnp.clip(proxies + delta, low, high)
            logits = network.apply({**variables, "params": p["surrogate"]}, inputs).logits
            return losses.cross_entropy(logits, owner[which]), logits

        def step(carry, t):
            p, s = carry
            k = jax.random.fold_in(data_key, t)
            which = jax.random.randint(k, (batch_size,), 0, len(texts))
            proxies = jax.random.uniform(
                jax.random.fold_in(k, 1), (batch_size, *shape), minval=low, maxval=high
            )
            (value, _), g = jax.value_and_grad(loss, has_aux=True)(p, proxies, which)
            updates, s = opt.update(g, s, p)
            return (optax.apply_updates(p, updates), s), value

        (params, _), _ = jax.lax.scan(step, (params, opt.init(params)), jnp.arange(steps))
        # Learnability of the final noise on fresh proxies.
        which = jnp.arange(len(texts)).repeat(8)
        proxies = jax.random.uniform(
            jax.random.fold_in(data_key, steps + 1), (len(which), *shape), minval=low, maxval=high
        )
        _, logits = loss(params, proxies, which)
        acc = losses.accuracy(logits, owner[which])
        # Each class's noise: the generator at the mean embedding input of its descriptions.
        counts = jax.ops.segment_sum(jnp.ones(len(texts)), owner, num_classes)
        class_feats = jax.ops.segment_sum(feats, owner, num_classes) / counts[:, None]
        class_noise = noise(params, class_feats)
        protected = jnp.clip(x + class_noise[y], low, high)
        return protected, protected - x, acc

    settings = (
        "text_conditioned_noise",
        network,
        epsilon,
        int(steps),
        int(batch_size),
        learning_rate,
        embed_dim,
        buckets,
        num_classes,
        value_range,
        x.shape,
        len(texts),
    )
    program = budget.cached_jit(settings, lambda: run)
    protected, delta, acc = program(jnp.asarray(x), jnp.asarray(y), key, feats, owner_j)
    return budget.Protection(protected, delta, {"proxy_accuracy": float(acc)})
