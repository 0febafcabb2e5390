"""Does the protection hold? Victims trained from scratch on protected data, and countermeasures.

The measure of an unlearnable-example method is the clean test accuracy of a model trained from
scratch on the protected training set (lower is better for the data owner), set against training
on clean data and, when only a share ``r`` of the data is protected, against training on the
clean part alone (what a victim would learn if the protected part taught it nothing).

Victims are trained with the one training loop: :func:`jaxunlearn.ensemble.train` (``fit``
vmapped over seeds, and here also over mix ratios: every (ratio, seed) pair is one model of a
single compiled program, each reading its own mixed copy of the data), with the library's
``finetune`` rule from fresh variables (SGD, momentum 0.9, weight decay 5e-4). A countermeasure
changes either the rule or the data the victim sees:

- ``none``: plain training.
- ``adversarial_training``: min-max training (Madry et al., 2018) with the protection's budget:
  each batch is replaced by its PGD-maximised version (random start, ``steps`` sign steps of
  ``epsilon / 4``), the defence Huang et al. and Fowl et al. report as the strongest.
- ``augmentation``: a random shift of up to ``H / 8`` pixels (zero padding) and Cutout of an
  ``H / 2`` square (DeVries & Taylor, 2017), drawn anew at every step.
- ``jpeg``: JPEG-like compression of the training images (each 8x8 block of each channel: an
  orthonormal 2-D DCT-II, division by the standard luminance table scaled to ``quality``,
  rounding, and back; channels are not converted to YCbCr and nothing is subsampled), the
  quantisation defence of Liu et al. ("Image Shortcut Squeezing", ICML 2023).
- ``early_stopping``: the weights of the epoch with the best accuracy on a clean validation set.

References:
  Huang et al., "Unlearnable Examples", ICLR 2021 (the protocol; protection mostly vanishes
  unless all data is protected). Madry et al., "Towards Deep Learning Models Resistant to
  Adversarial Attacks", ICLR 2018. Liu, Zhao, Larson, "Image Shortcut Squeezing", ICML 2023.
  ``../shared/reference/unlearnable_and_representation.md``, Part A5.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn import ensemble
from jaxunlearn.core import losses, optim
from jaxunlearn.core.checks import check_count
from jaxunlearn.core.rule import BATCH_STATS_KEY, StepCounter, rule_from_loss
from jaxunlearn.core.types import Array, Network, UnlearningRule, Variables
from jaxunlearn.rules.finetune import finetune
from jaxunlearn.train import steps_per_epoch
from jaxunlearn.unlearnable import budget

COUNTERMEASURES = ("none", "adversarial_training", "augmentation", "jpeg", "early_stopping")

# The standard JPEG luminance quantisation table (ITU-T T.81, Annex K).
JPEG_LUMINANCE = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ],
    np.float32,
)


def check_countermeasure(name: str) -> str:
    if name not in COUNTERMEASURES:
        raise ValueError(f"Unknown countermeasure {name!r}; valid: {list(COUNTERMEASURES)}")
    return name


# ------------------------------------------------------------------------------------------------
# Mixing clean and protected data
# ------------------------------------------------------------------------------------------------


def protected_subset(n: int, fraction: float, *, key: Array) -> np.ndarray:
    """``[n]`` boolean mask of ``round(fraction * n)`` random rows (``PoisonCIFAR10``'s
    ``poison_rate``); a smaller fraction's rows are a subset of a larger one's (same key)."""
    fraction = budget.check_fraction(fraction)
    order = np.asarray(jax.random.permutation(key, n))
    mask = np.zeros(n, bool)
    mask[order[: int(round(fraction * n))]] = True
    return mask


def mix(x_clean, x_protected, mask) -> np.ndarray:
    """The training set in which the rows of ``mask`` are protected and the others clean."""
    x_clean, x_protected = np.asarray(x_clean), np.asarray(x_protected)
    if x_clean.shape != x_protected.shape:
        raise ValueError(f"clean {x_clean.shape} and protected {x_protected.shape} data differ")
    mask = np.asarray(mask, bool).reshape((-1,) + (1,) * (x_clean.ndim - 1))
    return np.where(mask, x_protected, x_clean)


# ------------------------------------------------------------------------------------------------
# Countermeasures
# ------------------------------------------------------------------------------------------------


def dct_matrix(size: int = 8) -> np.ndarray:
    """The orthonormal DCT-II matrix ``D`` (``D @ block @ D.T`` transforms a block)."""
    k = np.arange(size)[:, None]
    i = np.arange(size)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * size)) * np.sqrt(2.0 / size)
    d[0] /= np.sqrt(2.0)
    return d.astype(np.float32)


def jpeg_table(quality: int) -> np.ndarray:
    """The luminance table scaled to ``quality`` in [1, 100] (the IJG ``jpeg_quality_scaling``)."""
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG `quality` must be in [1, 100]; got {quality}")
    q = int(quality)
    scale = 5000 / q if q < 50 else 200 - 2 * q
    return np.clip(np.floor((JPEG_LUMINANCE * scale + 50) / 100), 1, 255).astype(np.float32)


@jax.jit
def _jpeg(x: Array, table: Array) -> Array:
    n, h, w, c = x.shape
    ph, pw = -h % 8, -w % 8
    v = jnp.pad(x * 255.0 - 128.0, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    hb, wb = (h + ph) // 8, (w + pw) // 8
    blocks = v.reshape(n, hb, 8, wb, 8, c).transpose(0, 1, 3, 5, 2, 4)  # [n, hb, wb, c, 8, 8]
    d = jnp.asarray(dct_matrix())
    coef = d @ blocks @ d.T
    coef = jnp.round(coef / table) * table
    back = d.T @ coef @ d
    out = back.transpose(0, 1, 4, 2, 5, 3).reshape(n, hb * 8, wb * 8, c)[:, :h, :w]
    return jnp.clip((out + 128.0) / 255.0, 0.0, 1.0)


def jpeg_compress(x, *, quality: int = 10) -> Array:
    """JPEG-like compression of ``[n, H, W, C]`` images in [0, 1] (jitted; see the module doc).

    Returns the decompressed images, in [0, 1].
    """
    x = jnp.asarray(x, jnp.float32)
    if x.ndim != 4:
        raise ValueError(f"`x` must be images shaped [n, H, W, C]; got {x.shape}")
    return _jpeg(x, jnp.asarray(jpeg_table(quality)))


def augment(x: Array, key: Array) -> Array:
    """A random shift of up to ``H // 8`` pixels (at least 1) and a Cutout square of side
    ``H // 2`` per image, for ``[n, H, W, C]`` images."""
    n, h, w, _ = x.shape
    pad = max(1, h // 8)
    side = max(1, h // 2)
    shift_key, cut_key = jax.random.split(key)
    shifts = jax.random.randint(shift_key, (n, 2), 0, 2 * pad + 1)
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))

    def crop(img, s):
        return jax.lax.dynamic_slice(img, (s[0], s[1], 0), (h, w, img.shape[-1]))

    shifted = jax.vmap(crop)(padded, shifts)
    centres = jax.random.randint(cut_key, (n, 2), 0, jnp.array([h, w]))
    rows = jnp.arange(h)[None, :, None]
    cols = jnp.arange(w)[None, None, :]
    top = centres[:, 0, None, None] - side // 2
    left = centres[:, 1, None, None] - side // 2
    hole = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return jnp.where(hole[..., None], 0.0, shifted)


