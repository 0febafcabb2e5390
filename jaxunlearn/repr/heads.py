"""Encoders with a projection head (and predictor) behind the same :class:`Network` view.

Self-supervised methods put their loss on a small MLP *head* over the backbone's features, not on
the features themselves, and the representation that is evaluated (k-NN, linear probe, CKA) is the
backbone's. :func:`with_projection_head` wraps any :class:`~jaxunlearn.core.types.Network`
(MLP, CNN, ResNet-18) into another ``Network`` whose

* variables are ``{"params": {"backbone": ..., "projector": ..., "predictor": ...},
  "batch_stats": {...same keys...}}`` (``"predictor"`` only when the method has one);
* ``apply(variables, x, train=...)`` returns the backbone's :class:`Outputs` (``logits`` of its
  classifier head, ``features`` = the backbone representation, ``hidden``) plus
  ``Outputs.projection`` (the head on the features: where the SSL losses read) and
  ``Outputs.prediction`` (the predictor on the projection).

So every audit and unlearning rule runs unchanged on an encoder, and
:func:`backbone_variables` gives the bare backbone's variables back for the unwrapped network.
:func:`encoder` builds the head a registered representation rule expects (its ``head`` entry).

Head layers: ``Linear -> BatchNorm -> ReLU`` for every hidden width and a final ``Linear`` (BYOL,
SimSiam, VICReg, Barlow Twins use BatchNorm in their projectors; PyTorch initialisation and
momentum 0.1 for the running statistics). The DINO head (``kind="dino"``) is
``Linear -> GELU -> ... -> Linear(bottleneck)`` (no activation on the bottleneck), L2
normalisation, then a weight-normalised linear layer without bias whose weight norms are fixed
at 1 (DINO's ``norm_last_layer=True``).

References:
  Chen et al., SimCLR, ICML 2020 (the projection head, and why the representation is read before
  it). Grill et al., BYOL, NeurIPS 2020 (projector and predictor). Caron et al., DINO, ICCV 2021
  (``vision_transformer.DINOHead``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from jaxunlearn.core.types import Array, Network, Outputs, Variables

BN_MOMENTUM = 0.1  # PyTorch's: running <- (1 - m) running + m batch
BN_EPS = 1e-5
HEADS = ("projector", "predictor")


def _dense(key: Array, fan_in: int, fan_out: int, bias: bool = True) -> dict:
    bound = 1.0 / math.sqrt(fan_in)  # PyTorch nn.Linear's default initialisation
    k_w, k_b = jax.random.split(key)
    layer = {"kernel": jax.random.uniform(k_w, (fan_in, fan_out), jnp.float32, -bound, bound)}
    if bias:
        layer["bias"] = jax.random.uniform(k_b, (fan_out,), jnp.float32, -bound, bound)
    return layer


def _check_dims(dims, name: str) -> tuple[int, ...]:
    try:
        dims = tuple(dims)
    except TypeError:
        dims = None
    if not dims or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ValueError(f"`{name}` must be a non-empty tuple of positive widths; got {dims!r}")
    return dims


def mlp_head_init(key: Array, in_dim: int, dims: Sequence[int], *, batch_norm: bool, kind: str):
    """``(params, batch_stats)`` of a head from ``in_dim`` through ``dims`` (see the module)."""
    sizes = [in_dim, *dims]
    keys = jax.random.split(key, len(dims))
    params, stats = {}, {}
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        last = i == len(dims) - 1
        layer = _dense(keys[i], a, b, bias=not (last and kind == "dino"))
        # DINOHead (use_bn=True) normalises its hidden layers, not the bottleneck.
        if batch_norm and i < len(dims) - (2 if kind == "dino" else 1):
            layer["bn_scale"] = jnp.ones((b,), jnp.float32)
            layer["bn_bias"] = jnp.zeros((b,), jnp.float32)
            stats[str(i)] = {"mean": jnp.zeros((b,), jnp.float32), "var": jnp.ones((b,))}
        params[str(i)] = layer
    return params, stats


def mlp_head_apply(params: dict, stats: dict, h: Array, *, train: bool, kind: str):
    """``(output, refreshed batch_stats)`` of a head built by :func:`mlp_head_init`."""
    n_layers = len(params)
    new_stats = {}
    h = h.reshape(h.shape[0], -1).astype(jnp.float32)
    for i in range(n_layers):
        layer = params[str(i)]
        last = i == n_layers - 1
        if last and kind == "dino":
            h = h / jnp.maximum(jnp.linalg.norm(h, axis=-1, keepdims=True), 1e-12)
            w = layer["kernel"]
            w = w / jnp.maximum(jnp.linalg.norm(w, axis=0, keepdims=True), 1e-12)
            return h @ w, new_stats
        h = h @ layer["kernel"] + layer["bias"]
        if last:
            return h, new_stats
        if str(i) in stats:
            running = jax.tree.map(jax.lax.stop_gradient, stats[str(i)])
            if train:
                mean = h.mean(0)
                var = jnp.mean(jnp.square(h - mean), 0)
                n = h.shape[0]
                unbiased = var * n / max(n - 1, 1)
                new_stats[str(i)] = {
                    "mean": (1 - BN_MOMENTUM) * running["mean"]
                    + BN_MOMENTUM * jax.lax.stop_gradient(mean),
                    "var": (1 - BN_MOMENTUM) * running["var"]
                    + BN_MOMENTUM * jax.lax.stop_gradient(unbiased),
                }
            else:
                mean, var = running["mean"], running["var"]
                new_stats[str(i)] = running
            h = (h - mean) / jnp.sqrt(var + BN_EPS) * layer["bn_scale"] + layer["bn_bias"]
        if kind == "dino":
            # DINOHead's MLP ends at the bottleneck without an activation: a GELU there would
            # make the normalised bottleneck vectors nearly all positive, hence nearly parallel.
            if i < n_layers - 2:
                h = jax.nn.gelu(h, approximate=False)
        else:
            h = jax.nn.relu(h)
    return h, new_stats


def feature_dim(network: Network) -> int:
    """Width of ``network``'s features (from an abstract evaluation; needs ``input_shape``)."""
    if network.input_shape is None:
        raise ValueError(
            f"network {network.name!r} has no `input_shape`; a projection head needs it to size "
            "its first layer"
        )
    variables = jax.eval_shape(network.init, jax.random.key(0))
    x = jax.ShapeDtypeStruct((2, *network.input_shape), jnp.float32)
    return int(jax.eval_shape(lambda v, x: network.apply(v, x), variables, x).features.shape[-1])


