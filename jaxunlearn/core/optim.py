"""Optimizers the way the reference unlearning code configures them (PyTorch semantics)."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping

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


def adamw(learning_rate: float, *, weight_decay: float = 0.01) -> optax.GradientTransformation:
    """``torch.optim.AdamW`` (Hugging Face Trainer's optimizer): decoupled weight decay, the
    parameters shrink by ``learning_rate * weight_decay`` per step outside Adam's moments."""
    return optax.adamw(learning_rate, weight_decay=weight_decay)


_BUILDERS = {"sgd": sgd, "adam": adam, "adamw": adamw}


def make(name: str, learning_rate: float, **kwargs) -> optax.GradientTransformation:
    """Builds an optimizer by name (``"sgd"``, ``"adam"`` or ``"adamw"``)."""
    if name not in _BUILDERS:
        raise ValueError(f"Unknown optimizer {name!r}; valid: {sorted(_BUILDERS)}")
    return _BUILDERS[name](learning_rate, **kwargs)


# The reference unlearning code's classifier optimizer (Unlearn-Sparse, SalUn, SCRUB's baselines).
REFERENCE_SGD = {"name": "sgd", "momentum": 0.9, "weight_decay": 5e-4}
REFERENCE_ADAM = {"name": "adam", "weight_decay": 0.0}
# OpenUnlearning's language-model optimizer (Hugging Face Trainer: AdamW, weight decay 0.01;
# ``configs/trainer/finetune.yaml`` of locuslab/open-unlearning, learning rate 1e-5).
REFERENCE_ADAMW = {"name": "adamw", "weight_decay": 0.01}


def resolve(
    optimizer: optax.GradientTransformation | Mapping | None,
    *,
    learning_rate: float,
    default: Mapping = REFERENCE_SGD,
) -> optax.GradientTransformation:
    """The optimizer of a rule: the one given, or the rule's reference optimizer.

    Every rule factory takes ``learning_rate`` (a shortcut, traced in sweeps) and ``optimizer``:

    - an ``optax.GradientTransformation``: used as it is (``learning_rate`` is then ignored);
    - a mapping of settings (``{"weight_decay": 0.0}``, ``{"name": "adam"}``): merged over the
      rule's ``default`` settings (over none when it names another optimizer), with
      ``learning_rate``; this is how a config file sets them;
    - ``None``: the rule's ``default`` settings with ``learning_rate``.

    Args:
      optimizer: see above.
      learning_rate: the step size.
      default: the rule's reference settings, ``{"name": ..., **keyword settings}``.

    Raises:
      ValueError: for an unknown optimizer name or setting, a learning rate inside the mapping,
        or a non-numeric or non-finite learning rate.
    """
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    if optimizer is not None and not isinstance(optimizer, Mapping):
        raise ValueError(
            "`optimizer` must be an optax.GradientTransformation, a mapping of settings or None; "
            f"got {type(optimizer).__name__}"
        )
    given = dict(optimizer or {})
    # Another optimizer than the rule's reference starts from its own defaults.
    base = (
        default
        if given.get("name", default.get("name", "sgd")) == default.get("name", "sgd")
        else {}
    )
    spec = {**base, **given}
    if "learning_rate" in spec:
        raise ValueError("set the step size with the rule's `learning_rate`, not in `optimizer`")
    if concrete(learning_rate):
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real):
            raise ValueError(f"`learning_rate` must be a number; got {learning_rate!r}")
        if not (math.isfinite(learning_rate) and learning_rate > 0):
            raise ValueError(f"`learning_rate` must be finite and positive; got {learning_rate}")
    name = spec.pop("name", "sgd")
    builders = _BUILDERS
    if name not in builders:
        raise ValueError(f"Unknown optimizer {name!r}; valid: {sorted(builders)}")
    valid = set(inspect.signature(builders[name]).parameters) - {"learning_rate"}
    bad = sorted(set(spec) - valid)
    if bad:
        raise ValueError(f"optimizer {name!r} has no setting(s) {bad}; valid: {sorted(valid)}")
    return builders[name](learning_rate, **spec)
