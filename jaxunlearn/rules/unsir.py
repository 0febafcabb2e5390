"""UNSIR: unlearning by error-maximising noise, then impair and repair.

Three phases, run one after another by :func:`~jaxunlearn.core.combinators.phases`:

1. **Noise** (``noise_steps`` updates, model untouched): learn a batch of inputs
   ``N`` (``[noise_batch_size, *input_shape]``, drawn from ``N(0, 1)``) that *maximises* the
   model's loss on the forget labels: minimise ``-CE(f(N), c_f) + noise_l2 * mean_i ||N_i||^2``
   with Adam (lr 0.1, 25 steps in the reference).
2. **Impair**: train the model on the noise batch labelled ``c_f`` together with retain data,
   which damages the weights that carry the forget classes. The phase receives the learned noise
   from the noise phase (the ``previous=`` hand-off).
3. **Repair**: train on retain batches alone, with a fresh optimizer, to restore utility.

The reference (class-wise) draws a fixed retain subsample, the first ``retain_per_class = 500``
images of every retained class, mixes it with ``num_noise_batches = 80`` copies of the noise
batch in one shuffled loader of batches of 32 for one impair epoch, then repairs for one epoch on
the subsample alone in batches of 128, Adam at lr 1e-4 throughout, the model in ``train()``
mode. By default (``impair_epochs=None``) the rule takes the reference's step counts,
:func:`reference_steps`: ``ceil((80 * 32 + n_r) / 32)`` impair updates and ``ceil(n_r / 128)``
repair updates for ``n_r = retain_per_class * (num_classes - len(forget_classes))`` retained
images (221 and 36 on CIFAR-10), after which the model is left unchanged however long the run.
Each impair update uses the whole noise batch and a retain batch, weighted as the reference's
loader mixes them: ``s * CE(noise) + (1 - s) * CE(retain)`` with ``s = 80 * 32 / (80 * 32 +
n_r)`` the noise share of its batches. The retain subsample is data, not a rule setting: the
stream must draw the rule's retain batches from it. The experiment runner and the sweep do
(the registry's ``index_sets``, :func:`reference_retain_subsample`: the first ``k`` retain images
of every retained class, ``k = min(retain_per_class, the smallest retained class)``, which is
500 on CIFAR-10 and every image of the smallest class on a data set with fewer than 500 per
class, such as `digits`), pass the rule that ``k`` as ``retain_per_class``, and run the
registry's run length, ``noise_steps`` plus the reference's impair and repair updates (an
entry's ``epochs`` must then be 1). A number ``impair_epochs`` keeps this
library's earlier schedule: ``round(impair_epochs * steps_per_epoch)`` impair updates on the
pooled noise and retain batch (each example weighted equally), then repair until the run ends.

The reference is class-wise: the noise targets the forget class. For forget sets that are not a
class, the noise labels are the labels of the first forget batch seen (cycled to the noise batch
size), so each noise example maximises the error of one forgotten example's class; for class
forgetting this is exactly the forget class.

References:
  Tarun, Chundawat, Mandal and Kankanhalli, "Fast Yet Effective Machine Unlearning", IEEE TNNLS
  2023 (code: vikram2000b/Fast-Machine-Unlearning, as used in if-loops/selective-synaptic-dampening
  ``unlearn.py::UNSIR_noise_train``, ``UNSIR_create_noisy_loader``,
  ``fit_one_unlearning_cycle`` and ``forget_full_class_strategies.py::UNSIR``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxunlearn.core import losses, optim
from jaxunlearn.core.checks import check_count, concrete
from jaxunlearn.core.combinators import one_shot, phases
from jaxunlearn.core.rule import StepCounter, optimizer_step, rule_from_loss
from jaxunlearn.core.types import Array, Batch, PyTree, UnlearningRule, Variables
from jaxunlearn.rules import registry
from jaxunlearn.rules.common import part_loss

# The model phases' and the noise's optimizer in the reference: Adam, no weight decay.
UNSIR_ADAM = optim.REFERENCE_ADAM


class NoiseState(NamedTuple):
    """State of UNSIR's noise phase (and what it hands to the impair phase).

    Attributes:
      noise: the learned noise batch, ``[noise_batch_size, *input_shape]``.
      labels: the class each noise example is made to maximise the error of.
      opt_state: the noise optimizer's state.
      seen: updates that have read a forget batch (the labels come from the first).
    """

    noise: Array
    labels: Array
    opt_state: PyTree
    seen: StepCounter


class ImpairState(NamedTuple):
    """State of UNSIR's impair phase.

    Attributes:
      noise: the (now frozen) noise and its labels.
      opt_state: the model optimizer's state.
    """

    noise: NoiseState
    opt_state: PyTree


class ReferenceSteps(NamedTuple):
    """UNSIR's reference schedule (:func:`reference_steps`).

    Attributes:
      impair: impair updates (one epoch over the noise copies and the retain subsample).
      repair: repair updates (one epoch over the retain subsample).
      noise_share: the noise's share of the impair loader, ``s``.
      retain_examples: the size of the retain subsample, ``n_r``.
    """

    impair: int
    repair: int
    noise_share: float
    retain_examples: int


def reference_steps(
    *,
    num_classes: int,
    num_forget_classes: int = 1,
    retain_per_class: int = 500,
    num_noise_batches: int = 80,
    noise_batch_size: int = 32,
    impair_batch_size: int = 32,
    repair_batch_size: int = 128,
) -> ReferenceSteps:
    """The reference's impair and repair step counts and the noise share of the impair loader.

    A runner reproducing the reference draws the rule's retain batches from a fixed subsample of
    ``retain_per_class`` examples of each retained class (the first ones, as the reference's
    ``classwise_train[i][:500]``, or a seeded random choice), and runs at least
    ``noise_steps + impair + repair`` updates.

    Args:
      num_classes: classes of the data set.
      num_forget_classes: forgotten classes (0 when the forget set is not a class).
      retain_per_class: retained images per class (500, or fewer when a class has fewer).
      num_noise_batches: copies of the noise batch in the impair loader (80).
      noise_batch_size: examples per noise batch (32).
      impair_batch_size: the impair loader's batch size (32).
      repair_batch_size: the repair loader's batch size (128).
    """
    retained = int(retain_per_class) * (int(num_classes) - int(num_forget_classes))
    if retained < 1:
        raise ValueError(
            f"unsir: no retain subsample ({retain_per_class} per class x "
            f"{num_classes - num_forget_classes} retained classes)"
        )
    noise = int(num_noise_batches) * int(noise_batch_size)
    return ReferenceSteps(
        impair=math.ceil((noise + retained) / int(impair_batch_size)),
        repair=math.ceil(retained / int(repair_batch_size)),
        noise_share=noise / (noise + retained),
        retain_examples=retained,
    )


def reference_retain_subsample(
    labels,
    retain,
    *,
    num_classes: int,
    forget_classes: Sequence[int] = (),
    retain_per_class: int = 500,
) -> tuple[np.ndarray, int]:
    """The reference's retain subsample: the first ``k`` retain examples of every retained class.

    The reference keeps ``classwise_train[c][:500]`` for every class but the forgotten ones
    (every class for a forget set that is not a class), in data set order. Here ``k =
    min(retain_per_class, the smallest retained class's count in retain)``, so every retained
    class gives the same number of examples, as :func:`reference_steps` counts them: 500 per class
    on CIFAR-10 (5,000 per class), every retained example of the smallest class (and as many of
    the others) on a data set with fewer than 500 per class, such as `digits` (~130-145).

    Args:
      labels: the training set's labels (``y_train``).
      retain: indices of the retain set into ``labels``, in the order to take them from.
      num_classes: classes of the data set.
      forget_classes: the forgotten classes (empty when the forget set is not a class).
      retain_per_class: the reference's 500.

    Returns:
      ``(indices, k)``: the subsample's indices (classes in order, each in retain's order) and the
      number per class.

    Raises:
      ValueError: a retained class has no example in ``retain``, or ``retain_per_class`` < 1.
    """
    try:
        retain_per_class = check_count(retain_per_class, "retain_per_class", 1)
    except ValueError as error:
        raise ValueError(f"unsir: {error}") from None
    retain = np.asarray(retain)
    if retain.ndim != 1:
        raise ValueError(f"unsir's retain subsample needs one retain set [n]; got {retain.shape}")
    y = np.asarray(labels)[retain]
    kept = [c for c in range(int(num_classes)) if c not in set(int(f) for f in forget_classes)]
    by_class = {c: retain[y == c] for c in kept}
    empty = [c for c, ix in by_class.items() if not len(ix)]
    if empty:
        raise ValueError(f"unsir: retained classes {empty} have no example in the retain set")
    k = min(int(retain_per_class), *(len(ix) for ix in by_class.values()))
    return np.concatenate([by_class[c][:k] for c in kept]).astype(np.int32), k


def _index_sets(index, *, labels, num_classes, forget_classes, hparams):
    """The registry's index sets of UNSIR: the reference schedule (``impair_epochs=None``) draws
    its retain batches from :func:`reference_retain_subsample` and counts its steps with the
    subsample's per-class size; the earlier schedule reads the whole retain set."""
    if registry.default("unsir", "impair_epochs", hparams) is not None:
        return dict(index), {}
    subsample, k = reference_retain_subsample(
        labels,
        index["retain"],
        num_classes=num_classes,
        forget_classes=forget_classes or (),
        retain_per_class=registry.default("unsir", "retain_per_class", hparams),
    )
    return {**index, "retain": subsample}, {"retain_per_class": k}


