"""Orbax checkpointing of variables and rule state, preemption-safe and resumable."""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from jaxunlearn.core.types import PyTree


def manager(directory: str, *, max_to_keep: int = 2) -> ocp.CheckpointManager:
    """A ``CheckpointManager`` over ``directory`` (created if missing) keeping the last few steps."""
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    return ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    )


def save(mngr: ocp.CheckpointManager, step: int, tree: PyTree) -> None:
    """Saves ``tree`` at ``step`` (asynchronously; call ``wait_until_finished`` before exit)."""
    mngr.save(step, args=ocp.args.StandardSave(tree), force=True)


def restore_latest(mngr: ocp.CheckpointManager, like: PyTree) -> tuple[int, PyTree] | None:
    """Restores the latest checkpoint into the structure of ``like``; ``None`` if there is none."""
    step = mngr.latest_step()
    if step is None:
        return None
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return step, mngr.restore(step, args=ocp.args.StandardRestore(abstract))


def save_tree(directory: str, tree: PyTree) -> None:
    """Saves a finished artefact (e.g. trained variables) to ``directory`` in one call."""
    mngr = manager(directory, max_to_keep=1)
    if 0 in mngr.all_steps():  # overwrite an earlier artefact
        mngr.delete(0)
    save(mngr, 0, tree)
    mngr.wait_until_finished()
    mngr.close()


def load_tree(directory: str, like: PyTree) -> PyTree | None:
    """Loads what :func:`save_tree` wrote, or ``None`` if nothing is there."""
    if not os.path.isdir(directory):
        return None
    mngr = manager(directory, max_to_keep=1)
    restored = restore_latest(mngr, like)
    mngr.close()
    return None if restored is None else restored[1]
