"""`PostgresTx`: one PostgreSQL transaction's repositories, bound to its connection.

Most repositories are the shared ones (engine/store/sql/), given a `PgConn` that takes their
SQL; a domain whose SQL differs has its module here. Made on first use, as SqliteTx's are.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import psycopg

from engine.store.postgres.artifacts import PgArtifactBytes
from engine.store.postgres.conn import PgConn
from engine.store.sql.replicas import SqlReplicas


class PostgresTx:
    """engine.store.base.Tx over one psycopg connection inside one transaction."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw
        self.conn = PgConn(raw)

    @cached_property
    def replicas(self) -> SqlReplicas:
        return SqlReplicas(self.conn)

    @cached_property
    def artifact_bytes(self) -> PgArtifactBytes:
        return PgArtifactBytes(self.conn)
