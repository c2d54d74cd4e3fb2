"""Rollups on PostgreSQL: several replicas' writers add into the same minute's row.

A flush's deltas go in with one upsert per statement (`INSERT … ON CONFLICT … DO UPDATE SET
n = rollups.n + excluded.n, …`): the counters add up in SQL, whichever writer comes first,
and a row that exists is locked by the upsert until the flush commits. The histograms (latency,
drift, class) are blobs of int64 counts, added in Python under that lock: the upsert returns
the row's stored histograms, and one UPDATE writes their sums (no writer can add in between).
Rows are upserted in key order, so two writers' flushes lock shared rows in the same order
(no deadlock between them; one with compaction's FOR UPDATE is retried as a busy flush).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from engine.store.postgres.conn import PgConn
from engine.store.sql.rollups import SqlRollups

if TYPE_CHECKING:
    from engine.core.rollups import Delta, RollupKey

_TABLES = {"minute": "rollups", "hour": "rollups_hourly"}
_ADDED = [
    "n",
    "errors",
    "score_sum",
    "labelled",
    "within",
    "abs_err_sum",
    "abs_err_sq_sum",
    "log_loss_sum",
    "pred_pos",
    "actual_pos",
    "true_pos",
]
_HISTS = "latency_hist, drift_n, feature_hist, score_hist, class_hist"
_ROWS_PER_STATEMENT = 500  # 19 parameters a row, far below PostgreSQL's 65,535


class PostgresRollups(SqlRollups):
    """engine.store.rollups.RollupRepo over one PostgreSQL transaction."""

    conn: PgConn
    _LOCK = " FOR UPDATE"

    def _add(self, unit: str, deltas: Iterable[tuple[RollupKey, Delta]]) -> None:
        ordered = sorted(deltas, key=lambda item: item[0])
        for start in range(0, len(ordered), _ROWS_PER_STATEMENT):
            merge(self.conn, unit, ordered[start : start + _ROWS_PER_STATEMENT])


def merge(conn: PgConn, unit: str, deltas: list[tuple[RollupKey, Delta]]) -> None:
    """Add the deltas (in key order) to their rows: the module docstring's upsert, then the
    histograms' sums for the rows that were there already."""
    from engine.store.sql import rollup_rows  # numpy: not on `beast status`'s path

    if not deltas:
        return
    table = _TABLES[unit]
    columns = rollup_rows._ROLLUP_COLUMNS
    width = 3 + len(columns.split(", "))
    marks = "(" + ", ".join(["?"] * width) + ")"
    added = ", ".join(f"{c} = {table}.{c} + excluded.{c}" for c in _ADDED)
    found = conn.execute(
        f"INSERT INTO {table} (version_id, experiment, {unit}, {columns})"
        f" VALUES {', '.join([marks] * len(deltas))}"
        f" ON CONFLICT (version_id, experiment, {unit}) DO UPDATE SET {added}"
        # xmax is 0 on a row this statement inserted, our transaction's id on one it updated
        f" RETURNING version_id, experiment, {unit}, xmax = 0, {_HISTS}",
        [value for key, delta in deltas for value in rollup_rows.values(key, delta)],
    ).fetchall()
    mine = dict(deltas)
    updates = []
    for r in found:
        if r[3]:
            continue  # inserted with this flush's histograms: nothing to add
        key: RollupKey = (r[0], r[1], r[2])
        total = _histograms(rollup_rows, r[4:])
        total.add(_histograms_of(mine[key]))
        updates.append(_hist_values(rollup_rows, total) + key)
    if updates:
        conn.executemany(
            f"UPDATE {table} SET latency_hist = ?, drift_n = ?, feature_hist = ?,"
            f" score_hist = ?, class_hist = ? WHERE version_id = ? AND experiment = ?"
            f" AND {unit} = ?",
            updates,
        )


def _histograms(rollup_rows: Any, stored: Any) -> Delta:
    """A row's stored histograms (`_HISTS`) as a Delta of histograms only."""
    from engine.core.rollups import Delta

    lat, drift_n, feature, score, classes = stored
    return Delta(
        latency_hist=rollup_rows._array(lat),
        drift_n=drift_n,
        feature_hist=rollup_rows._array(feature) if feature else None,
        score_hist=rollup_rows._array(score) if score else None,
        class_hist=classes or None,
    )


def _histograms_of(delta: Delta) -> Delta:
    from engine.core.rollups import Delta

    return Delta(
        latency_hist=delta.latency_hist,
        drift_n=delta.drift_n,
        feature_hist=delta.feature_hist,
        score_hist=delta.score_hist,
        class_hist=delta.class_hist,
    )


def _hist_values(rollup_rows: Any, total: Delta) -> tuple[Any, ...]:
    lat = total.latency_hist
    return (
        rollup_rows._blob(lat) if lat is not None else b"",
        total.drift_n,
        rollup_rows._blob(total.feature_hist),
        rollup_rows._blob(total.score_hist),
        total.class_hist,
    )
