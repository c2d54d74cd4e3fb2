"""`beast console` in a real terminal: tmux runs it, keys roll back, the screen and the CLI agree.

A tmux server of the test's own (`-S`, a socket in a fresh directory) runs the console at
120×40 on a workspace with production v2.0 (v1.0 before it). `send-keys` presses `R` and
confirms with `y`; `capture-pane -p` shows the dialog and the result; `beast status --json`
must say the same; and killing the tmux session must end the console process within 2 s.
A second session at 80×24, the design size, reads every key of the footer and the one-line
header off the real terminal.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import Workspace
from tests.helpers import REPO, beast

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(TMUX is None, reason="tmux is not installed (CI installs it)")
SESSION = "console"


class Tmux:
    """One private tmux server (its own socket file), driven through the tmux command."""

    def __init__(self, socket: Path) -> None:
        assert TMUX is not None
        self.base = [TMUX, "-S", str(socket)]

    def __call__(self, *args: str) -> str:
        done = subprocess.run(
            [*self.base, *args], capture_output=True, text=True, timeout=10, check=False
        )
        assert done.returncode == 0, f"tmux {' '.join(args)}: {done.stderr.strip()}"
        return done.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", SESSION)

    def wait_for(self, *texts: str, timeout_s: float = 60) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            shown = self.screen()
            if all(text in shown for text in texts):
                return shown
            assert time.monotonic() < deadline, f"never showed {texts}:\n{shown}"
            time.sleep(0.1)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    # A short directory of our own: tmux leaves its socket file behind, and a Unix socket's
    # path must fit in 108 bytes (pytest's tmp_path may not).
    home = Path(tempfile.mkdtemp(prefix="beast-tmux-"))
    server = Tmux(home / "sock")
    try:
        yield server
    finally:
        subprocess.run([*server.base, "kill-server"], capture_output=True, timeout=10, check=False)
        shutil.rmtree(home, ignore_errors=True)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that is not us counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _production(ws: Workspace) -> str:
    done = beast(ws, "status", "--json")
    assert done.returncode == 0, done.stderr
    (prod,) = [d for d in json.loads(done.stdout)["deployments"] if d["role"] == "production"]
    return str(prod["version"])


def test_rollback_in_tmux_then_kill_session_ends_the_console(
    serving: Workspace, tmux: Tmux
) -> None:
    command = [sys.executable, "-m", "engine.cli.main", "--workspace", str(serving.root), "console"]
    # The command as separate arguments: tmux execs it without a shell, so the pane's pid
    # is the console's own.
    tmux("new-session", "-d", "-s", SESSION, "-x", "120", "-y", "40", "-c", str(REPO), *command)
    pid = int(tmux("list-panes", "-t", SESSION, "-F", "#{pane_pid}").split()[0])
    tmux.wait_for("Deployments", "v2.0", "production")

    tmux("send-keys", "-t", SESSION, "R")
    # Both at once: a capture can land on a frame still being drawn (or before a resize).
    tmux.wait_for("v2.0 → v1.0", "Cancel", timeout_s=15)
    assert _production(serving) == "v2.0"  # nothing happens before the confirmation
    tmux("send-keys", "-t", SESSION, "y")
    shown = tmux.wait_for("rolled back", timeout_s=15)
    assert "v1.0" in shown
    assert _production(serving) == "v1.0"

    tmux("kill-session", "-t", SESSION)
    start = time.monotonic()
    while _alive(pid) and time.monotonic() - start < 2.0:
        time.sleep(0.02)
    assert not _alive(pid), "the console outlived its tmux session by more than 2 s"


KEYS_AT_80 = (
    "? Help",
    "/ Filter",
    "z Zoom",
    "p Pause",
    "^r Refresh",
    "H History",
    "^p palette",
    "R Rollback",
    "P Promote",
    "A Abort",
    "T Retrain",
    "D Deploy",
    "I Report",
    "q Quit",
)


def test_every_key_shows_at_80x24_and_the_header_is_one_line(
    serving: Workspace, tmux: Tmux
) -> None:
    command = [sys.executable, "-m", "engine.cli.main", "--workspace", str(serving.root), "console"]
    tmux("new-session", "-d", "-s", SESSION, "-x", "80", "-y", "24", "-c", str(REPO), *command)
    shown = tmux.wait_for("Deployments", "v2.0", "q Quit", "health")
    lines = shown.rstrip("\n").split("\n")
    assert len(lines) == 24, shown
    footer = "\n".join(lines[-2:])  # what looks, then what acts: two lines at 80 columns
    for key in KEYS_AT_80:
        assert key in footer, f"{key!r} not in the footer:\n{shown}"
    assert "engine" in lines[0] and "health" in lines[0], shown
    assert lines[1].startswith("╭─ 1 Deployments"), shown  # the header took one line
    assert all(len(line) <= 80 for line in lines)
    tmux("send-keys", "-t", SESSION, "P")  # no A/B test: the key says so
    tmux.wait_for("P: no A/B test is running", timeout_s=15)
    tmux("send-keys", "-t", SESSION, "q")
