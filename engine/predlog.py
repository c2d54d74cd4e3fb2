"""The prediction log: every prediction goes through one batched writer per process.

Serving threads append to a deque (no lock, no I/O): a `Record` per single prediction, a
`Chunk` (the batch's columns: an id prefix, one float32 matrix, one score array) per batch.
A single prediction is a row of `predictions`; a batch is one row of `prediction_batches`,
its columns as blobs — inserting a row per prediction (two B-tree inserts each, table and id
index) is what bounded batch throughput, and a batch's rows are still found by id (its
prefix, engine.ids). `logged_rows` and `labelled_rows` read both back as rows.
A writer thread flushes every `interval` seconds or when `batch` rows wait, in one
`BEGIN IMMEDIATE` transaction that inserts the rows, updates the per-minute rollups and
matches early feedback. Never a transaction per request. On close everything queued is
flushed. About once a minute the same transaction compacts minutes older than two hours into
hours (`metrics.compact`).

What a logged row costs is what bounds batch throughput, so the hot path is lean: rows are
bound straight from the batch's columns into multi-row INSERTs, the table has one index
(the prediction id's), rollups and drift bins are computed with numpy once per group of a
flush, and the writer's connection commits with `synchronous = NORMAL` (WAL: a committed
batch survives a crash of this process; an OS crash or power cut may lose the last batches,
as it would lose the rows still queued in memory).

Losses are counted, never silent: if the disk is full (or any other write failure) the batch
is dropped and counted in `stats().dropped`, serving goes on, and logging resumes as soon as
a write succeeds again; a full queue (the writer cannot keep up) counts its overflow the same
way. A busy database (another process holding the write lock past the busy timeout) loses
nothing: the rows go back to the head of the queue and are written at the next attempt.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import NamedTuple

import numpy as np

from engine import baselines, ids, labels, latency, metrics
from engine.errors import StateBusy
from engine.store import Store

log = logging.getLogger("beast.predlog")

CLOSE_ATTEMPTS = 3  # busy retries at close before what is left is counted as dropped
COMPACT_EVERY_S = 60.0


class Record(NamedTuple):
    """One logged prediction; a tuple, bound to an INSERT as it is."""

    pid: str
    at_ms: int
    line: str
    version_id: int
    arm: str
    experiment: str
    key: str | None
    features: bytes | None  # the float32 row
    score: float | None
    latency_us: int
    error: str | None


class Chunk(NamedTuple):
    """A served batch's predictions, column by column (one time, one line, one test).

    Row i's prediction id is `prefix` followed by i in five hex digits (`ids.batch_ids`).
    """

    prefix: str
    at_ms: int
    line: str
    version_ids: np.ndarray  # int64, one per row
    arms: list[str]
    experiment: str
    keys: list[str | None] | None
    features: np.ndarray  # float32 (rows, width), C-contiguous
    scores: np.ndarray  # float64, NaN where the row failed
    latency_us: int  # per row (the batch's time shared out)
    errors: list[str | None] | None  # None: no row failed

    @property
    def rows(self) -> int:
        return len(self.version_ids)

    def pids(self) -> list[str]:
        return ids.batch_ids(self.prefix, self.rows)

    def record(self) -> tuple[object, ...]:
        """The parameters of its `prediction_batches` INSERT (`_INSERT_BATCH`)."""
        keys = self.keys if self.keys is not None and any(self.keys) else None
        return (
            self.prefix,
            self.at_ms,
            self.line,
            self.experiment,
            self.rows,
            self.features.shape[1] if self.features.ndim == 2 else 0,
            self.version_ids.astype("<i8", copy=False).tobytes(),
            bytes(a == "candidate" for a in self.arms),
            np.ascontiguousarray(self.features, dtype="<f4").tobytes(),
            self.scores.astype("<f8", copy=False).tobytes(),
            None if keys is None else json.dumps(keys),
            None if self.errors is None else json.dumps(self.errors),
            self.latency_us,
        )


_INSERT_INTO = (
    "INSERT INTO predictions (pid, at_ms, line, version_id, arm, experiment, key, features,"
    " score, latency_us, error) VALUES "
)
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT = _INSERT_INTO + _ROW  # one row (executemany), as the benchmarks use it
_INSERT_BATCH = (
    "INSERT INTO prediction_batches (prefix, at_ms, line, experiment, rows, width, version_ids,"
    " arms, features, scores, keys, errors, latency_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
    " ?, ?)"
)
_COLUMNS = len(Record._fields)
_MAX_ROWS_PER_STATEMENT = 1024


@functools.cache
def _statement(rows: int) -> str:
    return _INSERT_INTO + ", ".join([_ROW] * rows)


def insert(conn: sqlite3.Connection, rows: list[Record]) -> None:
    """Insert rows with multi-row INSERT statements of power-of-two sizes."""
    insert_flat(conn, list(chain.from_iterable(rows)), len(rows))


def insert_flat(conn: sqlite3.Connection, params: list[object], count: int) -> None:
    """Insert `count` rows whose parameters are `params`, flat, in `Record` order.

    One statement inserts up to 1024 rows in a single `sqlite3_step`, during which Python's
    sqlite3 module releases the GIL: the B-tree work of a whole chunk runs beside the serving
    threads, where `executemany` would take and drop the GIL once per row (and wait for it
    behind a busy serving thread every time). Sizes are powers of two, so a handful of
    statements covers every batch and stays in the connection's statement cache.
    """
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // _COLUMNS
    chunk = _MAX_ROWS_PER_STATEMENT
    while chunk > max(1, limit):
        chunk //= 2
    start = 0
    while start < count:
        size = chunk
        while size > count - start:
            size //= 2
        conn.execute(_statement(size), params[start * _COLUMNS : (start + size) * _COLUMNS])
        start += size


@dataclass(frozen=True)
class LogStats:
    queued: int
    written: int
    dropped: int
    last_error: str | None  # why the last write attempt failed; None once one succeeds
    batches: int = 0  # write transactions committed
    last_drop: str | None = None  # why rows were last dropped (kept after writes resume)


class _LogStore(Store):
    """The writer's connection: commits in WAL without an fsync each (module docstring)."""

    def _connect(self) -> sqlite3.Connection:
        conn = super()._connect()
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn


