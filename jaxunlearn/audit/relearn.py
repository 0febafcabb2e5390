"""Relearning attacks: how fast does fine-tuning bring the forgotten behaviour back?

An unlearning method that only hides the forget set's influence (suppresses a logit, perturbs
the head) recovers its forget-set accuracy after a few gradient steps on a handful of forget
examples, while a model that never learned them has to learn them anew. :func:`relearn_steps`
runs that attack with the library's own pieces (the :func:`~jaxunlearn.rules.finetune` rule
driven by :func:`~jaxunlearn.train.scan_steps`) and returns the accuracy curve and the number of
steps to reach a target accuracy; the ``"relearn"`` audit runs it on the unlearned model and on
the retrained oracle under the same attack (same data, same key), so the two step counts are
directly comparable (their ratio is the Anamnesis Index of Chundawat et al.). Over a context of
N models the audit attacks each model with its own oracle (one compiled program, run per model)
and returns ``[N]`` arrays.

The target is the original model's accuracy on held-out forget examples, less a tolerance
``alpha`` as in the Anamnesis Index: a model has relearned once it comes within ``alpha`` of
the original's accuracy, ``target = (1 - alpha) * original_accuracy`` (:func:`anamnesis_target`;
the reference ``metrics.py::ain`` of ayushkumartarun/zero-shot-unlearning uses
``reqAccF = (1 - error_range) * AccForget`` with ``error_range = 0.05``). With ``alpha = 0`` the
oracle of random forgetting rarely matches the original's memorised accuracy, and its count is
censored at ``max_steps + 1``; the registered audits use ``alpha = RELEARN_ALPHA = 0.05``.

References:
  Golatkar, Achille, Soatto, "Eternal Sunshine of the Spotless Net: Selective Forgetting in Deep
  Networks", CVPR 2020 (arXiv 1911.04933): relearn time as a forgetting readout.
  Chundawat et al., "Zero-Shot Machine Unlearning", IEEE TIFS 2023 (arXiv 2201.05629): the
  Anamnesis Index, relearn time of the unlearned model over that of the retrained model.
  Hu, Fu, Wu, Smith, "Unlearning or Obfuscating? Jogging the Memory of Unlearned LLMs via Benign
  Relearning", ICLR 2025 (arXiv 2406.13356): relearning on a small or merely related set
  restores "unlearned" knowledge.
  Lynch et al., "Eight Methods to Evaluate Robust Unlearning in LLMs", arXiv 2402.16835 (2024).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.audit import registry
from jaxunlearn.core import losses
from jaxunlearn.core.checks import check_count
from jaxunlearn.core.types import Array, UnlearningRule, Variables
from jaxunlearn.rules.finetune import finetune
from jaxunlearn.train.loop import make_stream, scan_steps

# Accuracy is a count over a finite set: reaching the target means not falling short by more
# than rounding.
_TOLERANCE = 1e-6


class RelearnResult(NamedTuple):
    """What :func:`relearn_steps` returns.

    Attributes:
      steps: int32 scalar, the first ``k`` with ``curve[k] >= target_accuracy``; ``max_steps + 1``
        when the target is never reached within ``max_steps`` (a right-censored count, so that
        means and orderings over runs stay finite and "never" ranks slowest).
      curve: ``[max_steps + 1]`` float32, the accuracy (fraction) on the evaluation set after
        ``k`` steps; ``curve[0]`` is the model before any relearning step.
    """

    steps: Array
    curve: Array


def _with_eval_accuracy(
    rule: UnlearningRule, apply: Callable, eval_x: Array, eval_y: Array
) -> UnlearningRule:
    """``rule`` whose metrics also hold the updated model's accuracy on ``(eval_x, eval_y)``."""

    def update(variables, state, batch, *, key):
        variables, state, metrics = rule.update(variables, state, batch, key=key)
        metrics = dict(metrics)
        metrics["eval_accuracy"] = losses.accuracy(apply(variables, eval_x).logits, eval_y)
        return variables, state, metrics

    return UnlearningRule(rule.init, update)


