"""Error-based audits of regression unlearning: forget, retain and test mean squared error.

The regression counterparts of UA / RA / TA: an unlearned regressor should fit the retain set as
well as a model retrained without the forget set (``retain_mse``), generalise as well
(``test_mse``), and err on the forget set as much as that model does (``forget_mse``, which rises
from the original's training-set error towards test-set error). Membership inference for
regression is the loss-threshold attack of the ``mia_auc`` audit, which already uses per-example
squared error.

References:
  Tarun et al., "Deep Regression Unlearning", ICML 2023 (forget/retain error against the
  retrained gold model).
"""

from __future__ import annotations

import numpy as np

from jaxunlearn.audit import registry


def _errors(predictions, targets, *, per_model: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(predictions, targets)`` as float64, the predictions shaped like the targets (with a
    leading model axis when ``per_model``): one output per example, or a ``ValueError``."""
    y = np.asarray(targets, np.float64)
    pred = np.asarray(predictions, np.float64)
    if per_model and pred.ndim < 1:
        raise ValueError(f"predictions need a leading model axis; got shape {pred.shape}")
    lead = pred.shape[:1] if per_model else ()
    if pred.size != y.size * (lead[0] if lead else 1):
        raise ValueError(
            f"predictions ({pred.shape}) and targets ({y.shape}) differ in size"
            + (" per model" if per_model else "")
            + "; regression audits expect one output per example"
        )
    return pred.reshape(*lead, *y.shape), y


def mse(predictions, targets) -> float:
    """Mean squared error of one model; NaN for an empty set."""
    pred, y = _errors(predictions, targets)
    return float(np.mean((pred - y) ** 2)) if y.size else float("nan")


def mae(predictions, targets) -> float:
    """Mean absolute error of one model; NaN for an empty set."""
    pred, y = _errors(predictions, targets)
    return float(np.mean(np.abs(pred - y))) if y.size else float("nan")


def mse_per_model(predictions, targets) -> np.ndarray:
    """``[N]`` mean squared errors of N models: ``predictions`` has a leading model axis and one
    output per example of ``targets`` in each row; entry ``i`` equals ``mse(predictions[i],
    targets)``."""
    pred, y = _errors(predictions, targets, per_model=True)
    if not y.size:
        return np.full(len(pred), np.nan)
    return np.mean(((pred - y) ** 2).reshape(len(pred), -1), axis=1)


def regression_error_audit(ctx: registry.AuditContext) -> dict[str, np.ndarray]:
    """``forget_mse``, ``retain_mse`` and ``test_mse`` of each audited model, ``[N]``."""
    return {
        f"{part}_mse": mse_per_model(ctx.logits(part), ctx.data(part)[1])
        for part in ("forget", "retain", "test")
    }


registry.register("regression_error", regression_error_audit, task="regression")
