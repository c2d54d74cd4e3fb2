"""Several engine replicas on one PostgreSQL (issue 16): who leads, how a change made by one
reaches the others, how a replica serves a version whose file it never saw.

In-process first (the store's pieces on a real server), then real `beast engine` processes.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import pytest

from engine.core.clock import utc_now
from engine.store.postgres.connection import PostgresStore
from engine.store.replicas import Replica
from engine.store.sqlite.connection import SqliteStore
from tests.pg import PgServer, database


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
