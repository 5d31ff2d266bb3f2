"""Exclusive locks on parts of a run: OS file locks (flock), released by the kernel when the process dies.

A SIGKILLed writer therefore never leaves a run stuck; a second writer is refused with one line naming the
process that holds the lock (its pid, host and command, which the holder writes into the lock file).
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import sys
import time
from pathlib import Path

from ..exceptions import LockedError


class FileLock:
    """`with FileLock(path, what):` holds an exclusive lock on `path` (created if missing) or raises LockedError
    (with `wait=True` it waits for the holder instead)."""

    def __init__(self, path: str | Path, what: str, *, wait: bool = False):
        self.path, self.what, self.wait = Path(path), what, wait  # wait: block until free (brief critical sections)
        self._fd: int | None = None

    def acquire(self, wait_seconds: float = 0.0) -> FileLock:
        """Take the lock; if it is held, wait for it (forever with `wait=True`, else up to `wait_seconds`)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                os.close(fd)
                raise LockedError(f"{self.what} is in use by {holder(self.path)}; wait for it to finish or stop it")
            except OSError:
                os.close(fd)
                raise
        info = {"pid": os.getpid(), "host": platform.node(), "command": " ".join(sys.argv)[:200],
                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor drops the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def is_locked(path: str | Path) -> bool:
    """Whether another open file description holds `path`'s lock right now (False if there is no such file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def holder(path: str | Path) -> str:
    """'process 123 on host (ontogeny run ...)' from the lock file, or 'another process' if it cannot be read."""
    try:
        info = json.loads(Path(path).read_text())
        return f"process {info['pid']} on {info['host']} ({info['command']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"
