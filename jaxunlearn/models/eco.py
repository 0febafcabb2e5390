"""ECO: unlearning by Embedding-COrrupted prompts, an inference-time guard, not a weight update.

Liu et al. 2024, "Large Language Model Unlearning via Embedding-Corrupted Prompts" (code:
chrisliu298/llm-unlearn-eco; ``shared/reference/lm_robust_evaluation.md`` section 3), leave the
model's weights alone. A prompt classifier flags the prompts that ask about the forget target;
the input embeddings of a flagged prompt are corrupted (their forward hook on the embedding
module), with a corruption strength ``sigma`` learned offline by zeroth-order search on a
surrogate objective, so the model answers as if it did not know.

Because nothing is a weight update, ECO is **not a registered rule**: :func:`eco_network` wraps a
transformer into another :class:`~jaxunlearn.core.types.Network` whose ``apply`` (teacher-forced
scoring, hidden states) and KV-cached generation (:func:`jaxunlearn.models.generation.generate`
reads ``network.apply.prompt_embed_offset``) apply the guard, with the *original* variables, so
every audit runs on it like on any model. :func:`fit_eco` builds the guard from forget and retain
data: the classifier, then ``sigma``.

Here:

* **classifier**: logistic regression on the model's own mean features (``Outputs.features``,
  the final normed hidden state averaged over non-pad tokens; the paper fine-tunes a separate
  RoBERTa), fitted by Newton's method on standardised features with an L2 penalty and the two
  classes weighed equally (the forget set is the small one); a row is
  flagged when ``P(forget | x) > threshold`` (paper: 0.99 for its RoBERTa; 0.5 by default here,
  a logistic model on a small corpus is less confident). It is trained on the prompts alone and on
  the full question-answer rows, the two inputs it sees (generation, scoring);
* **corruption**: ECO's ``rand_noise_first_n``: ``N(0, sigma^2)`` noise added to the first
  ``dims`` coordinates of the embeddings of every token of a flagged input but its last (the
  reference's default positions without a token classifier), in the prefill only when
  generating (the reference hook skips one-token steps). The noise of a position is drawn from
  ``fold_in(fold_in(key(seed), position), token)``, so a row's corruption does not depend on how
  rows are batched, and ``sigma`` scales one fixed draw (common random numbers, so the
  zeroth-order objective is a deterministic function of ``sigma``);
* **sigma**: ECO's two-point zeroth-order step
  ``g = (f(sigma + eps) - f(max(sigma - eps, 1e-8))) / (2 eps)``,
  ``sigma <- max(sigma - lr * g, sigma_min)`` on a surrogate ``f`` (:func:`zeroth_order_sigma`);
  :func:`forget_objective` is the mean answer-token log-probability of the forget rows under the
  guard (lower = forgotten), or its distance to a target such as the retain model's value (the
  behaviour we want is the retain model's, not "any wrong answer").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.core import losses
from jaxunlearn.core.types import Array, Network, Outputs, Variables
from jaxunlearn.models import transformer


class PromptClassifier(NamedTuple):
    """A logistic-regression prompt classifier on standardised features.

    Attributes:
      weight: ``[d]``; bias: scalar; mean, scale: ``[d]`` feature standardisation.
      threshold: a row is flagged when ``P(forget) > threshold``.
    """

    weight: Array
    bias: Array
    mean: Array
    scale: Array
    threshold: float


class EcoGuard(NamedTuple):
    """Everything ECO adds to a model: the classifier and the corruption.

    Attributes:
      classifier: the :class:`PromptClassifier`.
      sigma: noise standard deviation (a scalar; may be traced).
      dims: corrupted embedding coordinates (the first ``dims``).
      seed: the noise draw.
    """

    classifier: PromptClassifier
    sigma: Array
    dims: int
    seed: int


class EcoFit(NamedTuple):
    """What :func:`fit_eco` returns.

    Attributes:
      network: the guarded network (:func:`eco_network`); use it with the original variables.
      guard: the :class:`EcoGuard`.
      history: ``{"sigma": [steps + 1], "objective": [steps + 1]}`` of the zeroth-order search
        (the objective at each ``sigma``), and ``"flag_rate_forget"``/``"flag_rate_retain"``:
        the classifier's flag rates on the training prompts.
    """

    network: Network
    guard: EcoGuard
    history: dict


def check_threshold(threshold: float) -> float:
    """``threshold`` as a float in [0, 1], else a ``ValueError`` naming it."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)):
        raise ValueError(f"threshold must be a probability in [0, 1]; got {threshold!r}.")
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"threshold must be a probability in [0, 1]; got {threshold!r}.")
    return float(threshold)


