"""`beast engine` as a real process: HTTP on loopback, load, feedback, SIGTERM, refusals.

The promise under test (RELIABILITY.md, "SIGTERM under load"): stop accepting, finish the
requests in flight, flush the prediction log, exit 0 — and every prediction a client got a
200 for is in the log, on the version the response named.
"""

from __future__ import annotations

import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine import Engine, Workspace
from tests.helpers import REPO, model_path
from tests.serving_helpers import logged

ROW = {"coverage": 0.8, "complexity": 0.3, "lint_density": 0.1, "duplication": 0.05, "churn": 0.4}
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def engine_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("BEAST_HOME", "BEAST_API_TOKEN", "PROMETHEUS_MULTIPROC_DIR"):
        env.pop(name, None)
    return env


def engine_command(ws: Workspace, *args: str) -> list[str]:
    return [sys.executable, "-m", "engine.cli.main", "--workspace", str(ws.root), "engine", *args]


def beast_engine(
    ws: Workspace, *args: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            engine_command(ws, *args),
            stdout=out,
            stderr=out,
            cwd=str(REPO),
            env=env or engine_env(),
        )


def wait_healthy(proc: subprocess.Popen[bytes], port: int, log: Path) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"beast engine exited {proc.returncode}:\n{log.read_text()}")
        try:
            response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            doc: dict[str, Any] = response.json()
            # Up: serving (200), answering why it cannot (503 "unready": nothing deployed), or
            # asking for the token ([api] require_token = "always").
            if response.status_code in (200, 401) or doc.get("status") == "unready":
                return doc
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"beast engine did not answer /healthz within 60 s:\n{log.read_text()}")


@contextmanager
def running_engine(ws: Workspace, tmp_path: Path, *args: str) -> Iterator[tuple[Any, int, Path]]:
    port = free_port()
    log = tmp_path / f"engine-{port}.log"
    proc = beast_engine(ws, "--port", str(port), *args, log=log)
    try:
        wait_healthy(proc, port, log)
        yield proc, port, log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@dataclass
class Tally:
    """What the clients were told: 200s per prediction id, other answers, feedback acks."""

    served: dict[str, str] = field(default_factory=dict)  # pid -> version
    labelled: dict[str, float] = field(default_factory=dict)  # pid -> actual acknowledged
    other: Counter[int] = field(default_factory=Counter)
    crashes: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def load(
    port: int, tally: Tally, stop: threading.Event, *, worker: int, batch_feedback: int, rows: int
) -> None:
    """Predict until told to stop or the server goes away; send feedback for what was served.

    With `rows` > 1 the worker sends batches of that many rows (slow requests: one is likely
    in flight when SIGTERM arrives).
    """
    waiting: list[tuple[str, float]] = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        i = 0
        while not stop.is_set():
            i += 1
            row = dict(ROW, coverage=(i % 100) / 100)
            body: dict[str, Any] = {"features": row} if rows <= 1 else {"rows": [row] * rows}
            if i % 2 and rows <= 1:
                body["key"] = f"w{worker}-{i}"
            try:
                response = client.post("/v1/predict", json=body)
            except httpx.TransportError:
                return  # the server stopped listening: expected after SIGTERM
            if response.status_code != 200:
                with tally.lock:
                    tally.other[response.status_code] += 1
                continue
            doc = response.json()
            for p in doc["predictions"] if rows > 1 else [doc]:
                with tally.lock:
                    tally.served[p["prediction_id"]] = p["version"]
                # An actual near the score, inside the line's label range (0–100).
                actual = min(100.0, max(0.0, round(p["score"] + (i % 7), 3)))
                waiting.append((p["prediction_id"], actual))
            if len(waiting) >= batch_feedback:
                items = [{"prediction_id": p, "actual": a} for p, a in waiting]
                waiting = []
                try:
                    answer = client.post("/v1/feedback", json={"items": items})
                except httpx.TransportError:
                    return
                if answer.status_code != 200:
                    with tally.lock:
                        tally.other[answer.status_code] += 1
                    continue
                for item, result in zip(items, answer.json()["results"], strict=True):
                    with tally.lock:
                        if result["status"] in ("recorded", "pending"):
                            tally.labelled[item["prediction_id"]] = item["actual"]
                        else:
                            tally.other[result["code"]] += 1


