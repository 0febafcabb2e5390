"""The audit registry: named audits that turn a model (and its references) into metrics.

An audit is ``fn(ctx: AuditContext) -> {metric name: float}``. Every model's outputs
come from one :class:`~jaxunlearn.ensemble.Predictions` per run: ``[N, n, C]`` logits and
features per (model group, data part), computed once by a vmapped program over the N models; a
per-model audit reads its model's row, an ensemble audit the whole arrays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.audit import classification as cls
from jaxunlearn.core.types import Network, Variables
from jaxunlearn.data.datasets import Dataset
from jaxunlearn.data.forget import Split
from jaxunlearn.ensemble.predict import Predictions, Predictor, predictor_for

Audit = Callable[["AuditContext"], dict[str, float]]
DATA_PARTS = ("forget", "retain", "test", "test_forget")


def part_data(dataset: Dataset, split: Split, part: str):
    """``(x, y)`` of a part: ``forget``, ``retain``, ``test`` or ``test_forget``."""
    if part in ("forget", "retain"):
        idx = getattr(split, part)
        return dataset.x_train[idx], dataset.y_train[idx]
    if part in ("test", "test_forget"):
        idx = getattr(split, part)
        return dataset.x_test[idx], dataset.y_test[idx]
    raise ValueError(f"Unknown data part {part!r}; valid: {list(DATA_PARTS)}")


def make_predictions(
    network: Network,
    dataset: Dataset,
    split: Split,
    groups: Mapping[str, Variables] | None = None,
    *,
    predictor: Predictor | None = None,
) -> Predictions:
    """A :class:`~jaxunlearn.ensemble.Predictions` over the split's four data parts, for model
    groups ``{name: variables [N, ...]}`` (more can be added)."""
    parts = {part: part_data(dataset, split, part)[0] for part in DATA_PARTS}
    return Predictions(predictor or predictor_for(network), parts, groups)


def _one(variables: Variables) -> Variables:
    return jax.tree.map(lambda x: jnp.asarray(x)[None], variables)


@dataclasses.dataclass
class AuditContext:
    """Everything an audit may look at.

    The models' outputs come from a :class:`~jaxunlearn.ensemble.Predictions` shared by every
    model of a run: ``predictions`` holds the groups named in ``groups`` (``{"unlearned",
    "original", "oracle"}`` -> group name) and the model under audit is row ``index`` of each.
    Without ``predictions`` the context builds its own over the one model of each kind.

    Attributes:
      network: the functional model.
      dataset: the dataset.
      split: the forget scenario's index sets.
      variables: the model under audit.
      original: the model before unlearning (or ``None``).
      oracle: a model retrained on the retain set (or ``None``).
      runtime_s, compile_s: the unlearning run's wall-clock time and compile time.
      extra: anything else an audit needs (e.g. ``seed``).
      predictions, groups, index: the shared outputs, as above.
    """

    network: Network
    dataset: Dataset
    split: Split
    variables: Variables
    original: Variables | None = None
    oracle: Variables | None = None
    runtime_s: float = float("nan")
    compile_s: float = float("nan")
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    predictions: Predictions | None = None
    groups: Mapping[str, str] = dataclasses.field(default_factory=dict)
    index: int = 0

    def __post_init__(self):
        if self.predictions is None:
            self.predictions = make_predictions(self.network, self.dataset, self.split)
            self.groups, self.index = {}, 0
            for which in ("unlearned", "original", "oracle"):
                variables = self.model(which, required=False)
                if variables is not None:
                    self.predictions.add_group(which, _one(variables))
                    self.groups[which] = which

    def data(self, part: str):
        """``(x, y)`` of a part: ``forget``, ``retain``, ``test`` or ``test_forget``."""
        return part_data(self.dataset, self.split, part)

    def model(self, which: str, *, required: bool = True) -> Variables:
        """The variables of ``which``: ``unlearned``, ``original`` or ``oracle``."""
        v = {"unlearned": self.variables, "original": self.original, "oracle": self.oracle}[which]
        if v is None and required:
            raise ValueError(f"This audit needs the {which} model, which the context lacks")
        return v

    def _group(self, which: str) -> str:
        if which not in self.groups:
            self.model(which)  # names the missing model
            raise ValueError(f"No model group holds the {which} model")
        return self.groups[which]

    def logits(self, part: str, which: str = "unlearned") -> np.ndarray:
        """``[n, C]`` logits of model ``which`` on ``part`` (its row of the shared arrays)."""
        return self.predictions.logits(self._group(which), part)[self.index]

    def features(self, part: str, which: str = "unlearned") -> np.ndarray:
        """``[n, F]`` penultimate features of model ``which`` on ``part``."""
        return self.predictions.features(self._group(which), part)[self.index]

    def outputs_finite(self, which: str = "unlearned") -> bool:
        """Whether the model's outputs on the forget, retain and test data are all finite.

        Finite parameters can still overflow (e.g. weights scaled up by gradient ascent); such a
        model is diverged, and the runner records it so instead of auditing it.
        """
        return all(
            bool(np.all(np.isfinite(self.logits(part, which))))
            for part in ("forget", "retain", "test")
        )

    def per_example_loss(self, part: str, which: str = "unlearned") -> np.ndarray:
        """Cross-entropy (classification) or squared error (regression) per example."""
        logits = self.logits(part, which)
        y = self.data(part)[1]
        if self.dataset.task == "classification":
            return -np.log(np.maximum(cls.true_class_probability(logits, y), 1e-45))
        return (logits.reshape(y.shape) - y) ** 2


@dataclasses.dataclass
class EnsembleContext:
    """What an ensemble audit sees: N unlearned models and N oracles of one scenario and method.

    Attributes:
      network, dataset, split: as in :class:`AuditContext`.
      unlearned: variables with a leading model axis ``[N, ...]``: the method's N runs.
      oracle: variables ``[N, ...]``: N models retrained on the retain set.
      original: variables ``[N, ...]`` of the original models (or ``None``).
      records: the method's per-model metrics (e.g. ``RA``/``TA`` for the competition score),
        aligned with the model axis.
      oracle_records: the oracles' per-model metrics.
      method: the method's name.
      predictions, groups: the shared outputs (``{"unlearned", "oracle", "original"}`` -> group
        name); built from the variables above when not given.
      shadows: ``() -> Shadows | None``, U-LiRA's shadow models as they audit this method
        (trained, then unlearned by the method), from the experiment's artefacts.
      rows: which models of the groups to audit (e.g. the runs that did not diverge); all when
        ``None``.
      arrays: per-example arrays the audits leave for plots and files (see
        :func:`jaxunlearn.audit.ensemble_audits.per_example_arrays`).
    """

    network: Network
    dataset: Dataset
    split: Split
    unlearned: Variables
    oracle: Variables
    original: Variables | None = None
    records: list[dict[str, float]] = dataclasses.field(default_factory=list)
    oracle_records: list[dict[str, float]] = dataclasses.field(default_factory=list)
    method: str = ""
    predictions: Predictions | None = None
    groups: Mapping[str, str] = dataclasses.field(default_factory=dict)
    shadows: Callable[[], Any] | None = None
    rows: np.ndarray | None = None
    arrays: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if self.predictions is None:
            self.predictions = make_predictions(self.network, self.dataset, self.split)
            self.groups = {}
            for which in ("unlearned", "oracle", "original"):
                variables = getattr(self, which)
                if variables is not None:
                    self.predictions.add_group(which, variables)
                    self.groups[which] = which

    def data(self, part: str):
        """``(x, y)`` of a part: ``forget``, ``retain``, ``test`` or ``test_forget``."""
        return part_data(self.dataset, self.split, part)

    def logits(self, part: str, which: str = "unlearned") -> np.ndarray:
        """``[N, n, C]`` logits of every model of ``which`` on ``part`` (shared, cached)."""
        if which not in self.groups:
            raise ValueError(f"This ensemble audit needs the {which} models, which it lacks")
        logits = self.predictions.logits(self.groups[which], part)
        return logits if self.rows is None else logits[self.rows]


EnsembleAudit = Callable[[EnsembleContext], dict[str, float]]
_ENSEMBLE_REGISTRY: dict[str, EnsembleAudit] = {}


def register_ensemble(name: str, audit: EnsembleAudit, *, task: str = "any") -> None:
    """Adds an ensemble audit ``fn(EnsembleContext) -> dict`` (metrics of the whole group)."""
    if name in _ENSEMBLE_REGISTRY or name in _REGISTRY:
        raise ValueError(f"Audit {name!r} is already registered")
    _ENSEMBLE_REGISTRY[name] = audit
    if task != "any":
        _TASKS[name] = task


def ensemble_names() -> list[str]:
    """Names of every registered ensemble audit."""
    return sorted(_ENSEMBLE_REGISTRY)


def check_ensemble_names(audit_names, task: str = "classification") -> None:
    """Rejects unknown ensemble audit names, listing the valid ones."""
    _check(_ENSEMBLE_REGISTRY, audit_names, task, "ensemble audit")


def run_ensemble(audit_names, ctx: EnsembleContext) -> dict[str, float]:
    """Runs the named ensemble audits and merges their metrics."""
    return _run(_ENSEMBLE_REGISTRY, audit_names, ctx, "ensemble audit")


def accuracy_audit(ctx: AuditContext) -> dict[str, float]:
    """UA = 100 - forget accuracy, RA, TA (percent); TA_forget on forgotten classes' test data."""
    out = {}
    for part, name in (("forget", "UA"), ("retain", "RA"), ("test", "TA")):
        acc = cls.accuracy_percent(ctx.logits(part), ctx.data(part)[1])
        out[name] = 100.0 - acc if name == "UA" else acc
    if len(ctx.split.test_forget):
        out["TA_forget"] = cls.accuracy_percent(
            ctx.logits("test_forget"), ctx.data("test_forget")[1]
        )
    return out


def mia_efficacy_audit(ctx: AuditContext) -> dict[str, float]:
    """MIA-Efficacy of the SalUn code (see :func:`classification.mia_efficacy`)."""
    conf = {
        p: cls.true_class_probability(ctx.logits(p), ctx.data(p)[1])
        for p in ("retain", "test", "forget")
    }
    return {"MIA_efficacy": cls.mia_efficacy(conf["retain"], conf["test"], conf["forget"])}


def mia_auc_audit(ctx: AuditContext) -> dict[str, float]:
    """Loss-threshold membership AUC, forget vs test (see :func:`loss_membership_auc`)."""
    return {
        "MIA_AUC": cls.loss_membership_auc(
            ctx.per_example_loss("forget"), ctx.per_example_loss("test")
        )
    }


def runtime_audit(ctx: AuditContext) -> dict[str, float]:
    """Wall-clock seconds of the unlearning run, compile time reported separately."""
    return {"runtime_s": float(ctx.runtime_s), "compile_s": float(ctx.compile_s)}


_REGISTRY: dict[str, Audit] = {
    "accuracy": accuracy_audit,
    "mia_efficacy": mia_efficacy_audit,
    "mia_auc": mia_auc_audit,
    "runtime": runtime_audit,
}
# Audits that only make sense for one task; the rest apply to both.
_TASKS: dict[str, str] = {"accuracy": "classification", "mia_efficacy": "classification"}


