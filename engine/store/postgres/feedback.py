"""Feedback on PostgreSQL: the shared repository, but waiting feedback is claimed.

Several replicas' writers match waiting feedback against the rows they just logged, none of
them holding the writers' lock: each claims the waiting rows it reads (FOR UPDATE SKIP
LOCKED) until its flush commits, so a label is applied by exactly one of them (SQLite's one
writer at a time gives that for free).
"""

from __future__ import annotations

from engine.store.postgres.conn import PgConn
from engine.store.sql.feedback import SqlFeedback


class PostgresFeedback(SqlFeedback):
    """engine.store.feedback.FeedbackRepo over one PostgreSQL transaction."""

    conn: PgConn

    def pending(self) -> list[tuple[str, float]]:
        # The common case, nothing waiting, costs one probe of the table (every flush asks).
        if self.conn.execute("SELECT 1 FROM pending_feedback LIMIT 1").fetchone() is None:
            return []
        return [
            (pid, actual)
            for pid, actual in self.conn.execute(
                "SELECT pid, actual FROM pending_feedback FOR UPDATE SKIP LOCKED"
            )
        ]
