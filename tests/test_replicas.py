"""Several engine replicas on one PostgreSQL (issue 16): who leads, how a change made by one
reaches the others, how a replica serves a version whose file it never saw.

In-process first (the store's pieces on a real server), then real `beast engine` processes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from engine import Engine, Workspace
from engine.core.clock import utc_now
from engine.registry import fetch
from engine.server.http.api import Api
from engine.server.http.settings import ApiSettings
from engine.server.replica import ReplicaHeart
from engine.store.opening import STORE_URL_ENV
from engine.store.postgres.connection import PostgresStore
from engine.store.replicas import Replica
from engine.store.sqlite.connection import SqliteStore
from tests.helpers import beast
from tests.pg import PgServer, database
from tests.serving_helpers import logged
from tests.test_engine_process import ROW, beast_engine, free_port, wait_healthy

LINE = "quality-predictor"


def until(condition: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def _terminate(store: PostgresStore, application: str) -> None:
    """End another session from the server's side, as a dead network or process would."""
    with store.connection() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (application,),
        )


def test_one_replica_leads_and_another_takes_over_when_its_session_ends(
    postgres: PgServer,
) -> None:
    with database(postgres) as url:
        store = PostgresStore(url)
        store.migrate()
        first, second = store.leadership(), store.leadership()
        try:
            assert first.try_lead() is True
            assert second.try_lead() is False
            assert first.try_lead() is True  # still held: checked, not taken twice
            _terminate(store, "beast-leadership")  # both sessions: only the leader's mattered
            assert first.try_lead() is False  # it noticed, and stepped down
            # The server frees the lock once the ended session is gone (a moment later).
            until(second.try_lead, "the other to take over")
            assert first.try_lead() is False
            second.release()  # unlocks at once
            assert first.try_lead() is True
        finally:
            first.release()
            second.release()


def test_sqlite_always_leads_and_has_no_notices(tmp_path: pytest.TempPathFactory) -> None:
    store = SqliteStore(tmp_path / "state.db")  # type: ignore[operator]
    leadership, feed = store.leadership(), store.changes()
    assert leadership.try_lead() and leadership.try_lead()
    assert feed.wait(0.01) is False
    feed.close()


def _add_line(store: PostgresStore, name: str) -> None:
    with store.write() as tx:
        tx.conn.execute(
            "INSERT INTO model_lines (name, n_features, created_at) VALUES (?, 5, ?)",
            (name, utc_now()),
        )


def _add_history(store: PostgresStore, line: str) -> None:
    with store.write() as tx:
        tx.conn.execute(
            "INSERT INTO history (line, at, actor, action, from_state, to_state)"
            " VALUES (?, ?, 'tester', 'deploy', '{}', '{}')",
            (line, utc_now()),
        )


def test_a_committed_history_row_is_notified_and_a_rolled_back_one_is_not(
    postgres: PgServer,
) -> None:
    with database(postgres) as url:
        store = PostgresStore(url)
        store.migrate()
        _add_line(store, "m")
        feed = store.changes()
        try:
            assert feed.wait(1.0) is True  # opened: it may have missed a change before
            assert feed.wait(0.05) is False
            _add_history(store, "m")
            started = time.monotonic()
            assert feed.wait(5.0) is True
            assert time.monotonic() - started < 1.0
            with pytest.raises(RuntimeError), store.write() as tx:
                tx.conn.execute(
                    "INSERT INTO history (line, at, actor, action, from_state, to_state)"
                    " VALUES ('m', ?, 'tester', 'deploy', '{}', '{}')",
                    (utc_now(),),
                )
                raise RuntimeError("rolled back")
            assert feed.wait(0.3) is False
            _terminate(store, "beast-listen")
            assert feed.wait(0.3) is False  # the connection is gone: noticed, not raised
            assert feed.wait(1.0) is True  # and reopened
        finally:
            feed.close()


def test_replicas_are_recorded_with_one_leader(postgres: PgServer) -> None:
    with database(postgres) as url:
        store = PostgresStore(url)
        store.migrate()
        now = utc_now()
        with store.write() as tx:
            for rid in ("a/1", "b/2"):
                tx.replicas.announce(Replica(rid, rid[0], int(rid[2]), None, now, now, None))
            tx.replicas.heartbeat("a/1", now, leading=True)
        with store.write() as tx:
            tx.replicas.heartbeat("b/2", utc_now(), leading=True)  # took over: a/1 died
            tx.replicas.heartbeat("a/1", utc_now(), leading=False)
        with store.read() as tx:
            found = tx.replicas.all()
        assert [(r.id, r.leader_since is not None) for r in found] == [
            ("b/2", True),
            ("a/1", False),
        ]
        with store.write() as tx:
            tx.replicas.leave("a/1")
            assert tx.replicas.prune(seen_before="9999") == 1
            assert tx.replicas.all() == []