def relearn_steps(
    apply: Callable,
    variables: Variables,
    relearn_x,
    relearn_y,
    eval_x,
    eval_y,
    *,
    target_accuracy,
    max_steps: int,
    learning_rate: float,
    batch_size: int,
    key: Array,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
) -> RelearnResult:
    """Fine-tunes ``variables`` on ``(relearn_x, relearn_y)`` and tracks accuracy on the eval set.

    The attack is the library's fine-tuning rule (:func:`~jaxunlearn.rules.finetune`: SGD on the
    cross-entropy, the model in inference mode so BatchNorm statistics stay fixed) run for
    ``max_steps`` steps by :func:`~jaxunlearn.train.scan_steps`, which draws mini-batches of
    ``batch_size`` from per-epoch permutations of the relearn set. Pass a few forget examples as
    the relearn set and held-out forget examples as the eval set for the classic relearn-time
    attack, or retain examples as the relearn set for "benign" relearning. The function is pure
    and traceable: ``jax.jit`` it (with the Python settings bound) and ``jax.vmap`` it over
    models to attack several with the same batches.

    Args:
      apply: the model's functional ``apply``.
      variables: the model to attack.
      relearn_x, relearn_y: ``[n, ...]`` inputs and integer labels the attacker fine-tunes on.
      eval_x, eval_y: ``[m, ...]`` inputs and labels whose accuracy the curve tracks.
      target_accuracy: accuracy (fraction in ``[0, 1]``) that counts as relearned, typically the
        original model's accuracy on the eval set. May be a traced scalar.
      max_steps: number of fine-tuning steps (static).
      learning_rate, momentum, weight_decay: the attacker's SGD settings (static).
      batch_size: mini-batch size (static), capped at ``n``.
      key: PRNG key of the batch order; the same key gives the same batches for every model.

    Returns:
      A :class:`RelearnResult` ``(steps, curve)``.

    Raises:
      ValueError: on a ``max_steps`` or ``batch_size`` that is not an integer >= 1, an empty
        relearn or eval set, or mismatched input/label lengths.

    References:
      Golatkar, Achille, Soatto, CVPR 2020 (relearn time); Chundawat et al., IEEE TIFS 2023
      (Anamnesis Index); Hu et al., ICLR 2025 (benign relearning attacks).
    """
    max_steps = check_count(max_steps, "max_steps", 1)
    batch_size = check_count(batch_size, "batch_size", 1)
    n, m = relearn_x.shape[0], eval_x.shape[0]
    if n == 0 or m == 0:
        raise ValueError(f"relearn and eval sets must be non-empty; got {n} and {m} examples")
    if relearn_y.shape[0] != n or eval_y.shape[0] != m:
        raise ValueError("relearn_x/relearn_y and eval_x/eval_y must have matching lengths")
    eval_x, eval_y = jnp.asarray(eval_x), jnp.asarray(eval_y)
    rule = finetune(
        apply,
        learning_rate=learning_rate,
        optimizer={"momentum": momentum, "weight_decay": weight_decay},
        train_mode=False,
    )
    rule = _with_eval_accuracy(rule, apply, eval_x, eval_y)
    stream = make_stream(relearn_x, relearn_y, {"retain": jnp.arange(n)})
    _, _, metrics = scan_steps(
        rule,
        variables,
        stream,
        batch_sizes={"retain": min(batch_size, n)},
        num_steps=max_steps,
        key=key,
    )
    start = losses.accuracy(apply(variables, eval_x).logits, eval_y)
    curve = jnp.concatenate([start[None], metrics["eval_accuracy"]]).astype(jnp.float32)
    reached = curve >= jnp.asarray(target_accuracy, jnp.float32) - _TOLERANCE
    steps = jnp.where(reached.any(), jnp.argmax(reached), max_steps + 1).astype(jnp.int32)
    return RelearnResult(steps, curve)


