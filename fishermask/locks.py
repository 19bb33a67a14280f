"""A lock per checkpoint folder, so the same run cannot be launched twice at once.

The lock is an advisory ``fcntl.flock`` on ``<checkpoint folder>.lock``: the kernel releases it
when the holder exits in any way (crash, SIGKILL, power loss), so a lock file left behind never
blocks a later run.  The file holds the holder's pid, host and start time, which the refusal
message names.  Also used around MLflow's first-time sqlite store creation.

:func:`scratch_dir` gives a process a temporary folder that a later process removes if this one
was killed before it could (a trial's working copy of its checkpoint, files on their way to
MLflow): folders named by their owner's pid, swept when that pid is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

from fishermask.errors import FishermaskError


class AlreadyRunning(FishermaskError):
    """Another process holds the lock of this run."""


class RunLock:
    def __init__(self, path: str | Path, what: str):
        self.path = Path(path)
        self.what = what
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise AlreadyRunning(
                f"{self.what} is already running ({holder}; lock {self.path}). Wait for it to "
                f"finish or stop it first; a lock left by a crashed run is released "
                f"automatically") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on host {info['host']}, started {info['started']}"
    except (ValueError, KeyError, OSError):
        return "by another process"


@contextlib.contextmanager
def blocking_lock(path: str | Path, timeout_s: float = 120.0) -> Iterator[None]:
    """Wait (up to ``timeout_s``) for an exclusive lock on ``path``; for short critical sections
    such as creating a store for the first time."""
    path = Path(path)
    fd = (os.open(path, os.O_RDONLY) if path.is_dir()
          else os.open(path, os.O_RDWR | os.O_CREAT, 0o644))
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise FishermaskError(f"waited {timeout_s:.0f} s for the lock {path}; is "
                                          f"another fishermask process stuck?") from None
                time.sleep(0.1)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


SCRATCH = "fishermask-scratch"
"""The folder (in the system's temporary folder) that holds every :func:`scratch_dir`."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def scratch_dir(prefix: str, root: Optional[str | Path] = None) -> Path:
    """A new folder ``<root>/<prefix><pid>-<random>`` (``root``: ``fishermask-scratch`` in the
    system's temporary folder), after removing the folders there whose process has ended (killed
    before its own clean-up ran).  The caller removes its folder when done."""
    base = Path(root) if root is not None else Path(tempfile.gettempdir()) / SCRATCH
    base.mkdir(parents=True, exist_ok=True)
    for old in base.iterdir():
        pid = old.name.rpartition("-")[0].removeprefix(prefix) if old.name.startswith(prefix) \
            else ""
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))

