"""The prediction log writer's connection to the SQLite store."""

from __future__ import annotations

import sqlite3

from engine.store.sqlite.connection import SqliteStore


class LogStore(SqliteStore):
    """The writer's connection: commits in WAL without an fsync each (module docstring)."""

    def _connect(self) -> sqlite3.Connection:
        conn = super()._connect()
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn
