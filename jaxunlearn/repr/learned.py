"""The meta-learned unsupervised update rule of Metz et al. (ICLR 2019) as a pure rule.

A small *neuron-local* network, shared by every unit of every layer, produces the weight updates
of a base MLP from what each unit can see: its forward activations and a learned *backward*
(top-down) signal. Its parameters ``theta`` are the rule's state, so the rule is an
``UnlearningRule(init, update)`` like any other and is meta-trained by gradients through unrolls
of its own ``update`` (:mod:`jaxunlearn.repr.meta`).

One update on a batch ``x`` (``batch["retain"]["x"]``; labels are never read), for the base MLP
``z_l = x_{l-1} W_l + b_l``, ``x_l = relu(z_l)``, ``l = 1..L`` (the project's ``mlp``; the
features are ``x_L``):

1. Forward pass; every unit's pre-activations are normalised over the batch, ``zhat``.
2. Top-down signal ``d_L = top(zhat_L, zhat_L - mean over units, zhat_L^2 - 1)``: a per-unit
   MLP with ``C`` output channels (the reference computes it by 1-D convolutions over the batch;
   here the unit's batch-normalised activation and its deviation from the example's mean over
   units carry the batch and layer context).
3. Going down, each unit's hidden state ``h = unit_net(features)`` from its features (``zhat``,
   the rescaled post-activation, the unit's batch mean and spread, the backward signal ``d``, the
   unit index as sin/cos, the depth ``l / L``, the norm of its incoming weights and its bias),
   and the signal for the layer below ``d_{l-1} = gate(zhat_{l-1}) * rms_normalise(e_l W_l^T)``
   with ``e_l = Linear(h_l)`` and ``gate = sigmoid`` (none at the input).
4. ``dW_l[i, j] = mean_b sum_k pre_k(h_{l-1, b i}) post_k(h_{l, b j})``: a rank-``K``,
   batch-averaged outer product of readouts of the units below and above (Hebbian-like),
   normalised per receptive field (column ``j``) to unit RMS; ``db_l = mean_b tanh(bias(h_l))``.
5. The component of ``dW`` along each unit's incoming weights is projected out and the unit's
   weight norm is restored after the step, ``w_j <- |w_j| (w_j + a dW_j) / |w_j + a dW_j|``, with
   ``a = step_scale * exp(theta["log_lr"]) / sqrt(fan_in)``.

What is simplified against the paper and ``tensorflow/models``
``research/learning_unsupervised_learning`` (``architectures/more_local_weight_update.py``): the
backward pass reads the forward weights transposed (the reference keeps separate backward weights
``V`` that the rule also updates); the top-down signal is per unit, not a convolution over the
batch; the weight-norm control is an exact norm-preserving step (the reference projects out the
norm-shrinking part of the update and adds ``-W/7``); no batch norm in the base network, and the
classifier head is left as it is (the rule trains the representation, ``features``).

A trained ``theta`` is saved with orbax by :func:`save_theta` together with the base
architecture it was meta-trained for (the layer widths); :func:`load_theta` and the rule's
``checkpoint=`` refuse it for another architecture.

References:
  Metz, Maheswaranathan, Cheung, Sohl-Dickstein, "Meta-Learning Update Rules for Unsupervised
  Representation Learning", ICLR 2019, arXiv 1804.00222;
  ``shared/reference/unlearnable_and_representation.md`` (Part B2).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxunlearn.core.rule import StepCounter
from jaxunlearn.core.types import Array, Batch, PyTree, UnlearningRule, Variables
from jaxunlearn.repr.common import PART, check_count, check_positive
from jaxunlearn.repr.registry import rule

THETA_KEY = 0x4C52  # fold-in of the init key that draws an untrained theta
METADATA_FILE = "learned_rule.json"
THETA_DIR = "theta"
FORMAT = 1
EPS = 1e-6
# Unit features other than the C backward channels: zhat, rescaled post-activation, the unit's
# batch mean and log spread, sin/cos of its index, depth, log incoming-weight norm, bias.
BASE_UNIT_FEATURES = 9
TOP_FEATURES = 5


# ------------------------------------------------------------------------------- base network


def base_layers(params: Mapping, *, name: str = "variables") -> list[tuple[Array, Array]]:
    """``[(kernel [n_{l-1}, n_l], bias [n_l])]`` of the base MLP's hidden layers, in order.

    Raises:
      ValueError: ``params`` is not the project's ``mlp`` (``{"layers": {"0": {"kernel",
        "bias"}, ...}, ...}``) or its layers do not chain.
    """
    layers = params.get("layers") if isinstance(params, Mapping) else None
    if not isinstance(layers, Mapping) or not layers:
        raise ValueError(
            f"learned_unsupervised_rule trains the hidden layers of an MLP (models.make_network("
            f"'mlp', ...)); `{name}['params']` has no 'layers' (keys: "
            f"{sorted(params) if isinstance(params, Mapping) else type(params).__name__})"
        )
    out = []
    for i in range(len(layers)):
        layer = layers.get(str(i), layers.get(i)) if isinstance(layers, Mapping) else None
        if not isinstance(layer, Mapping) or "kernel" not in layer or "bias" not in layer:
            raise ValueError(
                f"learned_unsupervised_rule: layer {i} of `{name}['params']['layers']` is not a "
                "dense layer with 'kernel' and 'bias'"
            )
        kernel, bias = layer["kernel"], layer["bias"]
        if kernel.ndim != 2 or bias.shape != kernel.shape[1:]:
            raise ValueError(
                f"learned_unsupervised_rule: layer {i} has kernel {kernel.shape} and bias "
                f"{bias.shape}; a dense layer has [in, out] and [out]"
            )
        if out and out[-1][0].shape[1] != kernel.shape[0]:
            raise ValueError(
                f"learned_unsupervised_rule: layer {i} takes {kernel.shape[0]} inputs but layer "
                f"{i - 1} has {out[-1][0].shape[1]} units"
            )
        out.append((kernel, bias))
    return out


def architecture_of(variables: Variables) -> tuple[int, ...]:
    """The base MLP's widths ``(inputs, hidden_1, ..., hidden_L)`` (what a checkpoint is for)."""
    params = variables.get("params", variables) if isinstance(variables, Mapping) else variables
    layers = base_layers(params)
    return (int(layers[0][0].shape[0]), *(int(k.shape[1]) for k, _ in layers))


