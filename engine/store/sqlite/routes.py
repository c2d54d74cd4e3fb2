"""The routes in SQLite: the shared SQL (engine.store.sql.routes), with SQLite's own change
counter."""

from __future__ import annotations

from engine.store.sql.routes import SqlRoutes


class SqliteRoutes(SqlRoutes):
    """engine.store.routes.RouteRepo over one SQLite transaction."""

    def change_counter(self) -> int:
        # Per connection: it moves when any other connection commits (SQLite's own counter).
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])