def _run_length(
    epochs, *, steps_per_epoch, forget_steps_per_epoch, hparams, num_classes, forget_classes
) -> int:
    """The registry's run length of UNSIR: with the reference schedule, its noise, impair and
    repair updates (one impair and one repair epoch, :func:`reference_steps`; ``epochs`` must be
    1); with ``impair_epochs``, ``epochs`` passes over the retain set."""
    del forget_steps_per_epoch
    option = lambda name: registry.default("unsir", name, hparams)
    if option("impair_epochs") is not None or num_classes is None:
        return max(1, math.ceil(float(epochs) * steps_per_epoch))
    if float(epochs) != 1.0:
        raise ValueError(
            "unsir's reference schedule is one impair and one repair epoch, so its run length is "
            f"fixed: set epochs=1 (got {epochs}), or a number `impair_epochs` for the earlier "
            "schedule of epochs over the retain set"
        )
    steps = reference_steps(
        num_classes=num_classes,
        num_forget_classes=len(forget_classes or ()),
        retain_per_class=option("retain_per_class"),
        num_noise_batches=option("num_noise_batches"),
        noise_batch_size=option("noise_batch_size"),
        impair_batch_size=option("impair_batch_size"),
        repair_batch_size=option("repair_batch_size"),
    )
    return int(option("noise_steps")) + steps.impair + steps.repair