def anamnesis_target(original_accuracy, alpha: float):
    """The accuracy that counts as relearned: within ``alpha`` (relative) of the original's,
    ``(1 - alpha) * original_accuracy``, as the Anamnesis Index's ``reqAccF = (1 - error_range)
    * AccForget`` (Chundawat et al., IEEE TIFS 2023; ayushkumartarun/zero-shot-unlearning
    ``metrics.py::ain``, ``error_range = 0.05``).

    Args:
      original_accuracy: the original model's accuracy (fraction) on the eval set.
      alpha: the tolerance, in ``[0, 1)``; 0 asks for the original's accuracy itself.

    Raises:
      ValueError: for ``alpha`` outside ``[0, 1)``.
    """
    alpha = float(alpha)
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"alpha must lie in [0, 1); got {alpha}")
    return (1.0 - alpha) * original_accuracy


# --------------------------------------------------------------------------------------------------
# The audit.

RELEARN_MAX_STEPS = 30
RELEARN_LEARNING_RATE = 0.01
RELEARN_BATCH_SIZE = 32
# At most this many forget examples are handed to the attacker, and at most EVAL_MAX held-out
# ones are scored every step (keeps the attack cheap on CIFAR-sized forget sets).
RELEARN_MAX_EXAMPLES = 128
RELEARN_EVAL_MAX = 512
REPORT_AT = (5,)
# Relearned = within 5% of the original's accuracy (the Anamnesis Index's default error range).
RELEARN_ALPHA = 0.05


@functools.cache
def _attack_program(apply: Callable, max_steps: int, learning_rate: float, batch_size: int):
    """One compiled attack per (network, settings), vmapped over a stack of models; jit's own
    cache then holds one executable per data shape."""
    attack = functools.partial(
        relearn_steps,
        apply,
        max_steps=max_steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
    )

    def run(stacked, relearn_x, relearn_y, eval_x, eval_y, target, key):
        return jax.vmap(
            lambda v: attack(
                v, relearn_x, relearn_y, eval_x, eval_y, target_accuracy=target, key=key
            )
        )(stacked)

    return jax.jit(run)


