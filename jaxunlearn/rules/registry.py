"""The one registry of unlearning rules: names, factories and what each rule needs.

``make(name, network, num_steps=..., **hparams)`` builds any registered rule; the registry passes
a factory the extra context it declares in its signature (:data:`CONTEXT`: what the network, the
run's schedule and the forget scenario determine), so every factory keeps a plain keyword-only
signature and a user sets only true hyperparameters.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable

from jaxunlearn.core.types import Network, UnlearningRule


@dataclasses.dataclass(frozen=True)
class RuleInfo:
    """What the registry knows about a rule.

    Attributes:
      name: registry name.
      factory: ``factory(apply, **hparams) -> UnlearningRule``.
      parts: the batch parts the rule reads (``"forget"``, ``"retain"``).
      paper: short citation shown in the README table.
      needs_labels: whether it reads forget labels.
      needs_original_data: whether it needs data beyond the forget/retain sets (e.g. the full
        training set for importance estimates) or the original training run.
      cost: relative cost, ``"none"``, ``"low"``, ``"medium"`` or ``"high"``.
      task: ``"classification"``, ``"regression"`` or ``"any"``.
    """

    name: str
    factory: Callable[..., UnlearningRule]
    parts: tuple[str, ...]
    paper: str
    needs_labels: bool = True
    needs_original_data: bool = False
    cost: str = "low"
    task: str = "classification"

    @property
    def epoch_part(self) -> str:
        """The part an epoch is counted over: retain when the rule reads it, else forget."""
        return "retain" if "retain" in self.parts else self.parts[0]


_REGISTRY: dict[str, RuleInfo] = {}

# Factory arguments that ``make`` fills in, never hyperparameters: the network's initializer,
# number of outputs and input shape, the run's schedule, the forget set's share of the training
# set ``|D_f| / (|D_f| + |D_r|)`` and, for class-wise forgetting, the forgotten classes.
CONTEXT = (
    "init_fn",
    "num_classes",
    "input_shape",
    "num_steps",
    "steps_per_epoch",
    "forget_fraction",
    "forget_classes",
)


def register(info: RuleInfo) -> RuleInfo:
    """Adds a rule to the registry (the name must be new)."""
    if info.name in _REGISTRY:
        raise ValueError(f"Rule {info.name!r} is already registered")
    _REGISTRY[info.name] = info
    return info


def names() -> list[str]:
    """Names of every registered rule."""
    return sorted(_REGISTRY)


def get(name: str) -> RuleInfo:
    """The :class:`RuleInfo` of ``name``; unknown names list the valid ones."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown rule {name!r}; valid rules: {names()}")
    return _REGISTRY[name]


def check_hparams(name: str, hparams: dict) -> None:
    """Rejects hyperparameters that the rule's factory does not take, before any compute."""
    factory = get(name).factory
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [k for k, p in params.items() if p.kind is p.KEYWORD_ONLY and k not in CONTEXT]
    supplied = sorted(set(hparams) & set(CONTEXT))
    if supplied:
        raise ValueError(
            f"Rule {name!r}: {supplied} come from the network, the schedule and the forget set "
            "(`rules.make` fills them in), not from hyperparameters"
        )
    bad = sorted(set(hparams) - set(valid))
    if bad:
        raise ValueError(f"Rule {name!r} has no hyperparameter(s) {bad}; valid: {sorted(valid)}")


def make(
    name: str,
    network: Network,
    *,
    num_steps: int | None = None,
    steps_per_epoch: int | None = None,
    forget_fraction: float | None = None,
    forget_classes: tuple[int, ...] | None = None,
    **hparams,
) -> UnlearningRule:
    """Builds the rule ``name`` for ``network`` with ``hparams`` overriding the paper defaults.

    Args:
      name: registry name.
      network: the model; its ``init``, ``num_outputs`` and ``input_shape`` go to factories that
        take ``init_fn``, ``num_classes`` or ``input_shape``.
      num_steps, steps_per_epoch: the run's schedule, for factories that take them.
      forget_fraction: ``|D_f| / (|D_f| + |D_r|)`` of the forget scenario, for factories that
        weigh forget against full-data statistics (SSD, influence unlearning).
      forget_classes: the classes of a class-wise forget set (``None`` for other forget sets),
        for factories with a class-wise edit (Fisher forgetting); optional.
      **hparams: the rule's hyperparameters.

    Raises:
      ValueError: for an unknown rule or hyperparameter, a context argument passed as a
        hyperparameter, or context the factory needs but the caller did not give.
    """
    info = get(name)
    check_hparams(name, hparams)
    params = inspect.signature(info.factory).parameters
    context = {
        "init_fn": network.init,
        "num_classes": network.num_outputs,
        "input_shape": network.input_shape,
        "num_steps": num_steps,
        "steps_per_epoch": steps_per_epoch,
        "forget_fraction": forget_fraction,
        "forget_classes": forget_classes,
    }
    for key, value in context.items():
        if key in params:
            if value is None and params[key].default is inspect.Parameter.empty:
                raise ValueError(f"Rule {name!r} needs `{key}`; pass it to `rules.make`")
            if value is not None:
                hparams[key] = value
    return info.factory(network.apply, **hparams)


def markdown_table() -> str:
    """The README's table of methods, generated from the registry so it cannot drift."""
    yes = lambda b: "yes" if b else "no"
    rows = [
        "| rule | paper | needs retain data? | needs labels? | needs original training data? "
        "| relative cost | task |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in names():
        info = _REGISTRY[name]
        rows.append(
            f"| `{name}` | {info.paper} | {yes('retain' in info.parts)} | "
            f"{yes(info.needs_labels)} | {yes(info.needs_original_data)} | {info.cost} | "
            f"{info.task} |"
        )
    return "\n".join(rows)
