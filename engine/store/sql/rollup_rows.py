"""The numpy side of the rollups: histogram blobs in and out, rows stacked and added.

Kept apart from engine.store.sql.rollups so that opening a store (and `beast status`,
which asks the rollups one question) never imports numpy. Both backends' SQL: how a delta is
added to a row that other writers may add to at the same time is the backend's (`add` here
reads then writes the row, which SQLite's one writer at a time makes safe;
engine.store.postgres.rollups merges under the row's lock).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from engine.core.rollups import SCALARS, Delta, RollupKey, StackedRollups
from engine.store.sql.conn import Conn

Add = Callable[[Conn, str, Iterable[tuple[RollupKey, Delta]]], None]

_SCALARS = (
    "n, errors, labelled, within, abs_err_sum, abs_err_sq_sum, drift_n, log_loss_sum, pred_pos,"
    " actual_pos, true_pos"
)
_BLOBS = "latency_hist, feature_hist, score_hist, class_hist"
_ROLLUP_COLUMNS = (
    "n, errors, score_sum, latency_hist, drift_n, feature_hist, score_hist, labelled, within,"
    " abs_err_sum, abs_err_sq_sum, log_loss_sum, pred_pos, actual_pos, true_pos, class_hist"
)
_TABLES = {"minute": "rollups", "hour": "rollups_hourly"}


def stacked(
    conn: Conn, version_id: int, since_minute: int | None, experiment: str | None
) -> StackedRollups:
    """engine.store.rollups.RollupRepo.stacked."""
    minute_sql = f"SELECT minute, 0, {_SCALARS}, {_BLOBS} FROM rollups WHERE version_id = ?"
    hour_sql = f"SELECT hour * 60, 1, {_SCALARS}, {_BLOBS} FROM rollups_hourly WHERE version_id = ?"
    minute_params: list[Any] = [version_id]
    hour_params: list[Any] = [version_id]
    if since_minute is not None:
        minute_sql += " AND minute >= ?"
        minute_params.append(since_minute)
        hour_sql += " AND hour >= ?"  # the hour that holds since_minute, and later ones
        hour_params.append(since_minute // 60)
    if experiment is not None:
        minute_sql += " AND experiment = ?"
        minute_params.append(experiment)
        hour_sql += " AND experiment = ?"
        hour_params.append(experiment)
    rows = conn.execute(hour_sql, hour_params).fetchall()
    rows += conn.execute(minute_sql, minute_params).fetchall()
    if not rows:
        return StackedRollups(
            np.zeros(0, np.int64), np.zeros((0, SCALARS)), np.zeros((0, 0), np.int64), None, None
        )
    rows.sort(key=lambda r: r[0])
    hourly = np.array([r[1] for r in rows], dtype=bool)
    blobs = 2 + SCALARS
    lat = _stack([r[blobs] for r in rows])
    return StackedRollups(
        np.array([r[0] for r in rows], dtype=np.int64),
        np.array([r[2:blobs] for r in rows], dtype=np.float64),
        np.zeros((len(rows), 0), np.int64) if lat is None else lat,
        _stack([r[blobs + 1] for r in rows]),
        _stack([r[blobs + 2] for r in rows]),
        hourly if hourly.any() else None,
        _classes([r[blobs + 3] for r in rows]),
    )


def _classes(blobs: list[bytes | None]) -> np.ndarray | None:
    """The rows' sparse class histograms as (row, key, count) columns: only labelled rows of
    binary lines have one, so this reads a few pairs, not a dense histogram per row."""
    sizes = np.array([len(b) // 16 if b else 0 for b in blobs], np.int64)
    if not sizes.any():
        return None
    pairs = np.frombuffer(b"".join(b for b in blobs if b), dtype="<i8").reshape(-1, 2)
    rows = np.repeat(np.arange(len(blobs), dtype=np.int64), sizes)
    return np.column_stack([rows, pairs.astype(np.int64)])


def compact_before(conn: Conn, minute: int, add: Add, lock: str = "") -> int:
    """engine.store.rollups.RollupRepo.compact_before, adding to hours with `add`; `lock`
    ends the read of the minute rows (PostgreSQL's FOR UPDATE: two replicas' writers that
    compact at once fold each minute once, the second waits and then finds it gone)."""
    rows = conn.execute(
        f"SELECT version_id, experiment, minute, {_ROLLUP_COLUMNS} FROM rollups"
        f" WHERE minute < ? ORDER BY version_id, experiment, minute{lock}",
        (minute,),
    ).fetchall()
    if not rows:
        return 0
    hours: dict[RollupKey, Delta] = {}
    for r in rows:
        delta = _delta(r[3:])
        key = (r[0], r[1], r[2] // 60)
        if key in hours:
            hours[key].add(delta)
        else:
            hours[key] = delta
    add(conn, "hour", hours.items())
    # The rows folded, not every row before `minute`: on PostgreSQL another replica's writer
    # may have committed a late minute since the read (the next compaction folds it).
    conn.executemany(
        "DELETE FROM rollups WHERE version_id = ? AND experiment = ? AND minute = ?",
        [tuple(r[:3]) for r in rows],
    )
    return len(rows)


def add(conn: Conn, unit: str, deltas: Iterable[tuple[RollupKey, Delta]]) -> None:
    """Add each delta to its row of `unit`: one read per row, then one executemany (one
    writer at a time: SQLite's)."""
    table = _TABLES[unit]
    select = (
        f"SELECT {_ROLLUP_COLUMNS} FROM {table}"
        f" WHERE version_id = ? AND experiment = ? AND {unit} = ?"
    )
    out = []
    for key, delta in deltas:
        old = conn.execute(select, key).fetchone()
        total = delta
        if old is not None:
            total = _delta(old)
            total.add(delta)
        out.append(values(key, total))
    marks = ", ".join("?" for _ in range(3 + _ROLLUP_COLUMNS.count(",") + 1))
    updates = ", ".join(f"{c} = excluded.{c}" for c in _ROLLUP_COLUMNS.split(", "))
    conn.executemany(
        f"INSERT INTO {table} (version_id, experiment, {unit}, {_ROLLUP_COLUMNS})"
        f" VALUES ({marks}) ON CONFLICT (version_id, experiment, {unit}) DO UPDATE SET {updates}",
        out,
    )


def values(key: RollupKey, total: Delta) -> tuple[Any, ...]:
    """A row's key and its `_ROLLUP_COLUMNS`, as parameters."""
    lat = total.latency_hist
    return (
        *key,
        total.n,
        total.errors,
        total.score_sum,
        _blob(lat) if lat is not None else b"",
        total.drift_n,
        _blob(total.feature_hist),
        _blob(total.score_hist),
        total.labelled,
        total.within,
        total.abs_err_sum,
        total.abs_err_sq_sum,
        total.log_loss_sum,
        total.pred_pos,
        total.actual_pos,
        total.true_pos,
        total.class_hist,
    )


def _delta(row: Any) -> Delta:
    """A stored row (its `_ROLLUP_COLUMNS`) as a Delta."""
    return Delta(
        row[0],
        row[1],
        row[2],
        _array(row[3]),
        row[4],
        _array(row[5]) if row[5] else None,
        _array(row[6]) if row[6] else None,
        row[7],
        row[8],
        row[9],
        row[10],
        row[11],
        row[12],
        row[13],
        row[14],
        row[15] or None,
    )


def _array(blob: bytes | None) -> np.ndarray:
    return np.frombuffer(blob, dtype="<i8").astype(np.int64) if blob else np.zeros(0, np.int64)


def _blob(values: np.ndarray | None) -> bytes | None:
    return None if values is None else np.asarray(values, dtype="<i8").tobytes()


def _stack(blobs: list[bytes | None]) -> np.ndarray | None:
    """Stack the minutes that have a histogram; the others count as zeros."""
    width = next((len(b) for b in blobs if b), 0)
    if width == 0:
        return None
    zero = bytes(width)
    joined = b"".join(b if b and len(b) == width else zero for b in blobs)
    return np.frombuffer(joined, dtype="<i8").reshape(len(blobs), -1)
