"""Feedback in SQL (both backends): `predictions.actual` and `batch_labels` (the labels),
`pending_feedback` and `unmatched_feedback`; reads of the log to find a prediction."""

from __future__ import annotations

import math
import struct

from engine.core import ids
from engine.core.records import LoggedPrediction
from engine.store.sql.conn import Conn


class SqlFeedback:
    """engine.store.feedback.FeedbackRepo over one transaction."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def prediction(self, pid: str) -> LoggedPrediction | None:
        row = self.conn.execute(
            "SELECT p.version_id, coalesce(e.name, ''), coalesce(p.at_ms, p.hi >> 16), p.score,"
            " p.actual FROM predictions p LEFT JOIN experiments e ON e.id = p.experiment_id"
            " WHERE p.hi = ? AND p.lo = ?",
            ids.key(pid),
        ).fetchone()
        if row is not None:
            return LoggedPrediction(pid, *row)
        return self._batch_row(pid)

    def is_logged(self, pid: str) -> bool:
        single = self.conn.execute(
            "SELECT 1 FROM predictions WHERE hi = ? AND lo = ?", ids.key(pid)
        ).fetchone()
        return single is not None or self._batch_row(pid) is not None

    def _batch_row(self, pid: str) -> LoggedPrediction | None:
        """A batch's row: its version id and score are read out of the batch's blobs."""
        prefix, i = ids.batch_row(pid)
        found = self.conn.execute(
            "SELECT b.id, substr(b.version_ids, CAST(8 * ? + 1 AS INTEGER), 8), b.experiment,"
            " b.at_ms, substr(b.scores, CAST(8 * ? + 1 AS INTEGER), 8), l.actual"
            " FROM prediction_batches b"
            " LEFT JOIN batch_labels l ON l.batch_id = b.id AND l.row = ?"
            " WHERE b.prefix = ? AND b.rows > ?",
            (i, i, i, prefix, i),
        ).fetchone()
        if found is None:
            return None
        batch_id, version_id, experiment, at_ms, score, actual = found
        (value,) = struct.unpack("<d", score)
        return LoggedPrediction(
            pid,
            struct.unpack("<q", version_id)[0],
            experiment,
            at_ms,
            None if math.isnan(value) else value,
            actual,
            (batch_id, i),
        )

    def set_actual(self, found: LoggedPrediction, actual: float, at_ms: int) -> None:
        if found.batch is None:
            self.conn.execute(
                "UPDATE predictions SET actual = ?, labelled_at_ms = ? WHERE hi = ? AND lo = ?",
                (actual, at_ms, *ids.key(found.pid)),
            )
        else:
            self.conn.execute(
                "INSERT INTO batch_labels (batch_id, row, actual, labelled_at_ms)"
                " VALUES (?, ?, ?, ?)",
                (*found.batch, actual, at_ms),
            )

    def quarantine_reason(self, pid: str) -> str | None:
        prefix, i = ids.batch_row(pid)
        found = self.conn.execute(
            "SELECT reason FROM quarantined_predictions WHERE pid = ?"
            " UNION ALL SELECT reason FROM quarantined_predictions WHERE pid = ? AND rows > ?",
            (pid, prefix, i),
        ).fetchone()
        return None if found is None else str(found[0])

    def pruned_days(self, issued_ms: int) -> float | None:
        found = self.conn.execute(
            "SELECT days FROM log_retention WHERE id = 1 AND pruned_before_ms > ?", (issued_ms,)
        ).fetchone()
        return None if found is None else float(found[0])

    def is_unmatched(self, pid: str) -> bool:
        found = self.conn.execute("SELECT 1 FROM unmatched_feedback WHERE pid = ?", (pid,))
        return found.fetchone() is not None

    def pending_actual(self, pid: str) -> float | None:
        found = self.conn.execute(
            "SELECT actual FROM pending_feedback WHERE pid = ?", (pid,)
        ).fetchone()
        return None if found is None else float(found[0])

    def add_pending(self, pid: str, actual: float, received_ms: int) -> None:
        self.conn.execute(
            "INSERT INTO pending_feedback (pid, actual, received_ms) VALUES (?, ?, ?)",
            (pid, actual, received_ms),
        )

    def pending(self) -> list[tuple[str, float]]:
        # The common case, nothing waiting, costs one probe of the table (every flush asks).
        if self.conn.execute("SELECT 1 FROM pending_feedback LIMIT 1").fetchone() is None:
            return []
        return [
            (pid, actual)
            for pid, actual in self.conn.execute("SELECT pid, actual FROM pending_feedback")
        ]

    def drop_pending(self, pid: str) -> None:
        self.conn.execute("DELETE FROM pending_feedback WHERE pid = ?", (pid,))

    def pending_before(self, received_ms: int) -> list[tuple[str, float, int]]:
        return [
            (pid, actual, received)
            for pid, actual, received in self.conn.execute(
                "SELECT pid, actual, received_ms FROM pending_feedback WHERE received_ms < ?",
                (received_ms,),
            )
        ]

    def set_unmatched(self, items: list[tuple[str, float, int]], expired_ms: int) -> None:
        self.conn.executemany(
            "INSERT INTO unmatched_feedback (pid, actual, received_ms, expired_ms)"
            " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(pid, actual, received, expired_ms) for pid, actual, received in items],
        )
        self.conn.executemany(
            "DELETE FROM pending_feedback WHERE pid = ?", [(item[0],) for item in items]
        )

    def counts(self) -> tuple[int, int]:
        pending = self.conn.execute("SELECT count(*) FROM pending_feedback").fetchone()[0]
        unmatched = self.conn.execute("SELECT count(*) FROM unmatched_feedback").fetchone()[0]
        return int(pending), int(unmatched)
