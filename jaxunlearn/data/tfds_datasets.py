"""TFDS image-classification datasets as in-memory arrays: MNIST, Fashion-MNIST, CIFAR, SVHN.

The benchmarks of the unlearning literature (e.g. CIFAR-10/100 and SVHN in Jia et al., 2023,
"Model Sparsity Can Simplify Machine Unlearning", and Fan et al., 2024, "SalUn: Empowering Machine
Unlearning via Gradient-based Weight Saliency in Both Image Classification and Generation") are
small enough to hold whole in memory, so each loader reads a TFDS split once into NumPy and
returns a :class:`~jaxunlearn.data.datasets.Dataset`.

Data are read through ``tfds`` random-access data sources (ArrayRecord; no TensorFlow needed at run
time). A dataset prepared in the default TFRecord format is read with ``tf.data`` instead, which
needs TensorFlow. Nothing is ever downloaded at run time: a dataset that is not prepared raises
:class:`DatasetNotPreparedError` with the command that prepares it on a machine with internet.

>>> from jaxunlearn import data
>>> ds = data.load("cifar10", data_dir="/data/tfds", max_train=5000)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from jaxunlearn.data.datasets import Dataset, register


class DatasetNotPreparedError(RuntimeError):
    """A TFDS dataset is not prepared in the data directory (and is never downloaded here)."""


class TfdsSpec(NamedTuple):
    """How a registry name maps onto a TFDS builder.

    Attributes:
      tfds_name: the TFDS builder name.
      num_classes: number of label classes.
      train_split: TFDS split used as the training set.
      test_split: TFDS split used as the test set.
    """

    tfds_name: str
    num_classes: int
    train_split: str = "train"
    test_split: str = "test"


SPECS: dict[str, TfdsSpec] = {
    "mnist": TfdsSpec("mnist", 10),
    "fashion_mnist": TfdsSpec("fashion_mnist", 10),
    "cifar10": TfdsSpec("cifar10", 10),
    "cifar100": TfdsSpec("cifar100", 100),
    "svhn_cropped": TfdsSpec("svhn_cropped", 10),
}


def prepare_command(tfds_name: str, data_dir: str | None = None) -> str:
    """The shell command that downloads and prepares ``tfds_name`` in ArrayRecord format."""
    where = repr(data_dir) if data_dir else "None"
    return (
        f'python -c "import tensorflow_datasets as tfds; tfds.builder({tfds_name!r}, '
        f"data_dir={where}, file_format='array_record').download_and_prepare()\""
    )


def read_split(builder: Any, split: str, limit: int | None = None) -> dict[str, np.ndarray]:
    """Reads the first ``limit`` examples (all if ``None``) of one split of a TFDS builder.

    Args:
      builder: a ``tfds.core.DatasetBuilder``.
      split: split name, e.g. ``"train"``.
      limit: number of leading examples to read.

    Returns:
      ``{"image": uint8 [n, H, W, C], "label": int [n]}``.

    Raises:
      DatasetNotPreparedError: if the dataset is not prepared under ``builder.data_dir``.
    """
    import tensorflow_datasets as tfds

    try:
        source = builder.as_data_source(split=split)
    except Exception as err:  # TFDS raises KeyError / NotImplementedError / ... depending on state.
        if not builder.is_prepared():
            raise _not_prepared(builder) from err
        if builder.info.file_format in tfds.core.FileFormat.with_random_access():
            raise
        # Prepared in a format without random access (TFRecord): read it with tf.data.
        return _read_split_with_tensorflow(builder, split, limit)
    n = len(source) if limit is None else min(int(limit), len(source))
    shape = tuple(builder.info.features["image"].shape)
    images, labels = np.zeros((n, *shape), np.uint8), np.zeros((n,), np.int64)
    # One example at a time, into preallocated arrays: TFDS's batched ``__getitems__`` is no faster
    # here (image decoding dominates) and is broken under ``tfds.testing.mock_data``.
    for i in range(n):
        example = source[i]
        images[i], labels[i] = example["image"], example["label"]
    return {"image": images, "label": labels}


def _read_split_with_tensorflow(builder: Any, split: str, limit: int | None):
    import tensorflow_datasets as tfds

    try:
        import tensorflow  # noqa: F401  (tf.data reads TFRecord files)
    except ImportError as err:
        raise DatasetNotPreparedError(
            f"{builder.name} is prepared at {builder.data_dir} as TFRecord files, which need "
            "TensorFlow to read. Install tensorflow-cpu, or prepare it again in ArrayRecord "
            f"format:\n  {prepare_command(builder.name, _root(builder))}"
        ) from err
    if limit is not None:
        split = f"{split}[:{int(limit)}]"
    arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    return {"image": arrays["image"], "label": arrays["label"]}


def _root(builder: Any) -> str | None:
    """The data_dir a user passes for ``builder`` (``builder.data_dir`` includes name/version)."""
    root = getattr(builder, "data_dir_root", None)
    return None if root is None else str(root)


def _not_prepared(builder: Any) -> DatasetNotPreparedError:
    root = _root(builder)
    return DatasetNotPreparedError(
        f"TFDS dataset {builder.name!r} is not prepared under data_dir={root!r} (looked in "
        f"{builder.data_dir}), and jaxunlearn never downloads at run time. On a machine with "
        f"internet run\n  {prepare_command(builder.name, root)}\nthen copy that data_dir "
        "here and pass it with --config.data_dir=/path/to/tensorflow_datasets (or "
        "data_dir=... in Python)."
    )


def load_tfds(
    name: str,
    *,
    data_dir: str | None = None,
    max_train: int | None = None,
    max_test: int | None = None,
) -> Dataset:
    """Loads a registered TFDS image dataset into memory.

    Args:
      name: one of ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``, ``svhn_cropped``.
      data_dir: TFDS data directory; ``None`` uses TFDS's default (``~/tensorflow_datasets``).
      max_train: keep only the first ``max_train`` training examples.
      max_test: keep only the first ``max_test`` test examples.

    Returns:
      A :class:`Dataset` with images ``[n, H, W, C]`` float32 in [0, 1] and int32 labels.

    Raises:
      DatasetNotPreparedError: if the dataset is not prepared under ``data_dir``.
    """
    import tensorflow_datasets as tfds

    spec = SPECS[name]
    builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
    train = read_split(builder, spec.train_split, max_train)
    test = read_split(builder, spec.test_split, max_test)
    return Dataset(
        name,
        _images(train["image"]),
        train["label"].astype(np.int32),
        _images(test["image"]),
        test["label"].astype(np.int32),
        num_classes=spec.num_classes,
    )


def _images(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / np.float32(255.0)


def _loader(name: str):
    def loader(
        *, data_dir: str | None = None, max_train: int | None = None, max_test: int | None = None
    ) -> Dataset:
        return load_tfds(name, data_dir=data_dir, max_train=max_train, max_test=max_test)

    loader.__name__ = name
    loader.__qualname__ = name
    loader.__doc__ = (
        f"``{SPECS[name].tfds_name}`` from TFDS ({SPECS[name].num_classes} classes); "
        "see :func:`load_tfds` for the arguments."
    )
    return loader


mnist = _loader("mnist")
fashion_mnist = _loader("fashion_mnist")
cifar10 = _loader("cifar10")
cifar100 = _loader("cifar100")
svhn_cropped = _loader("svhn_cropped")

for _name, _fn in [
    ("mnist", mnist),
    ("fashion_mnist", fashion_mnist),
    ("cifar10", cifar10),
    ("cifar100", cifar100),
    ("svhn_cropped", svhn_cropped),
]:
    register(_name, _fn)

__all__ = [
    "SPECS",
    "DatasetNotPreparedError",
    "TfdsSpec",
    "cifar10",
    "cifar100",
    "fashion_mnist",
    "load_tfds",
    "mnist",
    "prepare_command",
    "read_split",
    "svhn_cropped",
]
