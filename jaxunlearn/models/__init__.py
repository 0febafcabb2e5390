"""Flax NNX models with a functional view (:class:`~jaxunlearn.core.types.Network`)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

from jaxunlearn.core.checks import is_count
from jaxunlearn.core.types import Network
from jaxunlearn.models import generation, transformer
from jaxunlearn.models.cnn import CNN
from jaxunlearn.models.functional import from_nnx
from jaxunlearn.models.hf_llama import load_hf_llama, save_hf_llama
from jaxunlearn.models.mlp import MLP
from jaxunlearn.models.resnet import ResNet18
from jaxunlearn.models.transformer import Transformer, TransformerConfig

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
    "transformer": lambda input_shape, num_outputs, rngs, **kw: Transformer(
        _transformer_config(input_shape, num_outputs, kw), rngs=rngs
    ),
}

# The built-in architectures' module classes: their keyword options are checked by name, and the
# image models need inputs shaped (H, W, C).
_CLASSES = {"mlp": MLP, "cnn": CNN, "resnet18": ResNet18}
_BUILTIN = dict(_REGISTRY)
_IMAGE_MODELS = ("cnn", "resnet18")


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


def make_network(
    name: str,
    *,
    input_shape: tuple[int, ...] | None = None,
    num_outputs: int | None = None,
    **kwargs,
) -> Network:
    """The functional view of a registered architecture.

    Args:
      name: ``"mlp"``, ``"cnn"``, ``"resnet18"`` or ``"transformer"``.
      input_shape: shape of one example, e.g. ``(8, 8, 1)``; for the transformer ``(max_len,)``
        (or give ``max_len=``).
      num_outputs: number of classes (or regression targets); for the transformer the vocabulary
        size (or give ``vocab_size=``).
      **kwargs: architecture options (e.g. ``hidden=(256, 256)`` for the MLP; the fields of
        :class:`~jaxunlearn.models.transformer.TransformerConfig` for the transformer, whose
        config becomes ``Network.spec``).

    Raises:
      ValueError: an unknown model or option, or an impossible setting (``num_outputs < 1``, an
        empty or non-positive ``input_shape``, a layer of width 0), naming it.
    """
    check_name(name)
    if name == "transformer" and _REGISTRY[name] is _BUILTIN[name]:
        return transformer.network(_transformer_config(input_shape, num_outputs, kwargs))
    check_settings(name, input_shape=input_shape, num_outputs=num_outputs, **kwargs)
    builder = _REGISTRY[name]
    return from_nnx(
        lambda rngs: builder(tuple(input_shape), num_outputs, rngs, **kwargs),
        name=name,
        num_outputs=num_outputs,
        input_shape=tuple(input_shape),
    )


def check_settings(name: str, *, input_shape, num_outputs, **kwargs) -> None:
    """Rejects settings no model can be built with, before anything is traced.

    ``num_outputs`` must be a positive integer and ``input_shape`` a non-empty tuple of positive
    integers (``(H, W, C)`` for the image models). For the built-in architectures the options
    must be ones the model takes, with positive layer widths. The transformer takes
    ``input_shape=(max_len,)`` and ``num_outputs=vocab_size`` or the named options, and checks
    every option of its config.
    """
    if name == "transformer" and _REGISTRY[name] is _BUILTIN[name]:
        _transformer_config(input_shape, num_outputs, kwargs)
        return
    if not is_count(num_outputs, 1):
        raise ValueError(
            f"Model {name!r}: `num_outputs` must be a positive integer (the number of classes or "
            f"regression targets); got {num_outputs!r}."
        )
    try:
        dims = None if isinstance(input_shape, str) else tuple(input_shape)
    except TypeError:  # not iterable
        dims = None
    if not dims or not all(is_count(d, 1) for d in dims):
        raise ValueError(
            f"Model {name!r}: `input_shape` must be a non-empty tuple of positive sizes, e.g. "
            f"(8, 8, 1); got {input_shape!r}."
        )
    if name in _IMAGE_MODELS and len(dims) != 3:
        raise ValueError(f"Model {name!r} expects images shaped (H, W, C); got input_shape {dims}.")
    cls = _CLASSES.get(name)
    if cls is None or _REGISTRY[name] is not _BUILTIN[name]:
        return  # a user-registered builder checks its own options
    options = [
        p.name
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.kind == p.KEYWORD_ONLY and p.name != "rngs"
    ]
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        raise ValueError(
            f"Unknown option(s) {unknown} for model {name!r}; valid options: {options}."
        )
    for option, value in kwargs.items():
        widths = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
        if not all(is_count(w, 1) for w in widths):
            raise ValueError(
                f"Model {name!r}: option `{option}` must be positive integer width(s); "
                f"got {value!r}."
            )


def _transformer_config(input_shape, num_outputs, kwargs) -> TransformerConfig:
    """The transformer's config from ``make_network``'s arguments: ``input_shape=(T,)`` and
    ``num_outputs=V`` stand for ``max_len`` and ``vocab_size`` and must agree with them."""
    kwargs = dict(kwargs)
    if input_shape is not None:
        dims = tuple(input_shape) if isinstance(input_shape, Sequence) else None
        if not dims or len(dims) != 1 or not is_count(dims[0], 1):
            raise ValueError(
                f"Model 'transformer': `input_shape` must be (max_len,); got {input_shape!r}."
            )
        if kwargs.setdefault("max_len", dims[0]) != dims[0]:
            raise ValueError(
                f"Model 'transformer': `input_shape` {dims} disagrees with "
                f"max_len={kwargs['max_len']}."
            )
    if num_outputs is not None:
        if kwargs.setdefault("vocab_size", num_outputs) != num_outputs:
            raise ValueError(
                f"Model 'transformer': `num_outputs`={num_outputs} disagrees with "
                f"vocab_size={kwargs['vocab_size']}."
            )
    return transformer.make_config(**kwargs)


__all__ = [
    "CNN",
    "MLP",
    "Network",
    "ResNet18",
    "Transformer",
    "TransformerConfig",
    "from_nnx",
    "load_hf_llama",
    "make_network",
    "names",
    "register",
    "generation",
    "save_hf_llama",
    "transformer",
    "check_name",
    "check_settings",
]
