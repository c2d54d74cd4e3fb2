"""`beast engine` as a real process: one per workspace, `kill -9` and an immediate restart,
the watcher registering a dropped file, and a deleted artifact that keeps serving and alerts.

RELIABILITY.md: "Two daemons start at once: the second exits non-zero naming the first's pid;
after `kill -9` of the first, a new one starts at once (an `flock`, released by the kernel)";
"The artifact of a deployed model is deleted: it keeps serving from memory; status says the
artifact is missing; an alert fires." The SIGTERM drain under load is
tests/test_engine_process.py's; here SIGTERM also has to stop the watcher's validator.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine import Engine, Workspace
from engine.core.engine_lock import EngineLock, running_pid
from engine.server.daemon import Scheduler
from engine.server.train_worker import FAULT_ENV
from tests.helpers import beast, model_path, train_model
from tests.retrain_helpers import set_retrain
from tests.test_engine_process import (
    ROW,
    beast_engine,
    free_port,
    run_engine_once,
    wait_healthy,
)

pytestmark = pytest.mark.slow


def children_running(parent: int, needle: str) -> list[int]:
    """Pids whose parent is `parent` and whose command line contains `needle`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and needle in cmdline:
            found.append(int(entry.name))
    return found


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture
def deployed(registered: Workspace) -> Workspace:
    with closing(Engine(registered, actor="tester")) as engine:
        engine.deploy(model_path(registered, "v1.0"))
    return registered


def test_running_pid_probes_without_taking_or_dropping_the_lock(registered: Workspace) -> None:
    assert running_pid(registered) is None  # no lock file yet
    lock = EngineLock(registered).acquire()
    try:
        assert running_pid(registered) == os.getpid()
        assert running_pid(registered) == os.getpid()  # the probe's close dropped nothing
        with closing(Engine(registered)) as engine:
            assert engine.engine_pid() == os.getpid()
    finally:
        lock.release()
    assert running_pid(registered) is None
    EngineLock(registered).acquire().release()  # and the probe left nothing held


def test_one_engine_watches_alerts_and_after_kill_9_restarts_at_once(
    deployed: Workspace, tmp_path: Path
) -> None:
    ws, port = deployed, free_port()
    log = tmp_path / "first.log"
    first = beast_engine(ws, "--port", str(port), "--evaluate-every", "0.5", log=log)
    production = model_path(ws, "v1.0")
    original = production.read_bytes()
    try:
        wait_healthy(first, port, log)
        assert running_pid(ws) == first.pid
        second = run_engine_once(ws, "--port", str(free_port()))
        assert second.returncode == 1 and f"pid {first.pid}" in second.stderr
        check_watcher_and_artifact_alert(ws, port, log)
        validators = wait_for(
            lambda: children_running(first.pid, "validator_child --serve"), "the warm validator"
        )
        first.kill()  # kill -9: no cleanup runs
        first.wait()
    finally:
        if not production.exists():
            production.write_bytes(original)
        if first.poll() is None:
            first.kill()
            first.wait()
    # The kernel released the flock: a new engine starts at once, on the same port.
    log = tmp_path / "second.log"
    restarted = beast_engine(ws, "--port", str(port), log=log)
    try:
        wait_healthy(restarted, port, log)
        assert running_pid(ws) == restarted.pid
        assert httpx.post(f"http://127.0.0.1:{port}/v1/predict", json={"features": ROW}).is_success
        # The killed engine's validator saw its input close and went away: no orphan.
        wait_for(lambda: all(gone(pid) for pid in validators), "the orphaned validator to exit")
        ours = wait_for(
            lambda: children_running(restarted.pid, "validator_child --serve"), "its validator"
        )
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(timeout=60) == 0, log.read_text()
    finally:
        if restarted.poll() is None:
            restarted.kill()
            restarted.wait()
    assert all(gone(pid) for pid in ours)
    assert running_pid(ws) is None
    text = log.read_text()
    assert "Traceback" not in text and "beast engine stopped" in text
    assert f"watching {ws.models_dir}" in text


def check_watcher_and_artifact_alert(ws: Workspace, port: int, log: Path) -> None:
    """A dropped file shows up in `beast models`; a deleted artifact serves on and alerts."""
    temp = ws.models_dir / ".quality-predictor-v5.0.partial.json"
    train_model(temp, seed=11)
    temp.rename(model_path(ws, "v5.0"))

    def listed() -> bool:
        result = beast(ws, "models", "--json")
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout)["models"]
        return any(r["versions"] == ["v5.0"] and r["status"] == "valid" for r in rows)

    wait_for(listed, "v5.0 in `beast models --json`")
    assert "registered quality-predictor-v5.0.json as quality-predictor/v5.0" in log.read_text()

    production = model_path(ws, "v1.0")
    original = production.read_bytes()
    production.unlink()
    base = f"http://127.0.0.1:{port}"

    def alert() -> dict[str, Any] | None:
        alerts = httpx.get(f"{base}/v1/monitor").json()["alerts"]
        return next((a for a in alerts if a["metric"] == "artifact"), None)

    fired = wait_for(alert, "the artifact alert")
    assert fired["severity"] == "critical" and fired["version"] == "v1.0"
    assert "missing" in fired["message"]
    answer = httpx.post(f"{base}/v1/predict", json={"features": ROW})
    assert answer.status_code == 200 and answer.json()["version"] == "v1.0"
    status = json.loads(beast(ws, "status", "--json").stdout)
    row = status["deployments"][0]
    assert (row["version"], row["artifact_present"]) == ("v1.0", False)
    assert status["health"] == "critical"

    production.write_bytes(original)  # back as registered: the alert resolves
    wait_for(lambda: (found := alert()) is None or found["status"] == "resolved", "resolution")


def test_scheduler_thread_starts_a_due_job_once_and_logs_it(
    deployed: Workspace, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    set_retrain(deployed, interval_days=1e-6)  # the time trigger fires at once
    monkeypatch.setenv(FAULT_ENV, "crash")  # the worker fails fast: no training data here
    caplog.set_level("INFO", logger="beast.engine")
    scheduler = Scheduler(deployed, every_s=0.2).start()
    try:
        with closing(Engine(deployed)) as engine:
            (job,) = wait_for(engine.jobs, "a job started by the scheduler")
            assert engine.wait_job(job.id, 30).status == "failed"
            time.sleep(0.6)  # three more checks: the cooldown holds the next one back
            assert len(engine.jobs()) == 1
    finally:
        scheduler.stop()
    started = [r.getMessage() for r in caplog.records if "started on" in r.getMessage()]
    assert started == [f"retraining job #{job.id} started on quality-predictor (trigger time)"]
