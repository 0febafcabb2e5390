"""Optimizers the way the reference unlearning code configures them (PyTorch semantics)."""

from __future__ import annotations

import optax

from jaxunlearn.core.checks import concrete


def _enabled(value) -> bool:
    # A traced value (a vmapped sweep over it) may be nonzero: keep its term.
    return not concrete(value) or bool(value)


def sgd(
    learning_rate: float,
    *,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
) -> optax.GradientTransformation:
    """``torch.optim.SGD``: L2 weight decay is added to the gradient before momentum."""
    parts = []
    if _enabled(weight_decay):
        parts.append(optax.add_decayed_weights(weight_decay))
    momentum = momentum if _enabled(momentum) else None
    parts.append(optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov))
    return optax.chain(*parts)


def adam(learning_rate: float, *, weight_decay: float = 0.0) -> optax.GradientTransformation:
    """``torch.optim.Adam``: coupled L2 weight decay (added to the gradient), not AdamW."""
    parts = []
    if _enabled(weight_decay):
        parts.append(optax.add_decayed_weights(weight_decay))
    parts.append(optax.adam(learning_rate))
    return optax.chain(*parts)


def make(name: str, learning_rate: float, **kwargs) -> optax.GradientTransformation:
    """Builds an optimizer by name (``"sgd"`` or ``"adam"``)."""
    builders = {"sgd": sgd, "adam": adam}
    if name not in builders:
        raise ValueError(f"Unknown optimizer {name!r}; valid: {sorted(builders)}")
    return builders[name](learning_rate, **kwargs)
