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

Matching along the authorised learner's trajectory (``authorized_steps > 0``): the paper's UGEs
"preserve learning trajectories for the authorized model", so the gradients should match where
the authorised learner goes, not only where it starts. As in gradient-matching dataset
condensation (Zhao, Mopuri & Bilen, ICLR 2021: alternate matching the synthetic data's gradient
at the current parameters with training the network on the synthetic data), after each batch's
PGD the authorised network takes ``authorized_steps`` updates of the authorised learner's recipe
(the library's ``finetune`` rule: SGD, momentum 0.9, weight decay 5e-4, the victims' update) on
batches of the *protected* data as it stands (:func:`jaxunlearn.train.sample_batch`, reshuffled
each epoch, as the learner draws them). The next batch is then matched at the advanced
parameters. ``rounds`` sweeps run in a third ``lax.scan``; the authorised network keeps training
across them (``rounds`` epochs of its training when one step per batch covers an epoch's worth
of updates) and each later sweep warm-starts every batch from its current perturbation. With a
sweep of ``B`` batches and ``authorized_steps = s`` the generator follows ``rounds * B * s``
learner updates; the learner's epoch at batch size ``batch_size`` has ``B`` updates, so
``authorized_steps = 1`` walks the learner's trajectory at its own pace.

What differs from the paper: there is no CLIP offline, so the shared feature space ``phi`` (and
the student ``s``) is the ``surrogate`` (variables of ``network`` trained on the clean data here,
its penultimate ``features`` and logits), not CLIP's image encoder; the paper trains a generator
network that outputs the perturbation, here each image's perturbation is optimised directly by
PGD (a generator is one parameterisation of the same objective); gradient matching is at the
authorised network's given parameters (default: its initialisation, the point the authorised
learner trains from) unless ``authorized_steps > 0`` (above); the undistillation term's exact
form in the paper was not available offline and is this function's reading of it (above).

References:
  Ye & Wang, "Ungeneralizable Examples", CVPR 2024 (arXiv 2404.14016).
  Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021.
  ``../shared/reference/unlearnable_and_representation.md``, Part A4.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.core import losses
