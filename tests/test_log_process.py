"""The prediction log written by a process of its own (`[log] writer = "process"`, issue 18:
a flat tail): every acknowledged row logged once across the writer's death and the serving
process's SIGTERM, one bad row quarantined alone, on both backends.

Real models, real SQLite and PostgreSQL, real writer processes killed with SIGKILL.
"""

from __future__ import annotations

import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from engine import Engine, Workspace
from engine.core import ids
from engine.core.predictions import Record
from engine.monitoring import feedback as labels
from engine.serving.log_process import (
    REPLAY,
    ROWS,
    ProcessLog,
    _frames,
    open_prediction_log,
    rows_frame,
)
from engine.serving.prediction_log import PredictionLog
from engine.serving.router import Router
from engine.store.opening import open_store
from tests.conftest import BOTH_BACKENDS
from tests.helpers import set_config
from tests.serving_helpers import LINE, count, deploy_changes, logged, version_id
from tests.test_engine_process import (
    Tally,
    check_log_matches,
    metric_value,
    running_engine,
    start_load,
    wait_for,
)

TOLERANCE = 5.0


@pytest.fixture
def ab_ws(registered: Workspace) -> Workspace:
    """v1.0 in production, v2.0 a 50% candidate of test `t`."""
    deploy_changes(
        registered, {"version": "v1.0"}, {"version": "v2.0", "traffic": 50, "ab_test": "t"}
    )
    return registered


def _kill(plog: ProcessLog) -> int:
    pid = plog.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    return pid


def _restarted(plog: ProcessLog, old: int, restarts: int) -> None:
    deadline = time.monotonic() + 30
    while plog.stats().restarts < restarts or plog.pid() in (None, old):
        assert time.monotonic() < deadline, plog.stats()
        time.sleep(0.02)


def _sent_not_acknowledged(plog: ProcessLog) -> None:
    """Wait until the (stopped) writer was sent every row: they wait for its word."""
    deadline = time.monotonic() + 30
    while plog._queue or plog._chunks:
        assert time.monotonic() < deadline, plog.stats()
        time.sleep(0.02)
    assert plog.stats().queued > 0


@BOTH_BACKENDS
def test_a_killed_writer_is_counted_restarted_and_loses_no_acknowledged_row(
    ab_ws: Workspace,
) -> None:
    engine = Engine(ab_ws, actor="tester")
    plog = ProcessLog(ab_ws.db_path, tolerance=TOLERANCE, interval=0.02).start()
    router = Router(engine, log=plog)
    rng = np.random.default_rng(3)
    served: list[str] = []
    try:
        for round_ in range(3):
            if round_ == 0:  # stopped: it receives, never acknowledges, then is killed
                os.kill(plog.pid() or 0, signal.SIGSTOP)
            for i in range(700):
                served.append(router.predict(rng.random(5).tolist(), key=f"k{i}").prediction_id)
            served += [p.prediction_id for p in router.predict_batch(rng.random((300, 5)).tolist())]
            if round_ == 0:
                _sent_not_acknowledged(plog)
            if round_ < 2:  # then killed again as it writes
                _restarted(plog, _kill(plog), round_ + 1)
    finally:
        plog.close()
        router.close()
        engine.close()
    stats = plog.stats()
    assert stats.restarts == 2
    assert (stats.written, stats.dropped, stats.queued) == (len(served), 0, 0)
    pids = [r["pid"] for r in logged(ab_ws)]
    assert sorted(pids) == sorted(served)  # each once
    assert count(ab_ws, "SELECT sum(n) FROM rollups") == len(served)  # counted once


def _writer(ws: Workspace) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine.serving.log_process",
            str(ws.db_path),
            "5.0",
            "0.02",
            "5000",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


@BOTH_BACKENDS
def test_a_new_writer_skips_the_rows_a_dead_one_wrote_before_it_could_say_so(
    ab_ws: Workspace,
) -> None:
    """A writer can die between its commit and its acknowledgement: the serving process then
    sends those rows again, and the next writer must not log them twice."""
    now = time.time_ns() // 1_000_000
    v1 = version_id(ab_ws, "v1.0")
    rng = np.random.default_rng(5)
    rows = [
        Record(
            ids.new_id(now),
            now,
            LINE,
            v1,
            "production",
            "",
            None,
            rng.random(5).astype(np.float32).tobytes(),
            70.0,
            90,
            None,
        )
        for _ in range(50)
    ]
    first = _writer(ab_ws)
    out, _ = first.communicate(rows_frame(ROWS, ([], rows[:30])))
    assert pickle.loads(_frames(bytearray(out))[-1][1])[0] == 30
    second = _writer(ab_ws)  # sent the first 30 again (replayed), then 20 new ones
    out, _ = second.communicate(
        rows_frame(REPLAY, ([], rows[:30])) + rows_frame(ROWS, ([], rows[30:]))
    )
    resolved, stats, _ = pickle.loads(_frames(bytearray(out))[-1][1])
    assert (resolved, stats.written, stats.dropped, stats.quarantined) == (50, 50, 0, 0)
    assert sorted(r["pid"] for r in logged(ab_ws)) == sorted(r.pid for r in rows)
    assert count(ab_ws, "SELECT sum(n) FROM rollups") == 50