def with_layers(params: Mapping, layers: Sequence[tuple[Array, Array]]) -> dict:
    """``params`` with its hidden layers replaced (the head and anything else kept)."""
    old = params["layers"]
    keys = [k for k in (str(i) for i in range(len(layers))) if k in old] or list(range(len(layers)))
    new = {**old}
    for k, (kernel, bias) in zip(keys, layers, strict=True):
        new[k] = {**old[k], "kernel": kernel, "bias": bias}
    return {**params, "layers": new}


def forward(layers: Sequence[tuple[Array, Array]], x: Array) -> tuple[list[Array], list[Array]]:
    """``([z_0 = x, z_1, ..., z_L], [x_0 = x, x_1, ..., x_L])``: pre- and post-activations of
    the base MLP (``x_l = relu(z_l)``; the input is flattened); ``x_L`` are the features."""
    h = x.reshape(x.shape[0], -1).astype(jnp.float32)
    pre, post = [h], [h]
    for kernel, bias in layers:
        z = h @ kernel + bias
        h = jax.nn.relu(z)
        pre.append(z)
        post.append(h)
    return pre, post


def features_of(params: Mapping, x: Array) -> Array:
    """The base MLP's representation ``x_L`` of ``x`` (what ``apply(...).features`` returns)."""
    return forward(base_layers(params), x)[1][-1]


# ---------------------------------------------------------------------------------- theta


def _dense(key: Array, fan_in: int, fan_out: int, scale: float = 1.0) -> dict:
    w = jax.random.normal(key, (fan_in, fan_out), jnp.float32) * (scale / math.sqrt(fan_in))
    return {"w": w, "b": jnp.zeros((fan_out,), jnp.float32)}