def with_projection_head(
    network: Network,
    dims: Sequence[int],
    *,
    predictor_dims: Sequence[int] | None = None,
    batch_norm: bool = True,
    kind: str = "mlp",
) -> Network:
    """``network`` with a projection head on its features (and a predictor on the projection).

    Args:
      network: the backbone (any :class:`Network` with an ``input_shape``).
      dims: widths of the projector's layers, the last being the projection's dimension
        (``(4,)`` is a linear head with 4 outputs).
      predictor_dims: widths of the predictor's layers (its last must equal ``dims[-1]``), or
        ``None`` for no predictor.
      batch_norm: BatchNorm after every hidden layer of the heads (with ``kind="dino"``, the
        layers before the bottleneck: DINO's ``use_bn_in_head``).
      kind: ``"mlp"`` or ``"dino"`` (see the module docstring); the predictor is always an MLP.

    Returns:
      A :class:`Network` (same ``num_outputs``, ``input_shape`` and ``spec``; name
      ``"<name>+head"``) whose ``apply`` fills ``Outputs.projection`` (and ``.prediction``).

    Raises:
      ValueError: for empty or non-positive widths, a predictor whose output differs from the
        projection's width, an unknown ``kind`` or a network without ``input_shape``.
    """
    dims = _check_dims(dims, "dims")
    if kind not in ("mlp", "dino"):
        raise ValueError(f"`kind` must be 'mlp' or 'dino'; got {kind!r}")
    if predictor_dims is not None:
        predictor_dims = _check_dims(predictor_dims, "predictor_dims")
        if predictor_dims[-1] != dims[-1]:
            raise ValueError(
                f"`predictor_dims` must end at the projection's width {dims[-1]}; got "
                f"{predictor_dims}"
            )
    in_dim = feature_dim(network)

    def init(key: Array) -> Variables:
        k_backbone, k_proj, k_pred = jax.random.split(key, 3)
        base = network.init(k_backbone)
        proj, proj_stats = mlp_head_init(k_proj, in_dim, dims, batch_norm=batch_norm, kind=kind)
        params = {"backbone": base["params"], "projector": proj}
        stats = {"backbone": base["batch_stats"], "projector": proj_stats}
        if predictor_dims is not None:
            pred, pred_stats = mlp_head_init(
                k_pred, dims[-1], predictor_dims, batch_norm=batch_norm, kind="mlp"
            )
            params["predictor"], stats["predictor"] = pred, pred_stats
        return {"params": params, "batch_stats": stats}

    def apply(variables: Variables, x: Array, *, train: bool = False) -> Outputs:
        params, stats = variables["params"], variables["batch_stats"]
        out = network.apply(
            {"params": params["backbone"], "batch_stats": stats["backbone"]}, x, train=train
        )
        z, proj_stats = mlp_head_apply(
            params["projector"], stats["projector"], out.features, train=train, kind=kind
        )
        new_stats = {
            "backbone": stats["backbone"] if out.batch_stats is None else out.batch_stats,
            "projector": proj_stats,
        }
        p = None
        if "predictor" in params:
            p, new_stats["predictor"] = mlp_head_apply(
                params["predictor"], stats["predictor"], z, train=train, kind="mlp"
            )
        return out._replace(projection=z, prediction=p, batch_stats=new_stats if train else None)

    return Network(
        init=init,
        apply=apply,
        name=f"{network.name}+head",
        num_outputs=network.num_outputs,
        input_shape=network.input_shape,
        spec=network.spec,
    )


def backbone_variables(variables: Variables) -> Variables:
    """The backbone's own variables from those of a :func:`with_projection_head` network (for
    the unwrapped network); a leading ensemble axis is kept."""
    if "backbone" not in variables.get("params", {}):
        raise ValueError("these variables have no 'backbone' (not from with_projection_head)")
    return {
        "params": variables["params"]["backbone"],
        "batch_stats": variables["batch_stats"]["backbone"],
    }
