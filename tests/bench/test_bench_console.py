"""The console: time to first frame (target ≤ 1 s) and CPU refreshing live (≤ 10% of a core).

Both run the real `beast console` as a process on a pseudo-terminal of 80×24, as an operator's
terminal would host it (tests/console/test_console_terminal.py's `spawn`), with the pty drained
all along so the console never waits on its output.

First frame: from fork to the first screen that shows the deployments pane, median of 7 cold
starts; the floor beside it is bare Textual — a "hello" app with one Static — on the same pty,
from fork to "hello" on the screen.

CPU: the console on a workspace with 1,000,000 logged predictions (built as
test_bench_monitor.py builds them: v1.0 and the candidate v2.0 of A/B test `bench`, deployed
25 hours ago, a million rows over the last 24 hours through the real PredictionLog, a quarter
labelled), while `beast simulate` sends live traffic into it (50 req/s, in another process),
so every refresh has new figures to draw. utime + stime of the console's process from
/proc/PID/stat over 20 s, after 5 s to settle; the floor beside it is the same measurement of
the console on the same workspace with no traffic.
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import engine.deploy.service
from engine import Workspace
from engine.serving.prediction_log import PredictionLog
from engine.store.sql.prediction_log import count_logged
from tests.bench import workload
from tests.bench.conftest import machine, summary
from tests.bench.test_bench_monitor import CANDIDATE_SHARE, CHUNK, TOLERANCE, _build
from tests.console.test_console_terminal import READY, read_until, reap, spawn

FIRST_FRAME_RUNS = 7
FIRST_FRAME_TARGET_S = 1.0
SETTLE_S = 5.0
MEASURE_S = 20.0
CPU_TARGET = 0.10
HELLO_APP = """
from textual.app import App, ComposeResult
from textual.widgets import Static

class Hello(App[None]):
    def compose(self) -> ComposeResult:
        yield Static("hello")

Hello().run()
"""


def _drain(master: int) -> threading.Thread:
    """Read the pty until it closes, so the console never blocks writing a frame."""

    def run() -> None:
        while True:
            try:
                if not os.read(master, 65536):
                    return
            except OSError:
                return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _spawn_hello() -> tuple[int, int]:
    import fcntl
    import pty
    import struct
    import termios

    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "TEXTUAL")}
    env["TERM"] = "xterm-256color"
    pid, master = pty.fork()
    if pid == 0:
        try:
            os.execve(sys.executable, [sys.executable, "-c", HELLO_APP], env)
        finally:
            os._exit(127)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    return pid, master


def _first_frame(start: Callable[[], tuple[int, int]], marker: bytes) -> float:
    """Seconds from fork to `marker` on the screen."""
    began = time.perf_counter()
    pid, master = start()
    try:
        read_until(master, marker, timeout_s=60)
        return time.perf_counter() - began
    finally:
        os.close(master)
        reap(pid)


def _small_workspace(root: Path) -> Workspace:
    eng = workload.workspace(root, candidate_traffic=10)
    ws = eng.workspace
    eng.close()
    return ws


def test_console_first_frame(tmp_path: Path) -> None:
    ws = _small_workspace(tmp_path)

    def console_start() -> tuple[int, int]:
        return spawn(ws)

    _first_frame(console_start, READY)  # page cache and bytecode, once
    _first_frame(_spawn_hello, b"hello")
    console = [_first_frame(console_start, READY) for _ in range(FIRST_FRAME_RUNS)]
    hello = [_first_frame(_spawn_hello, b"hello") for _ in range(FIRST_FRAME_RUNS)]
    ratio = statistics.median(console) / statistics.median(hello)
    verdict = "met" if statistics.median(console) <= FIRST_FRAME_TARGET_S else "MISSED"
    print(f"\n[bench console first frame] {machine()} · {workload.load_average()}")
    print(summary("  floor: bare Textual hello app, fork to first frame", hello))
    print(
        summary("  beast console 80×24, fork to first frame", console)
        + f"  → {ratio:.1f}× bare Textual"
    )
    print(f"  target ≤ {FIRST_FRAME_TARGET_S * 1000:.0f} ms median: {verdict}")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def _console_cpu(ws: Workspace) -> float:
    """The console's share of one core over MEASURE_S, after SETTLE_S."""
    pid, master = spawn(ws)
    try:
        read_until(master, READY, timeout_s=60)
        _drain(master)
        time.sleep(SETTLE_S)
        cpu0, wall0 = _cpu_seconds(pid), time.monotonic()
        time.sleep(MEASURE_S)
        return (_cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0)
    finally:
        os.close(master)
        reap(pid)


def _million(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Workspace, float]:
    started = time.perf_counter()
    deployed_at = datetime.now(UTC) - timedelta(hours=25)
    with monkeypatch.context() as patch:
        patch.setattr(
            engine.deploy.service, "utc_now", lambda: deployed_at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        )
        eng = workload.workspace(tmp_path, candidate_traffic=CANDIDATE_SHARE * 100)
    log = PredictionLog(eng.workspace.db_path, tolerance=TOLERANCE, batch=CHUNK)
    log.store.migrate()
    _build(eng, log)
    log.close()
    eng.close()
    with sqlite3.connect(eng.workspace.db_path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return eng.workspace, time.perf_counter() - started


def test_console_cpu_refreshing_live_over_a_million_predictions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, built_s = _million(tmp_path, monkeypatch)
    idle = _console_cpu(ws)
    traffic = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.cli.main",
            "--workspace",
            str(ws.root),
            "simulate",
            "--duration",
            str(SETTLE_S + MEASURE_S + 30),
            "--spike-every",
            "0",
            "--evaluate-every",
            "5",
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        live = _console_cpu(ws)
    finally:
        traffic.terminate()
        traffic.wait(30)
    with sqlite3.connect(ws.db_path) as conn:
        rows = count_logged(conn)
    conn.close()
    assert rows >= 1_000_000
    verdict = "met" if live <= CPU_TARGET else "MISSED"
    print(f"\n[bench console cpu] {machine()} · {workload.load_average()}")
    print(f"  workspace: {rows:,} logged predictions (built in {built_s:.0f} s)")
    print(f"  floor: console at 80×24, no traffic: {idle:.1%} of one core over {MEASURE_S:g} s")
    print(
        f"  console at 80×24, live traffic (beast simulate, 50 req/s): {live:.1%} of one core"
        f"  → {live / max(idle, 1e-6):.1f}× idle"
    )
    print(f"  target ≤ {CPU_TARGET:.0%} of one core: {verdict}")
