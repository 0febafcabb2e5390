"""Datasets as in-memory arrays: the embedded ``digits`` / ``diabetes`` and TFDS image datasets.

Every dataset is a :class:`Dataset` of NumPy arrays with a fixed train/test split. Small enough
datasets live on the device whole, so batching is an index gather inside the jitted loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np


class Dataset(NamedTuple):
    """A supervised dataset with a fixed train/test split.

    Attributes:
      name: registry name.
      x_train, y_train, x_test, y_test: arrays; images are ``[n, H, W, C]`` float32 in [0, 1].
      num_classes: number of classes (0 for regression; the vocabulary size for a language model).
      task: ``"classification"``, ``"regression"`` or ``"language_model"`` (token arrays,
        ``docs/language_models.md``).
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    task: str = "classification"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_outputs(self) -> int:
        return 1 if self.task == "regression" else self.num_classes


def digits() -> Dataset:
    """scikit-learn's 8x8 handwritten digits (1,797 images, shipped inside scikit-learn).

    A fixed stratified 80/20 split (``random_state=0``); pixels scaled from [0, 16] to [0, 1] and
    shaped ``[n, 8, 8, 1]``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[..., None]
    y = bunch.target.astype(np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, num_classes=10)


def diabetes() -> Dataset:
    """scikit-learn's diabetes regression data (442 patients, 10 features, shipped inside it).

    A fixed 80/20 split (``random_state=0``); features and the target are standardised with the
    training split's statistics.
    """
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    bunch = load_diabetes()
    x = bunch.data.astype(np.float32)
    y = bunch.target.astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, random_state=0)
    mx, sx = x_tr.mean(0), x_tr.std(0) + 1e-8
    my, sy = y_tr.mean(), y_tr.std()
    return Dataset(
        "diabetes",
        (x_tr - mx) / sx,
        (y_tr - my) / sy,
        (x_te - mx) / sx,
        (y_te - my) / sy,
        num_classes=0,
        task="regression",
    )


_REGISTRY: dict[str, Callable[..., Dataset]] = {"digits": digits, "diabetes": diabetes}


def register(name: str, loader: Callable[..., Dataset]) -> None:
    """Adds a dataset loader to the registry."""
    _REGISTRY[name] = loader


def names() -> list[str]:
    """Names of every registered dataset."""
    return sorted(_REGISTRY)


def check_name(name: str) -> None:
    """Raises a ``ValueError`` listing the valid names if ``name`` is unknown."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown dataset {name!r}; valid datasets: {names()}")


def load(name: str, **kwargs) -> Dataset:
    """Loads a registered dataset by name (``digits``, ``diabetes``, ``mnist``, ``cifar10``,
    ...)."""
    check_name(name)
    return _REGISTRY[name](**kwargs)
