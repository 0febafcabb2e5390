"""The audit registry: named audits that turn a model (and its references) into metrics.

An audit is ``fn(ctx: AuditContext) -> {metric name: float}``. The context evaluates models
lazily and caches their outputs on each part of the data (``forget``, ``retain``, ``test``,
``test_forget``), so ten audits cost one forward pass per model and part.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxunlearn.audit import classification as cls
from jaxunlearn.core.types import Network, Variables
from jaxunlearn.data.datasets import Dataset
from jaxunlearn.data.forget import Split

Audit = Callable[["AuditContext"], dict[str, float]]
EVAL_BATCH = 1024


def predict(network: Network, variables: Variables, x, *, batch_size: int = EVAL_BATCH):
    """``(logits, features)`` as NumPy arrays, evaluated in jitted batches."""
    apply = _jitted_apply(network)
    logits, feats = [], []
    for i in range(0, len(x), batch_size):
        out = apply(variables, jnp.asarray(x[i : i + batch_size]))
        logits.append(np.asarray(out.logits))
        feats.append(np.asarray(out.features))
    if not logits:
        return np.zeros((0, network.num_outputs), np.float32), np.zeros((0, 0), np.float32)
    return np.concatenate(logits), np.concatenate(feats)


_APPLY_CACHE: dict[int, Callable] = {}


def _jitted_apply(network: Network) -> Callable:
    key = id(network.apply)
    if key not in _APPLY_CACHE:
        _APPLY_CACHE[key] = jax.jit(network.apply)
    return _APPLY_CACHE[key]


@dataclasses.dataclass
class AuditContext:
    """Everything an audit may look at.

    Attributes:
      network: the functional model.
      dataset: the dataset.
      split: the forget scenario's index sets.
      variables: the model under audit.
      original: the model before unlearning (or ``None``).
      oracle: a model retrained on the retain set (or ``None``).
      runtime_s, compile_s: the unlearning run's wall-clock time and compile time.
      extra: anything else an audit needs (e.g. ``seed``).
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
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)

    def data(self, part: str):
        """``(x, y)`` of a part: ``forget``, ``retain``, ``test`` or ``test_forget``."""
        ds, sp = self.dataset, self.split
        if part in ("forget", "retain"):
            idx = getattr(sp, part)
            return ds.x_train[idx], ds.y_train[idx]
        if part in ("test", "test_forget"):
            idx = getattr(sp, part)
            return ds.x_test[idx], ds.y_test[idx]
        raise ValueError(f"Unknown data part {part!r}")

    def model(self, which: str) -> Variables:
        """The variables of ``which``: ``unlearned``, ``original`` or ``oracle``."""
        v = {"unlearned": self.variables, "original": self.original, "oracle": self.oracle}[which]
        if v is None:
            raise ValueError(f"This audit needs the {which} model, which the context lacks")
        return v

    def outputs(self, part: str, which: str = "unlearned"):
        """Cached ``(logits, features)`` of model ``which`` on ``part``."""
        key = (which, part)
        if key not in self._cache:
            self._cache[key] = predict(self.network, self.model(which), self.data(part)[0])
        return self._cache[key]

    def outputs_finite(self, which: str = "unlearned") -> bool:
        """Whether the model's outputs on the forget, retain and test data are all finite.

        Finite parameters can still overflow (e.g. weights scaled up by gradient ascent); such a
        model is diverged, and the runner records it so instead of auditing it.
        """
        return all(
            bool(np.all(np.isfinite(self.outputs(part, which)[0])))
            for part in ("forget", "retain", "test")
        )

    def per_example_loss(self, part: str, which: str = "unlearned") -> np.ndarray:
        """Cross-entropy (classification) or squared error (regression) per example."""
        logits, _ = self.outputs(part, which)
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
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)

    def data(self, part: str):
        return AuditContext(self.network, self.dataset, self.split, self.unlearned).data(part)

    def logits(self, part: str, which: str = "unlearned") -> np.ndarray:
        """Cached ``[N, n, C]`` logits of every model of ``which`` on ``part`` (vmapped)."""
        key = (which, part)
        if key not in self._cache:
            variables = {
                "unlearned": self.unlearned,
                "oracle": self.oracle,
                "original": self.original,
            }[which]
            x = jnp.asarray(self.data(part)[0])
            apply = jax.jit(jax.vmap(lambda v: self.network.apply(v, x).logits))
            self._cache[key] = np.asarray(apply(variables))
        return self._cache[key]


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
        acc = cls.accuracy_percent(ctx.outputs(part)[0], ctx.data(part)[1])
        out[name] = 100.0 - acc if name == "UA" else acc
    if len(ctx.split.test_forget):
        out["TA_forget"] = cls.accuracy_percent(
            ctx.outputs("test_forget")[0], ctx.data("test_forget")[1]
        )
    return out


def mia_efficacy_audit(ctx: AuditContext) -> dict[str, float]:
    """MIA-Efficacy of the SalUn code (see :func:`classification.mia_efficacy`)."""
    conf = {
        p: cls.true_class_probability(ctx.outputs(p)[0], ctx.data(p)[1])
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
