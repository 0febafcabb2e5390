"""A workdir lock: one experiment (or sweep) at a time writes a workdir.

Two processes training into the same checkpoints and records race (one crashed on an orbax temp
directory the other removed). :func:`workdir_lock` holds ``workdir/.jaxunlearn.lock`` for the
run: an exclusive ``flock`` on the file, which names the holder (pid, host, start time). A second
process fails at once with :class:`WorkdirLockedError` naming the workdir and the holder.

The kernel releases a ``flock`` when its process dies (``kill -9``, a crash), so a lock file left
by a dead process is free: the next run takes it over with a warning naming the dead holder. On
a filesystem without ``flock`` the file's contents decide: a holder on this host whose pid is not
alive is stale and taken over; any other holder blocks.

In a multi-process job only process 0 takes the lock; the others learn whether it got it
(:func:`jaxunlearn.train.multihost.agree`) and fail with it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
import warnings

from jaxunlearn.train import multihost

LOCK_NAME = ".jaxunlearn.lock"


class WorkdirLockedError(OSError):
    """Another live process holds the workdir."""


class StaleLockWarning(UserWarning):
    """A lock file left by a dead process was taken over."""


def _holder(text: str) -> dict:
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


class _Lock:
    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_NAME)
        self.fd: int | None = None

    def acquire(self) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            flock = True
        except BlockingIOError:
            holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            os.close(fd)
            raise self._locked(holder) from None
        except OSError as e:  # no flock on this filesystem: the contents decide
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                os.close(fd)
                raise
            flock = False
        holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        if holder.get("pid") and (holder.get("pid"), holder.get("host")) != (me["pid"], me["host"]):
            if not flock and (holder.get("host") != me["host"] or _alive(int(holder["pid"]))):
                os.close(fd)
                raise self._locked(holder)
            warnings.warn(
                f"Workdir {self.workdir}: took over the lock {self.path} left by "
                f"{_describe(holder)}, which is no longer running",
                StaleLockWarning,
                stacklevel=3,
            )
        data = json.dumps({**me, "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)
        self.fd = fd

    def _locked(self, holder: dict) -> WorkdirLockedError:
        since = f" since {holder['since']}" if holder.get("since") else ""
        return WorkdirLockedError(
            f"Workdir {self.workdir} is in use by {_describe(holder)}{since} (lock file "
            f"{self.path}); wait for it to finish or use another --workdir"
        )

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)  # an empty lock file is free
        os.close(self.fd)  # releases the flock
        self.fd = None


@contextlib.contextmanager
def workdir_lock(workdir: str):
    """Holds ``workdir``'s lock for the ``with`` block (process 0 of a job takes it).

    Raises:
      WorkdirLockedError: (an ``OSError``) another live process holds it; the message names the
        workdir and the holder's pid and host.
    """
    lock = _Lock(workdir)
    error: BaseException | None = None
    if multihost.is_primary():
        try:
            lock.acquire()
        except OSError as e:
            error = e
    if not bool(multihost.agree(error is None)):
        raise error or WorkdirLockedError(
            f"Workdir {workdir} is in use by another job (process 0 could not lock it)"
        )
    try:
        yield lock
    finally:
        lock.release()
