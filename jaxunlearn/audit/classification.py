"""Accuracy-based audits and population membership inference (the SalUn / Unlearn-Sparse suite).

UA = 100 - forget accuracy, RA = retain accuracy, TA = test accuracy (percent); MIA-Efficacy is
the SVC membership attack of the SalUn code; the loss-based membership AUC measures how well a
per-example loss threshold separates the forget set from unseen test data; Avg. Gap is the mean
absolute difference to the retrain oracle.

Each metric takes one model's outputs (logits ``[n, C]``, per-example values ``[n]``) and returns
a float, or N models' with a leading model axis (``[N, n, C]``, ``[N, n]``) and returns a float64
array ``[N]`` whose entry ``i`` is the metric of row ``i`` alone: the per-model audits of
:mod:`jaxunlearn.audit.registry` call them once on the N models of a run.

References:
  Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023 (UA/RA/TA,
  MIA-Efficacy, Avg. Gap).
  Fan et al., "SalUn", ICLR 2024 (`evaluation/SVC_MIA.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GAP_METRICS = ("UA", "RA", "TA", "MIA_efficacy")


def _as_rows(name: str, values, ndim: int | None = None) -> np.ndarray:
    """``values`` as float64, 1-D (one value per example) or 2-D (``[models, examples]``); with
    ``ndim`` given, exactly that many dimensions (the other arguments' count)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim not in (1, 2) or (ndim is not None and arr.ndim != ndim):
        raise ValueError(
            f"`{name}` must be 1-D (one value per example), or 2-D ([models, examples]) like the "
            f"other arguments; got shape {arr.shape}"
        )
    if arr.shape[-1] == 0:
        raise ValueError(f"`{name}` is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains NaN or inf")
    return arr


def _rows_alike(named: dict[str, object]) -> tuple[list[np.ndarray], bool]:
    """The arguments as ``[models, examples]`` arrays (checked by :func:`_as_rows`: all 1-D or
    all 2-D with one model count), and whether they were 1-D."""
    first = next(iter(named))
    arrays = [_as_rows(first, named[first])]
    for name, values in list(named.items())[1:]:
        arrays.append(_as_rows(name, values, arrays[0].ndim))
    if arrays[0].ndim == 1:
        return [a[None] for a in arrays], True
    models = {a.shape[0] for a in arrays}
    if len(models) != 1:
        shapes = {name: a.shape for name, a in zip(named, arrays, strict=True)}
        raise ValueError(f"The arguments hold different numbers of models: {shapes}")
    return arrays, False


def accuracy_percent(logits, labels):
    """Top-1 accuracy in percent (NaN for an empty set).

    Args:
      logits: ``[n, num_classes]``, or ``[N, n, num_classes]`` for N models.
      labels: ``[n]`` integer labels, shared by the models.

    Returns:
      A float for ``[n, num_classes]`` logits, a float64 array ``[N]`` (one accuracy per model)
      for ``[N, n, num_classes]``.

    Raises:
      ValueError: for logits that are not ``[n, num_classes]`` (or ``[N, n, num_classes]``) with
        ``n`` labels, non-finite logits (a diverged model has no accuracy; ``argmax`` would pick
        class 0 for NaN), or labels that are not integers in ``[0, num_classes)``.
    """
    logits, labels = np.asarray(logits), np.asarray(labels)
    if labels.size == 0:
        return np.full(logits.shape[0], np.nan) if logits.ndim == 3 else float("nan")
    if logits.ndim not in (2, 3) or labels.shape != (logits.shape[-2],):
        raise ValueError(
            f"accuracy needs logits [n, classes] (or [models, n, classes]) and labels [n]; got "
            f"{logits.shape} and {labels.shape}"
        )
    if not np.all(np.isfinite(logits)):
        raise ValueError("accuracy: the logits contain NaN or inf (a diverged model)")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
        raise ValueError(f"accuracy: labels must be non-negative integers; got {labels.dtype}")
    if labels.max() >= logits.shape[-1]:
        raise ValueError(
            f"accuracy: label {int(labels.max())} is out of range for {logits.shape[-1]} classes"
        )
    acc = 100.0 * np.mean(np.argmax(logits, -1) == labels, axis=-1)
    return float(acc) if logits.ndim == 2 else acc


def true_class_probability(logits, labels) -> np.ndarray:
    """Softmax probability of the true class (float64, stable): ``[n]`` for ``[n, C]`` logits,
    ``[N, n]`` for ``[N, n, C]`` (N models, labels ``[n]`` shared)."""
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    index = np.broadcast_to(np.asarray(labels)[:, None], (*logp.shape[:-1], 1))
    return np.exp(np.take_along_axis(logp, index, -1)[..., 0])


def mia_efficacy(retain_conf, test_conf, forget_conf):
    """MIA-Efficacy (percent), exactly as the SalUn / Unlearn-Sparse code computes it.

    An ``SVC(C=3, gamma="auto", kernel="rbf")`` is fitted on one feature, the true-class softmax
    probability: the first ``len(test_conf)`` retain examples are members (1), the test examples
    non-members (0). Efficacy is the percentage of forget examples predicted non-member: higher
    means the forget set looks less like training data.

    Given ``[N, n]`` arrays (one row per model), one SVC is fitted per model: the attack of each
    model is its own, as if it were called on each row.

    Args:
      retain_conf: true-class probabilities of retain examples (at least ``len(test_conf)``
        of them are used; fewer are all used), ``[n_r]`` or ``[N, n_r]``.
      test_conf: true-class probabilities of test examples, ``[n_t]`` or ``[N, n_t]``.
      forget_conf: true-class probabilities of forget examples, ``[n_f]`` or ``[N, n_f]``.

    Returns:
      Percent of forget examples classified as non-members: a float for 1-D arguments, a float64
      array ``[N]`` for 2-D ones.

    References:
      Jia et al., NeurIPS 2023; Fan et al., ICLR 2024 (``evaluation/SVC_MIA.py``,
      ``SVC_MIA_forget_efficacy["confidence"]``).
    """
    from sklearn.svm import SVC

    (retain, test, forget), one = _rows_alike(
        {"retain_conf": retain_conf, "test_conf": test_conf, "forget_conf": forget_conf}
    )
    for name, conf in (("retain_conf", retain), ("test_conf", test), ("forget_conf", forget)):
        if conf.min() < 0 or conf.max() > 1:
            raise ValueError(f"`{name}` holds probabilities, which lie in [0, 1]")
    out = np.empty(len(retain))
    for m in range(len(retain)):  # an SVC per model: the fit is not vectorised
        shadow_in = retain[m, : test.shape[1]]
        x = np.concatenate([shadow_in, test[m]])[:, None]
        y = np.concatenate([np.ones(len(shadow_in)), np.zeros(test.shape[1])])
        clf = SVC(C=3, gamma="auto", kernel="rbf")
        clf.fit(x, y)
        pred = clf.predict(forget[m][:, None])
        out[m] = 100.0 * (1.0 - pred.mean())
    return float(out[0]) if one else out


def loss_membership_auc(forget_losses, test_losses):
    """AUC (percent) of a loss threshold telling forget examples (members) from test examples.

    A lower loss is taken as evidence of membership. 50 means the forget set is as unfamiliar
    to the model as unseen data; 100 means it is perfectly recognisable. The AUC is the
    Mann-Whitney statistic of :func:`~jaxunlearn.audit.membership.roc_auc` (ties count one
    half), computed row by row by :func:`~jaxunlearn.audit.membership.rank_auc`, so ``[N, n]``
    losses (one row per model) give N AUCs in one pass.

    Args:
      forget_losses: per-example losses of forget examples, ``[n_f]`` or ``[N, n_f]``.
      test_losses: per-example losses of test examples, ``[n_t]`` or ``[N, n_t]``.

    Returns:
      A float for 1-D arguments, a float64 array ``[N]`` for 2-D ones.

    References:
      Yeom et al., "Privacy Risk in Machine Learning", CSF 2018 (loss attack); the NeurIPS 2023
      unlearning challenge starting kit (forget-vs-test loss attack).
    """
    from jaxunlearn.audit.membership import rank_auc

    (forget, test), one = _rows_alike({"forget_losses": forget_losses, "test_losses": test_losses})
    members = np.r_[np.ones(forget.shape[1], bool), np.zeros(test.shape[1], bool)]
    auc = 100.0 * rank_auc(-np.concatenate([forget, test], axis=1), members)
    return float(auc[0]) if one else auc


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
