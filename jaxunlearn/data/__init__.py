"""Datasets, forget specifications, batching and on-device augmentation."""

from jaxunlearn.data import (
    augment,  # noqa: F401  (on-device augmentation: data.augment.get)
    tfds_datasets,  # noqa: F401  (registers the TFDS loaders)
)
from jaxunlearn.data.datasets import Dataset, check_name, diabetes, digits, load, names, register

# Importing fictitious_authors registers it.
from jaxunlearn.data.fictitious_authors import FictitiousAuthors, LanguageModelDataset
from jaxunlearn.data.forget import ForgetSpec, Split, make_split, validate
from jaxunlearn.data.tokenizer import Tokenizer

__all__ = [
    "Dataset",
    "FictitiousAuthors",
    "ForgetSpec",
    "LanguageModelDataset",
    "Split",
    "Tokenizer",
    "check_name",
    "diabetes",
    "digits",
    "load",
    "make_split",
    "names",
    "register",
    "validate",
]