def init_theta(
    key: Array,
    *,
    hidden: int = 16,
    channels: int = 4,
    rank: int = 4,
    learning_rate: float = 0.02,
    bias_learning_rate: float = 0.01,
) -> dict:
    """Fresh parameters of the learned rule (shared by every unit, independent of the base
    network's widths).

    Args:
      key: PRNG key.
      hidden: width ``H`` of the per-unit network and of each unit's hidden state.
      channels: channels ``C`` of the backward (top-down) signal.
      rank: rank ``K`` of the weight update's outer product.
      learning_rate: initial ``exp(log_lr)``, the angle-like step of the normalised update.
      bias_learning_rate: initial ``exp(log_bias_lr)``.

    Raises:
      ValueError: a width below 1 or a learning rate <= 0.
    """
    hidden = check_count(hidden, "hidden", 1)
    channels = check_count(channels, "channels", 1)
    rank = check_count(rank, "rank", 1)
    check_positive(learning_rate, "learning_rate")
    check_positive(bias_learning_rate, "bias_learning_rate")
    k = jax.random.split(key, 8)
    unit_in = BASE_UNIT_FEATURES + channels
    return {
        "top": {"l1": _dense(k[0], TOP_FEATURES, hidden), "l2": _dense(k[1], hidden, channels)},
        "unit": {"l1": _dense(k[2], unit_in, hidden), "l2": _dense(k[3], hidden, hidden)},
        "backward": _dense(k[4], hidden, channels),
        "pre": _dense(k[5], hidden, rank),
        "post": _dense(k[6], hidden, rank),
        "bias": _dense(k[7], hidden, 1, scale=0.1),
        "log_lr": jnp.log(jnp.asarray(learning_rate, jnp.float32)),
        "log_bias_lr": jnp.log(jnp.asarray(bias_learning_rate, jnp.float32)),
    }


def theta_dims(theta: Mapping) -> dict[str, int]:
    """``{"hidden", "channels", "rank"}`` of a theta (from its shapes)."""
    try:
        return {
            "hidden": int(theta["unit"]["l2"]["w"].shape[-1]),
            "channels": int(theta["backward"]["w"].shape[-1]),
            "rank": int(theta["pre"]["w"].shape[-1]),
        }
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(
            f"`theta` is not a learned-rule parameter tree (init_theta builds one): {e!r}"
        ) from None


def _apply_dense(p: Mapping, x: Array) -> Array:
    return x @ p["w"] + p["b"]


def _mlp(p: Mapping, x: Array, out: Callable = lambda a: a) -> Array:
    return out(_apply_dense(p["l2"], jax.nn.relu(_apply_dense(p["l1"], x))))


# ---------------------------------------------------------------------------------- the rule


def _batch_normalise(z: Array) -> tuple[Array, Array, Array]:
    mean = jnp.mean(z, axis=0)
    std = jnp.sqrt(jnp.var(z, axis=0) + EPS)
    return (z - mean) / std, mean, std


def _rms_normalise(a: Array, axes: tuple[int, ...]) -> Array:
    return a * jax.lax.rsqrt(jnp.mean(jnp.square(a), axis=axes, keepdims=True) + EPS)


def _unit_features(z, post, d, index_depth, kernel, bias) -> Array:
    """``[B, n, BASE_UNIT_FEATURES + C]`` inputs of the per-unit network for one layer."""
    b, n = z.shape
    zhat, mean, std = _batch_normalise(z)
    rescaled = post / jnp.sqrt(jnp.mean(jnp.square(post), axis=0) + EPS)
    angle = 2.0 * jnp.pi * jnp.arange(n, dtype=jnp.float32) / n
    per_unit = jnp.stack(
        [
            jnp.tanh(mean / std),
            jnp.clip(jnp.log(std), -5.0, 5.0) / 5.0,
            jnp.sin(angle),
            jnp.cos(angle),
            jnp.full((n,), index_depth, jnp.float32),
            jnp.zeros((n,)) if kernel is None else jnp.log(jnp.linalg.norm(kernel, axis=0) + EPS),
            jnp.zeros((n,)) if bias is None else jnp.tanh(bias),
        ],
        axis=-1,
    )
    per_example = jnp.stack([zhat, rescaled], axis=-1)
    return jnp.concatenate(
        [per_example, jnp.broadcast_to(per_unit, (b, n, per_unit.shape[-1])), d], axis=-1
    )


