"""Self-distillation rules with an EMA target network: BYOL and DINO.

The target (teacher) is an exponential moving average of the online (student) network, kept in
the rule state (:class:`~jaxunlearn.repr.common.TargetState`) and updated after every online step
with BYOL's cosine schedule ``tau_k = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2`` (``K`` = the
run's ``num_steps`` from ``repr.make``; a constant ``tau_base`` without it). DINO's centre of the
teacher outputs lives in the same state. Views are drawn as in every representation rule
(:mod:`jaxunlearn.repr.common`); labels are never read.

Optimizers: BYOL's reference is LARS at batch 4096, DINO's AdamW (lr 5e-4 x batch/256, weight
decay 0.04 -> 0.4); for small models both default here to Adam (lr 1e-3 and 5e-4, no weight
decay).

References: Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020 (google-deepmind/
deepmind-research ``byol``); Caron et al., "Emerging Properties in Self-Supervised Vision
Transformers", ICCV 2021 (facebookresearch/dino ``main_dino.py``). Formulas and defaults:
``shared/reference/unlearnable_and_representation.md`` (Part B1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import optim
from jaxunlearn.core.types import UnlearningRule
from jaxunlearn.data import views as views_lib
from jaxunlearn.repr import common, losses
from jaxunlearn.repr.common import (
    PART,
    check_count,
    check_positive,
    check_rate,
    encode,
    pipeline_of,
    rule_with_target,
    views_of,
    with_batch_stats,
)
from jaxunlearn.repr.registry import rule

BYOL_ADAM = {"name": "adam", "weight_decay": 0.0}
DINO_ADAM = {"name": "adam", "weight_decay": 0.0}


@rule(
    "byol",
    parts=(PART,),
    paper="Grill et al., Bootstrap Your Own Latent, NeurIPS 2020",
    needs_labels=False,
    task="any",
    sweepable=("learning_rate", "ema_rate"),
    head=lambda width, num_outputs: {
        "dims": (width, 128),
        "predictor_dims": (width, 128),
        "batch_norm": True,
    },
    optimizer=BYOL_ADAM,
)
def byol(
    apply: Callable,
    *,
    input_shape: tuple[int, ...] | None = None,
    num_steps: int | None = None,
    ema_rate: float = 0.996,
    learning_rate: float = 1e-3,
    views: str | Callable | None = None,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """BYOL: the online prediction of each view regresses the target projection of the other.

    Loss: :func:`losses.byol_loss` (``2 - 2 cos`` summed over both directions, batch mean).

    Args:
      apply: the encoder's ``apply`` (projection head and predictor: ``repr.encoder("byol", ...)``).
      input_shape: context, chooses the default view pipeline.
      num_steps: context, the run's length ``K`` of the EMA schedule.
      ema_rate: ``tau_base`` in [0, 1] (0.996, BYOL's 1000-epoch preset and solo-learn's).
      learning_rate: step size.
      views: view pipeline name or function.
      train_mode: BatchNorm in training mode (online and target).
      optimizer: an optax optimizer or settings over Adam.

    References:
      Grill et al., NeurIPS 2020; ``byol/utils/helpers.py``, ``byol/utils/schedules.py``.
    """
    check_rate(ema_rate, "ema_rate")
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=BYOL_ADAM)
    pipeline = pipeline_of(views, input_shape)

    def loss_fn(variables, batch, *, target, extra, step, key):
        del step
        stacked = views_of(
            batch[PART], key, pipeline, 2, rule="byol", min_batch=2, why="BatchNorm in the heads"
        )
        online, stats = encode(apply, variables, stacked, train=train_mode, rule="byol")
        if online.prediction is None:
            raise ValueError("byol reads a predictor: build the network with repr.encoder('byol')")
        tgt, _ = encode(apply, target, stacked, train=train_mode, rule="byol")
        p, z = online.prediction, tgt.projection
        loss = losses.byol_loss(p[0], p[1], z[0], z[1])
        return loss, (with_batch_stats({}, stats), extra)

    return rule_with_target(loss_fn, opt, base_rate=ema_rate, num_steps=num_steps)


@rule(
    "dino",
    parts=(PART,),
    paper="Caron et al., Emerging Properties in Self-Supervised Vision Transformers, ICCV 2021",
    needs_labels=False,
    task="any",
    sweepable=(
        "learning_rate",
        "ema_rate",
        "student_temperature",
        "teacher_temperature",
        "warmup_teacher_temperature",
        "center_momentum",
    ),
    head=lambda width, num_outputs: {
        "dims": (width, width, 64, 4 * width),
        "batch_norm": True,
        "kind": "dino",
    },
    optimizer=DINO_ADAM,
)
def dino(
    apply: Callable,
    *,
    input_shape: tuple[int, ...] | None = None,
    num_steps: int | None = None,
    ema_rate: float = 0.996,
    student_temperature: float = 0.1,
    teacher_temperature: float = 0.04,
    warmup_teacher_temperature: float = 0.04,
    warmup_teacher_temperature_steps: int = 0,
    center_momentum: float = 0.9,
    freeze_last_layer_steps: int = 6,
    learning_rate: float = 5e-4,
    views: str | Callable | None = None,
    num_views: int = 2,
    num_local_views: int = 6,
    local_views: str | Callable | None = None,
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """DINO: the student matches the centred, sharpened EMA teacher on the other views.

    Multi-crop: ``num_views`` global views (``views``) go through teacher and student,
    ``num_local_views`` small local crops (``local_views``, by default
    :func:`jaxunlearn.data.views.default_local_pipeline`: a small part of the image resized to
    the full size) through the student only; every student view is trained toward every
    teacher view but its own (:func:`losses.dino_loss`). The centre is updated with the teacher
    outputs after each step (:func:`losses.dino_center`). The teacher temperature rises
    linearly from ``warmup_teacher_temperature`` to ``teacher_temperature`` over the first
    ``warmup_teacher_temperature_steps`` updates, and the head's weight-normalised last layer
    gets no gradient for the first ``freeze_last_layer_steps`` (``cancel_gradients_last_layer``).
    Metrics: ``loss`` (the cross-entropy), ``teacher_entropy``, ``kl = loss - teacher_entropy``
    (what the student step reduces) and ``teacher_temperature``.

    The head (``repr.encoder("dino", ...)``) is DINOHead with BatchNorm in its hidden layers
    (``--use_bn_in_head``) and no activation on the bottleneck. On the digits CNN both matter:
    without them the features of a random encoder are so alike that the centred teacher
    output is uniform from the start (teacher entropy ``log K``) and the student collapses to
    it; multi-crop then adds about one point of k-NN accuracy (README).

    Args:
      apply: the encoder's ``apply`` (``repr.encoder("dino", ...)``: the DINO head).
      num_steps: context, the run's length for the teacher's EMA schedule.
      ema_rate: teacher momentum base in [0, 1] (0.996, cosine to 1 as in DINO).
      student_temperature: 0.1; teacher_temperature: 0.04 (DINO's defaults, both > 0).
      warmup_teacher_temperature, warmup_teacher_temperature_steps: the start of the teacher
        temperature's linear warm-up and its length (0.04 and 0, DINO's defaults; its README
        uses 0.04 -> 0.07 over 30 epochs for longer ViT runs).
      center_momentum: 0.9, in [0, 1].
      freeze_last_layer_steps: updates without a gradient on the head's last layer (DINO: one
        epoch; 6 here, about one digits epoch at batch 256).
      learning_rate: step size (5e-4, DINO's base lr).
      num_views: global views per example, at least 2 (DINO: 2).
      num_local_views: local crops per example (DINO: 8 of 96 pixels; 6 here).
      optimizer: an optax optimizer or settings over Adam.

    References:
      Caron et al., ICCV 2021; ``main_dino.py`` (``DINOLoss``, ``DataAugmentationDINO``,
      ``--momentum_teacher``, ``--teacher_temp``, ``--warmup_teacher_temp``,
      ``--center_momentum``, ``--freeze_last_layer``, ``--local_crops_number``).
    """
    check_rate(ema_rate, "ema_rate")
    check_rate(center_momentum, "center_momentum")
    check_positive(student_temperature, "student_temperature")
    check_positive(teacher_temperature, "teacher_temperature")
    check_positive(warmup_teacher_temperature, "warmup_teacher_temperature")
    warmup_steps = check_count(
        warmup_teacher_temperature_steps, "warmup_teacher_temperature_steps", 0
    )
    freeze_last_layer_steps = check_count(freeze_last_layer_steps, "freeze_last_layer_steps", 0)
    num_views = check_count(num_views, "num_views", 2)
    num_local_views = check_count(num_local_views, "num_local_views", 0)
    if input_shape is None:
        raise ValueError("dino needs `input_shape` (to size its centre); pass it via repr.make")
    opt = optax.chain(
        common.frozen_until(freeze_last_layer_steps, _last_head_layer),
        optim.resolve(optimizer, learning_rate=learning_rate, default=DINO_ADAM),
    )
    pipeline = pipeline_of(views, input_shape)
    local_pipeline = views_lib.get(
        local_views if local_views is not None else views_lib.default_local_pipeline(input_shape)
    )

    def init_extra(variables):
        shape = jax.eval_shape(
            lambda v: apply(v, jnp.zeros((2, *input_shape), jnp.float32)), variables
        )
        if shape.projection is None:
            raise ValueError("dino reads a projection head: build the network with repr.encoder")
        return jnp.zeros(shape.projection.shape[-1:], jnp.float32)

    def teacher_temperature_at(step):
        if not warmup_steps:
            return jnp.asarray(teacher_temperature, jnp.float32)
        progress = jnp.minimum(step.astype(jnp.float32) / warmup_steps, 1.0)
        return warmup_teacher_temperature + progress * (
            teacher_temperature - warmup_teacher_temperature
        )

    def loss_fn(variables, batch, *, target, extra, step, key):
        stacked = views_of(batch[PART], key, pipeline, num_views, rule="dino")
        if num_local_views:
            local = views_lib.make_views(
                local_pipeline,
                jax.random.fold_in(key, common.VIEW_KEY + 1),
                batch[PART]["x"],
                num_local_views,
            )
            stacked = jnp.concatenate([stacked, local.astype(stacked.dtype)], 0)
        student, stats = encode(apply, variables, stacked, train=train_mode, rule="dino")
        teacher, _ = encode(apply, target, stacked[:num_views], train=train_mode, rule="dino")
        temperature = teacher_temperature_at(step)
        loss = losses.dino_loss(
            student.projection,
            teacher.projection,
            extra,
            student_temperature=student_temperature,
            teacher_temperature=temperature,
        )
        center = losses.dino_center(extra, teacher.projection, center_momentum)
        # The loss is H(q) + KL(q || p): centring raises the teacher's entropy early in training,
        # so the part the student minimises is reported apart.
        q = jax.nn.softmax((teacher.projection - extra) / temperature, -1)
        entropy = jnp.mean(-jnp.sum(q * jnp.log(jnp.maximum(q, 1e-30)), -1))
        metrics = {
            "teacher_entropy": entropy,
            "kl": loss - entropy,
            "teacher_temperature": temperature,
        }
        return loss, (with_batch_stats(metrics, stats), center)

    return rule_with_target(
        loss_fn, opt, base_rate=ema_rate, num_steps=num_steps, init_extra=init_extra
    )


def _last_head_layer(params):
    """``True`` on the projector's last layer (the DINO head's weight-normalised output)."""
    mask = jax.tree.map(lambda _: False, params)
    if "projector" in params:
        last = str(len(params["projector"]) - 1)
        mask["projector"] = {
            **mask["projector"],
            last: jax.tree.map(lambda _: True, params["projector"][last]),
        }
    return mask
