"""Small host-side files written atomically and read back with errors that name the file.

A result record or checksum file is written to a temporary file in the same directory, flushed
to disk and then renamed over the target (``os.replace`` is atomic on POSIX filesystems), so a
process killed mid-write (``kill -9``, preemption) leaves the previous file intact, never half of
a new one. Reading a damaged file raises :class:`DamagedFileError` naming it, instead of a bare
``JSONDecodeError``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any

_MISSING = object()


class DamagedFileError(ValueError):
    """A file exists but cannot be parsed (truncated, garbled or not the expected format)."""


def write_json(path: str, obj: Any, *, indent: int | None = None) -> None:
    """Writes ``obj`` as JSON to ``path`` atomically; creates the parent directory.

    The JSON is written to a uniquely named temporary file beside ``path`` (so concurrent writers
    never share one), fsynced, and renamed over ``path``. A failure (a value JSON cannot encode, a
    full disk, a kill) leaves ``path`` as it was.
    """
    path = os.path.abspath(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=indent, allow_nan=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync_dir(folder)


def read_json(path: str, default: Any = _MISSING) -> Any:
    """The JSON object in ``path``.

    Args:
      path: the file.
      default: returned when ``path`` does not exist; without it a missing file raises
        ``FileNotFoundError``.

    Raises:
      DamagedFileError: (a ``ValueError``) the file exists but is not valid JSON; the message
        names the file, the original error is chained.
    """
    try:
        with open(path, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        if default is _MISSING:
            raise
        return default
    try:
        return json.loads(text)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise DamagedFileError(f"{path} is damaged (not valid JSON: {e})") from e


def _fsync_dir(folder: str) -> None:
    """Makes a rename in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
