"""`PostgresTx`: one PostgreSQL transaction's repositories, bound to its connection.

Most repositories are the shared ones (engine/store/sql/), given a `PgConn` that takes their
SQL; a domain whose SQL differs has its module here. Made on first use, as SqliteTx's are.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

import psycopg

from engine.store.postgres.conn import PgConn

if TYPE_CHECKING:
    from engine.store.sql.jobs import SqlJobs, SqlRetrainInputs


class PostgresTx:
    """engine.store.base.Tx over one psycopg connection inside one transaction."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw
        self.conn = PgConn(raw)

    @cached_property
    def jobs(self) -> SqlJobs:
        from engine.store.sql.jobs import SqlJobs  # on first use, as SqliteTx's

        return SqlJobs(self.conn)

    @cached_property
    def retrain_inputs(self) -> SqlRetrainInputs:
        from engine.store.sql.jobs import SqlRetrainInputs  # on first use, as SqliteTx's

        return SqlRetrainInputs(self.conn)