def pgd_max(apply, variables, x, y, *, key, epsilon, steps, value_range=budget.VALUE_RANGE):
    """L-infinity PGD that maximises the loss (random start, ``steps`` sign steps of
    ``epsilon / 4``), clipped to the value range: the examples of adversarial training."""
    low, high = value_range
    step_size = epsilon / 4

    def loss(xp):
        return losses.per_example_cross_entropy(apply(variables, xp).logits, y).sum()

    def step(xp, _):
        xp = xp + step_size * jnp.sign(jax.grad(loss)(xp))
        return jnp.clip(x + jnp.clip(xp - x, -epsilon, epsilon), low, high), None

    start = x + jax.random.uniform(key, x.shape, x.dtype, -epsilon, epsilon)
    xp, _ = jax.lax.scan(step, jnp.clip(start, low, high), None, length=steps)
    return jax.lax.stop_gradient(xp)


class BestOnValidation(NamedTuple):
    """State of :func:`early_stopping`.

    Attributes:
      inner: the wrapped rule's state.
      best: the variables of the best epoch so far.
      best_accuracy: their accuracy on the validation set.
      step: updates taken.
    """

    inner: object
    best: Variables
    best_accuracy: Array
    step: StepCounter


def early_stopping(
    rule: UnlearningRule, apply: Callable, x_val, y_val, *, every: int
) -> UnlearningRule:
    """``rule``, keeping in its state the variables with the best clean validation accuracy,
    checked every ``every`` updates (an epoch). The check is a real branch under an ensemble
    ``vmap`` (it reads only the shared :class:`StepCounter`); read the victim from
    ``state.best``."""
    x_val, y_val = jnp.asarray(x_val), jnp.asarray(y_val)
    every = check_count(every, "every", 1)

    def init(variables, *, key):
        return BestOnValidation(
            rule.init(variables, key=key), variables, jnp.full((), -1.0), StepCounter.zero()
        )

    def update(variables, state, batch, *, key):
        variables, inner, metrics = rule.update(variables, state.inner, batch, key=key)
        step = state.step.next()

        def check(args):
            best, best_acc = args
            acc = losses.accuracy(apply(variables, x_val).logits, y_val)
            better = acc > best_acc
            best = jax.tree.map(lambda a, b: jnp.where(better, a, b), variables, best)
            return best, jnp.maximum(acc, best_acc)

        best, best_acc = jax.lax.cond(
            step.count % every == 0, check, lambda a: a, (state.best, state.best_accuracy)
        )
        return variables, BestOnValidation(inner, best, best_acc, step), metrics

    return UnlearningRule(init, update)


