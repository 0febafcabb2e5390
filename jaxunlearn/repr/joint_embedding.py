"""Joint-embedding self-supervised rules without a target network: SimCLR, VICReg, Barlow Twins,
SimSiam.

Each rule draws two augmented views of every example of ``batch["retain"]`` from its update key
(see :mod:`jaxunlearn.repr.common`), runs the encoder (a network with a projection head,
:func:`jaxunlearn.repr.encoder`) on both in one pass in training mode, and takes one optimizer
step on its loss (:mod:`jaxunlearn.repr.losses`). Labels are never read.

Optimizers: the references train ResNet-50 with LARS at batch 256-4096 (SimCLR, VICReg, Barlow
Twins); LARS's layer-wise trust ratio is meant for such batches, so for the small models and
batches here these rules default to Adam (lr 1e-3, no weight decay). SimSiam's reference optimizer
(SGD, momentum 0.9, weight decay 1e-4, lr 0.05 at batch 256) works at small scale and is its
default. Any optax optimizer, or settings, can be given (:func:`jaxunlearn.core.optim.resolve`).

References: see each factory; formulas and defaults in
``shared/reference/unlearnable_and_representation.md`` (Part B1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import optax

from jaxunlearn.core import optim
from jaxunlearn.core.rule import rule_from_loss
from jaxunlearn.core.types import UnlearningRule
from jaxunlearn.repr import losses
from jaxunlearn.repr.common import (
    PART,
    check_count,
    check_nonnegative,
    check_positive,
    encode,
    pipeline_of,
    views_of,
    with_batch_stats,
)
from jaxunlearn.repr.registry import rule

ADAM = {"name": "adam", "weight_decay": 0.0}
SIMSIAM_SGD = {"name": "sgd", "momentum": 0.9, "weight_decay": 1e-4}


def _two_view_rule(
    name: str,
    apply: Callable,
    pair_loss: Callable,
    *,
    optimizer: optax.GradientTransformation,
    views,
    num_views: int,
    input_shape,
    train_mode: bool,
    min_batch: int,
    why: str,
) -> UnlearningRule:
    """A rule minimising ``pair_loss(outputs [V, B, ...]) -> (loss, metrics)`` on fresh views."""
    num_views = check_count(num_views, "num_views", 2)
    pipeline = pipeline_of(views, input_shape)

    def loss_fn(variables, batch, *, reference, step, key):
        del reference, step
        stacked = views_of(
            batch[PART], key, pipeline, num_views, rule=name, min_batch=min_batch, why=why
        )
        out, stats = encode(apply, variables, stacked, train=train_mode, rule=name)
        loss, metrics = pair_loss(out)
        return loss, with_batch_stats(metrics, stats)

    return rule_from_loss(loss_fn, optimizer, keep_reference=False)


def _pairs(num_views: int):
    return [(i, j) for i in range(num_views) for j in range(i + 1, num_views)]


@rule(
    "simclr",
    parts=(PART,),
    paper="Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, "
    "ICML 2020",
    needs_labels=False,
    task="any",
    sweepable=("learning_rate", "temperature"),
    head=lambda width, num_outputs: {"dims": (width, 128), "batch_norm": True},
    optimizer=ADAM,
)
def simclr(
    apply: Callable,
    *,
    input_shape: tuple[int, ...] | None = None,
    temperature: float = 0.1,
    learning_rate: float = 1e-3,
    views: str | Callable | None = None,
    num_views: int = 2,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """SimCLR: NT-Xent between the projections of two views (:func:`losses.nt_xent`).

    Args:
      apply: the encoder's ``apply`` (a network with a projection head).
      input_shape: shape of one example (context, chooses the default view pipeline).
      temperature: NT-Xent temperature (0.1, ``tf2/run.py``); must be > 0.
      learning_rate: step size.
      views: a view pipeline name or function (default: by input shape).
      num_views: views per example (2; with more, the loss is averaged over view pairs).
      train_mode: BatchNorm in training mode.
      optimizer: an optax optimizer or settings over Adam (see the module docstring).

    References:
      Chen et al., ICML 2020; google-research/simclr ``tf2/objective.py``, ``tf2/run.py``.
    """
    check_positive(temperature, "temperature")
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=ADAM)

    def pair_loss(out):
        z = out.projection
        pairs = _pairs(z.shape[0])
        loss = sum(losses.nt_xent(z[i], z[j], temperature) for i, j in pairs) / len(pairs)
        return loss, {}

    return _two_view_rule(
        "simclr",
        apply,
        pair_loss,
        optimizer=opt,
        views=views,
        num_views=num_views,
        input_shape=input_shape,
        train_mode=train_mode,
        min_batch=2,
        why="NT-Xent (the other examples are the negatives)",
    )


@rule(
    "vicreg",
    parts=(PART,),
    paper="Bardes, Ponce, LeCun, VICReg: Variance-Invariance-Covariance Regularization for "
    "Self-Supervised Learning, ICLR 2022",
    needs_labels=False,
    task="any",
    sweepable=("learning_rate", "sim_weight", "var_weight", "cov_weight"),
    head=lambda width, num_outputs: {"dims": (width, width, width), "batch_norm": True},
    optimizer=ADAM,
)
def vicreg(
    apply: Callable,
    *,
    input_shape: tuple[int, ...] | None = None,
    sim_weight: float = 25.0,
    var_weight: float = 25.0,
    cov_weight: float = 1.0,
    learning_rate: float = 1e-3,
    views: str | Callable | None = None,
    num_views: int = 2,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """VICReg: invariance + variance + covariance terms on the expander output (25 / 25 / 1).

    The covariance matrix needs at least 2 examples per batch. With more than two views the loss
    is averaged over view pairs.

    References:
      Bardes et al., ICLR 2022; facebookresearch/vicreg ``main_vicreg.py``.
    """
    for value, name in (
        (sim_weight, "sim_weight"),
        (var_weight, "var_weight"),
        (cov_weight, "cov_weight"),
    ):
        check_nonnegative(value, name)
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=ADAM)

    def pair_loss(out):
        z = out.projection
        pairs = _pairs(z.shape[0])
        terms = [losses.vicreg_terms(z[i], z[j]) for i, j in pairs]
        inv, var, cov = (sum(t[k] for t in terms) / len(terms) for k in range(3))
        loss = sim_weight * inv + var_weight * var + cov_weight * cov
        return loss, {"invariance": inv, "variance": var, "covariance": cov}

    return _two_view_rule(
        "vicreg",
        apply,
        pair_loss,
        optimizer=opt,
        views=views,
        num_views=num_views,
        input_shape=input_shape,
        train_mode=train_mode,
        min_batch=2,
        why="VICReg's variance and covariance terms",
    )


@rule(
    "barlow_twins",
    parts=(PART,),
    paper="Zbontar et al., Barlow Twins: Self-Supervised Learning via Redundancy Reduction, "
    "ICML 2021",
    needs_labels=False,
    task="any",
    sweepable=("learning_rate", "redundancy_weight"),
    head=lambda width, num_outputs: {"dims": (width, width, width), "batch_norm": True},
    optimizer=ADAM,
)
def barlow_twins(
    apply: Callable,
    *,
    input_shape: tuple[int, ...] | None = None,
    redundancy_weight: float = 5e-3,
    learning_rate: float = 1e-3,
    views: str | Callable | None = None,
    num_views: int = 2,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """Barlow Twins: the cross-correlation of the batch-normalised projections toward identity.

    Args:
      redundancy_weight: ``lambda`` on the off-diagonal terms (5e-3, solo-learn).

    The batch normalisation of the loss needs at least 2 examples per batch.

    References:
      Zbontar et al., ICML 2021; solo-learn ``solo/losses/barlow.py``.
    """
    check_nonnegative(redundancy_weight, "redundancy_weight")
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=ADAM)

    def pair_loss(out):
        z = out.projection
        pairs = _pairs(z.shape[0])
        loss = sum(
            losses.barlow_twins_loss(z[i], z[j], redundancy_weight=redundancy_weight)
            for i, j in pairs
        ) / len(pairs)
        return loss, {}

    return _two_view_rule(
        "barlow_twins",
        apply,
        pair_loss,
        optimizer=opt,
        views=views,
        num_views=num_views,
        input_shape=input_shape,
        train_mode=train_mode,
        min_batch=2,
        why="Barlow Twins' batch normalisation",
    )


@rule(
    "simsiam",
    parts=(PART,),
    paper="Chen and He, Exploring Simple Siamese Representation Learning, CVPR 2021",
    needs_labels=False,
    task="any",
    sweepable=("learning_rate",),
    head=lambda width, num_outputs: {
        "dims": (width, width, width),
        "predictor_dims": (max(width // 4, 1), width),
        "batch_norm": True,
    },
    optimizer=SIMSIAM_SGD,
)
def simsiam(
    apply: Callable,
    *,
    input_shape: tuple[int, ...] | None = None,
    learning_rate: float = 0.05,
    views: str | Callable | None = None,
    num_views: int = 2,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """SimSiam: each view's prediction regresses the other view's stop-gradient projection.

    Args:
      learning_rate: SGD step size (0.05 = 0.05 x batch/256 at batch 256, the paper's).
      optimizer: settings over SGD with momentum 0.9 and weight decay 1e-4 (the paper's).

    The predictor is a bottleneck MLP (width / 4, as 512 of 2048). BatchNorm in the heads needs
    at least 2 examples per batch.

    References:
      Chen and He, CVPR 2021 (Algorithm 1 and Sec. 4).
    """
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=SIMSIAM_SGD)

    def pair_loss(out):
        if out.prediction is None:
            raise ValueError("simsiam reads a predictor: build the network with repr.encoder")
        z, p = out.projection, out.prediction
        pairs = _pairs(z.shape[0])
        loss = sum(losses.simsiam_loss(p[i], p[j], z[i], z[j]) for i, j in pairs) / len(pairs)
        return loss, {}

    return _two_view_rule(
        "simsiam",
        apply,
        pair_loss,
        optimizer=opt,
        views=views,
        num_views=num_views,
        input_shape=input_shape,
        train_mode=train_mode,
        min_batch=2,
        why="BatchNorm in the heads",
    )
