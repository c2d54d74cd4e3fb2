"""The PostgreSQL store itself, on a real server: its migrations, its refusals, its doctor,
and how a workspace chooses it. (The repositories' contracts run on both backends in
tests/test_store_repos.py and the modules marked BOTH_BACKENDS.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import Engine, Workspace
from engine.core.errors import StoreError, StoreUnreachable
from engine.core.workspace import WorkspaceLost
from engine.store.opening import STORE_URL_ENV, open_store, store_url
from engine.store.postgres.conn import to_pyformat
from engine.store.postgres.connection import PostgresStore, redact
from engine.store.postgres.schema import MIGRATIONS as PG_MIGRATIONS
from engine.store.sqlite.connection import SqliteStore
from engine.store.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS
from tests.pg import PgServer, database


def test_the_migrations_are_sqlites_step_for_step() -> None:
    assert [name for name, _ in PG_MIGRATIONS] == [name for name, _ in SQLITE_MIGRATIONS]


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT * FROM t WHERE a = ? AND b = ?", "SELECT * FROM t WHERE a = %s AND b = %s"),
        ("UPDATE t SET a = :a WHERE b = :b", "UPDATE t SET a = %(a)s WHERE b = %(b)s"),
        ("SELECT x::bigint, '?:no' FROM t WHERE y LIKE '%' || ?", None),
        ('SELECT "a?b" FROM t WHERE c = 5 % 2', 'SELECT "a?b" FROM t WHERE c = 5 %% 2'),
    ],
)
def test_placeholders_are_translated_outside_quotes_and_casts(
    sql: str, expected: str | None
) -> None:
    if expected is None:
        expected = "SELECT x::bigint, '?:no' FROM t WHERE y LIKE '%' || %s"
    assert to_pyformat(sql) == expected


def test_migrate_is_once_and_the_schema_guards_are_in_place(postgres: PgServer) -> None:
    with database(postgres) as url:
        store = PostgresStore(url)
        assert len(store.migrate()) == len(PG_MIGRATIONS)
        assert store.migrate() == []
        assert store.integrity_check() == []
        with store.write() as tx:
            tx.conn.execute("ALTER TABLE history DISABLE TRIGGER history_append_only_update")
        assert any("history_append_only_update" in f for f in store.integrity_check())


def test_refusals_are_one_line_store_errors(postgres: PgServer) -> None:
    with database(postgres) as url:
        store = PostgresStore(url)
        store.migrate()
        refused = pytest.raises(StoreError, match="refused by the state store's invariants")
        with refused, store.write() as tx:
            tx.conn.execute(
                "INSERT INTO model_lines (name, n_features, created_at) VALUES (?, ?, ?)",
                ("", 3, "now"),
            )
        with pytest.raises(StoreError, match="history is append-only"), store.write() as tx:
            tx.conn.execute("TRUNCATE history CASCADE")


def test_an_unreachable_server_is_one_line_without_the_password() -> None:
    store = PostgresStore("postgresql://me:secret@127.0.0.1:1/none?connect_timeout=1")
    with pytest.raises(StoreUnreachable) as caught:
        store.migrate()
    message = str(caught.value)
    assert "cannot reach PostgreSQL at postgresql://me:***@127.0.0.1:1/none" in message
    assert "secret" not in message and "\n" not in message
    assert redact("postgresql://u@h/db") == "postgresql://u@h/db"


def test_a_workspace_chooses_postgresql_by_config_or_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / ".beast-mode"
    root.mkdir()
    assert store_url(root) == ""
    assert isinstance(open_store(root / "beast.db"), SqliteStore)
    (root / "config.toml").write_text('[store]\nurl = "postgresql://a@h/db"\n')
    assert store_url(root) == "postgresql://a@h/db"
    monkeypatch.setenv(STORE_URL_ENV, "postgresql://b@h/db")
    store = open_store(root / "beast.db")
    assert isinstance(store, PostgresStore) and store.location == "postgresql://b@h/db"


def test_a_wiped_database_is_not_taken_for_a_new_one(
    postgres: PgServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace(tmp_path / ".beast-mode")
    with database(postgres) as first:
        monkeypatch.setenv(STORE_URL_ENV, first)
        engine, _ = Engine.init(ws)
        engine.close()
        assert ws.marker() is not None
    with database(postgres) as empty:
        monkeypatch.setenv(STORE_URL_ENV, empty)
        with pytest.raises(WorkspaceLost, match="holds no schema"):
            Engine(ws).status()


@pytest.mark.parametrize("store_backend", ["postgresql"], indirect=True)
def test_doctor_checks_a_postgresql_workspace_and_names_a_disabled_guard(engine: Engine) -> None:
    """`beast doctor` on PostgreSQL: the invariants over the repositories, as on SQLite, and
    the server's counterpart of SQLite's file check (the schema's guards, each trigger that
    enforces an invariant), asked first."""
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", traffic=10, ab_test="t1")
    healthy = engine.doctor()
    assert (healthy.ok, healthy.problems, healthy.warnings) == (True, (), ())
    with engine.store.write() as tx:
        tx.conn.execute("ALTER TABLE history DISABLE TRIGGER history_append_only_update")
    report = engine.doctor()
    assert not report.ok
    summary = report.problems[0]
    assert summary.startswith(f"database integrity: {engine.store.location} is not whole (")
    assert "history_append_only_update" in summary and "PRAGMA" not in summary
    assert "\n" not in summary and "beast restore" in summary
    with engine.store.write() as tx:
        tx.conn.execute("ALTER TABLE history ENABLE TRIGGER history_append_only_update")
    assert engine.doctor().ok