def guarded(port: int, tally: Tally, stop: threading.Event, **kw: int) -> None:
    """`load`, with anything unexpected kept for the test to report (threads die quietly)."""
    try:
        load(port, tally, stop, **kw)
    except BaseException as exc:
        with tally.lock:
            tally.crashes.append(repr(exc))
        raise


def start_load(
    port: int, tally: Tally, clients: int, batch_feedback: int = 25, batch_rows: int = 0
) -> tuple[threading.Event, list[threading.Thread]]:
    """`clients` threads sending one row each, plus one sending batches if batch_rows."""
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=guarded,
            args=(port, tally, stop),
            kwargs={"worker": n, "batch_feedback": batch_feedback, "rows": 1},
            daemon=True,
        )
        for n in range(clients)
    ]
    if batch_rows:
        threads.append(
            threading.Thread(
                target=guarded,
                args=(port, tally, stop),
                kwargs={"worker": clients, "batch_feedback": batch_rows, "rows": batch_rows},
                daemon=True,
            )
        )
    for t in threads:
        t.start()
    return stop, threads


def wait_for(tally: Tally, count: int, proc: subprocess.Popen[bytes], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while len(tally.served) < count:
        assert not tally.crashes, tally.crashes
        assert proc.poll() is None, "the engine died under load"
        assert time.monotonic() < deadline, f"only {len(tally.served)} predictions served"
        time.sleep(0.05)


def run_engine_once(ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    """`beast engine ARGS` expected to exit on its own (a refusal), with its output."""
    return subprocess.run(
        engine_command(ws, *args),
        capture_output=True,
        text=True,
        cwd=str(REPO),
        env=engine_env(),
        timeout=60,
        check=False,
    )


def metric_value(text: str, name: str, labels: str) -> float:
    """The sum of the samples of `name` whose label text contains `labels`."""
    total = 0.0
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] == name and labels in series:
            total += float(value)
    return total


@pytest.fixture
def serving_ws(registered: Workspace) -> Workspace:
    """v1.0 in production, v2.0 a 30% candidate of test ab-v2."""
    engine = Engine(registered, actor="tester")
    try:
        engine.deploy(model_path(registered, "v1.0"))
        engine.deploy(model_path(registered, "v2.0"), traffic=30, ab_test="ab-v2")
    finally:
        engine.close()
    return registered


def check_log_matches(ws: Workspace, tally: Tally) -> None:
    rows = logged(ws)
    by_pid = {r["pid"]: r for r in rows}
    # No acknowledged prediction lost, none logged twice, each on the version it was told.
    assert len(rows) == len(by_pid)
    assert set(tally.served) <= set(by_pid)
    assert len(rows) == len(tally.served), "the log holds predictions no client got a 200 for"
    assert Counter(r["version"] for r in rows) == Counter(tally.served.values())
    assert all(by_pid[p]["version"] == v for p, v in tally.served.items())
    # Every acknowledged feedback is attached (pending ones were matched at the flush).
    assert all(by_pid[p]["actual"] == a for p, a in tally.labelled.items())


def test_sigterm_under_load_loses_no_acknowledged_prediction(
    serving_ws: Workspace, tmp_path: Path
) -> None:
    ws = serving_ws
    with running_engine(ws, tmp_path) as (proc, port, log):
        # One engine per workspace: a second one is refused, naming the first one's pid.
        second = run_engine_once(ws, "--port", str(free_port()))
        assert second.returncode == 1
        assert f"pid {proc.pid}" in second.stderr and len(second.stderr.splitlines()) == 1

        # Phase 1: load with feedback, then quiet; /metrics and /v1/monitor agree with it.
        tally = Tally()
        stop, threads = start_load(port, tally, clients=6)
        wait_for(tally, 1500, proc, seconds=60)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while (health := httpx.get(f"{base}/healthz").json())["log"]["written"] < len(tally.served):
            assert time.monotonic() < deadline, health
            time.sleep(0.05)
        assert health["log"]["dropped"] == 0 and health["log"]["queued"] == 0
        text = httpx.get(f"{base}/metrics").text
        sent = Counter(tally.served.values())
        for version, arm in (("v1.0", "production"), ("v2.0", "candidate")):
            labels = f'arm="{arm}",line="quality-predictor",version="{version}"'
            assert metric_value(text, "beast_predictions_total", labels) == sent[version]
        written = metric_value(text, "beast_prediction_log_written_rows_total", "")
        assert written == len(tally.served)
        monitor = httpx.get(f"{base}/v1/monitor").json()
        by_version = {v["version"]: v for v in monitor["versions"]}
        labelled = Counter(tally.served[p] for p in tally.labelled)
        for version in ("v1.0", "v2.0"):
            assert by_version[version]["predictions"] == sent[version]
            assert by_version[version]["labelled"] == labelled[version]

        # Phase 2: SIGTERM while six clients send rows and a seventh batches of 5,000.
        stop, threads = start_load(port, tally, clients=6, batch_rows=5000)
        wait_for(tally, len(tally.served) + 6000, proc, seconds=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
        stop.set()
        for t in threads:
            t.join(timeout=30)
            assert not t.is_alive()

    text = log.read_text()
    assert "Traceback" not in text, text
    assert "prediction log flushed" in text
    assert not tally.other, f"non-200 answers: {dict(tally.other)}"
    assert not tally.crashes, tally.crashes
    assert len(tally.served) >= 3000
    check_log_matches(ws, tally)


def test_two_workers_share_the_port_metrics_and_the_shutdown(
    serving_ws: Workspace, tmp_path: Path
) -> None:
    ws = serving_ws
    with running_engine(ws, tmp_path, "--workers", "2") as (proc, port, log):
        base = f"http://127.0.0.1:{port}"
        # TCP_NODELAY on every worker's connections: no 40 ms delayed-ACK stalls on keep-alive.
        with httpx.Client(base_url=base) as client:
            times = []
            for _ in range(40):
                start = time.perf_counter()
                assert client.post("/v1/predict", json={"features": ROW}).status_code == 200
                times.append(time.perf_counter() - start)
        assert statistics.median(times) < 0.02, f"median {statistics.median(times) * 1000:.1f} ms"
        tally = Tally()
        stop, threads = start_load(port, tally, clients=4, batch_feedback=50)
        wait_for(tally, 600, proc, seconds=60)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        # Whichever worker answers the scrape, the counters are the sum over both workers.
        total = len(tally.served) + 40
        for _ in range(3):
            text = httpx.get(f"{base}/metrics").text
            counted = sum(
                metric_value(text, "beast_predictions_total", f'version="{v}"')
                for v in ("v1.0", "v2.0")
            )
            assert counted == total
        stop, threads = start_load(port, tally, clients=4, batch_feedback=50)
        wait_for(tally, len(tally.served) + 300, proc, seconds=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert "Traceback" not in log.read_text()
    assert not tally.other, dict(tally.other)
    assert not tally.crashes, tally.crashes
    rows = logged(ws)
    assert len(rows) == len(tally.served) + 40
    assert set(tally.served) <= {r["pid"] for r in rows}


def test_listening_beyond_loopback_without_a_token_is_refused(
    registered: Workspace, tmp_path: Path
) -> None:
    port = free_port()
    result = run_engine_once(registered, "--host", "0.0.0.0", "--port", str(port))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "0.0.0.0" in lines[0] and "token" in lines[0] and "Traceback" not in result.stderr
    assert not (registered.root / "api-token").exists()
    with socket.socket() as probe:  # nothing was left listening
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_beyond_loopback_with_a_token_every_request_needs_it(
    serving_ws: Workspace, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "exposed.log"
    env = dict(engine_env(), BEAST_API_TOKEN="exposed-secret-token")
    proc = beast_engine(serving_ws, "--host", "0.0.0.0", "--port", str(port), log=log, env=env)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            try:
                refused = httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        assert refused.status_code == 401
        auth = {"Authorization": "Bearer exposed-secret-token"}
        assert httpx.get(f"{base}/healthz", headers=auth).status_code == 200
        assert httpx.post(f"{base}/v1/predict", json={"features": ROW}).status_code == 401
        ok = httpx.post(f"{base}/v1/predict", json={"features": ROW}, headers=auth)
        assert ok.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "exposed-secret-token" not in text  # never logged
    assert "every request" in text
    assert not (serving_ws.root / "api-token").exists()  # the environment's token is used
