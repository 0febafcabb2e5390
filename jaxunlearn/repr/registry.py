"""The registry of representation-learning rules: a second namespace of the rules' registry.

Representation-learning rules (self-supervised, continual, guided) have the interface of the
unlearning rules, ``UnlearningRule(init, update)``, and the same registry machinery
(:class:`jaxunlearn.rules.registry.Registry`): ``make(name, network, num_steps=..., **hparams)``,
``names()``, ``get(name)``, ``@rule(...)``, with the same context filled in by ``make``. Each entry
also declares the projection head it reads (:func:`encoder` builds it), the number of views it
draws per example and its reference optimizer.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from jaxunlearn.core.types import Network
from jaxunlearn.repr.heads import with_projection_head
from jaxunlearn.rules.registry import CONTEXT, Registry, RuleInfo


@dataclasses.dataclass(frozen=True)
class ReprRuleInfo(RuleInfo):
    """A :class:`~jaxunlearn.rules.registry.RuleInfo` with what a representation rule reads.

    Attributes:
      head: ``head(width, num_outputs) -> with_projection_head keyword arguments`` (``dims``,
        ``predictor_dims``, ``batch_norm``, ``kind``), or ``None`` for a rule that reads the bare
        network.
      num_views: augmented views of each example the rule draws per update (0: it reads the
        plain inputs).
      optimizer: the rule's reference optimizer settings (shown in the README table).
    """

    head: Callable[[int, int], dict] | None = None
    num_views: int = 2
    optimizer: Mapping = dataclasses.field(default_factory=dict)


REPR = Registry("Representation rule", "repr", ReprRuleInfo)
register = REPR.register
rule = REPR.rule
names = REPR.names
get = REPR.get
make = REPR.make
check_hparams = REPR.check_hparams
sweepable = REPR.sweepable
default = REPR.default
num_steps = REPR.num_steps

DEFAULT_WIDTH = 256


def encoder(name: str, network: Network, *, width: int = DEFAULT_WIDTH) -> Network:
    """``network`` with the head representation rule ``name`` reads (``network`` itself for a
    rule without one).

    Args:
      name: registry name.
      network: the backbone.
      width: the heads' hidden width (the references use 2048-8192 on ResNet-50; 256 suits the
        digits MLP/CNN).
    """
    info = get(name)
    if info.head is None:
        return network
    return with_projection_head(network, **info.head(int(width), network.num_outputs))


def markdown_table() -> str:
    """The README's table of representation-learning rules, generated from the registry."""
    rows = [
        "| rule | paper | views | head | defaults | optimizer |",
        "|---|---|---|---|---|---|",
    ]
    for name in names():
        info = get(name)
        kw = info.factory.__kwdefaults__ or {}
        defaults = ", ".join(f"{k}={kw[k]}" for k in info.sweepable if k in kw)
        opt = dict(info.optimizer)
        opt_name = opt.pop("name", "sgd")
        settings = ", ".join(f"{k} {v}" for k, v in opt.items())
        head = "none"
        if info.head is not None:
            spec = info.head(DEFAULT_WIDTH, 10)
            head = "x".join(str(d) for d in spec["dims"])
            if spec.get("predictor_dims"):
                head += " + predictor " + "x".join(str(d) for d in spec["predictor_dims"])
            if spec.get("kind", "mlp") != "mlp":
                head += f" ({spec['kind']})"
        rows.append(
            f"| `{name}` | {info.paper} | {info.num_views} | {head} | {defaults} | "
            f"{opt_name}{' (' + settings + ')' if settings else ''} |"
        )
    return "\n".join(rows)


__all__ = ["CONTEXT", "REPR", "ReprRuleInfo", "encoder", "markdown_table"]