def _attack_split(ctx: registry.AuditContext, source: str):
    """``(relearn indices into the training set, eval positions within the forget part)``.

    The forget set is shuffled with a fixed seed; the attacker gets the first half (at most
    ``RELEARN_MAX_EXAMPLES``) and the accuracy is measured on the other, held-out half (at most
    ``RELEARN_EVAL_MAX``), so a rise measures recovered knowledge, not memorised relearn examples.
    With ``source="retain"`` the attacker instead gets as many retain examples and the eval set
    is all the (capped) forget examples. A one-example forget set is both relearned and scored.
    """
    rng = np.random.default_rng(0)
    forget = ctx.split.forget
    order = rng.permutation(len(forget))
    if source == "retain":
        n = min(max(len(forget) // 2, 1), RELEARN_MAX_EXAMPLES, len(ctx.split.retain))
        return rng.permutation(ctx.split.retain)[:n], order[:RELEARN_EVAL_MAX]
    if len(forget) < 2:
        return forget, order
    half = min(len(forget) // 2, RELEARN_MAX_EXAMPLES)
    return forget[order[:half]], order[half : half + RELEARN_EVAL_MAX]


def relearn_audit_fn(
    *,
    source: str = "forget",
    max_steps: int = RELEARN_MAX_STEPS,
    learning_rate: float = RELEARN_LEARNING_RATE,
    batch_size: int = RELEARN_BATCH_SIZE,
    report_at=REPORT_AT,
    prefix: str = "relearn",
    alpha: float = RELEARN_ALPHA,
) -> registry.Audit:
    """Builds a relearning audit (register it with :func:`jaxunlearn.audit.register`).

    The attacker fine-tunes on a fixed random half of the forget set (at most
    ``RELEARN_MAX_EXAMPLES`` examples) and the accuracy is tracked on the other, held-out half (at
    most ``RELEARN_EVAL_MAX``), so a rise is recovered knowledge, not memorised relearn examples.
    The target is the original model's accuracy on that held-out half less the tolerance
    ``alpha`` (:func:`anamnesis_target`). The audited model and the oracle are attacked together
    (one vmapped program, same key and batches; the key is the seed's), compiled once per
    network, settings and data shapes. With ``alpha = 0`` the oracle of random forgetting usually
    never reaches the original's (memorised) accuracy, so its steps are censored; the Anamnesis
    tolerance (0.05 by default) makes them a count, and their ratio the Anamnesis Index.

    Args:
      source: ``"forget"`` (relearn on half of the forget set) or ``"retain"`` (benign
        relearning on retain examples only).
      max_steps, learning_rate, batch_size: the attack's settings.
      report_at: steps ``k`` whose accuracy is reported as ``{prefix}_acc@k`` (percent).
      prefix: metric name prefix.
      alpha: relative tolerance of the target, in ``[0, 1)``: relearned means reaching
        ``(1 - alpha)`` times the original's accuracy (0: the original's accuracy itself).

    Returns:
      An audit giving, per model of its context (``[N]`` arrays), ``{prefix}_steps`` and
      ``{prefix}_steps_oracle`` (``max_steps + 1`` = never reached), and ``{prefix}_acc@k``. Each
      model is attacked with its oracle (row by row: the attack is a training loop).
    """
    if source not in ("forget", "retain"):
        raise ValueError(f"source must be 'forget' or 'retain'; got {source!r}")
    anamnesis_target(1.0, alpha)  # checks alpha
    for k in report_at:
        if not 0 <= int(k) <= max_steps:
            raise ValueError(f"report_at steps must lie in [0, {max_steps}]; got {k}")
    names = [
        f"{prefix}_steps",
        f"{prefix}_steps_oracle",
        *(f"{prefix}_acc@{int(k)}" for k in report_at),
    ]

    def audit(ctx: registry.AuditContext) -> dict[str, np.ndarray]:
        if not len(ctx.split.forget):
            return {name: np.full(ctx.num_models, np.nan) for name in names}
        relearn_idx, eval_pos = _attack_split(ctx, source)
        ds = ctx.dataset
        eval_x, eval_y = ctx.data("forget")[0][eval_pos], ctx.data("forget")[1][eval_pos]
        original_logits = ctx.logits("forget", "original")[:, eval_pos]
        program = _attack_program(
            ctx.network.apply, int(max_steps), float(learning_rate), int(batch_size)
        )
        data = (
            jnp.asarray(ds.x_train[relearn_idx]),
            jnp.asarray(ds.y_train[relearn_idx]),
            jnp.asarray(eval_x),
            jnp.asarray(eval_y),
        )
        out = {name: np.empty(ctx.num_models) for name in names}
        # One attack per model, on it and its oracle together (the program is compiled once);
        # each model's key is its seed's.
        for i, seed in enumerate(ctx.seeds.tolist()):
            target = anamnesis_target(
                float(np.mean(np.argmax(original_logits[i], -1) == eval_y)), alpha
            )
            stacked = jax.tree.map(
                lambda a, b: jnp.stack([a, b]), ctx.model("unlearned", i), ctx.model("oracle", i)
            )
            result = program(stacked, *data, jnp.float32(target), jax.random.key(seed))
            steps, curve = np.asarray(result.steps), np.asarray(result.curve)
            out[f"{prefix}_steps"][i] = float(steps[0])
            out[f"{prefix}_steps_oracle"][i] = float(steps[1])
            for k in report_at:
                out[f"{prefix}_acc@{int(k)}"][i] = 100.0 * float(curve[0, int(k)])
        return out

    return audit


registry.register("relearn", relearn_audit_fn(), task="classification")
registry.register(
    "relearn_retain",
    relearn_audit_fn(source="retain", prefix="relearn_retain"),
    task="classification",
)