def victim_rule(
    network: Network,
    countermeasure: str = "none",
    *,
    learning_rate: float = 0.05,
    optimizer: optax.GradientTransformation | Mapping | None = None,
    epsilon: float = 8 / 255,
    adversarial_steps: int = 5,
    validation: tuple | None = None,
    steps_per_epoch: int = 1,
    value_range=budget.VALUE_RANGE,
) -> UnlearningRule:
    """The training rule of a victim under ``countermeasure`` (``jpeg`` changes the data, not the
    rule: it trains plainly). It reads ``batch["retain"]``, as every training rule does.

    Args:
      network: the victim's architecture.
      countermeasure: one of :data:`COUNTERMEASURES`.
      learning_rate, optimizer: SGD with momentum 0.9 and weight decay 5e-4 by default.
      epsilon: adversarial training's budget (the protection's).
      adversarial_steps: PGD steps per batch of adversarial training.
      validation: ``(x_val, y_val)`` clean validation data (``early_stopping`` only).
      steps_per_epoch: updates between two validation checks (``early_stopping``).
      value_range: the images' range.
    """
    check_countermeasure(countermeasure)
    base = finetune(network.apply, learning_rate=learning_rate, optimizer=optimizer)
    if countermeasure in ("none", "jpeg"):
        return base
    if countermeasure == "early_stopping":
        if validation is None:
            raise ValueError("the `early_stopping` countermeasure needs `validation` data")
        return early_stopping(base, network.apply, *validation, every=steps_per_epoch)
    epsilon = budget.check_epsilon(epsilon)
    opt = optim.resolve(optimizer, learning_rate=learning_rate)
    apply = network.apply

    def loss_fn(variables, batch, *, reference, step, key):
        del reference, step
        x, y = batch["retain"]["x"], batch["retain"]["y"]
        if countermeasure == "adversarial_training":
            x = pgd_max(
                apply,
                variables,
                x,
                y,
                key=key,
                epsilon=epsilon,
                steps=adversarial_steps,
                value_range=value_range,
            )
        else:
            x = augment(x, key)
        out = apply(variables, x, train=True)
        metrics = {} if out.batch_stats is None else {BATCH_STATS_KEY: out.batch_stats}
        return losses.cross_entropy(out.logits, y), metrics

    return rule_from_loss(loss_fn, opt, keep_reference=False)