# ------------------------------------------------------------------------------- classifier


@jax.jit
def _logistic_newton(x, y, ridge):
    mean, scale = x.mean(0), x.std(0)
    scale = jnp.where(scale > 1e-8, scale, 1.0)
    z = jnp.concatenate([(x - mean) / scale, jnp.ones((x.shape[0], 1), x.dtype)], 1)
    penalty = ridge * jnp.eye(z.shape[1]).at[-1, -1].set(0.0)  # no penalty on the bias
    # Balanced classes: each weighs half (the forget set is usually the small one).
    positives = y.sum()
    weight = jnp.where(y > 0, 0.5 / positives, 0.5 / (y.size - positives)) * y.size

    def step(w, _):
        p = jax.nn.sigmoid(z @ w)
        grad = z.T @ (weight * (p - y)) + penalty @ w
        curvature = weight * p * (1 - p)
        hess = (z * curvature[:, None]).T @ z + penalty + 1e-6 * jnp.eye(z.shape[1])
        return w - jnp.linalg.solve(hess, grad), None

    w, _ = jax.lax.scan(step, jnp.zeros(z.shape[1], x.dtype), None, length=25)
    return w[:-1], w[-1], mean, scale


def fit_prompt_classifier(
    forget_features, retain_features, *, threshold: float = 0.5, ridge: float = 1.0
) -> PromptClassifier:
    """Logistic regression separating forget (label 1) from retain (label 0) features, the two
    classes weighed equally.

    Args:
      forget_features, retain_features: ``[n, d]`` features (:func:`prompt_features`).
      threshold: flag when ``P(forget) > threshold``, in [0, 1].
      ridge: L2 penalty on the standardised weights (> 0).

    Raises:
      ValueError: a threshold outside [0, 1], a non-positive ridge, or an empty class.
    """
    threshold = check_threshold(threshold)
    if not ridge > 0:
        raise ValueError(f"ridge must be positive; got {ridge!r}.")
    f = jnp.asarray(forget_features, jnp.float32)
    r = jnp.asarray(retain_features, jnp.float32)
    if f.shape[0] == 0 or r.shape[0] == 0:
        raise ValueError("the classifier needs forget and retain examples.")
    x = jnp.concatenate([f, r])
    y = jnp.concatenate([jnp.ones(f.shape[0]), jnp.zeros(r.shape[0])])
    weight, bias, mean, scale = _logistic_newton(x, y, jnp.float32(ridge))
    return PromptClassifier(weight, bias, mean, scale, threshold)


def forget_probability(classifier: PromptClassifier, features) -> Array:
    """``[n]`` the classifier's ``P(forget)`` of each row's features."""
    z = (jnp.asarray(features, jnp.float32) - classifier.mean) / classifier.scale
    return jax.nn.sigmoid(z @ classifier.weight + classifier.bias)


def flagged(classifier: PromptClassifier, features) -> Array:
    """``[n]`` bool: ``P(forget) > threshold``."""
    return forget_probability(classifier, features) > classifier.threshold


def prompt_features(network: Network, variables: Variables, tokens) -> Array:
    """``[n, d]`` the unguarded model's mean features of each row (the classifier's input)."""
    return jax.jit(lambda v, x: network.apply(v, x).features)(variables, jnp.asarray(tokens))


def prompts_of(tokens, labels, pad_id: int = 0) -> np.ndarray:
    """``tokens`` with every answer token replaced by padding (``labels`` pre-shifted): the
    prompts as generation sees them."""
    tokens, labels = np.asarray(tokens), np.asarray(labels)
    answer = np.pad(labels[:, :-1] != losses.IGNORE_INDEX, ((0, 0), (1, 0)))
    return np.where(answer, pad_id, tokens).astype(tokens.dtype)


# ------------------------------------------------------------------------------- corruption


def unit_noise(tokens, *, pad_id: int, d_model: int, dims: int, seed: int) -> Array:
    """``[n, T, d]`` the standard-normal corruption direction: ``N(0, 1)`` on the first ``dims``
    coordinates at every non-pad position but each row's last, drawn per (position, token)."""
    tokens = jnp.asarray(tokens)
    n, t = tokens.shape
    base = jax.random.key(seed)

    def draw(position, token):
        key = jax.random.fold_in(jax.random.fold_in(base, position), token)
        return jax.random.normal(key, (dims,))

    noise = jax.vmap(jax.vmap(draw, (0, 0)), (None, 0))(jnp.arange(t), tokens)
    noise = jnp.pad(noise, ((0, 0), (0, 0), (0, d_model - dims)))
    valid = tokens != pad_id
    last = jnp.max(jnp.where(valid, jnp.arange(t), -1), axis=1)
    positions = valid & (jnp.arange(t)[None, :] != last[:, None])
    return noise * positions[..., None]