from jaxunlearn.core.checks import check_count
from jaxunlearn.core.types import Array, Network, Variables
from jaxunlearn.rules.finetune import finetune
from jaxunlearn.train import Stream, sample_batch
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
    authorized_steps: int = 0,
    rounds: int = 1,
    authorized_learning_rate: float = 0.05,
    authorized_optimizer=None,
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
      authorized_steps: authorised-learner updates after each batch's PGD (module docstring);
        0 (default) matches gradients at ``authorized`` only.
      rounds: sweeps over the data (>= 1); the authorised network keeps training across them and
        each later sweep starts every batch from its current perturbation.
      authorized_learning_rate, authorized_optimizer: the authorised learner's ``finetune`` SGD
        (default: the victims' 0.05, momentum 0.9, weight decay 5e-4); used when
        ``authorized_steps > 0``.

    Returns:
      A :class:`~jaxunlearn.unlearnable.budget.Protection`; ``metrics`` holds the terms averaged
      over the last sweep's batches before (``*_start``, at the sweep's starting perturbation)
      and after the optimisation, each at the authorised parameters the batch was matched at.
      With ``authorized_steps > 0`` also ``gm_final`` and ``gm_final_start``: the gradient-match
      term of the released images and of the first sweep's random starts at the authorised
      network's final parameters, and ``authorized_distance``: the L2 distance its parameters
      moved.
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
    authorized_steps = check_count(authorized_steps, "authorized_steps", 0)
    rounds = check_count(rounds, "rounds", 1)
    lr = budget.check_epsilon(authorized_learning_rate, "authorized_learning_rate")
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

    rule = finetune(
        auth_net.apply, learning_rate=float(lr), train_mode=True, optimizer=authorized_optimizer
    )
    learner_batch = min(int(batch_size), n)

    def run(x, y, noise_key, surrogate, authorized):
        # The learner's batch order (starts use fold_in(noise_key, first index < n)).
        data_key = jax.random.fold_in(noise_key, n)

        def terms(v, xb, xu, yb):
            return uge_terms(
                lambda params, xv: auth_net.apply({**v, "params": params}, xv).logits,
                v["params"],
                lambda xv: network.apply(surrogate, xv).features,
                lambda xv: network.apply(surrogate, xv).logits,
                xb,
                xu,
                yb,
                temperature,
            )

        def objective(xu, v, xb, yb):
            t = terms(v, xb, xu, yb)
            return gm_weight * t["gm"] + fd_weight * t["fd"] + ud_weight * t["ud"]

        def random_start(idx):
            start = jax.random.uniform(
                jax.random.fold_in(noise_key, idx[0]),
                (len(idx), *x.shape[1:]),
                jnp.float32,
                -epsilon,
                epsilon,
            )
            return jnp.clip(x[idx] + start, low, high)

        idxs = jnp.asarray(batches)
        # Per batch slot (the last one padded with the first images again): its current images.
        starts = jax.lax.map(random_start, idxs)

        def released(xus):  # batches cover 0..n-1 in order
            return xus.reshape(-1, *x.shape[1:])[:n]

        def learn(v, s, xus, t):
            stream = Stream(released(xus), y, {"retain": jnp.arange(n)})

            def one(c, i):
                v, s = c
                batch = sample_batch(stream, {"retain": learner_batch}, data_key, t + i)
                v, s, _ = rule.update(v, s, batch, key=jax.random.fold_in(data_key, t + i))
                return (v, s), None

            (v, s), _ = jax.lax.scan(one, (v, s), jnp.arange(authorized_steps))
            return v, s

        def batch(carry, slot):
            xus, v, s, t = carry
            idx = idxs[slot]
            xb, yb = x[idx], y[idx]

            def step(xu, _):
                xu = xu - step_size * jnp.sign(jax.grad(objective)(xu, v, xb, yb))
                return jnp.clip(xb + jnp.clip(xu - xb, -epsilon, epsilon), low, high), None

            xu0 = xus[slot]
            xu, _ = jax.lax.scan(step, xu0, None, length=steps)
            xus = xus.at[slot].set(xu)
            out = (terms(v, xb, xu0, yb), terms(v, xb, xu, yb))
            if authorized_steps:
                v, s = learn(v, s, xus, t)
            return (xus, v, s, t + authorized_steps), out

        def sweep(carry, _):
            return jax.lax.scan(batch, carry, jnp.arange(len(batches)))

        state = rule.init(authorized, key=data_key) if authorized_steps else None
        carry = (starts, authorized, state, jnp.zeros((), jnp.int32))
        (xus, final, _, _), (before, after) = jax.lax.scan(sweep, carry, None, length=rounds)
        protected = released(xus)
        protected = jnp.clip(x + jnp.clip(protected - x, -epsilon, epsilon), low, high)
        mean = lambda d: {k: jnp.mean(v[-1]) for k, v in d.items()}  # noqa: E731
        extra = {}
        if authorized_steps:

            def gm_at_final(xs):
                def one(_, idx):
                    return None, terms(final, x[idx], xs[idx], y[idx])["gm"]

                return jnp.mean(jax.lax.scan(one, None, idxs)[1])

            moved = jax.tree.map(
                lambda a, b: jnp.sum((a - b) ** 2), final["params"], authorized["params"]
            )
            extra = {
                "gm_final": gm_at_final(protected),
                "gm_final_start": gm_at_final(released(starts)),
                "authorized_distance": jnp.sqrt(sum(jax.tree.leaves(moved))),
            }
        return protected, protected - x, mean(before), mean(after), extra

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
        authorized_steps,
        rounds,
        float(lr),
        authorized_optimizer,
    )
    program = budget.cached_jit(settings, lambda: run)
    protected, delta, before, after, extra = program(
        jnp.asarray(x), jnp.asarray(y), noise_key, surrogate, authorized
    )
    metrics = {f"{k}_start": float(v) for k, v in before.items()}
    metrics.update({k: float(v) for k, v in after.items()})
    metrics.update({k: float(v) for k, v in extra.items()})
    return budget.Protection(protected, delta, metrics)
