"""Datasets, forget specifications, batching and on-device augmentation."""

from jaxunlearn.data import (
    augment,  # noqa: F401  (on-device augmentation: data.augment.get)
    tfds_datasets,  # noqa: F401  (registers the TFDS loaders)
)
from jaxunlearn.data.datasets import Dataset, check_name, diabetes, digits, load, names, register
from jaxunlearn.data.forget import ForgetSpec, Split, make_split, validate

__all__ = [
    "Dataset",
    "ForgetSpec",
    "Split",
    "check_name",
    "diabetes",
    "digits",
    "load",
    "make_split",
    "names",
    "register",
    "validate",
]