def embed_offset(guard: EcoGuard, features, tokens, *, pad_id: int, d_model: int) -> Array:
    """``[n, T, d]`` the corruption added to the embeddings: ``sigma`` times :func:`unit_noise`
    on the rows the classifier flags, zero elsewhere."""
    noise = unit_noise(tokens, pad_id=pad_id, d_model=d_model, dims=guard.dims, seed=guard.seed)
    flags = flagged(guard.classifier, features)
    return jnp.where(flags[:, None, None], guard.sigma * noise, 0.0)


def _spec(network: Network) -> transformer.TransformerConfig:
    if not isinstance(network.spec, transformer.TransformerConfig):
        raise ValueError(
            f"ECO wraps a transformer (make_network('transformer', ...)); got {network.name!r}."
        )
    return network.spec


def eco_network(network: Network, guard: EcoGuard) -> Network:
    """The transformer behind ECO's guard: same variables, corrupted embeddings on flagged inputs.

    ``apply(variables, tokens)`` runs the unguarded model once for the classifier's features,
    then the model on the corrupted embeddings of the flagged rows (unflagged rows: the plain
    model). ``apply.prompt_embed_offset(variables, prompts)`` gives the prefill corruption that
    :func:`jaxunlearn.models.generation.generate` applies. The weights never change.

    Raises:
      ValueError: a network that is not a transformer, or ``dims`` outside ``1..d_model``.
    """
    spec = _spec(network)
    if not 1 <= int(guard.dims) <= spec.d_model:
        raise ValueError(f"dims must be in 1..d_model={spec.d_model}; got {guard.dims!r}.")
    plain = network.apply

    def offset_of(variables, tokens):
        tokens = jnp.asarray(tokens)
        features = plain(variables, tokens).features
        return embed_offset(guard, features, tokens, pad_id=spec.pad_id, d_model=spec.d_model)

    def apply(variables: Variables, tokens, *, train: bool = False) -> Outputs:
        del train
        offset = offset_of(variables, tokens)
        module = transformer._module(spec, variables["params"])
        logits, features, hidden = module(jnp.asarray(tokens), offset)
        return Outputs(logits=logits, features=features, batch_stats=None, hidden=tuple(hidden))

    apply.prompt_embed_offset = jax.jit(offset_of)
    return network._replace(apply=apply, name=f"{network.name}+eco")


# ---------------------------------------------------------------------- zeroth-order search


def zeroth_order_sigma(
    objective: Callable[[float], float],
    sigma: float,
    *,
    learning_rate: float,
    steps: int,
    eps: float | None = None,
    sigma_min: float | None = None,
    stop_below: float | None = None,
) -> dict:
    """ECO's zeroth-order search for the corruption strength (``eco/optimizer/zoo.py``).

    Each step estimates ``g = (f(sigma + eps) - f(max(sigma - eps, 1e-8))) / (2 eps)`` from two
    evaluations and moves ``sigma <- max(sigma - learning_rate * g, sigma_min)``.

    Args:
      objective: ``sigma -> f`` to minimise (e.g. :func:`forget_objective`).
      sigma: the start (ECO, WMDP: 0.1).
      learning_rate: the step (ECO, WMDP: 100 on an accuracy objective).
      steps: zeroth-order steps (ECO: 10).
      eps: the probe half-width (ECO: ``0.999 * sigma``).
      sigma_min: the floor (ECO: the start, so ``sigma`` never drops below it).
      stop_below: stop once ``f(sigma)`` is below this (ECO, WMDP: accuracy 0.27 ~ chance).

    Returns:
      ``{"sigma": [k], "objective": [k]}``: each visited ``sigma`` (the start first) and its
      objective; the last is the result.
    """
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be a non-negative integer; got {steps!r}.")
    if not sigma > 0:
        raise ValueError(f"sigma must be positive; got {sigma!r}.")
    eps = 0.999 * sigma if eps is None else eps
    sigma_min = sigma if sigma_min is None else sigma_min
    if not eps > 0:
        raise ValueError(f"eps must be positive; got {eps!r}.")
    history = {"sigma": [float(sigma)], "objective": [float(objective(sigma))]}
    for _ in range(steps):
        if stop_below is not None and history["objective"][-1] < stop_below:
            break
        forward = float(objective(sigma + eps))
        backward = float(objective(max(sigma - eps, 1e-8)))
        grad = (forward - backward) / (2 * eps)
        sigma = max(sigma - learning_rate * grad, sigma_min)
        history["sigma"].append(float(sigma))
        history["objective"].append(float(objective(sigma)))
    return history


