"""Unlearning for deep regression: blindspot unlearning and Gaussian amnesiac fine-tuning.

Class-based tricks (random wrong labels, a bad teacher's softmax) have no meaning for a real-valued
target. Tarun et al. replace them with two regression-native methods:

* **Blindspot**: a "blindspot" proxy, trained from scratch on the retain set for a short time,
  has never seen the forget set; the original model is pulled towards the proxy's behaviour on the
  forget set (its outputs and the attention maps of its hidden layers) while keeping its L1 fit
  on the retain set.
* **Gaussian amnesiac**: the forget targets are replaced by draws from a Gaussian with the
  training targets' mean and standard deviation, and the model is fine-tuned on forget (noisy)
  plus retain data.

Both use the reference code's L1 loss (its regression loss throughout) unless ``loss="mse"``.

References:
  Tarun, Chundawat, Mandal and Kankanhalli, "Deep Regression Unlearning", ICML 2023
  (``unlearn.py::fit_one_forget_cycle`` and the AgeDB notebook of
  ayushkumartarun/deep-regression-unlearning: proxy 2 epochs with Adam 1e-2, unlearning 1 epoch
  with Adam 1e-3, attention-transfer weight 50).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxunlearn.core import losses, optim
from jaxunlearn.core.checks import concrete
from jaxunlearn.core.combinators import phases
from jaxunlearn.core.rule import BATCH_STATS_KEY, LossRuleState, rule_from_loss
from jaxunlearn.core.types import Array, Batch, UnlearningRule, Variables
from jaxunlearn.rules import registry
from jaxunlearn.rules.amnesiac import example_keys

# The reference code's optimizer for the proxy and the unlearning: Adam, no weight decay.
REGRESSION_ADAM = optim.REFERENCE_ADAM

_LOSSES = {"l1": losses.mean_absolute_error, "mse": losses.mean_squared_error}


def _regression_loss(name: str) -> Callable[[Array, Array], Array]:
    if name not in _LOSSES:
        raise ValueError(f"`loss` must be one of {sorted(_LOSSES)}; got {name!r}")
    return _LOSSES[name]


def _check_positive(name: str, value: float) -> None:
    if concrete(value) and not value > 0:
        raise ValueError(f"`{name}` must be positive; got {value}")


# --------------------------------------------------------------------------------------------------
# Blindspot unlearning.


class ProxyState(NamedTuple):
    """State of blindspot's proxy phase.

    Attributes:
      proxy: the blindspot model's variables (trained on the retain set).
      inner: the state of the loss rule that trains it.
    """

    proxy: Variables
    inner: LossRuleState


def _hidden_or_features(out) -> tuple[Array, ...]:
    # Models that expose no intermediate activations still give their features.
    return tuple(out.hidden) if out.hidden else (out.features,)


@registry.rule(
    "blindspot",
    parts=("forget", "retain"),
    paper="Tarun et al., Deep Regression Unlearning, ICML 2023",
    needs_labels=False,
    cost="medium",
    task="regression",
    sweepable=("proxy_learning_rate", "learning_rate", "at_weight"),
)
def blindspot(
    apply: Callable,
    *,
    init_fn: Callable,
    num_steps: int,
    steps_per_epoch: int,
    proxy_epochs: float = 2.0,
    proxy_learning_rate: float = 1e-2,
    learning_rate: float = 1e-3,
    at_weight: float = 50.0,
    forget_weight: float | None = None,
    loss: str = "l1",
    train_mode: bool = True,
    optimizer: optax.GradientTransformation | Mapping | None = None,
    proxy_optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """Blindspot unlearning: match a retain-only proxy on the forget set, fit the retain set.

    Schedule: ``phases((n_proxy, train proxy), (None, unlearn))`` with ``n_proxy =
    round(proxy_epochs * steps_per_epoch)`` (at least 1). Phase 1 trains a fresh proxy, drawn
    from ``init_fn(fold_in(key, 0))`` in ``init``, on retain batches; the model is returned
    unchanged. Phase 2 receives the trained proxy (the ``previous=`` hand-off), starts a fresh
    optimizer and fine-tunes the model on

        c * [L1(f(x_f), p(x_f)) + at_weight * sum_l AT(h_l(x_f), h^p_l(x_f))]
          + (1 - c) * L1(f(x_r), y_r)

    where ``p`` is the frozen proxy, ``AT`` the attention-transfer distance of every hidden layer
    (:func:`~jaxunlearn.core.losses.attention_transfer`; models that expose no hidden activations
    use their features as the one layer), and ``c`` the forget share of the batch.

    The reference code mixes forget and retain examples in one shuffled loader, so its ``c`` is
    the forget fraction of each batch (about ``|D_f| / |D|``). Here forget and retain come as two
    parts of fixed sizes, so ``c`` defaults to ``n_f / (n_f + n_r)`` of the batch sizes; pass
    ``forget_weight=|D_f|/|D|`` to reproduce the reference's expected weight whatever the batch
    sizes. The experiment's ``epochs`` counts both phases: the reference's 2 proxy epochs + 1
    unlearning epoch is ``epochs=3``.

    The proxy is trained from scratch, so it refreshes its own BatchNorm statistics (kept in the
    state) and runs in inference mode as a teacher. The model under unlearning runs in training
    mode, as the reference's ``model.train()``: one forward pass over the forget and retain
    batches together (the reference's mixed batch), whose refreshed statistics it keeps;
    ``train_mode=False`` runs it in inference mode with its statistics fixed.

    Args:
      apply: the model's functional ``apply`` (the proxy shares the architecture).
      init_fn: ``key -> variables`` of a fresh model (from the registry).
      num_steps: total updates of the run (from the registry); must exceed the proxy's steps.
      steps_per_epoch: retain batches per epoch (from the registry).
      proxy_epochs: epochs of proxy training on the retain set (reference: 2).
      proxy_learning_rate: learning rate of the proxy (reference: 1e-2).
      learning_rate: learning rate of the unlearning phase (reference: 1e-3).
      at_weight: weight of the attention-transfer term (reference: 50).
      forget_weight: ``c`` in [0, 1]; ``None`` takes the forget share of the batch.
      loss: ``"l1"`` (reference) or ``"mse"``, for the output-matching and retain terms.
      train_mode: run the model's BatchNorm in training mode in the unlearning phase.
      optimizer: the unlearning optimizer: an optax optimizer, or settings over the reference
        Adam (no weight decay); see :func:`~jaxunlearn.core.optim.resolve`.
      proxy_optimizer: the proxy's optimizer, likewise.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and ``batch["retain"]``, whose state
      is a :class:`~jaxunlearn.core.combinators.PhasesState` of a :class:`ProxyState` and a
      :class:`~jaxunlearn.core.rule.LossRuleState` (whose ``reference`` is the trained proxy).

    References:
      Tarun et al., "Deep Regression Unlearning", ICML 2023 (``unlearn.py::forget_loss``,
      ``fit_one_forget_cycle``).
    """
    _check_positive("proxy_epochs", proxy_epochs)
    _check_positive("proxy_learning_rate", proxy_learning_rate)
    _check_positive("learning_rate", learning_rate)
    if concrete(at_weight) and not at_weight >= 0:
        raise ValueError(f"`at_weight` must be non-negative; got {at_weight}")
    if forget_weight is not None and concrete(forget_weight) and not 0.0 <= forget_weight <= 1.0:
        raise ValueError(f"`forget_weight` must lie in [0, 1] (or be None); got {forget_weight}")
    error = _regression_loss(loss)
    proxy_steps = max(1, int(round(proxy_epochs * steps_per_epoch)))
    if num_steps <= proxy_steps:
        raise ValueError(
            f"blindspot trains its proxy for {proxy_steps} steps (proxy_epochs={proxy_epochs} x "
            f"{steps_per_epoch} steps per epoch) but the run has only num_steps={num_steps}: "
            "raise `epochs` (proxy epochs + unlearning epochs, e.g. 3) or lower `proxy_epochs`."
        )
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=REGRESSION_ADAM)
    proxy_opt = optim.resolve(
        proxy_optimizer, learning_rate=proxy_learning_rate, default=REGRESSION_ADAM
    )

    # ---- phase 1: train the proxy on the retain set (the model is untouched)

    def proxy_loss(variables: Variables, batch: Batch, *, reference, step, key):
        del reference, step, key
        retain = batch["retain"]
        out = apply(variables, retain["x"], train=True)
        metrics = {} if out.batch_stats is None else {BATCH_STATS_KEY: out.batch_stats}
        return error(out.logits, retain["y"]), metrics

    training = rule_from_loss(proxy_loss, proxy_opt, keep_reference=False)

    def proxy_init(variables: Variables, *, key: Array) -> ProxyState:
        del variables
        proxy = init_fn(key)
        return ProxyState(proxy, training.init(proxy, key=key))

    def proxy_update(variables: Variables, state: ProxyState, batch: Batch, *, key: Array):
        proxy, inner, metrics = training.update(state.proxy, state.inner, batch, key=key)
        return variables, ProxyState(proxy, inner), {"proxy_loss": metrics["loss"]}

    # ---- phase 2: pull the model to the proxy on the forget set (the rule's reference)

    def unlearn_loss(variables: Variables, batch: Batch, *, reference, step, key):
        del step, key
        forget, retain = batch["forget"], batch["retain"]
        target = apply(reference, forget["x"])
        n_f, n_r = forget["x"].shape[0], retain["x"].shape[0]
        c = n_f / (n_f + n_r) if forget_weight is None else forget_weight
        metrics = {}
        if train_mode:
            out = apply(variables, jnp.concatenate([forget["x"], retain["x"]]), train=True)
            out_f = jax.tree.map(lambda a: a[:n_f], out._replace(batch_stats=None))
            retain_pred = out.logits[n_f:]
            if out.batch_stats is not None:
                metrics[BATCH_STATS_KEY] = out.batch_stats
        else:
            out_f = apply(variables, forget["x"])
            retain_pred = apply(variables, retain["x"]).logits
        match = error(out_f.logits, jax.lax.stop_gradient(target.logits))
        at = sum(
            losses.attention_transfer(s, jax.lax.stop_gradient(t))
            for s, t in zip(_hidden_or_features(out_f), _hidden_or_features(target), strict=True)
        )
        retain_loss = error(retain_pred, retain["y"])
        total = c * (match + at_weight * at) + (1.0 - c) * retain_loss
        return total, {
            **metrics,
            "forget_loss": match,
            "at_loss": at,
            "retain_loss": retain_loss,
        }

    unlearning = rule_from_loss(unlearn_loss, opt)

    def unlearn_init(
        variables: Variables, *, key: Array, previous: ProxyState | None = None
    ) -> LossRuleState:
        if previous is None:
            raise ValueError("blindspot's unlearning phase needs the proxy of the phase before it")
        return unlearning.init(variables, key=key)._replace(reference=previous.proxy)

    return phases(
        (proxy_steps, UnlearningRule(proxy_init, proxy_update)),
        (None, UnlearningRule(unlearn_init, unlearning.update)),
    )


# --------------------------------------------------------------------------------------------------
# Gaussian amnesiac.


class GaussianAmnesiacState(NamedTuple):
    """State of :func:`gaussian_amnesiac`.

    Attributes:
      inner: the state of the loss rule on the pooled, relabelled batch (optimizer state and
        step counter).
      noise_key: the key each forget example's standard-normal draw is derived from (drawn at
        ``init``; see :func:`~jaxunlearn.rules.amnesiac.example_keys`).
      target_count: ``[2]``: forget and retain target entries seen so far (float, for the
        running moments).
      target_sum: ``[2]``: their sums.
      target_sq_sum: ``[2]``: the sums of their squares.
    """

    inner: LossRuleState
    noise_key: Array
    target_count: Array
    target_sum: Array
    target_sq_sum: Array


@registry.rule(
    "gaussian_amnesiac",
    parts=("forget", "retain"),
    paper="Tarun et al., Deep Regression Unlearning, ICML 2023",
    needs_labels=False,
    task="regression",
    sweepable=("learning_rate",),
)
def gaussian_amnesiac(
    apply: Callable,
    *,
    learning_rate: float = 1e-3,
    target_mean: float | None = None,
    target_std: float | None = None,
    forget_fraction: float | None = None,
    fixed_targets: bool = True,
    train_mode: bool = True,
    loss: str = "l1",
    optimizer: optax.GradientTransformation | Mapping | None = None,
) -> UnlearningRule:
    """Gaussian amnesiac: fine-tune on forget examples relabelled with N(mean_y, std_y) draws.

    The reference relabels the forget set once, before its single epoch, with draws from a
    Gaussian fitted to all training targets, and fine-tunes on one shuffled loader of the
    relabelled D_f and D_r with the model in ``train()`` mode. Here each forget example's target
    is ``mean_y + std_y * z`` with ``z ~ N(0, 1)`` drawn once per example: ``z`` comes from a key
    of the example (its row in the data set, the batch part's ``"index"``, which batches drawn by
    ``fit`` carry; see :func:`~jaxunlearn.rules.amnesiac.example_keys`) folded into a key drawn
    at ``init``, so a
    forget example revisited later keeps its target. Each update (no phases) takes one optimizer
    step on the loss over the forget and retain batches pooled.

    ``mean_y`` and ``std_y`` are ``target_mean`` / ``target_std`` when given: pass the mean and
    standard deviation of all training targets (``y_train``) to reproduce the reference exactly.
    Otherwise they are running estimates over all targets seen so far, this batch included:
    forget and retain targets, each part weighed by its share of the training set
    (``forget_fraction``, supplied by the registry; by the counts seen without it), so the
    estimate tends to the statistics of all training targets; the draws ``z`` stay fixed.

    ``fixed_targets=False`` reproduces this library's earlier behaviour: fresh targets at every
    update, from running statistics of the retain targets alone.

    Args:
      apply: the model's functional ``apply``.
      learning_rate: the step size (reference: Adam 1e-3, 1 epoch).
      target_mean: mean of the Gaussian, or ``None`` for the running estimate.
      target_std: standard deviation (non-negative), or ``None`` for the running estimate.
      forget_fraction: ``|D_f| / (|D_f| + |D_r|)`` (supplied by the registry), to weigh the
        running estimate.
      fixed_targets: draw each forget example's target once (the reference); ``False`` redraws
        them at every update from retain statistics.
      train_mode: run BatchNorm in training mode on the pooled batch, as the reference's
        ``model.train()``; ``False`` keeps its statistics fixed.
      loss: ``"l1"`` (reference) or ``"mse"``.
      optimizer: an optax optimizer, or settings over the reference Adam (no weight decay); see
        :func:`~jaxunlearn.core.optim.resolve`.

    Returns:
      An :class:`UnlearningRule` reading ``batch["forget"]`` and ``batch["retain"]``, whose state
      is a :class:`GaussianAmnesiacState`.

    References:
      Tarun et al., "Deep Regression Unlearning", ICML 2023 (Gaussian amnesiac, AgeDB notebook
      of ayushkumartarun/deep-regression-unlearning).
    """
    _check_positive("learning_rate", learning_rate)
    if target_std is not None and concrete(target_std) and not target_std >= 0:
        raise ValueError(f"`target_std` must be non-negative (or None); got {target_std}")
    if forget_fraction is not None and not 0.0 < forget_fraction <= 1.0:
        raise ValueError(
            f"`forget_fraction` must lie in (0, 1] (or be None); got {forget_fraction}"
        )
    error = _regression_loss(loss)
    opt = optim.resolve(optimizer, learning_rate=learning_rate, default=REGRESSION_ADAM)

    def pooled_loss(variables: Variables, batch: Batch, *, reference, step, key):
        del reference, step, key
        pooled = batch["pooled"]
        out = apply(variables, pooled["x"], train=train_mode)
        metrics = {}
        if train_mode and out.batch_stats is not None:
            metrics[BATCH_STATS_KEY] = out.batch_stats
        return error(out.logits, pooled["y"]), metrics

    fitting = rule_from_loss(pooled_loss, opt, keep_reference=False)

    def init(variables: Variables, *, key: Array) -> GaussianAmnesiacState:
        zero = jnp.zeros((2,), jnp.float32)
        return GaussianAmnesiacState(
            fitting.init(variables, key=key), jax.random.fold_in(key, 0x4741), zero, zero, zero
        )

    def moments(count, total, sq_total):
        mean = total / jnp.maximum(count, 1.0)
        return mean, sq_total / jnp.maximum(count, 1.0)

    def update(variables: Variables, state: GaussianAmnesiacState, batch: Batch, *, key: Array):
        forget, retain = batch["forget"], batch["retain"]
        y_f = forget["y"].astype(jnp.float32)
        y_r = retain["y"].astype(jnp.float32)
        count = state.target_count + jnp.asarray([y_f.size, y_r.size], jnp.float32)
        total = state.target_sum + jnp.stack([jnp.sum(y_f), jnp.sum(y_r)])
        sq_total = state.target_sq_sum + jnp.stack(
            [jnp.sum(jnp.square(y_f)), jnp.sum(jnp.square(y_r))]
        )
        if not fixed_targets:
            # The earlier behaviour: retain statistics, fresh draws from the update key.
            running_mean, second = moments(count[1], total[1], sq_total[1])
        elif forget_fraction is None:
            running_mean, second = moments(jnp.sum(count), jnp.sum(total), jnp.sum(sq_total))
        else:
            (mean_f, mean_r), (sq_f, sq_r) = moments(count, total, sq_total)
            running_mean = forget_fraction * mean_f + (1.0 - forget_fraction) * mean_r
            second = forget_fraction * sq_f + (1.0 - forget_fraction) * sq_r
        running_std = jnp.sqrt(jnp.maximum(second - jnp.square(running_mean), 0.0))
        mean = running_mean if target_mean is None else jnp.asarray(target_mean, jnp.float32)
        std = running_std if target_std is None else jnp.asarray(target_std, jnp.float32)
        if fixed_targets:
            z = jax.vmap(lambda k: jax.random.normal(k, y_f.shape[1:], jnp.float32))(
                example_keys(state.noise_key, forget)
            )
        else:
            z = jax.random.normal(key, y_f.shape, jnp.float32)
        noisy = mean + std * z
        pooled = {
            "x": jnp.concatenate([forget["x"], retain["x"]]),
            "y": jnp.concatenate([noisy, y_r]),
        }
        variables, inner, metrics = fitting.update(
            variables, state.inner, {"pooled": pooled}, key=key
        )
        state = GaussianAmnesiacState(inner, state.noise_key, count, total, sq_total)
        return variables, state, {**metrics, "target_mean": mean, "target_std": std}

    return UnlearningRule(init, update)
