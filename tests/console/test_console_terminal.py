"""The console in a real pseudo-terminal: quits cleanly, and leaves when the terminal goes."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import struct
import sys
import termios
import time

import pytest

from engine import Workspace
from tests.helpers import REPO

READY = b"Deployments"


def spawn(ws: Workspace, *, ignore_hup: bool = False) -> tuple[int, int]:
    """`beast console` on a pty of its own (its controlling terminal); (pid, master fd)."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TEXTUAL")}
    env["TERM"] = "xterm-256color"
    argv = [sys.executable, "-m", "engine.cli.main", "--workspace", str(ws.root), "console"]
    pid, master = pty.fork()
    if pid == 0:  # the child: exec at once
        try:
            os.chdir(REPO)
            if ignore_hup:  # as under nohup: the disposition survives exec
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
            os.execve(sys.executable, [*argv, "--no-mouse"], env)
        finally:
            os._exit(127)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    return pid, master


def read_until(master: int, marker: bytes, timeout_s: float = 60) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout_s
    while marker not in seen:
        assert time.monotonic() < deadline, f"no {marker!r} in {seen[-400:]!r}"
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    return seen


def wait_exit(pid: int, timeout_s: float) -> tuple[float, int | None]:
    """(seconds waited, exit status) — status None if it is still running at the timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return time.monotonic() - start, status
        time.sleep(0.02)
    return time.monotonic() - start, None


def reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def test_q_quits_with_zero_and_restores_the_terminal(registered: Workspace) -> None:
    pid, master = spawn(registered)
    try:
        read_until(master, READY)
        os.write(master, b"q")
        rest = read_until(master, b"\x1b[?1049l", timeout_s=10)  # left the alternate screen
        _, status = wait_exit(pid, 5)
        assert status is not None and os.waitstatus_to_exitcode(status) == 0
        assert b"\x1b[?1049l" in rest
    finally:
        os.close(master)
        reap(pid)


@pytest.mark.parametrize("ignore_hup", [False, True], ids=["sighup", "sighup-ignored"])
def test_the_console_exits_within_2s_when_its_terminal_goes(
    registered: Workspace, ignore_hup: bool
) -> None:
    pid, master = spawn(registered, ignore_hup=ignore_hup)
    try:
        read_until(master, READY)
        os.close(master)  # the terminal goes away: the kernel hangs up the pty
        master = -1
        waited, status = wait_exit(pid, 5)
        assert status is not None, "the console was still running 5 s after its terminal went"
        assert waited < 2.0
    finally:
        if master >= 0:
            os.close(master)
        reap(pid)
