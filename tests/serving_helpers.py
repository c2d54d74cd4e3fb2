"""Helpers for the serving, prediction-log and feedback tests (real models, real SQLite, or
the real PostgreSQL server of BEAST_STORE_URL where a test runs on both backends)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from engine import Engine, Workspace
from engine.serving.prediction_log import PredictionLog
from engine.serving.router import Router
from engine.store.sqlite.tx import SqliteTx

LINE = "quality-predictor"


def set_nullable(ws: Workspace, names: list[str]) -> None:
    """Declare nullable features in config.toml (before an Engine reads it)."""
    text = ws.config_path.read_text(encoding="utf-8")
    assert "nullable_features = []" in text
    quoted = ", ".join(f'"{n}"' for n in names)
    ws.config_path.write_text(
        text.replace("nullable_features = []", f"nullable_features = [{quoted}]"),
        encoding="utf-8",
    )


def start_log(ws: Workspace, **kw: float) -> PredictionLog:
    engine = Engine(ws)
    try:
        tolerance = engine.config.thresholds.tolerance_points
    finally:
        engine.close()
    return PredictionLog(ws.db_path, tolerance=tolerance, **kw).start()  # type: ignore[arg-type]


@contextmanager
def serving(
    ws: Workspace, *, log: bool = True, refresh_s: float = 0.5, **log_kw: float
) -> Iterator[tuple[Router, PredictionLog | None]]:
    """A Router (and a started PredictionLog) on a workspace, closed afterwards."""
    engine = Engine(ws, actor="tester")
    plog = start_log(ws, **log_kw) if log else None
    router = Router(engine, log=plog, refresh_s=refresh_s)
    try:
        yield router, plog
    finally:
        if plog is not None:
            plog.close()
        router.close()
        engine.close()


def db(ws: Workspace) -> Any:
    """A connection of the test's own to the workspace's database, taking sqlite3's SQL and
    rows (on PostgreSQL: a PgConn in autocommit; `close()` it the same)."""
    url = os.environ.get("BEAST_STORE_URL")
    if url:
        import psycopg

        from engine.store.postgres.conn import PgConn
        from engine.store.postgres.rows import row_factory

        raw = psycopg.connect(url, autocommit=True, row_factory=row_factory)
        pg = PgConn(raw)
        pg.close = raw.close  # type: ignore[attr-defined]
        return pg
    conn = sqlite3.connect(ws.db_path, timeout=30)
    conn.row_factory = sqlite3.Row
    return conn


def tx_of(conn: Any) -> Any:
    """The repositories over a connection of `db` (SqliteTx or PostgresTx)."""
    if isinstance(conn, sqlite3.Connection):
        return SqliteTx(conn)
    from engine.store.postgres.tx import PostgresTx

    return PostgresTx(conn.raw)


def rows(ws: Workspace, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
    """Rows of a read query on the workspace's database, from a connection of its own."""
    conn = db(ws)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def count(ws: Workspace, sql: str, params: tuple[object, ...] = ()) -> int:
    conn = db(ws)
    try:
        return int(conn.execute(sql, params).fetchone()[0] or 0)
    finally:
        conn.close()


def logged(ws: Workspace) -> list[dict[str, Any]]:
    """Every logged prediction, single or a batch's row, as a dict of the log's columns
    and `version`, its version's name."""
    conn = db(ws)
    try:
        names = dict(conn.execute("SELECT id, name FROM versions").fetchall())
        return [
            {**row._asdict(), "version": names[row.version_id]}
            for row in tx_of(conn).predictions.logged_rows()
        ]
    finally:
        conn.close()


def logged_count(ws: Workspace) -> int:
    conn = db(ws)
    try:
        return int(tx_of(conn).predictions.count())
    finally:
        conn.close()


def version_id(ws: Workspace, name: str) -> int:
    return count(ws, "SELECT id FROM versions WHERE line = ? AND name = ?", (LINE, name))


def deploy_changes(ws: Workspace, *changes: dict[str, Any]) -> None:
    """Apply Engine.deploy(**change) for each change, as a tester."""
    engine = Engine(ws, actor="tester")
    try:
        for change in changes:
            engine.deploy(**change)
    finally:
        engine.close()
