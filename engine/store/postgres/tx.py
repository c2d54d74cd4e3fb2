"""`PostgresTx`: one PostgreSQL transaction's repositories, bound to its connection.

Most repositories are the shared ones (engine/store/sql/), given a `PgConn` that takes their
SQL; a domain whose SQL differs has its module here. Made on first use, as SqliteTx's are.
"""

from __future__ import annotations

from typing import Any

import psycopg

from engine.store.postgres.conn import PgConn


class PostgresTx:
    """engine.store.base.Tx over one psycopg connection inside one transaction."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw
        self.conn = PgConn(raw)
