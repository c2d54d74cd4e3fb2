"""Artifact bytes in PostgreSQL: `artifact_bytes` (migration 0011), one row per sha256.

In the database rather than a shared directory: it is the one thing every replica already
reaches, and it is backed up and copied with the rest of the state. A row is written in the
registration's transaction, so a version no replica can fetch is never registered.
"""

from __future__ import annotations

from engine.store.sql.conn import Conn


class PgArtifactBytes:
    """engine.store.replicas.ArtifactBytesRepo over one PostgreSQL transaction."""

    keeps = True

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def put(self, sha256: str, data: bytes) -> None:
        self.conn.execute(
            "INSERT INTO artifact_bytes (sha256, data) VALUES (?, ?)"
            " ON CONFLICT (sha256) DO NOTHING",
            (sha256, data),
        )

    def get(self, sha256: str) -> bytes | None:
        row = self.conn.execute(
            "SELECT data FROM artifact_bytes WHERE sha256 = ?", (sha256,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def has(self, sha256: str) -> bool:
        row = self.conn.execute("SELECT 1 FROM artifact_bytes WHERE sha256 = ?", (sha256,))
        return row.fetchone() is not None
