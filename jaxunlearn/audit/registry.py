"""The audit registry: named audits that turn models (and their references) into metrics.

A per-model audit is ``fn(ctx: AuditContext) -> {metric name: np.ndarray [N]}``: an
:class:`AuditContext` describes N models, and the audit returns one value per model, computed
over the model axis at once where it reads outputs. Every model's outputs come from one
:class:`~jaxunlearn.ensemble.Predictions` per run: ``[N, n, C]`` logits and features per (model
group, data part), computed once by a vmapped program over the N models; a per-model audit reads
the rows of its context (``ctx.logits(part)`` is ``[N, n, C]``), an ensemble audit
(:class:`EnsembleContext`) the same arrays whole. :func:`run_models` runs per-model audits and
returns their ``[N]`` arrays; :func:`run` is the one-model form (``{metric: float}``) of a
context built from one model's variables, ``AuditContext(net, ds, split, variables, ...)``.
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

Audit = Callable[["AuditContext"], dict[str, np.ndarray]]
DATA_PARTS = ("forget", "retain", "test", "test_forget")
MODEL_KINDS = ("unlearned", "original", "oracle")
_FIELDS = {"unlearned": "variables", "original": "original", "oracle": "oracle"}


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
    """Everything a per-model audit may look at: N models under audit and their references.

    Two ways to build one:

    * one model: ``AuditContext(network, dataset, split, variables, original=..., oracle=...)``
      with each model's variables (no model axis). The context predicts them itself; N = 1.
    * N models of a run: ``AuditContext(network, dataset, split, predictions=...,
      groups=..., rows=...)``, the models being rows of the groups of a shared
      :class:`~jaxunlearn.ensemble.Predictions`. ``groups`` maps ``"unlearned"``,
      ``"original"``, ``"oracle"`` to group names; ``rows`` are the group rows audited (all of
      the unlearned group's when ``None``). Row ``r`` of every group belongs together: model
      ``r``'s original and oracle are row ``r`` of theirs. Stacked variables ``[N, ...]``
      without a ``Predictions``: ``predictions=make_predictions(network, dataset, split,
      {"unlearned": stacked, ...})``.

    Audits read ``[N, ...]`` arrays (:meth:`logits`, :meth:`features`, :meth:`per_example_loss`,
    :meth:`models`) and return one value per model; :meth:`take` narrows a context to some of
    its models (the runner audits the models that did not diverge).

    Attributes:
      network: the functional model.
      dataset: the dataset.
      split: the forget scenario's index sets.
      variables: the model under audit (one-model contexts only).
      original: the model before unlearning (or ``None``; one-model contexts only).
      oracle: a model retrained on the retain set (or ``None``; one-model contexts only).
      runtime_s, compile_s: the unlearning run's wall-clock time and compile time (a number for
        every model, or an array with one per group row).
      extra: anything else an audit needs: ``seed``, an int for every model or an array with one
        per group row (see :attr:`seeds`).
      predictions, groups, rows: the shared outputs and the models under audit, as above.
    """

    network: Network
    dataset: Dataset
    split: Split
    variables: Variables | None = None
    original: Variables | None = None
    oracle: Variables | None = None
    runtime_s: Any = float("nan")
    compile_s: Any = float("nan")
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    predictions: Predictions | None = None
    groups: Mapping[str, str] = dataclasses.field(default_factory=dict)
    rows: np.ndarray | None = None

    def __post_init__(self):
        if self.predictions is None:
            if self.variables is None:
                raise ValueError(
                    "An AuditContext needs the model under audit: `variables` (one model) or "
                    "`predictions` with `groups` (N models)"
                )
            if self.groups or self.rows is not None:
                raise ValueError("`groups` and `rows` name models of `predictions`, not given")
            self.predictions = make_predictions(self.network, self.dataset, self.split)
            self.groups, self.rows = {}, np.zeros(1, np.int64)
            for which in MODEL_KINDS:
                variables = getattr(self, _FIELDS[which])
                if variables is not None:
                    self.predictions.add_group(which, _one(variables))
                    self.groups[which] = which
            return
        given = [_FIELDS[w] for w in MODEL_KINDS if getattr(self, _FIELDS[w]) is not None]
        if given:
            raise ValueError(
                f"Give the models either as variables ({given}: one model) or as `groups` of "
                "`predictions` (N models), not both"
            )
        if "unlearned" not in self.groups:
            raise ValueError(
                f"`groups` must name the group of the unlearned models; got {dict(self.groups)}"
            )
        unknown = sorted(set(self.groups) - set(MODEL_KINDS))
        if unknown:
            raise ValueError(f"`groups` has unknown keys {unknown}; valid: {list(MODEL_KINDS)}")
        size = len(jax.tree.leaves(self.predictions.variables(self.groups["unlearned"]))[0])
        rows = np.arange(size) if self.rows is None else np.asarray(self.rows)
        if rows.ndim != 1 or not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"`rows` must be a 1-D array of group rows; got {self.rows!r}")
        if rows.size and (rows.min() < 0 or rows.max() >= size):
            raise ValueError(f"`rows` {rows.tolist()} out of range for {size} models")
        self.rows = rows

    @property
    def num_models(self) -> int:
        """N, the number of models under audit."""
        return len(self.rows)

    @property
    def seeds(self) -> np.ndarray:
        """``[N]`` int seed of each model under audit (``extra["seed"]``, 0 when absent)."""
        return self.per_model(self.extra.get("seed", 0)).astype(np.int64)

    def per_model(self, value) -> np.ndarray:
        """``[N]`` values of a setting given for every model (a number) or per group row (an
        array over the groups' model axis)."""
        value = np.asarray(value)
        return np.broadcast_to(value, (self.num_models,)) if value.ndim == 0 else value[self.rows]

    def take(self, positions) -> AuditContext:
        """The context of models ``positions`` (indices or a boolean mask over this context's
        N models), sharing its predictions."""
        positions = np.asarray(positions)
        if positions.dtype == bool:
            if positions.shape != (self.num_models,):
                raise ValueError(
                    f"A mask over the models needs shape ({self.num_models},); got "
                    f"{positions.shape}"
                )
            positions = np.flatnonzero(positions)
        return dataclasses.replace(
            self, variables=None, original=None, oracle=None, rows=self.rows[positions]
        )

    def data(self, part: str):
        """``(x, y)`` of a part: ``forget``, ``retain``, ``test`` or ``test_forget``."""
        return part_data(self.dataset, self.split, part)

    def _group(self, which: str) -> str:
        if which not in MODEL_KINDS:
            raise ValueError(f"Unknown model kind {which!r}; valid: {list(MODEL_KINDS)}")
        if which not in self.groups:
            raise ValueError(f"This audit needs the {which} model, which the context lacks")
        return self.groups[which]

    def _rows_of(self, array):
        # All rows in order: the shared array itself, not a copy.
        if len(self.rows) == len(array) and np.array_equal(self.rows, np.arange(len(array))):
            return array
        return array[self.rows]

    def models(self, which: str = "unlearned") -> Variables:
        """The variables ``[N, ...]`` of the models ``which`` (``unlearned``, ``original`` or
        ``oracle``) under audit."""
        variables = self.predictions.variables(self._group(which))
        return jax.tree.map(lambda x: x[self.rows], variables)

    def model(self, which: str = "unlearned", i: int = 0) -> Variables:
        """The variables (no model axis) of model ``i`` of ``which`` under audit."""
        if not 0 <= i < self.num_models:
            raise ValueError(f"Model {i} out of range for a context of {self.num_models}")
        variables = self.predictions.variables(self._group(which))
        return jax.tree.map(lambda x: x[self.rows[i]], variables)

    def logits(self, part: str, which: str = "unlearned") -> np.ndarray:
        """``[N, n, C]`` logits of the models ``which`` on ``part`` (rows of the shared arrays)."""
        return self._rows_of(self.predictions.logits(self._group(which), part))

    def features(self, part: str, which: str = "unlearned") -> np.ndarray:
        """``[N, n, F]`` penultimate features of the models ``which`` on ``part``."""
        return self._rows_of(self.predictions.features(self._group(which), part))

    def outputs_finite(self, which: str = "unlearned") -> np.ndarray:
        """``[N]`` bool: whether each model's outputs on the forget, retain and test data are all
        finite.

        Finite parameters can still overflow (e.g. weights scaled up by gradient ascent); such a
        model is diverged, and the runner records it so instead of auditing it.
        """
        finite = np.ones(self.num_models, bool)
        for part in ("forget", "retain", "test"):
            logits = self.logits(part, which)
            finite &= np.isfinite(logits.reshape(len(logits), -1)).all(axis=1)
        return finite

    def per_example_loss(self, part: str, which: str = "unlearned") -> np.ndarray:
        """``[N, n]`` cross-entropy (classification) or squared error (regression) per example."""
        logits = self.logits(part, which)
        y = self.data(part)[1]
        if self.dataset.task == "classification":
            return -np.log(np.maximum(cls.true_class_probability(logits, y), 1e-45))
        return (logits.reshape(len(logits), *y.shape) - y) ** 2


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
    _check(_ENSEMBLE_REGISTRY, audit_names, ctx.dataset.task, "ensemble audit")
    metrics: dict[str, float] = {}
    for name in audit_names:
        metrics.update(_ENSEMBLE_REGISTRY[name](ctx))
    return metrics


def accuracy_audit(ctx: AuditContext) -> dict[str, np.ndarray]:
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


def mia_efficacy_audit(ctx: AuditContext) -> dict[str, np.ndarray]:
    """MIA-Efficacy of the SalUn code (see :func:`classification.mia_efficacy`; one SVC per
    model, fitted on that model's confidences)."""
    conf = {
        p: cls.true_class_probability(ctx.logits(p), ctx.data(p)[1])
        for p in ("retain", "test", "forget")
    }
    return {"MIA_efficacy": cls.mia_efficacy(conf["retain"], conf["test"], conf["forget"])}


def mia_auc_audit(ctx: AuditContext) -> dict[str, np.ndarray]:
    """Loss-threshold membership AUC, forget vs test (see :func:`loss_membership_auc`)."""
    return {
        "MIA_AUC": cls.loss_membership_auc(
            ctx.per_example_loss("forget"), ctx.per_example_loss("test")
        )
    }


def runtime_audit(ctx: AuditContext) -> dict[str, np.ndarray]:
    """Wall-clock seconds of the unlearning run, compile time reported separately."""
    return {
        "runtime_s": ctx.per_model(ctx.runtime_s).astype(np.float64),
        "compile_s": ctx.per_model(ctx.compile_s).astype(np.float64),
    }


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
    """Adds a per-model audit ``fn(ctx: AuditContext) -> {metric: np.ndarray [N]}``: one value
    per model of the context, computed over the model axis where the audit reads outputs."""
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


def run_models(audit_names, ctx: AuditContext) -> dict[str, np.ndarray]:
    """Runs the named per-model audits on the context's N models: ``{metric: array [N]}``.

    Raises:
      ValueError: for an unknown audit, one of the other task, or an audit whose metric is not
        one value per model.
    """
    _check(_REGISTRY, audit_names, ctx.dataset.task, "audit")
    metrics: dict[str, np.ndarray] = {}
    for name in audit_names:
        for metric, values in _REGISTRY[name](ctx).items():
            values = np.asarray(values)
            if values.shape != (ctx.num_models,):
                raise ValueError(
                    f"Audit {name!r} gave {metric!r} of shape {values.shape}; a per-model audit "
                    f"gives one value per model, shape ({ctx.num_models},)"
                )
            metrics[metric] = values
    return metrics


def run_finite(audit_names, ctx: AuditContext, ok=None) -> list[dict[str, float] | None]:
    """The named audits of each model of ``ctx``, run once over the models that are ``ok``
    (``[N]`` bools, or one for all; all when ``None``) and whose outputs are finite: a
    ``{metric: float}`` per such model, ``None`` for the others (diverged: non-finite
    parameters, or finite ones whose outputs overflow)."""
    if ok is not None:
        ok = np.broadcast_to(np.asarray(ok, bool), (ctx.num_models,))
        if not ok.any():  # nothing to audit: the outputs need not even be computed
            return [None] * ctx.num_models
    keep = ctx.outputs_finite() if ok is None else ok & ctx.outputs_finite()
    rows = np.flatnonzero(keep).tolist()
    metrics = run_models(audit_names, ctx.take(rows)) if rows else {}
    out: list[dict[str, float] | None] = [None] * ctx.num_models
    for j, i in enumerate(rows):
        out[i] = {name: float(values[j]) for name, values in metrics.items()}
    return out


def run(audit_names, ctx: AuditContext) -> dict[str, float]:
    """Runs the named audits on a one-model context: ``{metric: float}``.

    Raises:
      ValueError: for a context of N != 1 models (use :func:`run_models`, which gives one array
        of N values per metric), or as :func:`run_models`.
    """
    if ctx.num_models != 1:
        raise ValueError(
            f"audit.run audits one model; this context holds {ctx.num_models}: use "
            "audit.run_models, which gives an array of one value per model for each metric"
        )
    return {metric: float(values[0]) for metric, values in run_models(audit_names, ctx).items()}


def _check(registry: dict, audit_names, task: str, kind: str) -> None:
    # One check for both registries: unknown names list the valid ones, task mismatches say so.
    for name in audit_names:
        if name not in registry:
            raise ValueError(f"Unknown {kind} {name!r}; valid {kind}s: {sorted(registry)}")
        if _TASKS.get(name, task) != task:
            raise ValueError(
                f"{kind.capitalize()} {name!r} is for {_TASKS[name]} tasks, not {task}"
            )
