"""UNSIR: unlearning by error-maximising noise, then impair and repair.

Three phases, run one after another by :func:`~jaxunlearn.core.combinators.phases`:

1. **Noise** (``noise_steps`` updates, model untouched): learn a batch of inputs
   ``N`` (``[noise_batch_size, *input_shape]``, drawn from ``N(0, 1)``) that *maximises* the
   model's loss on the forget labels: minimise ``-CE(f(N), c_f) + noise_l2 * mean_i ||N_i||^2``
   with Adam (lr 0.1, 25 steps in the reference).
2. **Impair** (``impair_epochs`` retain epochs): train the model on the noise batch labelled
   ``c_f`` together with a retain batch, which damages the weights that carry the forget classes.
   The phase receives the learned noise from the noise phase (the ``previous=`` hand-off).
3. **Repair** (the remaining updates): train on retain batches alone, with a fresh optimizer,
   to restore utility.

The reference (class-wise) mixes 80 copies of the noise batch with 500 retain images per class
in shuffled batches of 32, so a third of each impair batch is noise; here every impair update
uses the whole noise batch plus a retain batch (a retain batch of 64 gives the same third).
Both model phases use Adam at lr 1e-4 for one epoch each.

The reference is class-wise: the noise targets the forget class. For forget sets that are not a
class, the noise labels are the labels of the first forget batch seen (cycled to the noise batch
size), so each noise example maximises the error of one forgotten example's class; for class
forgetting this is exactly the forget class.

References:
  Tarun, Chundawat, Mandal and Kankanhalli, "Fast Yet Effective Machine Unlearning", IEEE TNNLS
  2023 (code: vikram2000b/Fast-Machine-Unlearning, as used in if-loops/selective-synaptic-dampening
  ``unlearn.py::UNSIR_noise_train`` and ``forget_full_class_strategies.py::UNSIR``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import losses, optim
from jaxunlearn.core.checks import concrete
from jaxunlearn.core.combinators import phases
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


@registry.rule(
    "unsir",
    parts=("forget", "retain"),
    paper="Tarun et al., Fast Yet Effective Machine Unlearning, IEEE TNNLS 2023",
    sweepable=("noise_learning_rate", "noise_l2", "learning_rate"),
)
def unsir(
    apply: Callable,
    *,
    steps_per_epoch: int,
    input_shape: Sequence[int],
    noise_batch_size: int = 32,
    noise_steps: int = 25,
    noise_learning_rate: float = 0.1,
    noise_l2: float = 0.1,
    impair_epochs: float = 1.0,
    learning_rate: float = 1e-4,
    optimizer: optax.GradientTransformation | Mapping | None = None,
    noise_optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """UNSIR: learn error-maximising noise, impair on noise plus retain data, repair on retain.

    Schedule: ``phases((noise_steps, noise), (round(impair_epochs * steps_per_epoch), impair),
    (None, repair))``, leaving out a phase of zero updates. The reference's one impair and one
    repair epoch is therefore ``epochs = 2 + noise_steps / steps_per_epoch``; a shorter run cuts
    the later phases. The impair and repair phases each start a fresh model optimizer; the noise
    is drawn at ``init`` from ``fold_in(key, 0)``. The ``"phase"`` metric is 0 (noise), 1
    (impair) or 2 (repair).

    Args:
      apply: the model's functional ``apply``.
      steps_per_epoch: updates per retain epoch (supplied by the registry).
      input_shape: the shape of one input, e.g. ``(32, 32, 3)``: it sizes the noise batch (the
        rule sees no data at ``init``; the registry supplies the network's).
      noise_batch_size: number of noise examples (32).
      noise_steps: optimizer steps on the noise (25).
      noise_learning_rate: learning rate of the noise (0.1).
      noise_l2: weight of the noise's mean squared norm (0.1).
      impair_epochs: length of the impair phase in retain epochs (1).
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
    if int(noise_batch_size) < 1:
        raise ValueError(f"unsir `noise_batch_size` must be at least 1; got {noise_batch_size}")
    if int(noise_steps) < 0:
        raise ValueError(f"unsir `noise_steps` must be non-negative; got {noise_steps}")
    if concrete(impair_epochs) and impair_epochs < 0:
        raise ValueError(f"unsir `impair_epochs` must be non-negative; got {impair_epochs}")
    if concrete(noise_learning_rate) and not noise_learning_rate > 0:
        raise ValueError(f"unsir `noise_learning_rate` must be positive; got {noise_learning_rate}")
    if concrete(noise_l2) and noise_l2 < 0:
        raise ValueError(f"unsir `noise_l2` must be non-negative; got {noise_l2}")
    noise_batch_size, noise_steps = int(noise_batch_size), int(noise_steps)
    impair_steps = int(round(impair_epochs * steps_per_epoch))
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
            logits = apply({**variables, "params": params}, x).logits
            return losses.cross_entropy(logits, y)

        loss, grads = jax.value_and_grad(objective)(variables["params"])
        variables, opt_state = optimizer_step(opt, grads, state.opt_state, variables)
        return variables, ImpairState(noise, opt_state), {"loss": loss}

    # ---- phase 3: repair on retain

    def repair_loss(variables: Variables, batch: Batch, *, reference, step, key):
        del reference, step, key
        return part_loss(apply, variables, batch, "retain")

    schedule = [
        (0, noise_steps, UnlearningRule(noise_init, noise_update)),
        (1, impair_steps, UnlearningRule(impair_init, impair_update)),
        (2, None, rule_from_loss(repair_loss, opt, keep_reference=False)),
    ]
    schedule = [entry for entry in schedule if entry[1] != 0]
    rule = phases(*((n, phase_rule) for _, n, phase_rule in schedule))
    ids = jnp.asarray([i for i, _, _ in schedule], jnp.float32)

    def update(variables: Variables, state, batch: Batch, *, key: Array):
        variables, state, metrics = rule.update(variables, state, batch, key=key)
        # phases numbers the phases present; report UNSIR's own 0 / 1 / 2.
        metrics["phase"] = ids[metrics["phase"].astype(jnp.int32)]
        return variables, state, metrics

    return UnlearningRule(rule.init, update)
