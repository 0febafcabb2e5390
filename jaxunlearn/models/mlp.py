"""A multilayer perceptron for flat or image inputs (the default model on ``digits``)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx


class MLP(nnx.Module):
    """ReLU MLP; the last hidden layer's activations are the features.

    ``__call__`` also returns every hidden layer's activations (for attention-transfer losses).
    """

    def __init__(
        self,
        in_features: int,
        num_outputs: int,
        *,
        hidden: Sequence[int] = (128, 128),
        rngs: nnx.Rngs,
    ):
        sizes = [in_features, *hidden]
        self.layers = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        )
        self.head = nnx.Linear(sizes[-1], num_outputs, rngs=rngs)

    def __call__(self, x: jax.Array):
        h = jnp.reshape(x, (x.shape[0], -1)).astype(jnp.float32)
        hidden = []
        for layer in self.layers:
            h = jax.nn.relu(layer(h))
            hidden.append(h)
        return self.head(h), h, tuple(hidden)
