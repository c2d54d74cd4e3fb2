"""Leave when the terminal is gone: SIGHUP, or (SIGHUP ignored) a hung-up or lost tty.

A Textual app killed by SIGHUP's default action runs no cleanup, and with SIGHUP ignored
(`nohup`) it keeps running against a dead tty and spins. The watchdog turns SIGHUP into an
orderly exit and, every half second, checks that stdin has not hung up, that stdout is still
a terminal, and that the parent (the shell or sshd) is still the same process. If the orderly
exit has not finished within a second, it ends the process: a console with no terminal has no
one to serve.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

GONE_EXIT_CODE = 129  # 128 + SIGHUP, as a shell reports a hung-up job


def terminal_gone(stdin_fd: int, stdout_fd: int, parent: int) -> str | None:
    """Why the terminal is gone, or None while it is there."""
    if os.getppid() != parent:
        return "parent process exited"
    try:
        if not os.isatty(stdout_fd):
            return "stdout is no longer a terminal"
    except OSError:
        return "stdout closed"
    poller = select.poll()
    poller.register(stdin_fd, select.POLLHUP | select.POLLERR | select.POLLNVAL)
    for _, events in poller.poll(0):
        if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
            return "terminal hung up"
    return None


class Watchdog:
    """Calls `on_gone(reason)` once when the terminal goes; ends the process if that stalls."""

    def __init__(
        self,
        on_gone: Callable[[str], None],
        *,
        every_s: float = 0.5,
        grace_s: float = 1.0,
        stdin_fd: int | None = None,
        stdout_fd: int | None = None,
    ) -> None:
        self._on_gone = on_gone
        self._every_s = every_s
        self._grace_s = grace_s
        self._stdin = sys.__stdin__.fileno() if stdin_fd is None and sys.__stdin__ else stdin_fd
        self._stdout = (
            sys.__stdout__.fileno() if stdout_fd is None and sys.__stdout__ else stdout_fd
        )
        self._parent = os.getppid()
        self._stop = threading.Event()
        self._fired = threading.Event()
        self._previous: Callable[[int, FrameType | None], object] | int | None = None

    def start(self) -> Watchdog:
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGHUP)
            if previous is not signal.SIG_IGN:  # nohup asked to ignore it: the poll decides
                self._previous = previous
                signal.signal(signal.SIGHUP, self._on_signal)
        threading.Thread(target=self._watch, name="terminal-watchdog", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signal.SIGHUP, self._previous)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._gone("SIGHUP")

    def _watch(self) -> None:
        if self._stdin is None or self._stdout is None:
            return
        while not self._stop.wait(self._every_s):
            reason = terminal_gone(self._stdin, self._stdout, self._parent)
            if reason is not None:
                self._gone(reason)
                return

    def _gone(self, reason: str) -> None:
        if self._fired.is_set():
            return
        self._fired.set()
        threading.Thread(target=self._deadline, name="terminal-deadline", daemon=True).start()
        with contextlib.suppress(Exception):
            self._on_gone(reason)

    def _deadline(self) -> None:
        if not self._stop.wait(self._grace_s):
            os._exit(GONE_EXIT_CODE)
