"""Rollups in SQL: `rollups` (per minute) and `rollups_hourly` (compacted hours).

Histograms are stored as blobs of little-endian int64 counts (engine.store.sql.rollup_rows,
imported where they are read or written: numpy stays off the path of `beast status`). Both
backends' SQL; how a flush's deltas are merged into rows that several writers add to is the
backend's (`_add`: PostgreSQL's in engine.store.postgres.rollups).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from engine.core import rollups
from engine.store.sql.conn import Conn

if TYPE_CHECKING:
    from engine.core.rollups import Delta, LabelDelta, RollupKey, StackedRollups

_ADD_LABEL = (
    "UPDATE {table} SET labelled = labelled + 1, within = within + ?,"
    " abs_err_sum = abs_err_sum + ?, abs_err_sq_sum = abs_err_sq_sum + ?,"
    " log_loss_sum = log_loss_sum + ?, pred_pos = pred_pos + ?, actual_pos = actual_pos + ?,"
    " true_pos = true_pos + ? WHERE version_id = ? AND experiment = ? AND {unit} = ?"
)
_CLASSES = "SELECT class_hist FROM {table} WHERE version_id = ? AND experiment = ? AND {unit} = ?"
_SET_CLASSES = (
    "UPDATE {table} SET class_hist = ? WHERE version_id = ? AND experiment = ? AND {unit} = ?"
)


class SqlRollups:
    """engine.store.rollups.RollupRepo over one transaction (SQLite's as it is)."""

    _LOCK = ""  # what ends a read of rows about to be rewritten (PostgreSQL: FOR UPDATE)

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def _add(self, unit: str, deltas: Iterable[tuple[RollupKey, Delta]]) -> None:
        """Add each delta to its row of `unit` ("minute" or "hour")."""
        from engine.store.sql import rollup_rows  # numpy: not on `beast status`'s path

        rollup_rows.add(self.conn, unit, deltas)

    def stacked(
        self, version_id: int, *, since_minute: int | None = None, experiment: str | None = None
    ) -> StackedRollups:
        from engine.store.sql import rollup_rows  # numpy: not on `beast status`'s path

        return rollup_rows.stacked(self.conn, version_id, since_minute, experiment)

    def add_minutes(self, deltas: Mapping[RollupKey, Delta]) -> None:
        self._add("minute", deltas.items())

    def add_label(self, version_id: int, experiment: str, minute: int, label: LabelDelta) -> None:
        sums = (
            int(label.within),
            label.error,
            label.error * label.error,
            label.log_loss,
            int(label.pred_pos),
            int(label.actual_pos),
            int(label.true_pos),
        )
        # Its minute's row, or the hour's once that minute was compacted (never both).
        table, unit, at = "rollups", "minute", minute
        if not self.conn.execute(
            _ADD_LABEL.format(table=table, unit=unit), (*sums, version_id, experiment, at)
        ).rowcount:
            table, unit, at = "rollups_hourly", "hour", minute // 60
            if not self.conn.execute(
                _ADD_LABEL.format(table=table, unit=unit), (*sums, version_id, experiment, at)
            ).rowcount:
                return
        if label.class_key is not None:
            key = (version_id, experiment, at)
            row = self.conn.execute(_CLASSES.format(table=table, unit=unit), key).fetchone()
            counts = rollups.decode_classes(row[0])
            counts[label.class_key] = counts.get(label.class_key, 0) + 1
            blob = rollups.encode_classes(counts)
            self.conn.execute(_SET_CLASSES.format(table=table, unit=unit), (blob, *key))

    def has_minutes_before(self, minute: int) -> bool:
        found = self.conn.execute(
            "SELECT 1 FROM rollups WHERE minute < ? LIMIT 1", (minute,)
        ).fetchone()
        return found is not None

    def compact_before(self, minute: int) -> int:
        from engine.store.sql import rollup_rows  # numpy: not on `beast status`'s path

        return rollup_rows.compact_before(
            self.conn, minute, lambda _conn, unit, deltas: self._add(unit, deltas), self._LOCK
        )

    def successes(self, version_id: int) -> int:
        found = self.conn.execute(
            "SELECT CAST(coalesce(sum(n - errors), 0) AS BIGINT) FROM rollups"
            " WHERE version_id = ? UNION ALL SELECT CAST(coalesce(sum(n - errors), 0) AS BIGINT)"
            " FROM rollups_hourly WHERE version_id = ?",
            (version_id, version_id),
        ).fetchall()
        return int(sum(row[0] for row in found))

    def any_logged(self, version_ids: list[int]) -> bool:
        marks = ", ".join("?" for _ in version_ids)
        seen = self.conn.execute(
            f"SELECT 1 FROM rollups WHERE version_id IN ({marks})"
            f" UNION ALL SELECT 1 FROM rollups_hourly WHERE version_id IN ({marks}) LIMIT 1",
            version_ids + version_ids,
        ).fetchone()
        return seen is not None