# ------------------------------------------------------------------------------------------------
# Victims
# ------------------------------------------------------------------------------------------------


def test_accuracy(network: Network, variables: Variables, x, y) -> np.ndarray:
    """``[N]`` accuracy (percent) of each model of an ensemble on ``(x, y)``."""
    logits, _ = ensemble.Predictor(network)(variables, x, features=False)
    return 100.0 * np.mean(np.argmax(logits, -1) == np.asarray(y)[None], axis=1)


class Victims(NamedTuple):
    """Victims trained by :func:`train_victims`.

    Attributes:
      variables: ``[M]`` models (for ``early_stopping``: the best validation epoch's).
      diverged: ``[M]`` bool.
      runtime_s, compile_s: of the training program.
    """

    variables: Variables
    diverged: np.ndarray
    runtime_s: float
    compile_s: float


def train_victims(
    network: Network,
    rule: UnlearningRule,
    datasets: Sequence,
    y,
    *,
    keys: Array,
    epochs: int,
    batch_size: int,
    index=None,
    init_program: Callable | None = None,
) -> Victims:
    """Trains one victim per (dataset, key) pair from scratch, in one vmapped program.

    The datasets (e.g. the training set mixed at several ratios, all with labels ``y``) are
    stacked into one array; model ``d * len(keys) + s`` reads dataset ``d`` (its rows
    ``index``, all rows by default) with key ``s``: every ratio gets the same seeds.

    Args:
      network: the victim architecture.
      rule: the training rule (see :func:`victim_rule`).
      datasets: ``D`` arrays ``[n, ...]`` with the same labels ``y``.
      y: ``[n]`` labels.
      keys: ``[S]`` PRNG keys (:func:`jaxunlearn.ensemble.seed_keys`).
      epochs, batch_size: the training run.
      index: rows to train on (default: all).
      init_program: the rule's compiled init, reused across calls.
    """
    datasets = [np.asarray(d, np.float32) for d in datasets]
    n = len(datasets[0])
    rows = np.arange(n) if index is None else np.asarray(index, np.int64)
    seeds = int(keys.shape[0])
    x = np.concatenate(datasets)
    per_model = np.stack([d * n + rows for d in range(len(datasets)) for _ in range(seeds)])
    all_keys = jnp.concatenate([keys] * len(datasets))
    labels = np.tile(np.asarray(y), len(datasets))
    res = ensemble.train(
        network,
        rule,
        x,
        labels,
        per_model.astype(np.int32),
        keys=all_keys,
        epochs=epochs,
        batch_size=min(int(batch_size), len(rows)),
        min_models=1,
        init_program=init_program,
    )
    variables = res.variables
    if isinstance(res.state, BestOnValidation):
        variables = res.state.best
    return Victims(variables, np.asarray(res.diverged), res.runtime_s, res.compile_s)


def victim_steps_per_epoch(n: int, batch_size: int) -> int:
    """Updates per epoch of a victim trained on ``n`` examples."""
    return steps_per_epoch(n, min(int(batch_size), n))
