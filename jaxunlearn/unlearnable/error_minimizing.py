"""Error-minimising noise: the bi-level min-min of Huang et al. (ICLR 2021), jitted end to end.

    min_theta  E_(x, y)  min_{||delta||_inf <= eps}  CE(f_theta(x + delta), y)

Each round trains the surrogate for ``train_steps`` mini-batches on the perturbed data, then
sweeps the training set with the surrogate frozen, running ``pgd_steps`` steps of projected
gradient *descent* on the loss per batch; rounds repeat until the surrogate's accuracy on the
perturbed training set exceeds ``1 - stop_error``. The PGD steps run in ``lax.scan``, the sweep in
``lax.scan`` over batches, the rounds in ``lax.while_loop``: one compiled program.

- sample-wise noise: one ``delta_i`` per image (reference: 20 PGD steps, stop error 0.01);
- class-wise noise: one ``delta_c`` per class; after PGD on a batch (reference: 1 step, stop error
  0.1), each class present in it takes the mean of its examples' perturbations, clipped to the
  budget (``universal_perturbation`` in the reference code).

The PGD step follows ``toolbox.min_min_attack``: ``x' <- x' - alpha * sign(grad)``, then
``eta = clip(x' - x, -eps, eps)`` and ``x' = clip(x + eta, low, high)``: clipping to the value
range is part of every step. The surrogate trains with the library's ``finetune`` rule (the same
update every victim uses), on the batches :func:`jaxunlearn.train.sample_batch` draws, so the
loader continues across rounds as the reference's does.

What differs from the reference's ``perturbation.py``: batches of 128 by default (its
``--train_batch_size`` is 512); the class-wise sweep and stopping rule use the whole training set
(its class-wise command sweeps a 20% subset, ``--use_subset``); the surrogate trains on images
clipped to the value range, and noise is optimised as it is released. The reference adds the
noise unclipped while generating and keeps (class-wise: averages) PGD steps taken before the
range clip, so part of the noise it optimises (below 0 on a black background) is clipped away
on release: ``reference_clipping=True`` reproduces it. ``M = 10`` steps of 512 are 0.1 epoch of
CIFAR-10 per round; on a small dataset the same share is fewer steps (``train_steps``), as in
``experiments/configs/unlearnable.py:cnn32``.

References:
  Huang, Ma, Erfani, Bailey, Wang, "Unlearnable Examples: Making Personal Data Unexploitable",
  ICLR 2021; github.com/HanxunH/Unlearnable-Examples (``perturbation.py``, ``toolbox.py``).
  ``../shared/reference/unlearnable_and_representation.md``, Part A1.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import losses
from jaxunlearn.core.checks import check_count
from jaxunlearn.core.types import Array, Network
from jaxunlearn.rules.finetune import finetune
from jaxunlearn.train import Stream, sample_batch
from jaxunlearn.unlearnable import budget

MODES = ("samplewise", "classwise")
# The reference README's settings per mode: PGD steps per batch and the stopping error.
MODE_DEFAULTS = {
    "samplewise": {"pgd_steps": 20, "stop_error": 0.01},
    "classwise": {"pgd_steps": 1, "stop_error": 0.1},
}


def pgd_min(
    apply,
    variables,
    x: Array,
    y: Array,
    start: Array,
    *,
    epsilon,
    step_size,
    steps,
    value_range,
    eta_before_range_clip: bool = False,
) -> Array:
    """``steps`` steps of L-infinity PGD that *minimise* the loss from ``x + start``; returns
    ``eta = x' - x`` (inside the budget, ``x + eta`` inside the value range).

    With ``eta_before_range_clip`` it returns the reference's ``eta``: the last step's
    ``clip(x' - x, -eps, eps)`` taken *before* ``x + eta`` is clipped to the value range, so it
    may point outside the range (e.g. below 0 on a black background)."""
    low, high = value_range

    def loss(xp):
        return losses.per_example_cross_entropy(apply(variables, xp).logits, y).sum()

    def step(carry, _):
        xp, _ = carry
        xp = xp - step_size * jnp.sign(jax.grad(loss)(xp))
        eta = jnp.clip(xp - x, -epsilon, epsilon)
        return (jnp.clip(x + eta, low, high), eta), None

    start = jnp.broadcast_to(jnp.asarray(start, x.dtype), x.shape)  # the carried eta's shape
    (xp, eta), _ = jax.lax.scan(step, (jnp.clip(x + start, low, high), start), None, length=steps)
    return eta if eta_before_range_clip else xp - x


def error_minimizing_noise(
    network: Network,
    x,
    y,
    *,
    key: Array,
    mode: str = "samplewise",
    epsilon: float = 8 / 255,
    step_size: float | None = None,
    pgd_steps: int | None = None,
    train_steps: int = 10,
    stop_error: float | None = None,
    max_rounds: int = 100,
    batch_size: int = 128,
    learning_rate: float = 0.1,
    optimizer: optax.GradientTransformation | Mapping | None = None,
    num_classes: int | None = None,
    value_range=budget.VALUE_RANGE,
    reference_clipping: bool = False,
) -> budget.Protection:
    """Sample-wise or class-wise error-minimising noise for ``(x, y)``.

    Args:
      network: the surrogate's architecture; it starts from ``network.init`` (fresh, as in the
        reference) and is trained inside the min-min.
      x: ``[n, ...]`` images inside ``value_range``.
      y: ``[n]`` integer labels.
      key: PRNG key (surrogate initialisation, the initial uniform noise, batch order).
      mode: ``"samplewise"`` or ``"classwise"``.
      epsilon: the L-infinity budget (reference: 8/255 of a [0, 1] range).
      step_size: PGD step; ``epsilon / 10`` by default (0.8/255 in the reference).
      pgd_steps: PGD steps per batch; 20 (sample-wise) or 1 (class-wise) by default.
      train_steps: surrogate mini-batch updates per round (M = 10).
      stop_error: stop once the surrogate's error on the perturbed training set is below it;
        0.01 (sample-wise) or 0.1 (class-wise) by default.
      max_rounds: a cap on the rounds (the reference has none).
      batch_size: examples per surrogate step and per PGD batch.
      learning_rate: the surrogate's SGD step size (momentum 0.9, weight decay 5e-4).
      optimizer: the surrogate's optimizer settings (see :func:`jaxunlearn.core.optim.resolve`).
      num_classes: class count for class-wise noise (default: ``network.num_outputs``).
      value_range: the images' ``(low, high)``; every protected pixel stays inside it.
      reference_clipping: reproduce the reference code's range handling during generation:
        the surrogate trains and is evaluated on ``x + delta`` *unclipped*, and the noise keeps
        the PGD ``eta`` taken before the range clip (class-wise: averages it), so noise that
        points out of the range (below 0 on a black background) is optimised although the
        release clips it away. The default optimises the noise that is released. The returned
        images are clipped to ``value_range`` either way.

    Returns:
      A :class:`~jaxunlearn.unlearnable.budget.Protection`; ``metrics`` holds ``rounds``,
      ``surrogate_accuracy`` (on the protected training set, at the end) and ``stopped`` (1 when
      the stopping rule ended the loop, 0 when ``max_rounds`` did).

    Raises:
      ValueError: an unknown mode, a budget or step that is not a positive finite number, a
        count (``pgd_steps``, ``max_rounds``, ``batch_size``) that is not an integer >= 1 (>= 0
        for ``train_steps``), or images outside ``value_range``; before anything is compiled.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown error-minimising noise `mode` {mode!r}; valid: {list(MODES)}")
    epsilon = budget.check_epsilon(epsilon)
    step_size = budget.check_epsilon(epsilon / 10 if step_size is None else step_size, "step_size")
    pgd_steps = MODE_DEFAULTS[mode]["pgd_steps"] if pgd_steps is None else pgd_steps
    pgd_steps = check_count(pgd_steps, "pgd_steps", 1)
    max_rounds = check_count(max_rounds, "max_rounds", 1)
    train_steps = check_count(train_steps, "train_steps", 0)
    batch_size = check_count(batch_size, "batch_size", 1)
    stop_error = float(MODE_DEFAULTS[mode]["stop_error"] if stop_error is None else stop_error)
    if not 0.0 <= stop_error < 1.0:
        raise ValueError(f"`stop_error` must be in [0, 1); got {stop_error}")
    value_range = budget.check_value_range(value_range)
    x, y = budget.check_images(x, y, value_range)
    num_classes = int(num_classes or network.num_outputs)
    if y.max() >= num_classes:
        raise ValueError(f"labels reach {y.max()} but `num_classes` is {num_classes}")
    n = len(x)
    batch_size = min(batch_size, n)
    batches = budget.padded_batches(n, batch_size)
    rule = finetune(
        network.apply, learning_rate=learning_rate, train_mode=True, optimizer=optimizer
    )
    low, high = value_range
    reference_clipping = bool(reference_clipping)
    pgd = dict(
        epsilon=epsilon,
        step_size=step_size,
        steps=pgd_steps,
        value_range=value_range,
        eta_before_range_clip=reference_clipping,
    )

    def run(x, y, key, stop_error, max_rounds):
        init_key, noise_key, data_key = jax.random.split(key, 3)
        variables = network.init(init_key)
        state = rule.init(variables, key=init_key)
        shape = x.shape if mode == "samplewise" else (num_classes, *x.shape[1:])
        noise = jax.random.uniform(noise_key, shape, jnp.float32, -epsilon, epsilon)
        per_example = (lambda d: d) if mode == "samplewise" else (lambda d: d[y])

        def perturbed(noise):
            return jnp.clip(x + per_example(noise), low, high)

        def seen(noise):  # what the surrogate trains and is evaluated on while generating
            if reference_clipping:
                return x + per_example(noise)
            return perturbed(noise)

        def train(v, s, noise, rnd):
            stream = Stream(seen(noise), y, {"retain": jnp.arange(n)})

            def step(c, i):
                v, s = c
                t = rnd * train_steps + i
                batch = sample_batch(stream, {"retain": batch_size}, data_key, t)
                v, s, _ = rule.update(v, s, batch, key=jax.random.fold_in(data_key, t))
                return (v, s), None

            (v, s), _ = jax.lax.scan(step, (v, s), jnp.arange(train_steps))
            return v, s

        def sweep(v, noise):
            def samplewise(noise, idx):
                eta = pgd_min(network.apply, v, x[idx], y[idx], noise[idx], **pgd)
                return noise.at[idx].set(eta), None

            def classwise(noise, idx):
                yb = y[idx]
                eta = pgd_min(network.apply, v, x[idx], yb, noise[yb], **pgd)
                sums = jax.ops.segment_sum(eta, yb, num_classes)
                counts = jax.ops.segment_sum(jnp.ones_like(yb, jnp.float32), yb, num_classes)
                counts = counts.reshape((-1,) + (1,) * (eta.ndim - 1))
                mean = sums / jnp.maximum(counts, 1.0)
                return jnp.where(counts > 0, jnp.clip(mean, -epsilon, epsilon), noise), None

            body = samplewise if mode == "samplewise" else classwise
            noise, _ = jax.lax.scan(body, noise, jnp.asarray(batches))
            return noise

        def accuracy(v, noise):
            return budget.batched_accuracy(network.apply, v, seen(noise), y, batches)

        def cond(c):
            _, _, _, rnd, acc = c
            return (acc <= 1.0 - stop_error) & (rnd < max_rounds)

        def body(c):
            v, s, noise, rnd, _ = c
            v, s = train(v, s, noise, rnd)
            noise = sweep(v, noise)
            return v, s, noise, rnd + 1, accuracy(v, noise)

        carry = (variables, state, noise, jnp.zeros((), jnp.int32), jnp.zeros(()))
        _, _, noise, rounds, acc = jax.lax.while_loop(cond, body, carry)
        protected = perturbed(noise)
        return protected, protected - x, rounds, acc

    settings = (  # the stopping rule and the round cap are arguments, not constants
        "error_minimizing_noise",
        network,
        mode,
        epsilon,
        step_size,
        pgd_steps,
        train_steps,
        batch_size,
        n,
        learning_rate,
        optimizer,
        num_classes,
        value_range,
        reference_clipping,
        x.shape,
        str(x.dtype),
    )
    program = budget.cached_jit(settings, lambda: run)
    protected, delta, rounds, acc = program(
        jnp.asarray(x),
        jnp.asarray(y),
        key,
        jnp.asarray(stop_error, jnp.float32),
        jnp.asarray(int(max_rounds), jnp.int32),
    )
    metrics = {
        "rounds": int(rounds),
        "surrogate_accuracy": float(acc),
        "stopped": int(float(acc) > 1.0 - stop_error),
    }
    return budget.Protection(protected, delta, metrics)
