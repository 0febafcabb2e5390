"""Forget specifications: which training examples a deletion request removes.

A :class:`ForgetSpec` is a random fraction or count of training examples, or whole classes.
:func:`make_split` turns it, deterministically from a seed, into disjoint ``forget``/``retain``
index sets covering the training set, plus the test indices to audit on.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from typing import NamedTuple

import numpy as np

from jaxunlearn.data.datasets import Dataset

KINDS = ("random", "class")
FIELDS = ("kind", "fraction", "count", "classes")


@dataclasses.dataclass(frozen=True)
class ForgetSpec:
    """A deletion request.

    Attributes:
      kind: ``"random"`` (a random subset of training examples) or ``"class"`` (whole classes).
      fraction: for ``random``, the fraction of training examples to forget, in (0, 1).
      count: for ``random``, the number of examples to forget (instead of ``fraction``).
      classes: for ``class``, the class labels to forget.
    """

    kind: str
    fraction: float | None = None
    count: int | None = None
    classes: tuple[int, ...] = ()

    @classmethod
    def from_config(cls, cfg) -> ForgetSpec:
        """From a mapping with ``kind`` and ``fraction``/``count``/``classes``.

        Raises:
          ValueError: ``cfg`` has a key that is not a field (a typo such as ``fractoin``), with
            the closest valid key.
        """
        get = cfg.get if hasattr(cfg, "get") else lambda k, d=None: getattr(cfg, k, d)
        keys = list(cfg.keys()) if hasattr(cfg, "keys") else []
        unknown = [k for k in keys if k not in FIELDS]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(str(key), FIELDS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise ValueError(f"Unknown forget spec key {key!r}{hint} Valid keys: {list(FIELDS)}.")
        classes = get("classes", ()) or ()
        if isinstance(classes, numbers.Number | str):
            classes = (classes,)
        count = get("count", None)
        # Whole numbers become ints (a config may say 40.0); anything else is kept as given, so
        # that validate rejects it instead of int() truncating it.
        return cls(
            kind=get("kind"),
            fraction=get("fraction", None),
            count=int(count) if _is_integral(count) else count,
            classes=tuple(int(c) if _is_integral(c) else c for c in classes),
        )


class Split(NamedTuple):
    """Index sets of one forget scenario.

    Attributes:
      forget: indices into the training set to forget.
      retain: the other training indices (disjoint from ``forget``; together they cover it).
      test: indices into the test set used for test accuracy: all of it for random forgetting,
        the examples of the remaining classes for class forgetting.
      test_forget: test indices of the forgotten classes (empty for random forgetting).
      classes: the forgotten classes of a class-wise request (empty for random forgetting).
    """

    forget: np.ndarray
    retain: np.ndarray
    test: np.ndarray
    test_forget: np.ndarray
    classes: tuple[int, ...] = ()


def _is_integral(value) -> bool:
    """An integer (a float only when it is a whole number, e.g. ``40.0`` read from a config)."""
    if isinstance(value, bool | np.bool_):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer()


def check_fields(spec: ForgetSpec) -> None:
    """Rejects a spec that is wrong whatever the dataset: an unknown kind, a count or class that
    is not an integer (``count=3.7`` is not rounded), a fraction that is not a number, or a field
    the kind does not use (a random spec with ``classes``, a class spec with a fraction/count).
    """
    if spec.kind not in KINDS:
        raise ValueError(f"Unknown forget kind {spec.kind!r}; valid kinds: {list(KINDS)}")
    if spec.kind == "random":
        if spec.classes:
            raise ValueError(
                f"A random forget spec does not use `classes` (got {tuple(spec.classes)}); "
                "drop it, or use kind='class' to forget whole classes."
            )
        if spec.fraction is not None and (
            isinstance(spec.fraction, bool | np.bool_)
            or not isinstance(spec.fraction, numbers.Real)
        ):
            raise ValueError(
                f"forget `fraction` must be a number in (0, 1); got {spec.fraction!r}."
            )
        if spec.count is not None and not _is_integral(spec.count):
            raise ValueError(
                f"forget `count` must be a whole number of examples; got {spec.count!r}."
            )
    else:
        unused = [
            f"{k}={v!r}" for k in ("fraction", "count") if (v := getattr(spec, k)) is not None
        ]
        if unused:
            raise ValueError(
                f"A class forget spec does not use {', '.join(unused)}; drop it, or use "
                "kind='random' to forget a random subset."
            )
        if isinstance(spec.classes, str | bytes) or not isinstance(
            spec.classes, tuple | list | np.ndarray
        ):
            raise ValueError(
                f"forget `classes` must be a tuple of class labels; got {spec.classes!r}."
            )
        bad = [c for c in spec.classes if not _is_integral(c)]
        if bad:
            raise ValueError(f"forget `classes` must be integer class labels; got {bad}.")


def validate(spec: ForgetSpec, dataset: Dataset) -> None:
    """Rejects impossible requests before any compute, naming the offending setting."""
    n = len(dataset.y_train)
    check_fields(spec)
    if spec.kind == "random":
        if (spec.fraction is None) == (spec.count is None):
            raise ValueError("A random forget spec needs exactly one of `fraction` or `count`.")
        if spec.fraction is not None and not 0.0 < spec.fraction < 1.0:
            raise ValueError(f"forget `fraction` must lie in (0, 1); got {spec.fraction}.")
        size = int(round(spec.fraction * n)) if spec.fraction is not None else int(spec.count)
        if size < 1:
            raise ValueError(
                f"The forget set is empty (fraction={spec.fraction}, "
                f"count={spec.count}, {n} training examples)."
            )
        if size >= n:
            raise ValueError(
                f"forget `count`={size} leaves no retain data ({n} training examples)."
            )
    else:
        if dataset.task != "classification":
            raise ValueError(
                f"Class forgetting needs a classification dataset; {dataset.name!r} "
                "is a regression dataset."
            )
        if not spec.classes:
            raise ValueError("A class forget spec needs at least one class in `classes`.")
        bad = [c for c in spec.classes if not 0 <= c < dataset.num_classes]
        if bad:
            raise ValueError(
                f"forget `classes` {bad} do not exist in {dataset.name!r}; valid "
                f"classes: 0..{dataset.num_classes - 1}."
            )
        if set(range(dataset.num_classes)) <= set(spec.classes):
            raise ValueError("forget `classes` covers every class: nothing would be retained.")


def make_split(dataset: Dataset, spec: ForgetSpec, *, seed: int = 0) -> Split:
    """Forget/retain/test indices for ``spec``, deterministic from ``seed``."""
    validate(spec, dataset)
    n = len(dataset.y_train)
    all_test = np.arange(len(dataset.y_test))
    if spec.kind == "random":
        size = int(round(spec.fraction * n)) if spec.fraction is not None else int(spec.count)
        rng = np.random.default_rng(seed)
        forget = np.sort(rng.choice(n, size=size, replace=False))
        test, test_forget = all_test, all_test[:0]
    else:
        in_classes = np.isin(dataset.y_train, spec.classes)
        forget = np.flatnonzero(in_classes)
        test_in = np.isin(dataset.y_test, spec.classes)
        test, test_forget = all_test[~test_in], all_test[test_in]
    retain = np.setdiff1d(np.arange(n), forget)
    return Split(
        forget.astype(np.int32),
        retain.astype(np.int32),
        test.astype(np.int32),
        test_forget.astype(np.int32),
        tuple(sorted(int(c) for c in spec.classes)) if spec.kind == "class" else (),
    )


def describe(spec: ForgetSpec) -> str:
    if spec.kind == "random":
        return (
            f"random {spec.fraction:.0%}" if spec.fraction is not None else f"random {spec.count}"
        )
    return "class " + ",".join(map(str, spec.classes))
