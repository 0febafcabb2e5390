"""Flax NNX models with a functional view (:class:`~jaxunlearn.core.types.Network`)."""

from __future__ import annotations

import math
from collections.abc import Callable

from jaxunlearn.core.types import Network
from jaxunlearn.models.cnn import CNN
from jaxunlearn.models.functional import from_nnx
from jaxunlearn.models.mlp import MLP
from jaxunlearn.models.resnet import ResNet18

# name -> builder(input_shape, num_outputs, rngs, **kwargs) -> nnx.Module
_REGISTRY: dict[str, Callable] = {
    "mlp": lambda input_shape, num_outputs, rngs, **kw: MLP(
        math.prod(input_shape), num_outputs, rngs=rngs, **kw
    ),
    "cnn": lambda input_shape, num_outputs, rngs, **kw: CNN(
        input_shape, num_outputs, rngs=rngs, **kw
    ),
    "resnet18": lambda input_shape, num_outputs, rngs, **kw: ResNet18(
        input_shape[-1], num_outputs, rngs=rngs, **kw
    ),
}


def register(name: str, builder: Callable) -> None:
    """Registers ``builder(input_shape, num_outputs, rngs, **kwargs) -> nnx.Module``."""
    _REGISTRY[name] = builder


def names() -> list[str]:
    """Names of every registered architecture."""
    return sorted(_REGISTRY)


def check_name(name: str) -> None:
    """Raises a ``ValueError`` listing the valid names if ``name`` is unknown."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown model {name!r}; valid models: {names()}")


def make_network(name: str, *, input_shape: tuple[int, ...], num_outputs: int, **kwargs) -> Network:
    """The functional view of a registered architecture.

    Args:
      name: ``"mlp"``, ``"cnn"`` or ``"resnet18"``.
      input_shape: shape of one example, e.g. ``(8, 8, 1)``.
      num_outputs: number of classes (or regression targets).
      **kwargs: architecture options (e.g. ``hidden=(256, 256)`` for the MLP).
    """
    check_name(name)
    builder = _REGISTRY[name]
    return from_nnx(
        lambda rngs: builder(tuple(input_shape), num_outputs, rngs, **kwargs),
        name=name,
        num_outputs=num_outputs,
        input_shape=tuple(input_shape),
    )


__all__ = [
    "CNN",
    "MLP",
    "Network",
    "ResNet18",
    "from_nnx",
    "make_network",
    "names",
    "register",
    "check_name",
]
