"""UNSIR: unlearning by error-maximising noise, then impair and repair.

Three phases, switched on the update counter:

1. **Noise** (``noise_steps`` updates, model untouched): learn a batch of inputs
   ``N`` (``[noise_batch_size, *input_shape]``, drawn from ``N(0, 1)``) that *maximises* the
   model's loss on the forget labels: minimise ``-CE(f(N), c_f) + noise_l2 * mean_i ||N_i||^2``
   with Adam (lr 0.1, 25 steps in the reference).
2. **Impair** (``impair_epochs`` retain epochs): train the model on the noise batch labelled
   ``c_f`` together with a retain batch, which damages the weights that carry the forget classes.
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

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import losses
from jaxunlearn.core.checks import concrete
from jaxunlearn.core.types import Array, Batch, PyTree, UnlearningRule, Variables
from jaxunlearn.rules.common import resolve_optimizer
from jaxunlearn.rules import registry


class UNSIRState(NamedTuple):
    """State of :func:`unsir`.

    Attributes:
      noise: the learned noise batch, ``[noise_batch_size, *input_shape]``.
      noise_labels: the class each noise example is made to maximise the error of.
      noise_opt_state: Adam state of the noise.
      opt_state: optimizer state of the model (reset when the repair phase starts).
      step: number of updates taken so far (int32 scalar).
    """

    noise: Array
    noise_labels: Array
    noise_opt_state: PyTree
    opt_state: PyTree
    step: Array


@registry.rule(
    'unsir',
    parts=('forget', 'retain'),
    paper='Tarun et al., Fast Yet Effective Machine Unlearning, IEEE TNNLS 2023',
    sweepable=('noise_learning_rate', 'noise_l2', 'learning_rate'),
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
    optimizer: optax.GradientTransformation | None = None,
) -> UnlearningRule:
    """UNSIR: learn error-maximising noise, impair on noise plus retain data, repair on retain.

    Phases run in order on the update counter: ``noise_steps`` noise updates, then
    ``round(impair_epochs * steps_per_epoch)`` impair updates, then repair for the rest of the
    run. The reference's one impair and one repair epoch is therefore
    ``epochs = 2 + noise_steps / steps_per_epoch``; a shorter run cuts the later phases.

    Args:
      apply: the model's functional ``apply``.
      steps_per_epoch: updates per retain epoch (supplied by the registry).
      input_shape: the shape of one input, e.g. ``(32, 32, 3)``: it sizes the noise batch (the
        rule sees no data at ``init``; the registry supplies the network's).
      noise_batch_size: number of noise examples (32).
      noise_steps: Adam steps on the noise (25).
      noise_learning_rate: Adam learning rate of the noise (0.1).
      noise_l2: weight of the noise's mean squared norm (0.1).
      impair_epochs: length of the impair phase in retain epochs (1).
      learning_rate: Adam learning rate of the model in both model phases (1e-4).
      optimizer: an optax optimizer for the model, replacing Adam.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` (its labels) and ``batch["retain"]``.

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
    impair_end = noise_steps + int(round(impair_epochs * steps_per_epoch))
    opt = resolve_optimizer(optimizer, name="adam", learning_rate=learning_rate, weight_decay=0.0)
    noise_opt = optax.adam(noise_learning_rate)

    def noise_objective(noise, variables, labels):
        logits = apply(variables, noise).logits
        norms = jnp.sum(jnp.square(noise).reshape(noise.shape[0], -1), axis=1)
        return -losses.cross_entropy(logits, labels) + noise_l2 * jnp.mean(norms)

    def init(variables: Variables, *, key: Array) -> UNSIRState:
        noise = jax.random.normal(key, (noise_batch_size,) + input_shape, jnp.float32)
        return UNSIRState(
            noise=noise,
            noise_labels=jnp.zeros((noise_batch_size,), jnp.int32),
            noise_opt_state=noise_opt.init(noise),
            opt_state=opt.init(variables["params"]),
            step=jnp.zeros((), jnp.int32),
        )

    def update(variables: Variables, state: UNSIRState, batch: Batch, *, key: Array):
        del key
        step = state.step
        in_noise = step < noise_steps
        in_impair = (step >= noise_steps) & (step < impair_end)
        y_forget = batch["forget"]["y"].astype(jnp.int32)
        labels = jnp.where(step == 0, jnp.resize(y_forget, (noise_batch_size,)), state.noise_labels)

        # Phase 1: one Adam step on the noise (kept only while in the noise phase).
        noise_loss, noise_grad = jax.value_and_grad(noise_objective)(state.noise, variables, labels)
        noise_updates, noise_opt_state = noise_opt.update(noise_grad, state.noise_opt_state)
        keep_noise = lambda new, old: jnp.where(in_noise, new, old)
        noise = keep_noise(optax.apply_updates(state.noise, noise_updates), state.noise)
        noise_opt_state = jax.tree.map(keep_noise, noise_opt_state, state.noise_opt_state)

        # Phases 2-3: impair on noise + retain, repair on retain (noise weighted out).
        xr, yr = batch["retain"]["x"], batch["retain"]["y"]
        x = jnp.concatenate([jax.lax.stop_gradient(state.noise).astype(xr.dtype), xr])
        y = jnp.concatenate([labels.astype(yr.dtype), yr])
        weights = jnp.concatenate(
            [
                jnp.full((noise_batch_size,), in_impair, jnp.float32),
                jnp.ones(yr.shape[:1], jnp.float32),
            ]
        )
        opt_state = jax.tree.map(
            lambda fresh, old: jnp.where(step == impair_end, fresh, old),
            opt.init(variables["params"]),
            state.opt_state,
        )

        def model_objective(params):
            logits = apply({**variables, "params": params}, x).logits
            per_example = losses.per_example_cross_entropy(logits, y)
            return jnp.sum(weights * per_example) / jnp.sum(weights)

        model_loss, grads = jax.value_and_grad(model_objective)(variables["params"])
        updates, new_opt_state = opt.update(grads, opt_state, variables["params"])
        new_params = optax.apply_updates(variables["params"], updates)
        keep_model = lambda new, old: jnp.where(in_noise, old, new)
        params = jax.tree.map(keep_model, new_params, variables["params"])
        opt_state = jax.tree.map(keep_model, new_opt_state, opt_state)

        new_state = UNSIRState(noise, labels, noise_opt_state, opt_state, step + 1)
        phase = jnp.where(in_noise, 0, jnp.where(in_impair, 1, 2))
        return (
            {**variables, "params": params},
            new_state,
            {"noise_loss": noise_loss, "loss": model_loss, "phase": phase.astype(jnp.float32)},
        )

    return UnlearningRule(init, update)