def learned_update(
    theta: Mapping, params: Mapping, x: Array, *, step_scale: Array | float = 1.0
) -> tuple[dict, dict[str, Array]]:
    """One application of the learned rule: the base MLP's params after the update on ``x``.

    Pure and differentiable in ``theta`` (the meta-gradient flows through it) and in ``params``.

    Args:
      theta: the rule's parameters (:func:`init_theta`).
      params: the base MLP's ``variables["params"]``; only ``params["layers"]`` changes.
      x: ``[B, ...]`` unlabelled inputs (flattened to the MLP's input width).
      step_scale: a multiplier on the learned step sizes.

    Returns:
      ``(params, metrics)`` with ``update_norm`` (mean RMS of the raw weight updates) and
      ``feature_std`` (mean over features of their batch standard deviation, before the step).
    """
    layers = base_layers(params, name="params")
    if x.shape[0] < 2:
        raise ValueError(
            f"learned_unsupervised_rule: batch size {x.shape[0]} is too small; the rule "
            f"normalises activations over the batch and needs at least 2 examples (set a larger "
            f"`batch_sizes['{PART}']`)"
        )
    width = math.prod(x.shape[1:])
    if width != layers[0][0].shape[0]:
        raise ValueError(
            f"learned_unsupervised_rule: inputs have {width} values per example but the MLP's "
            f"first layer takes {layers[0][0].shape[0]}"
        )
    num_layers = len(layers)
    pre, post = forward(layers, x)
    batch = x.shape[0]

    # Top-down signal from the representation.
    zhat_top = _batch_normalise(pre[-1])[0]
    across = zhat_top - jnp.mean(zhat_top, axis=1, keepdims=True)
    top_in = jnp.stack(
        [
            zhat_top,
            across,
            jnp.square(zhat_top) - 1.0,
            jnp.broadcast_to(jnp.mean(jnp.square(across), axis=1, keepdims=True), zhat_top.shape),
            jnp.broadcast_to(jnp.tanh(jnp.mean(pre[-1], axis=0)), zhat_top.shape),
        ],
        axis=-1,
    )
    d = _mlp(theta["top"], top_in, jnp.tanh)  # [B, n_L, C]

    # Units' hidden states, top to bottom; each layer sends the signal for the one below.
    hidden: list[Array] = [None] * (num_layers + 1)
    for depth in range(num_layers, -1, -1):
        kernel, bias = layers[depth - 1] if depth > 0 else (None, None)
        feats = _unit_features(pre[depth], post[depth], d, depth / num_layers, kernel, bias)
        h = _mlp(theta["unit"], feats, jnp.tanh)  # [B, n_l, H]
        hidden[depth] = h
        if depth > 0:
            e = _apply_dense(theta["backward"], h)  # [B, n_l, C]
            down = jnp.einsum("bjc,ij->bic", e, kernel) / math.sqrt(kernel.shape[1])
            down = _rms_normalise(down, (0, 1))
            if depth - 1 > 0:
                down = down * jax.nn.sigmoid(_batch_normalise(pre[depth - 1])[0])[..., None]
            d = down

    lr = step_scale * jnp.exp(theta["log_lr"])
    bias_lr = step_scale * jnp.exp(theta["log_bias_lr"])
    new_layers, norms = [], []
    for depth in range(1, num_layers + 1):
        kernel, bias = layers[depth - 1]
        below = _apply_dense(theta["pre"], hidden[depth - 1])  # [B, n_{depth-1}, K]
        above = _apply_dense(theta["post"], hidden[depth])  # [B, n_l, K]
        delta = jnp.einsum("bik,bjk->ij", below, above) / batch
        norms.append(jnp.sqrt(jnp.mean(jnp.square(delta))))
        delta = _rms_normalise(delta, (0,))
        norm = jnp.linalg.norm(kernel, axis=0, keepdims=True)
        unit = kernel / (norm + EPS)
        delta = delta - jnp.sum(delta * unit, axis=0, keepdims=True) * unit
        moved = kernel + lr * delta / math.sqrt(kernel.shape[0])
        moved = moved * (norm / (jnp.linalg.norm(moved, axis=0, keepdims=True) + EPS))
        db = jnp.mean(jnp.tanh(_apply_dense(theta["bias"], hidden[depth])[..., 0]), axis=0)
        new_layers.append((moved, bias + bias_lr * db))
    metrics = {
        "update_norm": jnp.mean(jnp.stack(norms)),
        "feature_std": jnp.mean(jnp.std(post[-1], axis=0)),
    }
    return with_layers(params, new_layers), metrics