@registry.rule(
    "unsir",
    parts=("forget", "retain"),
    paper="Tarun et al., Fast Yet Effective Machine Unlearning, IEEE TNNLS 2023",
    sweepable=("noise_learning_rate", "noise_l2", "learning_rate"),
    run_length=_run_length,
    index_sets=_index_sets,
)
def unsir(
    apply: Callable,
    *,
    steps_per_epoch: int,
    input_shape: Sequence[int],
    num_classes: int | None = None,
    forget_classes: Sequence[int] | None = None,
    retain_per_class: int = 500,
    num_noise_batches: int = 80,
    impair_batch_size: int = 32,
    repair_batch_size: int = 128,
    train_mode: bool = True,
    noise_batch_size: int = 32,
    noise_steps: int = 25,
    noise_learning_rate: float = 0.1,
    noise_l2: float = 0.1,
    impair_epochs: float | None = None,
    learning_rate: float = 1e-4,
    optimizer: optax.GradientTransformation | Mapping | None = None,
    noise_optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """UNSIR: learn error-maximising noise, impair on noise plus retain data, repair on retain.

    Schedule (``impair_epochs=None``): ``phases((noise_steps, noise), (impair, impair),
    (repair, repair), (None, leave the model))`` with the counts of :func:`reference_steps`.
    With a number ``impair_epochs``: ``phases((noise_steps, noise), (round(impair_epochs *
    steps_per_epoch), impair), (None, repair))``. A phase of zero updates is left out; a shorter
    run cuts the later phases. The impair and repair phases each start a fresh model optimizer;
    the noise is drawn at ``init`` from ``fold_in(key, 0)``. The ``"phase"`` metric is 0 (noise), 1
    (impair), 2 (repair) or 3 (done).

    Args:
      apply: the model's functional ``apply``.
      steps_per_epoch: updates per retain epoch (supplied by the registry).
      input_shape: the shape of one input, e.g. ``(32, 32, 3)``: it sizes the noise batch (the
        rule sees no data at ``init``; the registry supplies the network's).
      num_classes: classes of the data set (supplied by the registry; needed by the reference
        schedule).
      forget_classes: the forgotten classes (supplied by the registry for class forgetting).
      retain_per_class: the reference's retain subsample per class (500).
      num_noise_batches: copies of the noise batch in the reference's impair loader (80).
      impair_batch_size: the reference's impair batch size (32), for its step count.
      repair_batch_size: the reference's repair batch size (128), for its step count.
      train_mode: run BatchNorm in training mode in the impair and repair phases, as the
        reference's ``model.train()`` (the noise phase runs in inference mode).
      noise_batch_size: number of noise examples (32).
      noise_steps: optimizer steps on the noise (25).
      noise_learning_rate: learning rate of the noise (0.1).
      noise_l2: weight of the noise's mean squared norm (0.1).
      impair_epochs: ``None`` (default): the reference's schedule (:func:`reference_steps`); a
        number: the earlier schedule, an impair phase of that many retain epochs on the pooled
        batch, then repair until the run ends (1 was the earlier default).
      learning_rate: learning rate of the model in both model phases (1e-4).
      optimizer: the model's optimizer: an optax optimizer, or settings over the reference Adam
        (no weight decay); see :func:`~jaxunlearn.core.optim.resolve`.
      noise_optimizer: the noise's optimizer, likewise (reference Adam).

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` (its labels) and ``batch["retain"]``,
      whose state is a :class:`~jaxunlearn.core.combinators.PhasesState` of a
      :class:`NoiseState`, an :class:`ImpairState` and a
      :class:`~jaxunlearn.core.rule.LossRuleState` (the phases present).

    References:
      Tarun et al., "Fast Yet Effective Machine Unlearning", IEEE TNNLS 2023.
    """
    input_shape = tuple(int(d) for d in input_shape)
    try:
        noise_batch_size = check_count(noise_batch_size, "noise_batch_size", 1)
        noise_steps = check_count(noise_steps, "noise_steps", 0)
    except ValueError as error:
        raise ValueError(f"unsir: {error}") from None
    if impair_epochs is not None and concrete(impair_epochs) and impair_epochs < 0:
        raise ValueError(f"unsir `impair_epochs` must be non-negative; got {impair_epochs}")
    if concrete(noise_learning_rate) and not noise_learning_rate > 0:
        raise ValueError(f"unsir `noise_learning_rate` must be positive; got {noise_learning_rate}")
    if concrete(noise_l2) and noise_l2 < 0:
        raise ValueError(f"unsir `noise_l2` must be non-negative; got {noise_l2}")
    if impair_epochs is None:
        if num_classes is None:
            raise ValueError("unsir's reference schedule needs `num_classes`")
        steps = reference_steps(
            num_classes=num_classes,
            num_forget_classes=len(forget_classes or ()),
            retain_per_class=retain_per_class,
            num_noise_batches=num_noise_batches,
            noise_batch_size=noise_batch_size,
            impair_batch_size=impair_batch_size,
            repair_batch_size=repair_batch_size,
        )
        impair_steps, repair_steps, noise_share = steps.impair, steps.repair, steps.noise_share
    else:
        impair_steps = int(round(impair_epochs * steps_per_epoch))
        repair_steps, noise_share = None, None
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=UNSIR_ADAM)
    noise_opt = optim.resolve(
        noise_optimizer, learning_rate=noise_learning_rate, default=UNSIR_ADAM
    )

    def draw_noise(key: Array) -> NoiseState:
        noise = jax.random.normal(key, (noise_batch_size,) + input_shape, jnp.float32)
        return NoiseState(
            noise=noise,
            labels=jnp.zeros((noise_batch_size,), jnp.int32),
            opt_state=noise_opt.init(noise),
            seen=StepCounter.zero(),
        )

    def take_labels(state: NoiseState, batch: Batch) -> NoiseState:
        # The labels of the first forget batch the rule sees, cycled to the noise batch size.
        y_forget = batch["forget"]["y"].astype(jnp.int32)
        first = jnp.resize(y_forget, (noise_batch_size,))
        labels = jnp.where(state.seen.count == 0, first, state.labels)
        return state._replace(labels=labels, seen=state.seen.next())

    # ---- phase 1: the noise (the model is untouched)

    def noise_objective(noise, variables, labels):
        logits = apply(variables, noise).logits
        norms = jnp.sum(jnp.square(noise).reshape(noise.shape[0], -1), axis=1)
        return -losses.cross_entropy(logits, labels) + noise_l2 * jnp.mean(norms)

    def noise_init(variables: Variables, *, key: Array) -> NoiseState:
        del variables
        return draw_noise(key)

    def noise_update(variables: Variables, state: NoiseState, batch: Batch, *, key: Array):
        del key
        state = take_labels(state, batch)
        loss, grad = jax.value_and_grad(noise_objective)(state.noise, variables, state.labels)
        moved, opt_state = optimizer_step(noise_opt, grad, state.opt_state, {"params": state.noise})
        state = state._replace(noise=moved["params"], opt_state=opt_state)
        return variables, state, {"noise_loss": loss}

    # ---- phase 2: impair on noise + retain

    def impair_init(
        variables: Variables, *, key: Array, previous: NoiseState | None = None
    ) -> ImpairState:
        # Without a noise phase (noise_steps=0) the impair phase draws the noise itself.
        noise = draw_noise(key) if previous is None else previous
        return ImpairState(noise, opt.init(variables["params"]))

    def impair_update(variables: Variables, state: ImpairState, batch: Batch, *, key: Array):
        del key
        noise = take_labels(state.noise, batch)
        xr, yr = batch["retain"]["x"], batch["retain"]["y"]
        x = jnp.concatenate([jax.lax.stop_gradient(noise.noise).astype(xr.dtype), xr])
        y = jnp.concatenate([noise.labels.astype(yr.dtype), yr])

        def objective(params):
            out = apply({**variables, "params": params}, x, train=train_mode)
            if noise_share is None:
                loss = losses.cross_entropy(out.logits, y)
            else:
                n = noise_batch_size
                loss = noise_share * losses.cross_entropy(out.logits[:n], y[:n]) + (
                    1.0 - noise_share
                ) * losses.cross_entropy(out.logits[n:], y[n:])
            return loss, out.batch_stats if train_mode else None

        (loss, stats), grads = jax.value_and_grad(objective, has_aux=True)(variables["params"])
        variables, opt_state = optimizer_step(
            opt, grads, state.opt_state, variables, batch_stats=stats
        )
        return variables, ImpairState(noise, opt_state), {"loss": loss}

    # ---- phase 3: repair on retain

    def repair_loss(variables: Variables, batch: Batch, *, reference, step, key):
        del reference, step, key
        return part_loss(apply, variables, batch, "retain", train=train_mode)

    plan = [
        (0, noise_steps, UnlearningRule(noise_init, noise_update)),
        (1, impair_steps, UnlearningRule(impair_init, impair_update)),
        (2, repair_steps, rule_from_loss(repair_loss, opt, keep_reference=False)),
    ]
    if repair_steps is not None:
        # The reference stops after its repair epoch: later updates leave the model unchanged.
        plan.append((3, None, one_shot(lambda variables, batch, *, key: (variables, {}))))
    plan = [entry for entry in plan if entry[1] != 0]
    rule = phases(*((n, phase_rule) for _, n, phase_rule in plan))
    ids = jnp.asarray([i for i, _, _ in plan], jnp.float32)

    def update(variables: Variables, state, batch: Batch, *, key: Array):
        variables, state, metrics = rule.update(variables, state, batch, key=key)
        # phases numbers the phases present; report UNSIR's own 0 / 1 / 2.
        metrics["phase"] = ids[metrics["phase"].astype(jnp.int32)]
        return variables, state, metrics

    return UnlearningRule(rule.init, update)
