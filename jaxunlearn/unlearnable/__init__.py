"""Unlearnable examples: protect data before release, and measure whether the protection holds.

Generators (pure, jitted transforms of a dataset; registry :mod:`.registry`):

- :func:`error_minimizing_noise`: sample-wise / class-wise min-min noise (Huang et al., 2021);
- :func:`bayes_error_noise`: projected gradient ascent on the kernel Bayes-error estimate
  (Zhang et al., AAAI 2026);
- :func:`unlearnable_clusters`: label-agnostic cluster-wise noise (Zhang et al., CVPR 2023);
- :func:`text_conditioned_noise`: class-wise noise from text descriptions alone (T2UE's
  zero-contact idea, with a text encoder trained here);
- :func:`ungeneralizable_examples`: learnable for an authorised network only (Ye & Wang, CVPR
  2024; the shared feature space is a surrogate trained here, not CLIP).

Evaluation (:mod:`.evaluate`): victims trained from scratch with the one training loop, vmapped
over seeds and mix ratios, under countermeasures; :func:`kernel_bayes_error` of a dataset. The
experiment behind ``experiments/configs/unlearnable.py`` is :func:`.experiment.run`.

Formulas and defaults: ``../shared/reference/unlearnable_and_representation.md``, Part A.

>>> p = error_minimizing_noise(net, x, y, key=key, mode="classwise")   # doctest: +SKIP
>>> p.x, p.delta                          # protected images in [0, 1], |delta| <= 8/255
"""

from jaxunlearn.unlearnable import budget, evaluate, registry
from jaxunlearn.unlearnable.bayes_error import (
    bayes_error_noise,
    kernel_bayes_error,
    select_bandwidth,
)
from jaxunlearn.unlearnable.budget import Protection
from jaxunlearn.unlearnable.clusters import kmeans, unlearnable_clusters
from jaxunlearn.unlearnable.error_minimizing import error_minimizing_noise
from jaxunlearn.unlearnable.evaluate import (
    COUNTERMEASURES,
    jpeg_compress,
    mix,
    protected_subset,
    train_victims,
    victim_rule,
)
from jaxunlearn.unlearnable.registry import get, names, protect
from jaxunlearn.unlearnable.text_conditioned import text_conditioned_noise
from jaxunlearn.unlearnable.ungeneralizable import uge_terms, ungeneralizable_examples

__all__ = [
    "COUNTERMEASURES",
    "Protection",
    "bayes_error_noise",
    "budget",
    "error_minimizing_noise",
    "evaluate",
    "get",
    "jpeg_compress",
    "kernel_bayes_error",
    "kmeans",
    "mix",
    "names",
    "protect",
    "protected_subset",
    "select_bandwidth",
    "registry",
    "text_conditioned_noise",
    "train_victims",
    "uge_terms",
    "ungeneralizable_examples",
    "unlearnable_clusters",
    "victim_rule",
]
