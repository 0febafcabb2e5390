"""Unlearnable Clusters (Zhang et al., CVPR 2023): label-agnostic, cluster-wise perturbations.

1. Cluster the surrogate's penultimate features of the clean data with k-means (``p = 10``).
2. For each cluster ``i``, a small conv generator ``G_i`` maps one fixed uniform-noise image
   ``sigma_i`` to a perturbation ``delta_i = epsilon * tanh(G_i(sigma_i))`` (inside the
   L-infinity ball by construction); it is trained so that the surrogate's features of the
   cluster's perturbed images move toward the *next* cluster's centroid:

       min  KL( softmax(mu_{(i + 1) mod p}) || softmax(g(x + delta_i)) ),   x in cluster i.

3. Every image of cluster ``i`` gets ``delta_i`` (clipped to the value range).

Labels are never read. The ``p`` generators are independent, so they train together under one
``vmap`` (Adam), in one ``lax.scan`` over steps; k-means is Lloyd's algorithm in
``lax.fori_loop`` from k-means++ seeds.

What differs from the paper: the public code trains a ResNet generator on 224x224 images with
``epsilon = 16/255`` (Adam, lr 1e-4, 50 epochs over the whole loader for every generator); here
each generator is two 3x3 convolutions, and it trains on batches of its own cluster (the paper's
description), with the surrogate trained here rather than an ImageNet or CLIP ResNet-50.

References:
  Zhang, Ma, Zhang, Jin, Wang, Xu, Zhang, Zhou, "Unlearnable Clusters: Towards Label-agnostic
  Unlearnable Examples", CVPR 2023; github.com/jiamingzhang94/Unlearnable-Clusters.
  ``../shared/reference/unlearnable_and_representation.md``, Part A3.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn.core.checks import check_count
from jaxunlearn.core.types import Array, Network, Variables
from jaxunlearn.unlearnable import budget
from jaxunlearn.unlearnable.bayes_error import squared_distances


def check_num_clusters(num_clusters, n: int) -> int:
    """``num_clusters`` as an int in ``[1, n]``, or a ``ValueError`` naming the setting."""
    k = check_count(num_clusters, "num_clusters", 1)
    if k > n:
        raise ValueError(f"`num_clusters` ({k}) is larger than the number of examples ({n})")
    return k


def kmeans(features, num_clusters: int, *, key: Array, iterations: int = 50):
    """Lloyd's k-means from k-means++ seeds.

    Args:
      features: ``[n, d]`` (flattened per example).
      num_clusters: ``k <= n``.
      key: PRNG key (the seeding).
      iterations: Lloyd iterations.

    Returns:
      ``(centroids [k, d], assignment [n])``.
    """
    f = jnp.asarray(features, jnp.float32).reshape(len(features), -1)
    k = check_num_clusters(num_clusters, f.shape[0])
    return _kmeans(f, key, k, int(iterations))


@jax.jit(static_argnums=(2, 3))
def _kmeans(f, key, k, iterations):
    n = f.shape[0]
    first = jax.random.randint(key, (), 0, n)
    centroids = jnp.zeros((k, f.shape[1]), f.dtype).at[0].set(f[first])

    def seed(i, c):
        d2 = jnp.min(jnp.where(jnp.arange(k)[None] < i, squared_distances(f, c), jnp.inf), 1)
        pick = jax.random.choice(jax.random.fold_in(key, i), n, p=d2 / jnp.maximum(d2.sum(), 1e-30))
        return c.at[i].set(f[pick])

    centroids = jax.lax.fori_loop(1, k, seed, centroids)

    def lloyd(_, c):
        assign = jnp.argmin(squared_distances(f, c), 1)
        sums = jax.ops.segment_sum(f, assign, k)
        counts = jax.ops.segment_sum(jnp.ones(n), assign, k)[:, None]
        return jnp.where(counts > 0, sums / jnp.maximum(counts, 1.0), c)  # empty: kept

    centroids = jax.lax.fori_loop(0, iterations, lloyd, centroids)
    return centroids, jnp.argmin(squared_distances(f, centroids), 1).astype(jnp.int32)


def init_generator(key: Array, channels: int, width: int = 16) -> dict:
    """Parameters of the small perturbation generator (3x3 conv, ReLU, 3x3 conv)."""
    k1, k2 = jax.random.split(key)
    return {
        "w1": jax.random.normal(k1, (3, 3, channels, width)) * np.sqrt(2.0 / (9 * channels)),
        "b1": jnp.zeros((width,)),
        "w2": jax.random.normal(k2, (3, 3, width, channels)) * np.sqrt(1.0 / (9 * width)),
        "b2": jnp.zeros((channels,)),
    }


def generate(params: dict, seed_image: Array, epsilon: float) -> Array:
    """``epsilon * tanh(G(seed_image))``: one ``[H, W, C]`` perturbation inside the budget."""
    dims = ("NHWC", "HWIO", "NHWC")
    h = (
        jax.lax.conv_general_dilated(
            seed_image[None], params["w1"], (1, 1), "SAME", dimension_numbers=dims
        )
        + params["b1"]
    )
    h = jax.nn.relu(h)
    out = (
        jax.lax.conv_general_dilated(h, params["w2"], (1, 1), "SAME", dimension_numbers=dims)
        + params["b2"]
    )
    return epsilon * jnp.tanh(out[0])


def unlearnable_clusters(
    network: Network,
    x,
    y=None,
    *,
    key: Array,
    surrogate: Variables,
    num_clusters: int = 10,
    epsilon: float = 16 / 255,
    target_offset: int = 1,
    steps: int = 200,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    kmeans_iterations: int = 50,
    value_range=budget.VALUE_RANGE,
) -> budget.Protection:
    """Cluster-wise perturbations that pull each cluster's features toward another cluster.

    Args:
      network: the surrogate's architecture (features = its penultimate activations).
      x: ``[n, H, W, C]`` images inside ``value_range``.
      y: ignored (the method is label-agnostic); accepted for the common generator signature.
      key: PRNG key (k-means seeding, generator initialisation, fixed noise, batches).
      surrogate: trained surrogate variables.
      num_clusters: ``p`` (10 in the paper's configs); at most ``n``.
      epsilon: the L-infinity budget (16/255 in the paper).
      target_offset: cluster ``i`` is pulled toward centroid ``(i + target_offset) mod p``.
      steps: Adam steps of every generator.
      batch_size: images of the cluster per step (drawn with replacement).
      learning_rate: Adam's step size.
      kmeans_iterations: Lloyd iterations.
      value_range: the images' ``(low, high)``.

    Returns:
      A :class:`~jaxunlearn.unlearnable.budget.Protection`; ``metrics`` holds ``kl_start`` and
      ``kl_end`` (mean over clusters) and ``smallest_cluster``.
    """
    del y  # label-agnostic
    epsilon = budget.check_epsilon(epsilon)
    value_range = budget.check_value_range(value_range)
    x, _ = budget.check_images(x, None, value_range)
    if x.ndim != 4:
        raise ValueError(f"`x` must be images shaped [n, H, W, C]; got {x.shape}")
    k = check_num_clusters(num_clusters, len(x))
    steps = check_count(steps, "steps", 1)
    batch_size = check_count(batch_size, "batch_size", 1)
    low, high = value_range
    n, channels = len(x), x.shape[-1]
    opt = optax.adam(learning_rate)

    def run(x, key, surrogate):
        def features(xb):
            return network.apply(surrogate, xb).features

        km_key, gen_key, seed_key, data_key = jax.random.split(key, 4)
        feats = features(x)
        centroids, assign = _kmeans(feats.reshape(n, -1), km_key, k, int(kmeans_iterations))
        targets = jax.nn.softmax(jnp.roll(centroids, -target_offset, axis=0), -1)
        seeds = jax.random.uniform(seed_key, (k, *x.shape[1:]))
        params = jax.vmap(lambda kk: init_generator(kk, channels))(jax.random.split(gen_key, k))
        members = jax.nn.one_hot(assign, k).T  # [k, n]
        counts = members.sum(1)
        probs = jnp.where(counts[:, None] > 0, members / jnp.maximum(counts[:, None], 1), 1.0 / n)

        def loss(p, seed, target, idx):
            delta = generate(p, seed, epsilon)
            logq = jax.nn.log_softmax(features(jnp.clip(x[idx] + delta, low, high)), -1)
            return jnp.mean(jnp.sum(target * (jnp.log(jnp.maximum(target, 1e-30)) - logq), -1))

        def one_cluster(p, s, seed, target, prob, t):
            idx = jax.random.choice(jax.random.fold_in(data_key, t), n, (batch_size,), p=prob)
            value, g = jax.value_and_grad(loss)(p, seed, target, idx)
            updates, s = opt.update(g, s, p)
            return optax.apply_updates(p, updates), s, value

        def step(carry, t):
            p, s = carry
            keys_t = t * k + jnp.arange(k)
            p, s, value = jax.vmap(one_cluster)(p, s, seeds, targets, probs, keys_t)
            return (p, s), value.mean()

        state = jax.vmap(opt.init)(params)
        (params, _), curve = jax.lax.scan(step, (params, state), jnp.arange(steps))
        deltas = jax.vmap(lambda p, s: generate(p, s, epsilon))(params, seeds)
        protected = jnp.clip(x + deltas[assign], low, high)
        return protected, protected - x, curve[0], curve[-1], jnp.min(counts)

    settings = (
        "unlearnable_clusters",
        network,
        k,
        epsilon,
        target_offset,
        steps,
        batch_size,
        learning_rate,
        int(kmeans_iterations),
        value_range,
        x.shape,
    )
    program = budget.cached_jit(settings, lambda: run)
    protected, delta, kl0, kl1, smallest = program(jnp.asarray(x), key, surrogate)
    metrics = {"kl_start": float(kl0), "kl_end": float(kl1), "smallest_cluster": int(smallest)}
    return budget.Protection(protected, delta, metrics)
