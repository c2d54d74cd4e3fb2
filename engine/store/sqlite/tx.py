"""`SqliteTx`: one SQLite transaction's repositories, bound to its connection.

Repositories are made on first use and live as long as the transaction: a transaction that
touches one domain builds one small object.
"""

from __future__ import annotations

import sqlite3
from functools import cached_property

from engine.store.sqlite.deployments import SqliteDeployments
from engine.store.sqlite.history import SqliteHistory
from engine.store.sqlite.prediction_log import SqlitePredictionLog
from engine.store.sqlite.registry import SqliteRegistry
from engine.store.sqlite.routes import SqliteRoutes


class SqliteTx:
    """engine.store.base.Tx over one connection inside one transaction."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @cached_property
    def registry(self) -> SqliteRegistry:
        return SqliteRegistry(self.conn)

    @cached_property
    def deployments(self) -> SqliteDeployments:
        return SqliteDeployments(self.conn)

    @cached_property
    def history(self) -> SqliteHistory:
        return SqliteHistory(self.conn)

    @cached_property
    def routes(self) -> SqliteRoutes:
        return SqliteRoutes(self.conn)

    @cached_property
    def predictions(self) -> SqlitePredictionLog:
        return SqlitePredictionLog(self.conn)