# The metrics that Avg. Gap (mean absolute difference to the retrain oracle) averages, per task.
GAP_METRICS: dict[str, tuple[str, ...]] = {
    "classification": cls.GAP_METRICS,
    # Errors only: a percent-scale AUC would swamp mean squared errors of order 0.1-1.
    "regression": ("forget_mse", "retain_mse", "test_mse"),
}


def gap_metrics(task: str) -> tuple[str, ...]:
    """The metrics Avg. Gap averages for ``task``."""
    return GAP_METRICS[task]


def register(name: str, audit: Audit, *, task: str = "any") -> None:
    """Adds an audit ``fn(ctx) -> dict`` to the registry."""
    if name in _REGISTRY:
        raise ValueError(f"Audit {name!r} is already registered")
    _REGISTRY[name] = audit
    if task != "any":
        _TASKS[name] = task


def names() -> list[str]:
    """Names of every registered audit."""
    return sorted(_REGISTRY)


def check_names(audit_names, task: str = "classification") -> None:
    """Rejects unknown audit names (listing the valid ones) and audits of the wrong task."""
    _check(_REGISTRY, audit_names, task, "audit")


def run(audit_names, ctx: AuditContext) -> dict[str, float]:
    """Runs the named audits and merges their metrics."""
    return _run(_REGISTRY, audit_names, ctx, "audit")


def _check(registry: dict, audit_names, task: str, kind: str) -> None:
    # One check for both registries: unknown names list the valid ones, task mismatches say so.
    for name in audit_names:
        if name not in registry:
            raise ValueError(f"Unknown {kind} {name!r}; valid {kind}s: {sorted(registry)}")
        if _TASKS.get(name, task) != task:
            raise ValueError(
                f"{kind.capitalize()} {name!r} is for {_TASKS[name]} tasks, not {task}"
            )


def _run(registry: dict, audit_names, ctx, kind: str) -> dict[str, float]:
    _check(registry, audit_names, ctx.dataset.task, kind)
    metrics: dict[str, float] = {}
    for name in audit_names:
        metrics.update(registry[name](ctx))
    return metrics