def test_artifact_bytes_are_kept_once_by_sha256(postgres: PgServer) -> None:
    with database(postgres) as url:
        store = PostgresStore(url)
        store.migrate()
        _add_line(store, "m")
        data = b'{"learner": {}}'
        sha = hashlib.sha256(data).hexdigest()
        with store.write() as tx:
            tx.conn.execute(
                "INSERT INTO artifacts (sha256, path, size, format, status, line, n_features,"
                " registered_at, registered_by) VALUES (?, 'm.json', ?, 'json', 'valid', 'm', 5,"
                " ?, 'tester')",
                (sha, len(data), utc_now()),
            )
            assert tx.artifact_bytes.keeps and not tx.artifact_bytes.has(sha)
            tx.artifact_bytes.put(sha, data)
            tx.artifact_bytes.put(sha, data)  # a second registration of the same bytes
        with store.read() as tx:
            assert tx.artifact_bytes.get(sha) == data and tx.artifact_bytes.has(sha)
            assert tx.artifact_bytes.get("0" * 64) is None


# -- two `beast engine` processes on one PostgreSQL ------------------------------------------


def _healthz(port: int) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).json()
    except httpx.TransportError:
        return {}
    return doc


def _candidate(port: int) -> str | None:
    serving = _healthz(port).get("serving", {}).get(LINE, {})
    return serving.get("candidate") if serving else None


def _predict_batch(port: int, n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = [dict(zip(ROW, map(float, rng.random(len(ROW))), strict=True)) for _ in range(n)]
    keys = [f"k{seed}-{i}" for i in range(n)]
    answer = httpx.post(
        f"http://127.0.0.1:{port}/v1/predict", json={"rows": rows, "keys": keys}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    found: list[dict[str, Any]] = answer.json()["predictions"]
    return found


def _label_the_candidate_wrong(port: int, predictions: list[dict[str, Any]]) -> None:
    """Production's predictions labelled right, the candidate's 50 points off: the candidate's
    accuracy is surely under its alert line, so the leader pulls it."""
    items = [
        {
            "prediction_id": p["prediction_id"],
            "actual": p["score"] if p["arm"] == "production" else (p["score"] + 50) % 100,
        }
        for p in predictions
    ]
    answer = httpx.post(f"http://127.0.0.1:{port}/v1/feedback", json={"items": items}, timeout=30)
    assert answer.status_code == 200, answer.text


@pytest.mark.slow
@pytest.mark.parametrize("store_backend", ["postgresql"], indirect=True)
def test_two_replicas_share_changes_artifacts_and_the_leadership(
    registered: Workspace, tmp_path: Path
) -> None:
    """A deploy through one is served by the other within 1 s (a version whose file the other
    never saw); `kill -9` of the leader: the other leads within 5 s and pulls a failing
    candidate; every prediction the survivor acknowledged is in the log."""
    first = registered
    second = Workspace(tmp_path / "second" / ".beast-mode")
    Engine.init(second)[0].close()  # its own directory, the same database: no models/ files
    with closing(Engine(first, actor="tester")) as engine:
        engine.deploy(version="v1.0")
    ports = {first: free_port(), second: free_port()}
    logs = {ws: tmp_path / f"engine-{i}.log" for i, ws in enumerate(ports)}
    procs = {
        ws: beast_engine(ws, "--port", str(port), "--evaluate-every", "0.5", log=logs[ws])
        for ws, port in ports.items()
    }
    try:
        for ws, proc in procs.items():
            wait_healthy(proc, ports[ws], logs[ws])
        until(
            lambda: (
                sorted(_healthz(p).get("leader") is True for p in ports.values()) == [False, True]
            ),
            "exactly one leader",
        )
        leader = next(ws for ws, p in ports.items() if _healthz(p)["leader"])
        survivor = second if leader is first else first
        status = json.loads(beast(second, "status", "--json").stdout)
        assert status["leader"]["pid"] == procs[leader].pid
        assert [d["artifact_present"] for d in status["deployments"]] == [True]  # in the store
        assert (
            f"leader: {status['leader']['id']} at 127.0.0.1:{ports[leader]}"
            in beast(second, "status").stdout
        )

        # Served by the second although its models/ never held the file.
        answer = httpx.post(f"http://127.0.0.1:{ports[second]}/v1/predict", json={"features": ROW})
        assert answer.status_code == 200 and answer.json()["version"] == "v1.0", answer.text
        assert not any(second.models_dir.iterdir())

        with closing(Engine(first, actor="tester")) as engine:
            engine.deploy(version="v2.0", traffic=50, ab_test="t")
        changed = time.monotonic()
        until(lambda: _candidate(ports[second]) == "v2.0", "the deploy on the second", 5.0)
        assert time.monotonic() - changed < 1.0

        acknowledged = [p["prediction_id"] for p in _predict_batch(ports[survivor], 50, seed=1)]
        procs[leader].kill()  # kill -9: its session ends, its lock with it
        procs[leader].wait()
        killed = time.monotonic()
        until(lambda: _healthz(ports[survivor]).get("leader") is True, "the takeover", 10.0)
        assert time.monotonic() - killed < 5.0

        predictions = _predict_batch(ports[survivor], 600, seed=2)
        acknowledged += [p["prediction_id"] for p in predictions]
        _label_the_candidate_wrong(ports[survivor], predictions)
        until(lambda: _candidate(ports[survivor]) is None, "the auto-pull", 30.0)
        with closing(Engine(survivor)) as engine:
            last = engine.history()[-1]
        assert last.action == "abort" and "auto-pulled" in (last.note or "")

        procs[survivor].send_signal(signal.SIGTERM)
        assert procs[survivor].wait(timeout=60) == 0, logs[survivor].read_text()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stored = {row["pid"] for row in logged(survivor)}
    assert len(acknowledged) == 650 and set(acknowledged) - stored == set()


@pytest.mark.parametrize("store_backend", ["postgresql"], indirect=True)
def test_a_change_is_served_on_its_notice_not_at_the_next_poll(
    registered: Workspace, tmp_path: Path
) -> None:
    """The other replica's refresh thread polls once a minute here: only the NOTIFY sent in
    the deploy's transaction can make it serve the change within a second."""
    second = Workspace(tmp_path / "second" / ".beast-mode")
    Engine.init(second)[0].close()
    with closing(Engine(registered, actor="tester")) as engine:
        engine.deploy(version="v1.0")
        api = Api(second, ApiSettings(refresh_s=120.0))
        api.start()
        try:
            assert api.serving().route(LINE).production.ref.name == "v1.0"
            time.sleep(0.2)  # the refresh thread is listening
            engine.deploy(version="v2.0")
            until(
                lambda: api.serving().routes()[LINE].production.ref.name == "v2.0",
                "the change served on its notice",
                timeout=2.0,
            )
        finally:
            api.stop()
    assert (second.root / ".artifact-cache").is_dir()


@pytest.mark.parametrize("store_backend", ["postgresql"], indirect=True)
def test_a_fetched_copy_is_checked_by_sha256_each_time_it_is_used(
    registered: Workspace, tmp_path: Path
) -> None:
    second = Workspace(tmp_path / "second" / ".beast-mode")
    Engine.init(second)[0].close()
    store = PostgresStore(os.environ[STORE_URL_ENV])
    with store.read() as tx:
        ref = tx.registry.get_version(LINE, "v1.0")
        relative = tx.registry.artifact_file(ref.artifact_id)
    original = (registered.models_dir / relative).read_bytes()

    def copy() -> Path:
        with store.read() as tx:
            return fetch.local_copy(tx, second.models_dir, relative, ref.sha256)

    fetched = copy()
    assert fetched.parent == second.root / fetch.CACHE_DIR and fetched.read_bytes() == original
    fetched.write_bytes(b"{}")  # damaged on this host's disk: fetched again
    assert copy().read_bytes() == original
    fetched.unlink()
    with store.write() as tx:  # damaged in the store: never kept, never served
        tx.conn.execute("UPDATE artifact_bytes SET data = ? WHERE sha256 = ?", (b"{}", ref.sha256))
    assert copy() == second.models_dir / relative and not fetched.exists()


@pytest.mark.parametrize("store_backend", ["sqlite", "postgresql"], indirect=True)
def test_replica_hearts_record_one_leader_and_hand_it_over(registered: Workspace) -> None:
    """SQLite: the one engine leads. PostgreSQL: of two, one leads; when it stops, the other."""
    hearts = [ReplicaHeart(registered, address=f"127.0.0.1:{9000 + i}") for i in range(2)]
    if STORE_URL_ENV not in os.environ:  # SQLite: one engine per workspace
        hearts = hearts[:1]
    for i, heart in enumerate(hearts):
        heart.id = f"test/{i}"  # one process plays both replicas
        heart.start()
    try:
        until(lambda: sum(h.is_leader() for h in hearts) == 1, "one leader")
        leader = next(h for h in hearts if h.is_leader())
        with closing(Engine(registered)) as engine:
            until(lambda: (found := engine.leader()) is not None and found.id == leader.id, "it")
        if len(hearts) == 2:
            leader.stop()
            other = next(h for h in hearts if h is not leader)
            until(other.is_leader, "the other to lead", timeout=5.0)
    finally:
        for heart in hearts:
            heart.stop()
    with closing(Engine(registered)) as engine, engine.store.read() as tx:
        assert tx.replicas.all() == []  # each stopped replica removed its row