class LearnedRuleState(NamedTuple):
    """State of :func:`learned_unsupervised_rule`.

    Attributes:
      theta: the rule's parameters (meta-trained, or drawn at init).
      step: updates taken so far.
    """

    theta: PyTree
    step: StepCounter


@rule(
    "learned_unsupervised_rule",
    parts=(PART,),
    paper="Metz, Maheswaranathan, Cheung, Sohl-Dickstein, Meta-Learning Update Rules for "
    "Unsupervised Representation Learning, ICLR 2019",
    needs_labels=False,
    task="any",
    cost="medium",
    sweepable=("step_scale",),
    num_views=0,
    head=None,
    optimizer={"name": "learned (meta-trained theta)"},
)
def learned_unsupervised_rule(
    apply: Callable,
    *,
    init_fn: Callable | None = None,
    theta: PyTree | None = None,
    checkpoint: str | None = None,
    step_scale: float = 1.0,
    hidden: int = 16,
    channels: int = 4,
    rank: int = 4,
) -> UnlearningRule:
    """The meta-learned unsupervised update rule of Metz et al. applied to a base MLP.

    Args:
      apply: the base network's ``apply`` (unused: the rule reads the MLP's parameters, the
        paper's base model, directly).
      init_fn: context; the base network's initializer, to check a checkpoint's architecture
        before any compute.
      theta: the rule's parameters (from :func:`repr.meta.meta_train` or :func:`load_theta`).
      checkpoint: a directory written by :func:`save_theta`; its theta is loaded (and its base
        architecture checked against ``init_fn``'s).
      step_scale: a multiplier on the learned step sizes (1).
      hidden, channels, rank: the shapes of an untrained theta, drawn from the init key when
        neither ``theta`` nor ``checkpoint`` is given.

    Metrics: ``update_norm``, ``feature_std`` (see :func:`learned_update`).

    Raises:
      ValueError: both ``theta`` and ``checkpoint``; a checkpoint for another base architecture,
        or the wrong widths (naming the setting), before compute.
    """
    del apply
    check_positive(step_scale, "step_scale")
    if theta is not None and checkpoint is not None:
        raise ValueError("learned_unsupervised_rule takes `theta` or `checkpoint`, not both")
    architecture = None
    if init_fn is not None:
        architecture = architecture_of(jax.eval_shape(init_fn, jax.random.key(0)))
    if checkpoint is not None:
        theta = load_theta(checkpoint, architecture=architecture)
    dims = {
        "hidden": check_count(hidden, "hidden", 1),
        "channels": check_count(channels, "channels", 1),
        "rank": check_count(rank, "rank", 1),
    }
    if theta is not None:
        theta_dims(theta)

    def init(variables: Variables, *, key: Array | None = None) -> LearnedRuleState:
        base_layers(variables["params"])
        start = theta
        if start is None:
            if key is None:
                raise ValueError(
                    "learned_unsupervised_rule without `theta` draws one from the init key; "
                    "pass `key=`"
                )
            start = init_theta(jax.random.fold_in(key, THETA_KEY), **dims)
        return LearnedRuleState(start, StepCounter.zero())

    def update(variables: Variables, state: LearnedRuleState, batch: Batch, *, key: Array):
        del key
        params, metrics = learned_update(
            state.theta, variables["params"], batch[PART]["x"], step_scale=step_scale
        )
        return {**variables, "params": params}, state._replace(step=state.step.next()), metrics

    return UnlearningRule(init, update)


