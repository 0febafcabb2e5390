"""The one registry of unlearning rules: names, factories and what each rule needs.

``make(name, network, num_steps=..., **hparams)`` builds any registered rule; the registry passes
a factory the extra context it declares in its signature (:data:`CONTEXT`: what the network, the
run's schedule and the forget scenario determine), so every factory keeps a plain keyword-only
signature and a user sets only true hyperparameters.

The machinery is a :class:`Registry`; this module's functions are those of :data:`RULES`, the
unlearning rules' namespace. Representation-learning rules (:mod:`jaxunlearn.repr`) are a second
:class:`Registry` with the same ``make``/``names``/``get`` interface.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping

from jaxunlearn.core.checks import keyword_names
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
      retain_labels: whether it reads the retain set's labels (fine-tuning or distilling with
        cross-entropy on them); ``False`` for a rule whose retain terms read inputs only (a
        teacher's outputs, an expected Fisher). Rules that read no retain set ignore it. What a
        fully label-free setting (a self-supervised encoder) can run: see
        :func:`jaxunlearn.repr.unlearning.label_free_names`.
      label_hparams: boolean hyperparameters that switch on a stage reading labels (LAF's
        ``repair``): with one set, the rule reads labels whatever the two flags above say (see
        :meth:`label_stages`).
      needs_original_data: whether it needs data beyond the forget/retain sets (e.g. the full
        training set for importance estimates) or the original training run.
      cost: relative cost, ``"none"``, ``"low"``, ``"medium"`` or ``"high"``.
      task: ``"classification"``, ``"regression"``, ``"language_model"`` (token data: logits
        ``[B, T, V]``, shifted labels; see ``docs/language_models.md``) or ``"any"`` (every
        supervised task, language models included).
      sweepable: the hyperparameters that may be traced values, so a sweep vmaps over a grid of
        them in one program (tested for every rule); the others fix a phase length, a mask size
        or a count and are swept one compiled run per value.
      run_length: ``(epochs, *, steps_per_epoch, forget_steps_per_epoch, hparams) -> updates``
        for a rule whose epoch is not one pass over its epoch part (SCRUB's max pass over the
        forget set, sequential random labels, a scoring pass before masked unlearning); ``None``
        = ``ceil(epochs * steps_per_epoch)``. See :func:`num_steps`. It may also take
        ``num_classes`` and ``forget_classes`` (keywords), which :func:`num_steps` passes on.
      validation_parts: batch parts of validation data the rule reads when they are present
        (the merging rules' ``val_forget`` / ``val_control``, from which they choose the scale of
        their edit); a runner draws them from the forget and the retain set (see
        :func:`jaxunlearn.scenarios.plan.rule_index`).
      index_sets: ``(index, *, labels, num_classes, forget_classes, hparams) -> (index,
        overrides)`` for a rule whose batches come from other index sets than the scenario's
        ``{"forget", "retain"}`` (UNSIR's retain subsample): the index sets to draw from and the
        hyperparameters that describe them; ``None`` = the scenario's sets.
    """

    name: str
    factory: Callable[..., UnlearningRule]
    parts: tuple[str, ...]
    paper: str
    needs_labels: bool = True
    retain_labels: bool = True
    label_hparams: tuple[str, ...] = ()
    needs_original_data: bool = False
    cost: str = "low"
    task: str = "classification"
    sweepable: tuple[str, ...] = ()
    run_length: Callable[..., int] | None = None
    validation_parts: tuple[str, ...] = ()
    index_sets: Callable | None = None

    @property
    def reads_retain_labels(self) -> bool:
        """Whether it reads the retain set's labels: it reads a retain set and
        :attr:`retain_labels` says its terms there use the labels."""
        return "retain" in self.parts and self.retain_labels

    def label_stages(self, hparams) -> list[str]:
        """The settings of :attr:`label_hparams` that ``hparams`` switches on (stages that read
        labels)."""
        return [h for h in self.label_hparams if hparams.get(h, False)]

    @property
    def epoch_part(self) -> str:
        """The part an epoch is counted over: retain when the rule reads it, else forget."""
        return "retain" if "retain" in self.parts else self.parts[0]


# Factory arguments that ``make`` fills in, never hyperparameters: the network's initializer,
# number of outputs and input shape, the run's schedule (updates in all, per pass over the epoch
# part and per pass over the forget set), the forget set's share of the training
# set ``|D_f| / (|D_f| + |D_r|)`` and, for class-wise forgetting, the forgotten classes.
CONTEXT = (
    "init_fn",
    "num_classes",
    "input_shape",
    "num_steps",
    "steps_per_epoch",
    "forget_steps_per_epoch",
    "forget_fraction",
    "forget_classes",
)


