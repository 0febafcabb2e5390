"""Datasets, forget specifications and batching."""

from jaxunlearn.data import tfds_datasets  # noqa: F401  (registers the TFDS loaders)
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