# ------------------------------------------------------------------------------ checkpoints


def save_theta(
    directory: str, theta: PyTree, architecture: Sequence[int], *, info: Mapping | None = None
) -> str:
    """Saves a trained theta with orbax (``directory/theta``) and, beside it, the base
    architecture it was meta-trained for (``directory/learned_rule.json``).

    Args:
      directory: where to write (created).
      theta: the rule's parameters.
      architecture: the base MLP's widths, :func:`architecture_of` of its variables.
      info: further JSON-able facts to keep (meta-training settings).

    Returns:
      ``directory``.
    """
    from jaxunlearn.train import checkpoint, records

    dims = theta_dims(theta)
    architecture = [int(a) for a in architecture]
    if len(architecture) < 2 or min(architecture) < 1:
        raise ValueError(
            f"`architecture` must be the MLP's widths (inputs, hidden...); got {architecture}"
        )
    checkpoint.save_tree(os.path.join(directory, THETA_DIR), {"theta": theta})
    records.write_json(
        os.path.join(directory, METADATA_FILE),
        {"format": FORMAT, "architecture": architecture, **dims, "info": dict(info or {})},
        indent=1,
    )
    return directory


def checkpoint_metadata(directory: str) -> dict:
    """The facts :func:`save_theta` stored beside a theta (architecture, dims, info).

    Raises:
      ValueError: ``directory`` holds no learned-rule checkpoint.
    """
    path = os.path.join(directory, METADATA_FILE)
    if not os.path.isfile(path):
        raise ValueError(
            f"`checkpoint` {directory!r} is not a learned-rule checkpoint (no {METADATA_FILE}; "
            "repr.learned.save_theta writes one)"
        )
    from jaxunlearn.train import records

    meta = records.read_json(path)  # a damaged file names itself (records.DamagedFileError)
    if not isinstance(meta, dict) or "architecture" not in meta:
        raise ValueError(f"`checkpoint` {directory!r}: {METADATA_FILE} names no architecture")
    return meta


def load_theta(directory: str, *, architecture: Sequence[int] | None = None) -> PyTree:
    """A theta saved by :func:`save_theta`.

    Args:
      directory: the checkpoint directory.
      architecture: the base MLP's widths the theta will be applied to; ``None`` skips the check.

    Raises:
      ValueError: no checkpoint there, or one meta-trained for another base architecture
        (checked from the metadata, before any array is read).
    """
    from jaxunlearn.train import checkpoint

    meta = checkpoint_metadata(directory)
    saved = tuple(int(a) for a in meta["architecture"])
    if architecture is not None and tuple(int(a) for a in architecture) != saved:
        raise ValueError(
            f"`checkpoint` {directory!r} holds a learned rule meta-trained for a base MLP with "
            f"widths {saved} (inputs, hidden...), but the network has widths "
            f"{tuple(int(a) for a in architecture)}; meta-train a rule for this architecture "
            "or build the network the checkpoint was made for"
        )
    like = jax.eval_shape(
        lambda: init_theta(
            jax.random.key(0),
            hidden=int(meta["hidden"]),
            channels=int(meta["channels"]),
            rank=int(meta["rank"]),
        )
    )
    like = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), like)
    tree = checkpoint.load_tree(os.path.join(directory, THETA_DIR), {"theta": like})
    if tree is None:
        raise ValueError(f"`checkpoint` {directory!r} has metadata but no saved theta")
    return tree["theta"]


__all__ = [
    "LearnedRuleState",
    "architecture_of",
    "base_layers",
    "checkpoint_metadata",
    "features_of",
    "forward",
    "init_theta",
    "learned_unsupervised_rule",
    "learned_update",
    "load_theta",
    "save_theta",
    "theta_dims",
    "with_layers",
]
