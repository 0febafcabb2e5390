"""Ungeneralizable Examples (Ye & Wang, CVPR 2024): learnable for an authorised network only.

The protector fixes an *authorised* network (architecture and parameters) and perturbs each
image, ``x_u = clip(x + delta)`` with ``||delta||_inf <= epsilon``, by minimising three terms:

- ``L_gm``, gradient matching on the authorised network: ``1 - cos(g(x_u), g(x))``, where ``g`` is
  the gradient of the batch's cross-entropy with respect to the authorised parameters: training
  the authorised network on ``x_u`` takes the steps training on ``x`` would (learnable for it);
- ``L_fd``, feature distance, *maximised*: ``-mean ||phi(x_u) - phi(x)||^2`` in a shared feature
  space ``phi``: any other network that learns those features sees images that moved away from
  their class's clean features (ungeneralizable for it);
- ``L_ud``, undistillation, *maximised*: ``-T^2 KL(softmax(f_a(x_u)/T) || softmax(s(x_u)/T))``
  between the authorised network ``f_a`` (the teacher a hacker would distil) and a student ``s``
  in the shared space: a student matching the teacher's soft labels on the released data is
  pulled away from the teacher.

    L = gm_weight * L_gm + fd_weight * L_fd + ud_weight * L_ud

Optimised per batch with ``steps`` signed projected-gradient steps (``lax.scan``), each followed
by the clip to the budget and to the value range (as in :func:`.error_minimizing.pgd_min`); the
batches sweep the data in a second ``lax.scan``: one compiled program.

What differs from the paper: there is no CLIP offline, so the shared feature space ``phi`` (and
the student ``s``) is the ``surrogate`` (variables of ``network`` trained on the clean data here,
its penultimate ``features`` and logits), not CLIP's image encoder; the paper trains a generator
network that outputs the perturbation, here each image's perturbation is optimised directly by
PGD (a generator is one parameterisation of the same objective); gradient matching is at the
authorised network's given parameters (default: its initialisation, the point the authorised
learner trains from), not along a training trajectory; the undistillation term's exact form in
the paper was not available offline and is this function's reading of it (above).

References:
  Ye & Wang, "Ungeneralizable Examples", CVPR 2024 (arXiv 2404.14016).
  ``../shared/reference/unlearnable_and_representation.md``, Part A4.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.core import losses
from jaxunlearn.core.checks import check_count
from jaxunlearn.core.types import Array, Network, Variables
from jaxunlearn.unlearnable import budget


def _flat_grad(logits_fn, params, x, y) -> Array:
    g = jax.grad(lambda p: losses.cross_entropy(logits_fn(p, x), y))(params)
    return jnp.concatenate([a.ravel() for a in jax.tree.leaves(g)])


def uge_terms(
    authorized_logits, authorized_params, features, student_logits, x, xu, y, temperature=4.0
) -> dict:
    """The three terms of the UGE objective (each as it enters the minimised sum).

    Args:
      authorized_logits: ``(params, x) -> logits`` of the authorised network.
      authorized_params: the parameters gradients are taken (and matched) with respect to.
      features: ``x -> [n, d]`` the shared feature space.
      student_logits: ``x -> logits`` of the distilling student in the shared space.
      x: clean images; xu: their perturbed versions; y: integer labels.
      temperature: the distillation temperature ``T``.

    Returns:
      ``{"gm": 1 - cos(g(xu), g(x)), "fd": -mean ||phi(xu) - phi(x)||^2,
      "ud": -T^2 KL(teacher(xu) || student(xu))}``.
    """
    g_clean = jax.lax.stop_gradient(_flat_grad(authorized_logits, authorized_params, x, y))
    g_u = _flat_grad(authorized_logits, authorized_params, xu, y)
    cos = jnp.vdot(g_u, g_clean) / (
        jnp.maximum(jnp.linalg.norm(g_u) * jnp.linalg.norm(g_clean), 1e-12)
    )
    fx = jax.lax.stop_gradient(features(x))
    fd = jnp.mean(jnp.sum((features(xu) - fx).reshape(len(x), -1) ** 2, -1))
    t = float(temperature)
    teacher = jax.nn.log_softmax(authorized_logits(authorized_params, xu) / t, -1)
    student = jax.nn.log_softmax(student_logits(xu) / t, -1)
    kl = jnp.mean(jnp.sum(jnp.exp(teacher) * (teacher - student), -1))
    return {"gm": 1.0 - cos, "fd": -fd, "ud": -(t**2) * kl}


def ungeneralizable_examples(
    network: Network,
    x,
    y,
    *,
    key: Array,
    surrogate: Variables,
    authorized: Variables | None = None,
    authorized_network: Network | None = None,
    epsilon: float = 8 / 255,
    step_size: float | None = None,
    steps: int = 20,
    batch_size: int = 128,
    gm_weight: float = 1.0,
    fd_weight: float = 1.0,
    ud_weight: float = 0.1,
    temperature: float = 4.0,
    value_range=budget.VALUE_RANGE,
) -> budget.Protection:
    """Ungeneralizable examples of ``(x, y)``: learnable for the authorised network only.

    Args:
      network: the surrogate's architecture (the shared feature space and the student).
      x: ``[n, ...]`` images inside ``value_range``.
      y: ``[n]`` integer labels.
      key: PRNG key (the authorised network's initialisation when ``authorized`` is None, the
        random start of the perturbation).
      surrogate: variables of ``network`` trained on clean data (stands in for CLIP).
      authorized: the authorised network's variables; default ``authorized_network.init`` with a
        key from ``key`` (the point the authorised learner starts from).
      authorized_network: the authorised architecture; default ``network``.
      epsilon: the L-infinity budget.
      step_size: signed-gradient step; ``epsilon / 10`` by default.
      steps: PGD steps per batch.
      batch_size: images per batch (gradient matching is over the batch's mean loss).
      gm_weight, fd_weight, ud_weight: the terms' weights (each must be >= 0).
      temperature: the undistillation temperature.
      value_range: the images' ``(low, high)``; every protected pixel stays inside it.

    Returns:
      A :class:`~jaxunlearn.unlearnable.budget.Protection`; ``metrics`` holds the terms averaged
      over batches before (``*_start``, at the random start) and after the optimisation.
    """
    epsilon = budget.check_epsilon(epsilon)
    step_size = budget.check_epsilon(epsilon / 10 if step_size is None else step_size, "step_size")
    temperature = budget.check_epsilon(temperature, "temperature")
    weights = {"gm_weight": gm_weight, "fd_weight": fd_weight, "ud_weight": ud_weight}
    for name, w in weights.items():
        if not (np.isfinite(w) and w >= 0):
            raise ValueError(f"`{name}` must be a finite number >= 0; got {w!r}")
    steps = check_count(steps, "steps", 1)
    batch_size = check_count(batch_size, "batch_size", 1)
    if surrogate is None:
        raise ValueError("`surrogate` (variables of `network` trained on clean data) is needed")
    value_range = budget.check_value_range(value_range)
    x, y = budget.check_images(x, y, value_range)
    auth_net = network if authorized_network is None else authorized_network
    n = len(x)
    batches = budget.padded_batches(n, int(batch_size))
    low, high = value_range
    auth_key, noise_key = jax.random.split(key)
    if authorized is None:
        authorized = auth_net.init(auth_key)

    def run(x, y, noise_key, surrogate, authorized):
        def auth_logits(params, xb):
            return auth_net.apply({**authorized, "params": params}, xb).logits

        def terms(xb, xu, yb):
            return uge_terms(
                auth_logits,
                authorized["params"],
                lambda v: network.apply(surrogate, v).features,
                lambda v: network.apply(surrogate, v).logits,
                xb,
                xu,
                yb,
                temperature,
            )

        def objective(xu, xb, yb):
            t = terms(xb, xu, yb)
            return gm_weight * t["gm"] + fd_weight * t["fd"] + ud_weight * t["ud"]

        def batch(_, idx):
            xb, yb = x[idx], y[idx]
            start = jax.random.uniform(
                jax.random.fold_in(noise_key, idx[0]), xb.shape, jnp.float32, -epsilon, epsilon
            )

            def step(xu, _):
                xu = xu - step_size * jnp.sign(jax.grad(objective)(xu, xb, yb))
                return jnp.clip(xb + jnp.clip(xu - xb, -epsilon, epsilon), low, high), None

            xu0 = jnp.clip(xb + start, low, high)
            xu, _ = jax.lax.scan(step, xu0, None, length=steps)
            return None, (xu, terms(xb, xu0, yb), terms(xb, xu, yb))

        _, (xus, before, after) = jax.lax.scan(batch, None, jnp.asarray(batches))
        # Batches cover 0..n-1 in order (the last one padded with the first images again).
        protected = xus.reshape(-1, *x.shape[1:])[:n]
        protected = jnp.clip(x + jnp.clip(protected - x, -epsilon, epsilon), low, high)
        mean = lambda d: {k: jnp.mean(v) for k, v in d.items()}  # noqa: E731
        return protected, protected - x, mean(before), mean(after)

    settings = (
        "ungeneralizable_examples",
        network,
        auth_net,
        epsilon,
        step_size,
        int(steps),
        batches.shape,
        float(gm_weight),
        float(fd_weight),
        float(ud_weight),
        temperature,
        value_range,
        x.shape,
    )
    program = budget.cached_jit(settings, lambda: run)
    protected, delta, before, after = program(
        jnp.asarray(x), jnp.asarray(y), noise_key, surrogate, authorized
    )
    metrics = {f"{k}_start": float(v) for k, v in before.items()}
    metrics.update({k: float(v) for k, v in after.items()})
    return budget.Protection(protected, delta, metrics)