POISON_KEY = "\ud800"  # a lone surrogate: legal JSON, not encodable


@BOTH_BACKENDS
def test_a_bad_row_is_quarantined_in_the_writer_process_and_its_neighbours_written(
    ab_ws: Workspace,
) -> None:
    now = time.time_ns() // 1_000_000
    v1 = version_id(ab_ws, "v1.0")
    rng = np.random.default_rng(4)

    def record(key: str | None) -> Record:
        row = rng.random(5).astype(np.float32).tobytes()
        return Record(ids.new_id(now), now, LINE, v1, "production", "", key, row, 70.0, 90, None)

    good = [record(f"k{i}") for i in range(20)]
    bad = record(POISON_KEY)
    plog = ProcessLog(ab_ws.db_path, tolerance=TOLERANCE).start()
    try:
        for r in [*good[:10], bad, *good[10:]]:
            plog.submit(r)
        plog.flush()
        stats = plog.stats()
        assert (stats.written, stats.quarantined, stats.dropped, stats.queued) == (20, 1, 1, 0)
        assert stats.last_drop is not None and "quarantined 1 row" in stats.last_drop
    finally:
        plog.close()
    assert {r["pid"] for r in logged(ab_ws)} == {r.pid for r in good}
    store = open_store(ab_ws.db_path)
    try:
        assert labels.record(store, good[0].pid, 50.0, labels.Contracts()) == "recorded"
    finally:
        store.close()


@BOTH_BACKENDS
def test_the_config_chooses_the_writer(ab_ws: Workspace) -> None:
    kinds = {}
    for writer in ("thread", "process"):
        set_config(ab_ws, writer=f'"{writer}"')
        plog = open_prediction_log(ab_ws.db_path, tolerance=TOLERANCE)
        kinds[writer] = type(plog)
        plog.close()
    assert kinds == {"thread": PredictionLog, "process": ProcessLog}


def _writers(parent: int) -> list[int]:
    """The pids of the prediction log writer processes `parent` started."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == parent and b"engine.serving.log_process" in cmdline:
            found.append(int(entry.name))
    return found


@BOTH_BACKENDS
@pytest.mark.slow
def test_beast_engine_with_a_writer_process_survives_its_death_and_sigterm(
    ab_ws: Workspace, tmp_path: Path
) -> None:
    """RELIABILITY.md "SIGTERM under load", with the writer in a process of its own: it is
    killed under load (counted on /healthz and /metrics, restarted), then the engine and the
    writer both get SIGTERM (as a process group does): every 200 is logged once."""
    ws = ab_ws
    set_config(ws, writer='"process"')
    with running_engine(ws, tmp_path) as (proc, port, log):
        base = f"http://127.0.0.1:{port}"
        tally = Tally()
        stop, threads = start_load(port, tally, clients=4)
        wait_for(tally, 800, proc, seconds=60)
        (first,) = _writers(proc.pid)
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (health := httpx.get(f"{base}/healthz").json())["log"]["log_writer_restarts"] < 1:
            assert time.monotonic() < deadline, health
            time.sleep(0.05)
        wait_for(tally, len(tally.served) + 800, proc, seconds=60)
        metrics = httpx.get(f"{base}/metrics").text
        assert metric_value(metrics, "beast_log_writer_restarts_total", "") == 1
        (second,) = _writers(proc.pid)
        assert second != first
        os.kill(second, signal.SIGTERM)  # ignored: it ends when the engine closes its input
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
        stop.set()
        for t in threads:
            t.join(timeout=30)
    text = log.read_text()
    assert "Traceback" not in text, text
    assert not tally.other, f"non-200 answers: {dict(tally.other)}"
    assert not tally.crashes, tally.crashes
    assert not _writers(proc.pid) and not Path(f"/proc/{second}").exists()
    check_log_matches(ws, tally)


def test_a_busy_store_keeps_the_rows_and_flush_says_so(
    ab_ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the thread writer's (test_predlog): busy loses nothing, and `flush` returns once
    the writer tried (rows kept, the error said) instead of waiting for the lock."""
    monkeypatch.setenv("BEAST_BUSY_TIMEOUT_S", "0.2")
    engine = Engine(ab_ws, actor="tester")
    plog = ProcessLog(ab_ws.db_path, tolerance=TOLERANCE, interval=3600).start()
    router = Router(engine, log=plog)
    try:
        router.predict_batch(np.random.default_rng(3).random((300, 5)).tolist())
        holder = sqlite3.connect(ab_ws.db_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            assert plog.flush() == 0
            stats = plog.stats()
            assert (stats.queued, stats.written, stats.dropped) == (300, 0, 0)
            assert "busy" in str(stats.last_error)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert plog.flush() == 300
    finally:
        plog.close()
        router.close()
        engine.close()
    assert plog.stats().dropped == 0
    assert len(logged(ab_ws)) == 300
