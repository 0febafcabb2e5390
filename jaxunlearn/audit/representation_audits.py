"""Audits that look past the logits: features (CKA, k-NN, linear probe) and ZRF.

A method can reach the retrained model's accuracy on the forget set by editing only the
classifier head, leaving the features, and everything the forget set taught them, untouched.
These audits compare representations instead:

* ``"representation"``: linear CKA of the audited model's penultimate features to the original's
  and to the oracle's, on forget and on retain data, and weighted k-NN accuracy of its features.
* ``"linear_probe"`` (slower, not in the default config): accuracy of a linear classifier trained
  on the frozen features.
* ``"zrf"``: Zero Retrain Forgetting, closeness of the forget-set predictions to those of a
  randomly initialised ("incompetent") network.

k-NN and probe protocol. Both classify the *queries* (the forget set, and the retain set) with a
*labelled memory* that no model trained on: the whole test split (``test`` plus
``test_forget``), embedded by the audited model itself. The memory holds every class, including
forgotten ones, and is the same for the original, the oracle and every method, so the numbers
are comparable in both scenarios:

* class forgetting: a model whose forget-class features still cluster with held-out examples of
  that class (the original, or a method that only changed the head) scores high; the oracle
  never learned the class, so its features for it need not cluster and it scores lower. (A
  memory made of retain data would not contain the forgotten class at all and give 0 for every
  model; splitting the forget set itself into memory and queries, as UUEF's 80/20 split does,
  is trivially 100% for a single forgotten class.)
* random forgetting: forget examples are ordinary members of their classes; an oracle classifies
  them like test data, the original like memorised training data.

References:
  Kim, Cha, Kim, "Are We Truly Forgetting? A Critical Re-examination of Machine Unlearning
  Evaluation Protocols", arXiv 2503.06991 (2025); yongwookim1/UUEF (CKA, k-NN on frozen features).
  Kornblith et al., "Similarity of Neural Network Representations Revisited", ICML 2019.
  Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021 (weighted
  k-NN, k = 20, T = 0.07).
  Chundawat et al., "Can Bad Teaching Induce Forgetting? Unlearning in Deep Networks Using an
  Incompetent Teacher", AAAI 2023 (ZRF).
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from jaxunlearn.audit import suite
from jaxunlearn.audit.membership import zrf_score
from jaxunlearn.audit.representation import linear_cka, linear_probe_accuracy, weighted_knn_accuracy

KNN_K = 20
KNN_TEMPERATURE = 0.07
# Queries beyond this many (a CIFAR-sized retain set) are subsampled with a fixed seed: the
# accuracy estimate is already tight, and the cost grows with queries x memory.
MAX_QUERIES = 4096
# The runner derives the originals', oracles' and unlearning runs' keys from seed + 0, 10_000 and
# 20_000; the incompetent teacher gets its own range.
ZRF_SEED_OFFSET = 30_000


def _queries(ctx: suite.AuditContext, part: str):
    """``(features, labels)`` of ``part``, at most ``MAX_QUERIES`` rows (fixed subsample)."""
    feats = ctx.outputs(part)[1]
    labels = ctx.data(part)[1]
    if len(labels) > MAX_QUERIES:
        keep = np.sort(np.random.default_rng(0).choice(len(labels), MAX_QUERIES, replace=False))
        feats, labels = feats[keep], labels[keep]
    return feats, labels


def _memory(ctx: suite.AuditContext):
    """Features and labels of the whole test split under the audited model (the k-NN memory)."""
    parts = [p for p in ("test", "test_forget") if len(getattr(ctx.split, p))]
    feats = np.concatenate([ctx.outputs(p)[1] for p in parts])
    labels = np.concatenate([ctx.data(p)[1] for p in parts])
    return feats, labels


def _cka_percent(ctx: suite.AuditContext, part: str, which: str) -> float:
    feats = ctx.outputs(part)[1]
    if len(feats) < 2:
        return float("nan")
    return 100.0 * linear_cka(feats, ctx.outputs(part, which)[1])


def representation_audit(ctx: suite.AuditContext) -> dict[str, float]:
    """Linear CKA to the original and the oracle, and weighted k-NN accuracy (all percent).

    ``CKA_{orig,oracle}_{forget,retain}``: CKA (x 100, as UUEF reports it) between the audited
    model's penultimate features and the original's / the oracle's on the same inputs, over the
    whole part. A method that only edits the head keeps ``CKA_orig_forget`` at 100.
    ``kNN_forget`` / ``kNN_retain``: accuracy of the temperature-weighted cosine k-NN
    (k = 20, T = 0.07) classifying forget / retain examples against the test split as memory
    (see the module docstring). k-NN needs labels and is skipped for regression.
    """
    out = {}
    for part in ("forget", "retain"):
        out[f"CKA_orig_{part}"] = _cka_percent(ctx, part, "original")
        out[f"CKA_oracle_{part}"] = _cka_percent(ctx, part, "oracle")
    if ctx.dataset.task == "classification":
        memory, memory_labels = _memory(ctx)
        for part in ("forget", "retain"):
            feats, labels = _queries(ctx, part)
            out[f"kNN_{part}"] = (
                weighted_knn_accuracy(
                    memory, memory_labels, feats, labels, k=KNN_K, temperature=KNN_TEMPERATURE
                )
                if len(labels)
                else float("nan")
            )
    return out


def linear_probe_audit(ctx: suite.AuditContext) -> dict[str, float]:
    """``probe_forget`` / ``probe_retain``: a linear probe trained on the test split's frozen
    features (the k-NN memory), evaluated on forget / retain features (percent)."""
    memory, memory_labels = _memory(ctx)
    out = {}
    for part in ("forget", "retain"):
        feats, labels = _queries(ctx, part)
        out[f"probe_{part}"] = (
            linear_probe_accuracy(memory, memory_labels, feats, labels)
            if len(labels)
            else float("nan")
        )
    return out


@functools.lru_cache(maxsize=8)
def _teacher(init, seed: int):
    # Every method of a seed is scored against the same teacher: initialise it once.
    return init(jax.random.key(ZRF_SEED_OFFSET + seed))


def zrf_teacher(network, seed: int):
    """The incompetent teacher of seed ``seed``: a freshly initialised network (fixed key)."""
    return _teacher(network.init, int(seed))


def zrf_audit(ctx: suite.AuditContext) -> dict[str, float]:
    """``ZRF``: 1 - mean Jensen-Shannon divergence between the audited model's and a randomly
    initialised network's forget-set predictions (1 = as uninformed as a random network; see
    :func:`~jaxunlearn.audit.membership.zrf_score`). The teacher depends only on the seed, so
    every method of a seed is scored against the same network."""
    if not len(ctx.split.forget):
        return {"ZRF": float("nan")}
    teacher = zrf_teacher(ctx.network, ctx.extra.get("seed", 0))
    teacher_logits, _ = suite.predict(ctx.network, teacher, ctx.data("forget")[0])
    return {"ZRF": zrf_score(ctx.outputs("forget")[0], teacher_logits)}


suite.register("representation", representation_audit)
suite.register("linear_probe", linear_probe_audit, task="classification")
suite.register("zrf", zrf_audit, task="classification")
