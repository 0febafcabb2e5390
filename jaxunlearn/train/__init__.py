"""The one training loop (single models, ensembles, data parallel) and checkpoints."""

from jaxunlearn.train import multihost, sharding
from jaxunlearn.train.loop import (
    FitResult,
    Progress,
    Stream,
    check_batch_sizes,
    data_mesh,
    fit,
    make_stream,
    sample_batch,
    scan_steps,
    steps_per_epoch,
)

__all__ = [
    "FitResult",
    "Progress",
    "Stream",
    "check_batch_sizes",
    "data_mesh",
    "fit",
    "make_stream",
    "multihost",
    "sample_batch",
    "scan_steps",
    "sharding",
    "steps_per_epoch",
]