class PredictionLog:
    """A batched writer for one workspace's prediction log (one per process)."""

    def __init__(
        self,
        db_path: Path,
        *,
        tolerance: float,
        interval: float = 0.05,
        batch: int = 5000,
        max_queue: int = 500_000,
    ) -> None:
        self.store: Store = _LogStore(db_path)
        self.tolerance = tolerance
        self.interval = interval
        self.batch = batch
        self.max_queue = max_queue
        self._queue: deque[Record] = deque()  # single predictions: appended without a lock
        self._chunks: deque[Chunk] = deque()  # batches: counted under _count_lock
        self._chunk_rows = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._flush_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._references = baselines.ReferenceCache()
        self._next_compaction = -math.inf
        self.written = 0
        self.dropped = 0
        self.batches = 0
        self.last_error: str | None = None
        self.last_drop: str | None = None

    def start(self) -> PredictionLog:
        self.store.migrate()  # the writer may be the first to open a fresh database
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._run, name="beast-predlog", daemon=True)
            self._thread.start()
        return self

    @property
    def _queued(self) -> int:
        return len(self._queue) + self._chunk_rows

    def submit(self, record: Record) -> None:
        queue = self._queue
        if len(queue) + self._chunk_rows >= self.max_queue or self._closed:
            self._lose(1, "the prediction log is closed" if self._closed else "queue full")
            return
        queue.append(record)
        if len(queue) >= self.batch:
            self._wake.set()

    def submit_many(self, records: list[Record]) -> None:
        """A batch's records, queued in one step (all or, if the queue is full, none)."""
        if self._queued + len(records) > self.max_queue or self._closed:
            self._lose(
                len(records), "the prediction log is closed" if self._closed else "queue full"
            )
            return
        self._queue.extend(records)
        if self._queued >= self.batch:
            self._wake.set()

    def submit_chunk(self, chunk: Chunk) -> None:
        """A served batch, as columns (all rows or, if the queue is full, none)."""
        rows = chunk.rows
        with self._count_lock:
            if self._closed or self._queued + rows > self.max_queue:
                self.dropped += rows
                self.last_error = self.last_drop = (
                    "the prediction log is closed" if self._closed else "queue full"
                )
                return
            self._chunks.append(chunk)
            self._chunk_rows += rows
        if self._queued >= self.batch:
            self._wake.set()

    def _lose(self, count: int, why: str) -> None:
        with self._count_lock:
            self.dropped += count
            self.last_error = self.last_drop = why

    def stats(self) -> LogStats:
        with self._count_lock:
            return LogStats(
                self._queued,
                self.written,
                self.dropped,
                self.last_error,
                self.batches,
                self.last_drop,
            )

    def close(self) -> None:
        """Stop the writer and flush everything still queued (then count what could not be)."""
        if self._closed:
            return
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for _ in range(CLOSE_ATTEMPTS):
            self.flush()
            if not self._queued:
                break
        with self._count_lock:
            self._closed = True
        left = self._queued
        if left:
            self._queue.clear()
            self._chunks.clear()
            self._chunk_rows = 0
            self._lose(left, f"{left} rows could not be written before close")
        self.compact()
        self.store.close()

    def compact(self) -> int:
        """Compact old rollup minutes into hours now (the writer does it once a minute)."""
        try:
            if not metrics.compactable(self.store.conn, now_ms() // 60_000):
                return 0
            with self.store.write() as conn:
                return metrics.compact(conn, now_ms() // 60_000)
        except Exception:  # compaction is upkeep: the log never fails because of it
            log.exception("compacting rollups failed")
            return 0

    def flush(self) -> int:
        """Write everything queued now; return the number of rows written.

        Stops early (rows kept, in order) when the database stays busy past its timeout.
        """
        total = 0
        with self._flush_lock:
            while self._queue or self._chunks:
                chunks, records = self._take()
                written = self._write(chunks, records)
                if written is None:
                    self._queue.extendleft(reversed(records))
                    with self._count_lock:
                        self._chunks.extendleft(reversed(chunks))
                        self._chunk_rows += sum(c.rows for c in chunks)
                    break
                total += written
        return total

    def _take(self) -> tuple[list[Chunk], list[Record]]:
        """Up to about `batch` rows: whole chunks first, then single records."""
        chunks: list[Chunk] = []
        rows = 0
        with self._count_lock:
            while self._chunks and rows < self.batch:
                chunk = self._chunks.popleft()
                chunks.append(chunk)
                rows += chunk.rows
            self._chunk_rows -= rows
        queue = self._queue
        records = [queue.popleft() for _ in range(min(max(0, self.batch - rows), len(queue)))]
        return chunks, records

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # never let the writer die: serving depends on it
                log.exception("prediction log flush failed")

    def _write(self, chunks: list[Chunk], records: list[Record]) -> int | None:
        """One transaction; the number of rows written, or None when busy (retry later)."""
        rows = sum(c.rows for c in chunks) + len(records)
        try:
            with self.store.write() as conn:
                versions = {int(v) for c in chunks for v in np.unique(c.version_ids)}
                versions.update(r.version_id for r in records)
                unbinned = {v for v in versions if self._references.get(conn, v) is None}
                for version_id in unbinned:  # where a reference scan will start
                    conn.execute(
                        "INSERT OR IGNORE INTO first_predictions (version_id, from_id, from_batch)"
                        " SELECT ?, (SELECT coalesce(max(id), 0) + 1 FROM predictions),"
                        " (SELECT coalesce(max(id), 0) + 1 FROM prediction_batches)",
                        (version_id,),
                    )
                if chunks:
                    conn.executemany(_INSERT_BATCH, [chunk.record() for chunk in chunks])
                if records:
                    insert(conn, records)
                self._rollup(conn, chunks, records)
                labels.match_pending(conn, self.tolerance)
                self._upkeep(conn, unbinned)
        except StateBusy as exc:
            with self._count_lock:
                self.last_error = str(exc)
            log.warning("prediction log busy, %d rows kept for the next attempt", rows)
            return None
        except Exception as exc:  # disk full, read-only, a bug: counted, serving goes on
            self._lose(rows, str(exc) or type(exc).__name__)
            log.warning("dropped %d prediction log rows: %s", rows, exc)
            return 0
        with self._count_lock:
            self.written += rows
            self.batches += 1
            self.last_error = None
        return rows

    def _upkeep(self, conn: sqlite3.Connection, unbinned: set[int]) -> None:
        """References from first predictions, rollup compaction and the expiry of feedback
        that waited too long: upkeep the log must not depend on, each in a savepoint that a
        failure rolls back alone."""
        if unbinned:
            try:
                with _savepoint(conn):
                    baselines.ensure_from_first_predictions(conn, unbinned)
            except Exception:
                log.exception("building a drift reference from first predictions failed")
        if time.monotonic() >= self._next_compaction:
            self._next_compaction = time.monotonic() + COMPACT_EVERY_S
            try:
                with _savepoint(conn):
                    metrics.compact(conn, now_ms() // 60_000)
                    labels.expire_pending(conn)
            except Exception:
                log.exception("compacting rollups or expiring feedback failed")

    def _rollup(self, conn: sqlite3.Connection, chunks: list[Chunk], records: list[Record]) -> None:
        """Add this flush's rows to their minutes' rollups: one row update per group."""
        groups: dict[tuple[int, str, int], _Group] = {}
        for chunk in chunks:
            minute = chunk.at_ms // 60_000
            ids = np.unique(chunk.version_ids)
            for version_id in ids.tolist():
                mask = None if ids.size == 1 else chunk.version_ids == version_id
                key = (version_id, chunk.experiment, minute)
                group = groups.setdefault(key, _Group())
                scores = chunk.scores if mask is None else chunk.scores[mask]
                x = chunk.features if mask is None else chunk.features[mask]
                hist = np.zeros(latency.BUCKETS, np.int64)
                hist[latency.bucket(chunk.latency_us)] = scores.size
                group.add(scores, hist, x)
        if records:
            self._rollup_records(records, groups)
        for key, group in groups.items():
            metrics.add_to_row(conn, "minute", key, group.delta(self._references.get(conn, key[0])))

    def _rollup_records(
        self, records: list[Record], groups: dict[tuple[int, str, int], _Group]
    ) -> None:
        columns = list(zip(*records, strict=True))
        version_ids, experiments, at_ms = columns[3], columns[5], columns[1]
        feats, lat_us = columns[7], columns[9]
        scores = np.array(columns[8], dtype=np.float64)  # None (an error) becomes NaN
        lat_all = np.array(lat_us, dtype=np.float64)
        members: dict[tuple[int, str, int], list[int]] = {}
        for i, group_key in enumerate(
            zip(version_ids, experiments, [t // 60_000 for t in at_ms], strict=True)
        ):
            found = members.get(group_key)
            if found is None:
                members[group_key] = [i]
            else:
                found.append(i)
        for key, rows in members.items():
            idx = np.array(rows, dtype=np.int64)
            blobs = [feats[i] for i in rows]
            widths = {len(b) if b is not None else -1 for b in blobs}
            x = None
            if len(widths) == 1 and (width := widths.pop()) > 0 and width % 4 == 0:
                x = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(rows), -1)
            groups.setdefault(key, _Group()).add(scores[idx], latency.histogram(lat_all[idx]), x)


class _Group:
    """One rollup group's share of a flush, gathered before its one row update."""

    def __init__(self) -> None:
        self.scores: list[np.ndarray] = []
        self.latency = np.zeros(latency.BUCKETS, np.int64)
        self.features: list[np.ndarray | None] = []

    def add(self, scores: np.ndarray, latency_hist: np.ndarray, x: np.ndarray | None) -> None:
        self.scores.append(scores)
        self.latency = self.latency + latency_hist
        self.features.append(x)

    def delta(self, ref: baselines.VersionReference | None) -> metrics.Delta:
        scores = np.concatenate(self.scores)
        ok = ~np.isnan(scores)
        scored = int(ok.sum())
        out = metrics.Delta(
            n=scores.size,
            errors=scores.size - scored,
            score_sum=float(scores[ok].sum()),
            latency_hist=self.latency,
        )
        # Drift bins only from rows of the reference's width (the router's; never others).
        if ref is not None and scored:
            parts = [
                (s, x)
                for s, x in zip(self.scores, self.features, strict=True)
                if x is not None and x.shape[1] == ref.width
            ]
            good_scores = np.concatenate([s for s, _ in parts]) if parts else np.zeros(0)
            good_ok = ~np.isnan(good_scores)
            if good_ok.any():
                rows = np.concatenate([x for _, x in parts])[good_ok]
                out.feature_hist = ref.feature_counts(rows)
                out.score_hist = ref.score_counts(good_scores[good_ok])
                out.drift_n = int(good_ok.sum())
        return out


class _savepoint:
    """A nested transaction: a failure inside rolls back only what it did."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("SAVEPOINT beast_optional")

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is not None:
            self.conn.execute("ROLLBACK TO beast_optional")
        self.conn.execute("RELEASE beast_optional")


def labelled_rows(
    conn: sqlite3.Connection, line: str, width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A line's labelled, successful predictions: (features, actuals, at_ms), oldest first.

    Features come back as a float32 (n, width) matrix in the line's feature order; with
    `logged_rows`, this is the one reader outside the writer that knows how the log stores
    them (retraining uses it). Rows of another width (never written by the router) are
    skipped; of a batch, only the labelled rows' slices are read.
    """
    found = conn.execute(
        "SELECT features, actual, at_ms FROM predictions WHERE line = ? AND actual IS NOT NULL"
        " AND error IS NULL AND length(features) = ?",
        (line, 4 * width),
    ).fetchall()
    in_batches = conn.execute(
        "SELECT substr(b.features, 4 * b.width * l.row + 1, 4 * b.width), l.actual, b.at_ms,"
        " substr(b.scores, 8 * l.row + 1, 8) FROM batch_labels l"
        " JOIN prediction_batches b ON b.id = l.batch_id WHERE b.line = ? AND b.width = ?",
        (line, width),
    ).fetchall()
    if in_batches:  # a failed row (NaN score) has no prediction to learn from
        scored = ~np.isnan(np.frombuffer(b"".join(r[3] for r in in_batches), dtype="<f8"))
        found += [r[:3] for r, ok in zip(in_batches, scored.tolist(), strict=True) if ok]
    x = np.frombuffer(b"".join(r[0] for r in found), dtype=np.float32).reshape(-1, width)
    y = np.array([r[1] for r in found], dtype=np.float32)
    at = np.array([r[2] for r in found], dtype=np.int64)
    order = np.argsort(at, kind="stable")
    return x[order], y[order], at[order]


def count_logged(conn: sqlite3.Connection) -> int:
    """How many predictions the log holds: single ones plus every batch's rows."""
    found = conn.execute(
        "SELECT (SELECT count(*) FROM predictions)"
        " + (SELECT coalesce(sum(rows), 0) FROM prediction_batches)"
    ).fetchone()
    return int(found[0])


class LoggedRow(NamedTuple):
    """One logged prediction, single or a batch's row, as `logged_rows` reads it back."""

    pid: str
    at_ms: int
    line: str
    version_id: int
    arm: str
    experiment: str
    key: str | None
    features: bytes | None
    score: float | None
    latency_us: int
    error: str | None
    actual: float | None


def logged_rows(conn: sqlite3.Connection, line: str | None = None) -> Iterator[LoggedRow]:
    """Every logged prediction (of `line`, or all), singles first, then batches' rows."""
    where, args = ("WHERE line = ?", (line,)) if line is not None else ("", ())
    for row in conn.execute(
        "SELECT pid, at_ms, line, version_id, arm, experiment, key, features, score,"
        f" latency_us, error, actual FROM predictions {where} ORDER BY id",
        args,
    ):
        yield LoggedRow(*row)
    batches = conn.execute(
        "SELECT id, prefix, at_ms, line, experiment, rows, width, version_ids, arms, features,"
        f" scores, keys, errors, latency_us FROM prediction_batches {where} ORDER BY id",
        args,
    ).fetchall()
    for b in batches:
        (batch_id, prefix, at_ms, line_, experiment, rows, width) = b[:7]
        actuals = dict(
            conn.execute(
                "SELECT row, actual FROM batch_labels WHERE batch_id = ?", (batch_id,)
            ).fetchall()
        )
        version_ids = np.frombuffer(b[7], dtype="<i8").tolist()
        scores = np.frombuffer(b[10], dtype="<f8").tolist()
        keys = json.loads(b[11]) if b[11] is not None else [None] * rows
        errors = json.loads(b[12]) if b[12] is not None else [None] * rows
        step = 4 * width
        for i, pid in enumerate(ids.batch_ids(prefix, rows)):
            score = scores[i]
            yield LoggedRow(
                pid,
                at_ms,
                line_,
                version_ids[i],
                "candidate" if b[8][i] else "production",
                experiment,
                keys[i],
                b[9][i * step : (i + 1) * step],
                None if math.isnan(score) else score,
                b[13],
                errors[i],
                actuals.get(i),
            )


def now_ms() -> int:
    return int(time.time() * 1000)
