"""One engine per workspace: an `flock` on `<workspace>/.engine.lock` holding the owner's pid.

The kernel releases an flock when its process dies, so a `kill -9` never leaves a stale lock;
a second `beast engine` is refused naming the first one's pid. `running_pid(workspace)` tells
another process (the console, `beast status`, `beast restore`) which engine serves a
workspace, probing the lock without keeping it.

It lives in core, below the daemon that holds it and the store and facade that probe it, so
none of them has to import the server to ask.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time

from engine.core.errors import BeastError
from engine.core.workspace import Workspace

LOCK_FILE = ".engine.lock"
PROBE_GRACE_S = 0.2  # a `running_pid` probe holds the lock for microseconds


class EngineLock:
    """An exclusive `flock` on `<workspace>/.engine.lock`, holding the owner's pid."""

    def __init__(self, workspace: Workspace) -> None:
        self.path = workspace.root / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> EngineLock:
        """Take the lock and write this process's pid in it; refused while another holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise BeastError(f"cannot open {self.path}: {exc.strerror or exc}") from None
        if not _flock_within(fd, fcntl.LOCK_EX, PROBE_GRACE_S):
            owner = _read_pid(fd) or "unknown"
            os.close(fd)
            raise BeastError(
                f"another beast engine (pid {owner}) is serving {self.path.parent}; stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Empty the pid and drop the lock (a no-op when not held)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def running_pid(workspace: Workspace) -> int | None:
    """The pid of the engine holding the workspace's lock, or None when no engine runs.

    It probes with a shared flock on a descriptor of its own, released at once. flock locks
    belong to the open file description, so opening and closing this separate descriptor
    never drops a lock this process holds (unlike POSIX fcntl locks, which any close of the
    file drops). The probe holds the lock for microseconds; an engine starting at that very
    moment retries for `PROBE_GRACE_S` before it concludes another engine runs.
    """
    path = workspace.root / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None  # never started here (or not readable: nothing to say)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            deadline = time.monotonic() + PROBE_GRACE_S
            while (pid := _read_pid(fd)) is None and time.monotonic() < deadline:
                time.sleep(0.005)  # locked but the pid not written yet: it is starting
            return pid
        return None
    finally:
        os.close(fd)  # drops the probe's shared lock, if it got one


def _flock_within(fd: int, operation: int, grace_s: float) -> bool:
    """Take a flock, retrying for `grace_s` (a `running_pid` probe may hold it briefly)."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None