class Registry:
    """A namespace of rule factories: registration, lookup, checked construction by name.

    Args:
      kind: what the entries are called in error messages (``"Rule"``).
      module: the public module users call ``make`` from, named in error messages (``"rules"``).
      info_class: the :class:`RuleInfo` (sub)class the :meth:`rule` decorator builds.
    """

    def __init__(self, kind: str = "Rule", module: str = "rules", info_class: type = RuleInfo):
        self.kind = kind
        self.module = module
        self.info_class = info_class
        self.entries: dict[str, RuleInfo] = {}

    def register(self, info: RuleInfo) -> RuleInfo:
        """Adds a rule (the name must be new; sweepable names must be keywords)."""
        if info.name in self.entries:
            raise ValueError(f"{self.kind} {info.name!r} is already registered")
        if not (
            isinstance(info.sweepable, tuple) and all(isinstance(k, str) for k in info.sweepable)
        ):
            raise ValueError(f"{self.kind} {info.name!r}: `sweepable` must be a tuple of names")
        params = inspect.signature(info.factory).parameters
        unknown = [k for k in info.sweepable if k not in params or k in CONTEXT]
        if unknown:
            raise ValueError(
                f"{self.kind} {info.name!r} declares unknown sweepable hyperparameters {unknown}"
            )
        self.entries[info.name] = info
        return info

    def rule(self, name: str, *, parts: tuple[str, ...], paper: str, **info) -> Callable:
        """Decorator that registers a rule factory where it is defined.

        >>> @rule("my_rule", parts=("forget",), paper="Me et al., 2026",
        ...       sweepable=("learning_rate",))
        ... def my_rule(apply, *, learning_rate=1e-3): ...  # doctest: +SKIP
        """

        def decorate(factory: Callable[..., UnlearningRule]) -> Callable[..., UnlearningRule]:
            self.register(self.info_class(name, factory, tuple(parts), paper, **info))
            return factory

        return decorate

    def num_steps(
        self,
        name: str,
        epochs: float,
        *,
        steps_per_epoch: int,
        forget_steps_per_epoch: int | None = None,
        hparams: Mapping | None = None,
        num_classes: int | None = None,
        forget_classes: tuple[int, ...] | None = None,
    ) -> int:
        """Updates of a run of rule ``name`` lasting ``epochs`` epochs (what ``fit`` is given).

        An epoch is one pass over the rule's epoch part (``steps_per_epoch`` updates) unless the
        rule declares its own ``run_length`` (e.g. SCRUB: a max pass over the forget set, then a
        min pass over the retain set, in its first ``msteps`` epochs).

        Args:
          name: registry name.
          epochs: the run's epochs (rules with passes of their own need whole epochs).
          steps_per_epoch: updates in one pass over the epoch part.
          forget_steps_per_epoch: updates in one pass over the forget set, if the rule reads it.
          hparams: the rule's hyperparameters (a schedule may depend on them).
          num_classes, forget_classes: the classes of the data set and the forgotten ones, for a
            ``run_length`` that takes them (UNSIR's reference step counts).
        """
        info = self.get(name)
        if info.run_length is None or forget_steps_per_epoch is None:
            return max(1, int(math.ceil(float(epochs) * int(steps_per_epoch))))
        params = inspect.signature(info.run_length).parameters
        context = {"num_classes": num_classes, "forget_classes": forget_classes}
        return int(
            info.run_length(
                epochs,
                steps_per_epoch=int(steps_per_epoch),
                forget_steps_per_epoch=int(forget_steps_per_epoch),
                hparams=dict(hparams or {}),
                **{k: v for k, v in context.items() if k in params},
            )
        )

    def whole_epochs(self, name: str, epochs: float) -> int:
        """``epochs`` as an int, or a ``ValueError`` for a rule whose passes need whole epochs."""
        if float(epochs) != int(epochs) or int(epochs) < 1:
            raise ValueError(
                f"{self.kind} {name!r} runs whole epochs of its own passes; got epochs={epochs}"
            )
        return int(epochs)

    def default(self, name: str, hparam: str, hparams: Mapping | None = None):
        """Hyperparameter ``hparam`` of rule ``name``: the given value, else the factory's
        default."""
        hparams = hparams or {}
        if hparam in hparams:
            return hparams[hparam]
        return (self.get(name).factory.__kwdefaults__ or {}).get(hparam)

    def sweepable(self, name: str) -> tuple[str, ...]:
        """The hyperparameters of rule ``name`` that a sweep may vmap over (see
        :class:`RuleInfo`)."""
        return self.get(name).sweepable

    def names(self) -> list[str]:
        """Names of every registered rule."""
        return sorted(self.entries)

    def get(self, name: str) -> RuleInfo:
        """The :class:`RuleInfo` of ``name``; unknown names list the valid ones."""
        if name not in self.entries:
            raise ValueError(
                f"Unknown {self.kind.lower()} {name!r}; valid {self.kind.lower()}s: {self.names()}"
            )
        return self.entries[name]

    def check_hparams(self, name: str, hparams: dict) -> None:
        """Rejects hyperparameters that the rule's factory does not take, before any compute."""
        valid = keyword_names(self.get(name).factory, exclude=CONTEXT, keyword_only=True)
        if valid is None:
            return
        supplied = sorted(set(hparams) & set(CONTEXT))
        if supplied:
            raise ValueError(
                f"{self.kind} {name!r}: {supplied} come from the network, the schedule and the "
                f"forget set (`{self.module}.make` fills them in), not from hyperparameters"
            )
        bad = sorted(set(hparams) - set(valid))
        if bad:
            raise ValueError(f"{self.kind} {name!r} has no hyperparameter(s) {bad}; valid: {valid}")

    def make(
        self,
        name: str,
        network: Network,
        *,
        num_steps: int | None = None,
        steps_per_epoch: int | None = None,
        forget_steps_per_epoch: int | None = None,
        forget_fraction: float | None = None,
        forget_classes: tuple[int, ...] | None = None,
        **hparams,
    ) -> UnlearningRule:
        """Builds the rule ``name`` for ``network`` with ``hparams`` overriding the paper defaults.

        Args:
          name: registry name.
          network: the model; its ``init``, ``num_outputs`` and ``input_shape`` go to factories
            that take ``init_fn``, ``num_classes`` or ``input_shape``.
          num_steps, steps_per_epoch: the run's schedule, for factories that take them.
          forget_steps_per_epoch: updates in one pass over the forget set,
            ``ceil(|D_f| / forget_batch_size)``, for factories with passes over the forget set.
          forget_fraction: ``|D_f| / (|D_f| + |D_r|)`` of the forget scenario, for factories that
            weigh forget against full-data statistics (SSD, influence unlearning).
          forget_classes: the classes of a class-wise forget set (``None`` for other forget
            sets), for factories with a class-wise edit (Fisher forgetting); optional.
          **hparams: the rule's hyperparameters.

        Raises:
          ValueError: for an unknown rule or hyperparameter, a context argument passed as a
            hyperparameter, or context the factory needs but the caller did not give.
        """
        info = self.get(name)
        self.check_hparams(name, hparams)
        params = inspect.signature(info.factory).parameters
        context = {
            "init_fn": network.init,
            "num_classes": network.num_outputs,
            "input_shape": network.input_shape,
            "num_steps": num_steps,
            "steps_per_epoch": steps_per_epoch,
            "forget_steps_per_epoch": forget_steps_per_epoch,
            "forget_fraction": forget_fraction,
            "forget_classes": forget_classes,
        }
        if isinstance(hparams.get("inner"), (str, Mapping)):
            hparams["inner"] = self.inner_builder(hparams["inner"], network, context)
        for key, value in context.items():
            if key in params:
                if value is None and params[key].default is inspect.Parameter.empty:
                    raise ValueError(
                        f"{self.kind} {name!r} needs `{key}`; pass it to `{self.module}.make`"
                    )
                if value is not None:
                    hparams[key] = value
        return info.factory(network.apply, **hparams)

    def inner_builder(self, spec: str | Mapping, network: Network, context: Mapping) -> Callable:
        """A builder of the inner rule named by a config, with the outer rule's context.

        A wrapper rule (SalUn, WAGLE) takes its inner rule as an object; a config names it
        instead, as ``"random_label"`` or ``{"name": "random_label", "hparams": {...}}``. The
        inner rule is checked at once and built later, by the wrapper, with the same network and
        forget scenario and the schedule the wrapper leaves it (``builder(num_steps=...)``).

        Raises:
          ValueError: for an unknown rule name, unknown keys or hyperparameters.
        """
        if isinstance(spec, str):
            spec = {"name": spec}
        spec = dict(spec)
        unknown = sorted(set(spec) - {"name", "hparams"})
        if unknown or "name" not in spec:
            raise ValueError(
                "an inner rule is a name or {'name': ..., 'hparams': {...}}; "
                f"got keys {sorted(spec)}"
            )
        inner_name, inner_hparams = spec["name"], dict(spec.get("hparams") or {})
        self.check_hparams(inner_name, inner_hparams)

        def build(**overrides) -> UnlearningRule:
            bad = sorted(
                set(overrides) - {"num_steps", "steps_per_epoch", "forget_steps_per_epoch"}
            )
            if bad:
                raise ValueError(f"an inner rule's builder overrides only its schedule; got {bad}")
            ctx = {**context, **overrides}
            return self.make(
                inner_name,
                network,
                num_steps=ctx["num_steps"],
                steps_per_epoch=ctx["steps_per_epoch"],
                forget_steps_per_epoch=ctx["forget_steps_per_epoch"],
                forget_fraction=ctx["forget_fraction"],
                forget_classes=ctx["forget_classes"],
                **inner_hparams,
            )

        return build


# The unlearning rules' namespace; the module-level functions below are its methods.
RULES = Registry("Rule", "rules")
_REGISTRY = RULES.entries
register = RULES.register
rule = RULES.rule
num_steps = RULES.num_steps
whole_epochs = RULES.whole_epochs
default = RULES.default
sweepable = RULES.sweepable
names = RULES.names
get = RULES.get
check_hparams = RULES.check_hparams
make = RULES.make
inner_builder = RULES.inner_builder


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
