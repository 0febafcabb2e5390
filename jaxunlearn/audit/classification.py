"""Accuracy-based audits and population membership inference (the SalUn / Unlearn-Sparse suite).

UA = 100 - forget accuracy, RA = retain accuracy, TA = test accuracy (percent); MIA-Efficacy is
the SVC membership attack of the SalUn code; the loss-based membership AUC measures how well a
per-example loss threshold separates the forget set from unseen test data; Avg. Gap is the mean
absolute difference to the retrain oracle.

References:
  Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023 (UA/RA/TA,
  MIA-Efficacy, Avg. Gap).
  Fan et al., "SalUn", ICLR 2024 (`evaluation/SVC_MIA.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GAP_METRICS = ("UA", "RA", "TA", "MIA_efficacy")


def _as_1d(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D (one value per example); got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"`{name}` is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains NaN or inf")
    return arr


def accuracy_percent(logits, labels) -> float:
    """Top-1 accuracy in percent (NaN for an empty set).

    Raises:
      ValueError: for logits that are not ``[n, num_classes]`` with ``n`` labels, non-finite
        logits (a diverged model has no accuracy; ``argmax`` would pick class 0 for NaN), or
        labels that are not integers in ``[0, num_classes)``.
    """
    logits, labels = np.asarray(logits), np.asarray(labels)
    if labels.size == 0:
        return float("nan")
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(
            f"accuracy needs logits [n, classes] and labels [n]; got {logits.shape} and "
            f"{labels.shape}"
        )
    if not np.all(np.isfinite(logits)):
        raise ValueError("accuracy: the logits contain NaN or inf (a diverged model)")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"accuracy: labels must be non-negative integers; got {labels.dtype}")
    if labels.max() >= logits.shape[1]:
        raise ValueError(
            f"accuracy: label {int(labels.max())} is out of range for {logits.shape[1]} classes"
        )
    return float(100.0 * np.mean(np.argmax(logits, -1) == labels))


def true_class_probability(logits, labels) -> np.ndarray:
    """Softmax probability of the true class, ``[n]`` (float64, stable)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return np.exp(np.take_along_axis(logp, np.asarray(labels)[:, None], -1)[:, 0])


def mia_efficacy(retain_conf, test_conf, forget_conf) -> float:
    """MIA-Efficacy (percent), exactly as the SalUn / Unlearn-Sparse code computes it.

    An ``SVC(C=3, gamma="auto", kernel="rbf")`` is fitted on one feature, the true-class softmax
    probability: the first ``len(test_conf)`` retain examples are members (1), the test examples
    non-members (0). Efficacy is the percentage of forget examples predicted non-member: higher
    means the forget set looks less like training data.

    Args:
      retain_conf: true-class probabilities of retain examples (at least ``len(test_conf)``
        of them are used; fewer are all used).
      test_conf: true-class probabilities of test examples.
      forget_conf: true-class probabilities of forget examples.

    Returns:
      Percent of forget examples classified as non-members.

    References:
      Jia et al., NeurIPS 2023; Fan et al., ICLR 2024 (``evaluation/SVC_MIA.py``,
      ``SVC_MIA_forget_efficacy["confidence"]``).
    """
    from sklearn.svm import SVC

    retain = _as_1d("retain_conf", retain_conf)
    test = _as_1d("test_conf", test_conf)
    forget = _as_1d("forget_conf", forget_conf)
    for name, conf in (("retain_conf", retain), ("test_conf", test), ("forget_conf", forget)):
        if conf.min() < 0 or conf.max() > 1:
            raise ValueError(f"`{name}` holds probabilities, which lie in [0, 1]")
    shadow_in = retain[: len(test)]
    x = np.concatenate([shadow_in, test])[:, None]
    y = np.concatenate([np.ones(len(shadow_in)), np.zeros(len(test))])
    clf = SVC(C=3, gamma="auto", kernel="rbf")
    clf.fit(x, y)
    pred = clf.predict(forget[:, None])
    return float(100.0 * (1.0 - pred.mean()))


def loss_membership_auc(forget_losses, test_losses) -> float:
    """AUC (percent) of a loss threshold telling forget examples (members) from test examples.

    A lower loss is taken as evidence of membership. 50 means the forget set is as unfamiliar
    to the model as unseen data; 100 means it is perfectly recognisable.

    References:
      Yeom et al., "Privacy Risk in Machine Learning", CSF 2018 (loss attack); the NeurIPS 2023
      unlearning challenge starting kit (forget-vs-test loss attack).
    """
    from jaxunlearn.audit.membership import roc_auc

    forget = _as_1d("forget_losses", forget_losses)
    test = _as_1d("test_losses", test_losses)
    scores = -np.concatenate([forget, test])
    labels = np.concatenate([np.ones(len(forget)), np.zeros(len(test))])
    return float(100.0 * roc_auc(scores, labels))


def avg_gap(metrics: dict, reference: dict, keys: Sequence[str] = GAP_METRICS) -> float:
    """Mean absolute difference to the retrain oracle over ``keys`` (Jia et al.'s Avg. Gap).

    Raises:
      ValueError: when a key is missing on either side (a gap over fewer metrics would not be
        the Avg. Gap, nor comparable with one).
    """
    missing = sorted(
        {k for k in keys if k not in metrics} | {k for k in keys if k not in reference}
    )
    if missing:
        raise ValueError(f"Avg. Gap needs {list(keys)}; missing {missing}")
    return float(np.mean([abs(float(metrics[k]) - float(reference[k])) for k in keys]))
