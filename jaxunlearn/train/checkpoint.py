"""Orbax checkpointing of variables and rule state: preemption-safe, resumable and verified.

Every saved step gets a checksum file beside it (``checksum_<step>.json``: the SHA-256 of each
leaf's bytes, its dtype and shape), written atomically before orbax writes the step. A restore
reads the newest step, re-hashes what orbax returned and checks that every floating leaf is
finite. A step that fails (orbax cannot read it, e.g. a truncated file; a leaf differs from its
checksum, e.g. bytes overwritten inside an array file; its checksum file is damaged; NaN or inf
values) is set aside as ``<step>.damaged`` (or ``<step>.nonfinite``) with a warning naming it, and
the previous step is tried. When no step is intact a one-line :class:`DamagedCheckpointError`
names the directory and what is wrong with each step; when every step was read intact but holds
NaN or inf (a run that diverged), the run starts over from its initial state, so it diverges
again and is reported as diverged instead of resuming a broken model. Steps written before
checksums existed restore with a warning that they are unverified.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxunlearn.core.types import PyTree
from jaxunlearn.train import multihost, records

CHECKSUM_PREFIX = "checksum_"
_FORMAT = 1


class DamagedCheckpointError(OSError):
    """No intact step is left in a checkpoint directory."""


class DamagedCheckpointWarning(UserWarning):
    """A checkpoint step was damaged (or unverifiable) and was set aside or restored unverified."""


def manager(directory: str, *, max_to_keep: int = 2) -> ocp.CheckpointManager:
    """A ``CheckpointManager`` over ``directory`` (created if missing), keeping the last steps."""
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    return ocp.CheckpointManager(
        directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    )


def tree_checksums(tree: PyTree) -> dict[str, dict]:
    """``{leaf path: {"dtype", "shape", "sha256"}}`` of the host bytes of every leaf of ``tree``.

    A leaf spread over other processes' devices is gathered (a collective: every process calls
    this for the same tree). Typed PRNG keys are hashed through their key data.
    """
    sums = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        host = _host(leaf)
        sums[jax.tree_util.keystr(path)] = {
            "dtype": str(getattr(leaf, "dtype", host.dtype)),
            "shape": list(host.shape),
            "sha256": _sha256(host),
        }
    return sums


def checksum_path(mngr: ocp.CheckpointManager, step: int) -> str:
    """Where the checksum of ``step`` of ``mngr`` is stored (beside the step's directory)."""
    return os.path.join(str(mngr.directory), f"{CHECKSUM_PREFIX}{int(step)}.json")


def save(mngr: ocp.CheckpointManager, step: int, tree: PyTree) -> None:
    """Saves ``tree`` at ``step`` (asynchronously; call ``wait_until_finished`` before exit).

    The checksum file is written (atomically, by the primary process) before orbax starts, so
    every step orbax finalizes has one; checksum files of steps orbax no longer keeps are removed.
    """
    sums = tree_checksums(tree)
    if multihost.is_primary():
        _prune_checksums(mngr)
        records.write_json(
            checksum_path(mngr, step), {"format": _FORMAT, "step": int(step), "leaves": sums}
        )
    mngr.save(step, args=ocp.args.StandardSave(tree), force=True)


def restore_latest(mngr: ocp.CheckpointManager, like: PyTree) -> tuple[int, PyTree] | None:
    """Restores the newest intact checkpoint into the structure of ``like``.

    Steps are tried newest first. A step that orbax cannot read, whose leaves differ from their
    checksum, or which holds NaN or inf in a floating leaf is set aside (renamed
    ``<step>.damaged`` or ``<step>.nonfinite``) with a :class:`DamagedCheckpointWarning` naming it,
    and the previous step is tried.

    Returns:
      ``(step, tree)``; ``None`` when there is no checkpoint, or when every step was read intact
      but is non-finite (a diverged run: it is then rerun from the start, with a warning).

    Raises:
      DamagedCheckpointError: (an ``OSError``) no step is intact and at least one is damaged; the
        one-line message names the directory and what is wrong with each step, the error of the
        last step tried is chained.
    """
    steps = sorted(mngr.all_steps(), reverse=True)
    if not steps:
        return None
    if multihost.is_primary():
        _prune_checksums(mngr)
    directory = str(mngr.directory)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    failed: list[tuple[int, str, str]] = []  # (step, reason, "damaged" | "nonfinite")
    cause: BaseException | None = None
    for step in steps:
        try:
            tree = mngr.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:  # orbax/tensorstore errors have many types
            cause = e
            failed.append((step, f"orbax cannot read it ({_one_line(e)})", "damaged"))
            continue
        reason, kind = _verify(mngr, step, tree)
        if reason is None:
            if failed:
                _set_aside(mngr, failed)
                warnings.warn(
                    f"{_describe(directory, failed)}; resuming from step {step} "
                    f"({os.path.join(directory, str(step))}).",
                    DamagedCheckpointWarning,
                    stacklevel=2,
                )
            return step, tree
        failed.append((step, reason, kind))
    if all(kind == "nonfinite" for _, _, kind in failed):
        _set_aside(mngr, failed)
        warnings.warn(
            f"{_describe(directory, failed)}; no finite step is left, so the run starts over.",
            DamagedCheckpointWarning,
            stacklevel=2,
        )
        return None
    raise DamagedCheckpointError(
        f"No checkpoint in {directory} can be restored: "
        + "; ".join(f"step {s}: {reason}" for s, reason, _ in failed)
        + ". Move or delete the directory to start over."
    ) from cause


def save_tree(directory: str, tree: PyTree) -> None:
    """Saves a finished artefact (e.g. trained variables) to ``directory`` in one call."""
    mngr = manager(directory, max_to_keep=1)
    if 0 in mngr.all_steps():  # overwrite an earlier artefact
        mngr.delete(0)
    save(mngr, 0, tree)
    mngr.wait_until_finished()
    mngr.close()


def load_tree(directory: str, like: PyTree) -> PyTree | None:
    """Loads what :func:`save_tree` wrote, or ``None`` if nothing is there.

    Raises:
      DamagedCheckpointError: what is there is damaged (see :func:`restore_latest`).
    """
    if not os.path.isdir(directory):
        return None
    mngr = manager(directory, max_to_keep=1)
    try:
        restored = restore_latest(mngr, like)
    finally:
        mngr.close()
    return None if restored is None else restored[1]


# Helpers ------------------------------------------------------------------------------------


def _host(leaf) -> np.ndarray:
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        leaf = jax.random.key_data(leaf)
    return multihost.fetch(leaf)


def _sha256(host: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(host).reshape(-1).view(np.uint8)).hexdigest()


def _verify(mngr: ocp.CheckpointManager, step: int, tree: PyTree) -> tuple[str | None, str]:
    """``(None, "")`` when the restored ``tree`` of ``step`` is intact, else ``(reason, kind)``."""
    path = checksum_path(mngr, step)
    try:
        saved = records.read_json(path, default=None)
    except (records.DamagedFileError, OSError) as e:
        return f"its checksum file is damaged ({_one_line(e)})", "damaged"
    if saved is not None and not (
        isinstance(saved, dict) and isinstance(saved.get("leaves"), dict)
    ):
        return f"its checksum file {path} is damaged (no leaves)", "damaged"
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    if saved is not None:
        expected = saved["leaves"]
        names = [jax.tree_util.keystr(p) for p, _ in leaves]
        if sorted(names) != sorted(expected):
            return (
                f"its leaves {sorted(names)} differ from those of its checksum {sorted(expected)}"
            ), "damaged"
    for keypath, leaf in leaves:
        name = jax.tree_util.keystr(keypath)
        host = _host(leaf)
        if saved is not None:
            want = saved["leaves"][name]
            got = {"dtype": str(getattr(leaf, "dtype", host.dtype)), "shape": list(host.shape)}
            if got["dtype"] != want.get("dtype") or got["shape"] != want.get("shape"):
                return (
                    f"leaf {name} is {got['dtype']}{got['shape']} but was saved as "
                    f"{want.get('dtype')}{want.get('shape')}"
                ), "damaged"
            if _sha256(host) != want.get("sha256"):
                return f"the data of leaf {name} does not match its checksum", "damaged"
        if np.issubdtype(host.dtype, np.inexact) and not np.isfinite(host).all():
            return f"leaf {name} holds NaN or inf", "nonfinite"
    if saved is None:
        warnings.warn(
            f"Checkpoint {os.path.join(str(mngr.directory), str(step))} has no checksum file "
            f"({os.path.basename(path)}; written before checksums were stored): restored "
            "unverified.",
            DamagedCheckpointWarning,
            stacklevel=3,
        )
    return None, ""


def _set_aside(mngr: ocp.CheckpointManager, failed: list[tuple[int, str, str]]) -> None:
    """Renames failed steps to ``<step>.<kind>`` (their checksum file moves inside), so that the
    resumed run can save those steps again and the damaged data stays for inspection."""
    directory = str(mngr.directory)
    multihost.sync("jaxunlearn_checkpoint_set_aside_start")
    if multihost.is_primary():
        for step, _, kind in failed:
            source = os.path.join(directory, str(step))
            target = f"{source}.{kind}"
            if os.path.isdir(target):
                shutil.rmtree(target)
            if os.path.exists(source):
                os.replace(source, target)
                checksum = checksum_path(mngr, step)
                if os.path.exists(checksum):
                    os.replace(checksum, os.path.join(target, os.path.basename(checksum)))
    multihost.sync("jaxunlearn_checkpoint_set_aside_done")
    mngr.reload()


def _prune_checksums(mngr: ocp.CheckpointManager) -> None:
    """Removes checksum files of steps older than the newest one kept that orbax has deleted
    (a newer step may still be being written, so nothing above the newest kept step goes)."""
    kept = set(mngr.all_steps())
    if not kept:
        return
    directory = str(mngr.directory)
    for name in os.listdir(directory):
        if not (name.startswith(CHECKSUM_PREFIX) and name.endswith(".json")):
            continue
        try:
            step = int(name[len(CHECKSUM_PREFIX) : -len(".json")])
        except ValueError:
            continue
        if step not in kept and step < max(kept):
            try:
                os.remove(os.path.join(directory, name))
            except FileNotFoundError:
                pass


def _describe(directory: str, failed: list[tuple[int, str, str]]) -> str:
    parts = [
        f"Checkpoint {os.path.join(directory, str(step))} is {kind} ({reason}); set aside as "
        f"{os.path.join(directory, f'{step}.{kind}')}"
        for step, reason, kind in failed
    ]
    return "; ".join(parts)


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    text = f"{type(error).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."