def forget_objective(
    network: Network, variables: Variables, guard: EcoGuard, tokens, labels, *, target=None
) -> Callable[[float], float]:
    """``sigma -> f``: the mean answer-token log-probability of ``(tokens, labels)`` under the
    guarded model with corruption ``sigma`` (the rows' flags are the guard's classifier's), or
    ``|f - target|`` with a ``target`` such as the retain model's value. One compiled program;
    the noise draw is fixed, so ``f`` is deterministic."""
    spec = _spec(network)
    tokens, labels = jnp.asarray(tokens), jnp.asarray(labels)
    lengths = jnp.maximum(losses.answer_lengths(labels), 1)

    @jax.jit
    def value(sigma):
        guarded = eco_network(network, guard._replace(sigma=sigma))
        logp = losses.token_log_probs(guarded.apply(variables, tokens).logits, labels)
        mean = jnp.mean(logp.sum(-1) / lengths)
        return mean if target is None else jnp.abs(mean - target)

    del spec
    return lambda sigma: float(value(jnp.float32(sigma)))


def fit_eco(
    network: Network,
    variables: Variables,
    forget: tuple,
    retain: tuple,
    *,
    threshold: float = 0.5,
    ridge: float = 1.0,
    sigma: float = 0.1,
    dims: int | None = None,
    learning_rate: float = 1.0,
    steps: int = 10,
    eps: float | None = None,
    target: float | None = None,
    stop_below: float | None = None,
    seed: int = 0,
) -> EcoFit:
    """ECO offline: fit the prompt classifier, then search ``sigma``; the weights never change.

    Args:
      network: the transformer; variables: its (original) variables.
      forget, retain: ``(tokens, labels)`` QA rows of the forget and retain sets (labels
        pre-shifted). The classifier learns from their prompts and their full rows.
      threshold: flag when ``P(forget) > threshold``, in [0, 1].
      ridge: the classifier's L2 penalty.
      sigma: the starting noise scale (and, as in ECO, its floor).
      dims: corrupted embedding coordinates (default all ``d_model``; ECO's TOFU grid: 1 or all).
      learning_rate, steps, eps, stop_below: :func:`zeroth_order_sigma`.
      target: the objective is ``|mean forget answer log-prob - target|`` (e.g. the retain
        model's value); ``None`` minimises the log-prob itself.
      seed: the noise draw.

    Returns:
      :class:`EcoFit`: call ``fit.network.apply(variables, tokens)`` or
      ``generation.generate(fit.network, variables, prompts, ...)`` to run the guarded model.

    Raises:
      ValueError: a threshold outside [0, 1], ``dims`` outside ``1..d_model``, or bad search
        settings.
    """
    spec = _spec(network)
    threshold = check_threshold(threshold)
    dims = spec.d_model if dims is None else dims
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= spec.d_model:
        raise ValueError(f"dims must be an integer in 1..d_model={spec.d_model}; got {dims!r}.")
    (fx, fy), (rx, ry) = forget, retain
    f_rows = np.concatenate([prompts_of(fx, fy, spec.pad_id), np.asarray(fx)])
    r_rows = np.concatenate([prompts_of(rx, ry, spec.pad_id), np.asarray(rx)])
    f_feat = prompt_features(network, variables, f_rows)
    r_feat = prompt_features(network, variables, r_rows)
    classifier = fit_prompt_classifier(f_feat, r_feat, threshold=threshold, ridge=ridge)
    guard = EcoGuard(classifier, jnp.float32(sigma), dims, seed)
    objective = forget_objective(network, variables, guard, fx, fy, target=target)
    history = zeroth_order_sigma(
        objective,
        sigma,
        learning_rate=learning_rate,
        steps=steps,
        eps=eps,
        stop_below=stop_below,
    )
    guard = guard._replace(sigma=jnp.float32(history["sigma"][-1]))
    history["flag_rate_forget"] = float(jnp.mean(flagged(classifier, f_feat)))
    history["flag_rate_retain"] = float(jnp.mean(flagged(classifier, r_feat)))
    if not math.isfinite(history["objective"][-1]):
        raise ValueError("the zeroth-order search diverged (non-finite objective).")
    return EcoFit(eco_network(network, guard), guard, history)
