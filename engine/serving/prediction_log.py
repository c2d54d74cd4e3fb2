"""The prediction log: every prediction goes through one batched writer per process.

Serving threads append to a deque (no lock, no I/O): a `Record` per single prediction, a
`Chunk` (the batch's columns: an id prefix, one float32 matrix, one score array) per batch.
A single prediction is a row of `predictions`, keyed by its id as two integers (`ids.key`,
WITHOUT ROWID: the table is the id's index, ~142 B a row); a batch is one row of
`prediction_batches`, its columns as blobs — inserting a row per prediction is what bounded
batch throughput, and a batch's rows are still found by id (its prefix, engine.core.ids).
`logged_rows` and `labelled_rows` read both back as rows.
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

One bad row never costs its neighbours: when a flush fails because of what a row holds (a
text that cannot be encoded, a value out of range, a CHECK it breaks, anything Python refuses
to bind), the flush is split in halves and each retried, down to the one row (or batch) that
fails alone. That row is quarantined — its id and the reason kept in
`quarantined_predictions`, so feedback for it is refused with the reason — and counted; the
rest are written. Nothing of this runs while writes succeed: one transaction per flush.

Losses are counted, never silent: if the store itself fails (disk full, read-only, I/O) the
batch is dropped and counted in `stats().dropped`, serving goes on, and logging resumes as
soon as a write succeeds again; a full queue (the writer cannot keep up) counts its overflow
the same way, and `dropped` counts quarantined rows too (`quarantined` says how many of them).
A busy database (another process holding the write lock past the busy timeout) loses nothing:
the rows go back to the head of the queue and are written at the next attempt.

Retention ([log] retention_days): the writer thread prunes raw rows older than the window in
bounded steps (`prune`: at most `PRUNE_CHUNK_ROWS` rows looked at, each step its own short
transaction), every `PRUNE_EVERY_S`, or every `PRUNE_BACKLOG_S` while a backlog remains.
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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from engine.core import ids
from engine.core.config import LogSettings, load_config
from engine.core.errors import ConfigError, StateBusy
from engine.core.rollups import Delta
from engine.monitoring import baselines
from engine.monitoring import feedback as labels
from engine.monitoring import rollups as metrics
from engine.serving import latency
from engine.store.sqlite.connection import SqliteStore
from engine.store.sqlite.tx import SqliteTx

log = logging.getLogger("beast.predlog")

CLOSE_ATTEMPTS = 3  # busy retries at close before what is left is counted as dropped
COMPACT_EVERY_S = 60.0
# Retention steps: 5,000 rows looked at hold the write lock ~10 ms (30 at worst: tests/bench).
# One step a minute keeps up with a quiet log, one every half second while a backlog remains
# (10,000 rows/s, above what one writer logs one row at a time) catches up with a busy one.
PRUNE_CHUNK_ROWS = 5000
PRUNE_EVERY_S = 60.0
PRUNE_BACKLOG_S = 0.5
DAY_MS = 86_400_000
# A version's single rows are looked for this far before the first flush that saw it: another
# process's writer may still hold earlier rows of it (ids younger than this may be buffered).
FIRST_ROWS_MARGIN_MS = labels.PENDING_WINDOW_MS


class Record(NamedTuple):
    """One logged prediction, as the router hands it over (`row` makes its INSERT's
    parameters: the id becomes its key, the arm 0 or 1, the test its id; the line is the
    version's)."""

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
    "INSERT INTO predictions (hi, lo, at_ms, version_id, arm, experiment_id, key, features,"
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
ARMS = {"production": 0, "candidate": 1}  # how `predictions.arm` stores the arm
ARM_NAMES = tuple(ARMS)


@functools.cache
def _statement(rows: int) -> str:
    return _INSERT_INTO + ", ".join([_ROW] * rows)


def row(record: Record, experiments: Mapping[str, int | None]) -> tuple[object, ...]:
    """The parameters of a record's `predictions` INSERT (`_INSERT`): `params` of one."""
    return tuple(params([record], experiments))


_LO_OFFSET = 1 << 63  # ids.key's
_LOW64 = (1 << 64) - 1


def params(records: list[Record], experiments: Mapping[str, int | None]) -> list[object]:
    """The records' INSERT parameters, flat, in `_INSERT`'s column order: the id as its key
    (`ids.key`), the arm as 0 or 1, the A/B test as its id (`experiments`: name → id, as
    `experiment_ids` reads them), at_ms NULL when it is the id's millisecond.

    Raises ValueError or KeyError for an id that is no prediction id, an unknown arm or
    test: a fault of that row (the writer quarantines it). The writer's hot path: one parse
    of the id per row (1.4 µs a row here, measured), nothing else in Python.
    """
    out: list[object] = []
    extend = out.extend
    arms = ARMS
    for pid, at, _line, version_id, arm, experiment, *rest in records:
        n = int(pid, 16)
        hi = n >> 64
        extend(
            (
                hi,
                (n & _LOW64) - _LO_OFFSET,
                None if at == hi >> 16 else at,
                version_id,
                arms[arm],
                experiments[experiment],
                *rest,
            )
        )
    return out


def experiment_ids(conn: sqlite3.Connection, names: Iterable[str]) -> dict[str, int | None]:
    """Name → id of the A/B tests named ('' is no test: None); unknown names are left out."""
    wanted = sorted(set(names) - {""})
    marks = ", ".join("?" * len(wanted))
    found: dict[str, int | None] = {"": None}
    if wanted:
        found.update(
            conn.execute(f"SELECT name, id FROM experiments WHERE name IN ({marks})", wanted)
        )
    return found


def insert(
    conn: sqlite3.Connection, rows: list[Record], experiments: Mapping[str, int | None]
) -> None:
    """Insert rows with multi-row INSERT statements of power-of-two sizes."""
    insert_flat(conn, params(rows, experiments), len(rows))


def insert_flat(conn: sqlite3.Connection, params: list[object], count: int) -> None:
    """Insert `count` rows whose parameters are `params`, flat, in `row` order.

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
    """What this process's writer did. Every submitted row is, in the end, written or
    dropped (written + dropped + queued = submitted)."""

    queued: int
    written: int
    dropped: int  # rows that will never be in the log: disk full, queue full, quarantined
    last_error: str | None  # why the last write attempt failed; None once one succeeds
    batches: int = 0  # write transactions committed
    last_drop: str | None = None  # why rows were last dropped (kept after writes resume)
    quarantined: int = 0  # of `dropped`: rows set aside because they could not be written
    pruned: int = 0  # rows retention removed from the log


class _RowFault(Exception):
    """A flush failed because of what one of its rows holds (the cause says what)."""


# SQLite result codes that name a value, not the store: string or blob too big, a CHECK or
# NOT NULL broken, a datatype mismatch, a bound parameter out of range.
_ROW_CODES = frozenset({18, 19, 20, 25})


def _row_fault(exc: BaseException) -> bool:
    """Whether a failed flush failed because of a row (split and retry) rather than the
    store (disk full, read-only, I/O, a missing table: every row would fail the same way)."""
    if not isinstance(exc, sqlite3.Error):
        return True  # Python refused a value: a text it cannot encode, an int too large
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.DataError):
        return True  # a constraint, or a parameter SQLite cannot bind
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _ROW_CODES


def _reason(exc: BaseException) -> str:
    """One printable, storable line (a quarantined row's text may not be encodable)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


_Rows = tuple[list[Chunk], list[Record]]


class _LogStore(SqliteStore):
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
        settings: LogSettings | None = None,
    ) -> None:
        self.store: SqliteStore = _LogStore(db_path)
        self.settings = _workspace_settings(db_path) if settings is None else settings
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
        self._experiments: dict[str, int | None] = {"": None}  # tests are never renamed
        self._next_compaction = -math.inf
        self._next_prune = -math.inf
        self.written = 0
        self.dropped = 0
        self.quarantined = 0
        self.pruned = 0
        self.batches = 0
        self.last_error: str | None = None
        self.last_drop: str | None = None

    def start(self) -> PredictionLog:
        self.store.migrate()  # the writer may be the first to open a fresh database
        # Not at once: a short-lived writer (`beast predict`) leaves retention to the engine.
        self._next_prune = time.monotonic() + PRUNE_EVERY_S
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
                self.quarantined,
                self.pruned,
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
            if not metrics.compactable(SqliteTx(self.store.conn), now_ms() // 60_000):
                return 0
            with self.store.write() as tx:
                return metrics.compact(tx, now_ms() // 60_000)
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
                written, busy = self._write(*self._take())
                total += written
                if busy:
                    break
        return total

    def _requeue(self, groups: list[_Rows]) -> None:
        """Put rows back at the head of the queue, in the order given."""
        chunks = [c for group in groups for c in group[0]]
        records = [r for group in groups for r in group[1]]
        self._queue.extendleft(reversed(records))
        with self._count_lock:
            self._chunks.extendleft(reversed(chunks))
            self._chunk_rows += sum(c.rows for c in chunks)

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
            if time.monotonic() >= self._next_prune and not self._stop.is_set():
                self.prune()

    def prune(self, at_ms: int | None = None) -> Pruned:
        """One bounded retention step (`prune`) in its own transaction; never raises.

        The writer thread calls this on its own schedule; a busy store or a failure only
        postpones it.
        """
        if self.settings.retention_days <= 0:
            return Pruned()
        try:
            with self._flush_lock, self.store.write_sql() as conn:  # one user of the connection
                done = prune(conn, self.settings, now_ms() if at_ms is None else at_ms)
        except StateBusy:
            done = Pruned(more=True)
        except Exception:  # retention is upkeep: the log never fails because of it
            log.exception("pruning the prediction log failed")
            done = Pruned()
        with self._count_lock:
            self.pruned += done.rows
        self._next_prune = time.monotonic() + (PRUNE_BACKLOG_S if done.more else PRUNE_EVERY_S)
        return done

    def _write(self, chunks: list[Chunk], records: list[Record]) -> tuple[int, bool]:
        """Write the rows, setting aside only those that cannot be; (rows written, busy).

        One transaction while writes succeed. When one fails because of a row (`_row_fault`),
        the rows are split in halves and each half retried (a stack, first half first), down
        to the record or batch that fails alone: it is quarantined. A failure of the store is
        counted as dropped; busy puts back what is left, in order, for the next attempt.
        """
        todo: list[_Rows] = [(chunks, records)]
        written = 0
        while todo:
            group = todo.pop()
            try:
                written += self._commit(*group)
            except StateBusy as exc:
                with self._count_lock:
                    self.last_error = str(exc)
                self._requeue([group, *reversed(todo)])
                log.warning("prediction log busy, %d rows kept for the next attempt", self._queued)
                return written, True
            except _RowFault as fault:
                units: list[Chunk | Record] = [*group[0], *group[1]]
                if len(units) == 1:
                    self._quarantine(units[0], fault.__cause__ or fault)
                    continue
                half = len(units) // 2
                todo.append(_split(units[half:]))
                todo.append(_split(units[:half]))
            except Exception as exc:  # disk full, read-only, I/O: counted, serving goes on
                rows = _count(group)
                self._lose(rows, str(exc) or type(exc).__name__)
                log.warning("dropped %d prediction log rows: %s", rows, exc)
        return written, False

    def _commit(self, chunks: list[Chunk], records: list[Record]) -> int:
        """One flush transaction; raises `_RowFault` when a row's content made it fail."""
        with self.store.write_sql() as conn:
            try:
                self._apply(conn, chunks, records)
            except Exception as exc:
                if _row_fault(exc):
                    raise _RowFault(_reason(exc)) from exc
                raise
        rows = _count((chunks, records))
        with self._count_lock:
            self.written += rows
            self.batches += 1
            self.last_error = None
        return rows

    def _apply(self, conn: sqlite3.Connection, chunks: list[Chunk], records: list[Record]) -> None:
        """Insert the rows, add them to the rollups, match the feedback that waited for them."""
        versions = {int(v) for c in chunks for v in np.unique(c.version_ids)}
        versions.update(r.version_id for r in records)
        tx = SqliteTx(conn)
        unbinned = {v for v in versions if self._references.get(tx, v) is None}
        if unbinned:  # where a reference scan will start
            first_ms = min((r.at_ms for r in records), default=now_ms())
            from_key = ids.key_floor(first_ms - FIRST_ROWS_MARGIN_MS)
            conn.executemany(
                "INSERT OR IGNORE INTO first_predictions (version_id, from_key, from_batch)"
                " SELECT ?, ?, (SELECT coalesce(max(id), 0) + 1 FROM prediction_batches)",
                [(version_id, from_key) for version_id in unbinned],
            )
        if chunks:
            conn.executemany(_INSERT_BATCH, [chunk.record() for chunk in chunks])
        if records:
            names = {r.experiment for r in records}
            if not names <= self._experiments.keys():
                self._experiments.update(experiment_ids(conn, names))
            insert(conn, records, self._experiments)
        self._rollup(conn, chunks, records)
        labels.match_pending(
            tx,
            self.tolerance,
            singles=[r.pid for r in records],
            batches={c.prefix: c.rows for c in chunks},
        )
        self._upkeep(conn, unbinned)

    def _quarantine(self, unit: Chunk | Record, cause: BaseException) -> None:
        """Set aside a record (or batch) that cannot be written even alone, and count it.

        Its id and the reason are kept where they can be (an id that cannot be stored is
        only counted), so feedback for it is refused with the reason, not left pending.
        """
        reason = _reason(cause)
        if isinstance(unit, Chunk):
            pid, rows, at_ms, valid = unit.prefix, unit.rows, unit.at_ms, unit.prefix + "00000"
        else:
            pid, rows, at_ms, valid = unit.pid, 1, unit.at_ms, unit.pid
        if ids.is_valid(valid) and isinstance(at_ms, int):
            try:
                with self.store.write_sql() as conn:
                    conn.execute(
                        "INSERT OR IGNORE INTO quarantined_predictions (pid, rows, at_ms, reason,"
                        " quarantined_ms) VALUES (?, ?, ?, ?, ?)",
                        (pid, rows, at_ms, reason, now_ms()),
                    )
            except Exception as exc:  # the count below is what must not fail
                log.warning("cannot record the quarantined prediction %s: %s", pid, exc)
        with self._count_lock:
            self.quarantined += rows
            self.dropped += rows
            self.last_error = self.last_drop = f"quarantined {rows} row(s): {reason}"
        log.warning("quarantined %d prediction log row(s) that cannot be written: %s", rows, reason)

    def _upkeep(self, conn: sqlite3.Connection, unbinned: set[int]) -> None:
        """References from first predictions, rollup compaction and the expiry of feedback
        that waited too long: upkeep the log must not depend on, each in a savepoint that a
        failure rolls back alone."""
        if unbinned:
            try:
                with _savepoint(conn):
                    baselines.ensure_from_first_predictions(SqliteTx(conn), unbinned)
            except Exception:
                log.exception("building a drift reference from first predictions failed")
        if time.monotonic() >= self._next_compaction:
            self._next_compaction = time.monotonic() + COMPACT_EVERY_S
            try:
                with _savepoint(conn):
                    tx = SqliteTx(conn)
                    metrics.compact(tx, now_ms() // 60_000)
                    labels.expire_pending(tx)
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
        tx = SqliteTx(conn)
        metrics.add_minutes(
            tx,
            {key: group.delta(self._references.get(tx, key[0])) for key, group in groups.items()},
        )

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


def _count(group: _Rows) -> int:
    return sum(c.rows for c in group[0]) + len(group[1])


def _split(units: list[Chunk | Record]) -> _Rows:
    chunks = [u for u in units if isinstance(u, Chunk)]
    return chunks, [u for u in units if isinstance(u, Record)]


def _workspace_settings(db_path: Path) -> LogSettings:
    """[log] of the workspace's config.toml beside the database (defaults when unreadable:
    the engine refuses a bad config.toml before it opens a log)."""
    try:
        return load_config(db_path.parent / "config.toml").log
    except ConfigError as exc:
        log.warning("prediction log uses the default [log] settings: %s", exc)
        return LogSettings()


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

    def delta(self, ref: baselines.VersionReference | None) -> Delta:
        scores = np.concatenate(self.scores)
        ok = ~np.isnan(scores)
        scored = int(ok.sum())
        out = Delta(
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
        "SELECT features, actual, coalesce(at_ms, hi >> 16) FROM predictions"
        " WHERE version_id IN (SELECT id FROM versions WHERE line = ?) AND actual IS NOT NULL"
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
    """Every logged prediction (of `line`, or all), singles first (by id: by time), then
    batches' rows (in the order they were logged)."""
    where, args = ("WHERE line = ?", (line,)) if line is not None else ("", ())
    for hi, lo, at_ms, line_, version_id, arm, *rest in conn.execute(
        "SELECT p.hi, p.lo, coalesce(p.at_ms, p.hi >> 16), v.line, p.version_id, p.arm,"
        " coalesce(e.name, ''), p.key, p.features, p.score, p.latency_us, p.error, p.actual"
        " FROM predictions p JOIN versions v ON v.id = p.version_id"
        " LEFT JOIN experiments e ON e.id = p.experiment_id"
        f" {where.replace('line', 'v.line')} ORDER BY p.hi, p.lo",
        args,
    ):
        yield LoggedRow(ids.from_key(hi, lo), at_ms, line_, version_id, ARM_NAMES[arm], *rest)
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


@dataclass(frozen=True)
class Pruned:
    """One retention step: what it removed, and whether more is already due."""

    singles: int = 0  # single prediction rows deleted
    batch_rows: int = 0  # rows of the batches deleted
    moved: int = 0  # labelled batch rows kept as single rows when their batch went
    more: bool = False  # a step stopped at its bound: the next one is due now

    @property
    def rows(self) -> int:
        return self.singles + self.batch_rows - self.moved


# Versions whose drift reference is still to be built from their first predictions: their
# successful rows are kept (baselines.ensure_from_first_predictions reads them).
_WAITING_FOR_REFERENCE = (
    "SELECT v.id FROM versions v LEFT JOIN baselines b ON b.artifact_id = v.artifact_id"
    " AND b.reference IS NOT NULL WHERE b.artifact_id IS NULL"
)


def prune(
    conn: sqlite3.Connection,
    settings: LogSettings,
    at_ms: int,
    budget: int = PRUNE_CHUNK_ROWS,
) -> Pruned:
    """One bounded step of retention inside the caller's write transaction.

    Deletes raw rows issued more than `retention_days` before `at_ms`, looking at no more
    than about `budget` rows (single rows, then batches' rows), and records how far it got
    in `log_retention`. Kept: labelled rows until `labelled_retention_days` (never fewer
    days than `retention_days`; 0 keeps them), moved out of a batch that goes into single
    rows of their own; the successful rows of a version whose drift reference is still to
    be built from them; rollups, references and feedback tables (other tables).
    """
    if settings.retention_days <= 0:
        return Pruned()
    cutoff_ms = at_ms - int(settings.retention_days * DAY_MS)
    labelled_days = settings.labelled_retention_days
    labelled_ms = (
        None
        if labelled_days <= 0
        else at_ms - int(max(labelled_days, settings.retention_days) * DAY_MS)
    )
    found = conn.execute(
        "SELECT unlabelled_key, labelled_key, batch_id FROM log_retention WHERE id = 1"
    ).fetchone()
    unlabelled_key, labelled_key, batch_id = found if found is not None else (0, 0, 0)
    singles, looked, unlabelled_key, more = _prune_singles(
        conn, unlabelled_key, ids.key_floor(cutoff_ms), "actual IS NULL", budget
    )
    if labelled_ms is not None and looked < budget:
        deleted, seen, labelled_key, also = _prune_singles(
            conn, labelled_key, ids.key_floor(labelled_ms), "1", budget - looked
        )
        singles, looked, more = singles + deleted, looked + seen, more or also
    batch_rows = moved = 0
    if looked < budget:
        batch_rows, moved, batch_id, also = _prune_batches(
            conn, batch_id, cutoff_ms, labelled_ms, budget - looked, alone=looked == 0
        )
        more = more or also
    else:
        more = True
    conn.execute(
        "DELETE FROM quarantined_predictions WHERE rowid IN (SELECT rowid FROM"
        " quarantined_predictions WHERE at_ms < ? LIMIT ?)",
        (cutoff_ms, budget),
    )
    conn.execute(
        "INSERT INTO log_retention (id, unlabelled_key, labelled_key, batch_id,"
        " pruned_before_ms, days) VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
        " unlabelled_key = excluded.unlabelled_key, labelled_key = excluded.labelled_key,"
        " batch_id = excluded.batch_id, days = excluded.days,"
        " pruned_before_ms = max(pruned_before_ms, excluded.pruned_before_ms)",
        (unlabelled_key, labelled_key, batch_id, cutoff_ms, settings.retention_days),
    )
    return Pruned(singles, batch_rows, moved, more)


def _prune_singles(
    conn: sqlite3.Connection, after: int, below: int, which: str, budget: int
) -> tuple[int, int, int, bool]:
    """Delete `which` single rows with a key's first half in (after, end], end the first
    half of the `budget`-th row from `after` (or just below `below`): a range of the table's
    own key, walked once. (deleted, rows looked at, end, more left)."""
    if after >= below - 1:
        return 0, 0, after, False
    found = conn.execute(
        "SELECT hi FROM predictions WHERE hi > ? AND hi < ? ORDER BY hi LIMIT 1 OFFSET ?",
        (after, below, budget - 1),
    ).fetchone()
    if found is not None:
        end, more, looked = found[0], True, budget
    else:  # fewer than `budget` rows left below the cutoff
        end, more = below - 1, False
        looked = conn.execute(
            "SELECT count(*) FROM predictions WHERE hi > ? AND hi < ?", (after, below)
        ).fetchone()[0]
    deleted = conn.execute(
        f"DELETE FROM predictions WHERE hi > ? AND hi <= ? AND {which}"
        f" AND (error IS NOT NULL OR version_id NOT IN ({_WAITING_FOR_REFERENCE}))",
        (after, end),
    ).rowcount
    return deleted, int(looked), end, more


def _prune_batches(
    conn: sqlite3.Connection,
    after: int,
    cutoff_ms: int,
    labelled_ms: int | None,
    budget: int,
    *,
    alone: bool,
) -> tuple[int, int, int, bool]:
    """Delete whole batches logged before `cutoff_ms`, in id order after batch `after`, up to
    `budget` rows (a larger batch only `alone`, as a step of its own); their labelled rows
    become single rows unless older than `labelled_ms`. (rows deleted, rows moved, last
    batch looked at, more left)."""
    candidates = conn.execute(
        "SELECT id, at_ms, rows FROM prediction_batches WHERE id > ? ORDER BY id LIMIT ?",
        (after, budget),
    ).fetchall()
    taken: list[int] = []
    rows = 0
    more = False
    for batch_id, batch_at, batch_rows in candidates:
        if batch_at >= cutoff_ms:
            break
        if rows + batch_rows > budget and (taken or not alone):
            more = True
            break
        taken.append(batch_id)
        rows += batch_rows
    else:
        more = len(candidates) == budget
    if not taken:
        return 0, 0, after, more
    waiting = {v for (v,) in conn.execute(_WAITING_FOR_REFERENCE)}
    marks = ", ".join("?" * len(taken))
    deleted = moved = 0
    for batch in conn.execute(
        "SELECT id, prefix, at_ms, experiment, rows, width, version_ids, arms, features,"
        f" scores, keys, errors, latency_us FROM prediction_batches WHERE id IN ({marks})",
        taken,
    ).fetchall():
        if waiting and _feeds_a_reference(batch, waiting):
            continue
        keep = labelled_ms is None or batch[2] >= labelled_ms
        moved += _keep_labelled_rows(conn, batch) if keep else 0
        conn.execute("DELETE FROM batch_labels WHERE batch_id = ?", (batch[0],))
        conn.execute("DELETE FROM prediction_batches WHERE id = ?", (batch[0],))
        deleted += batch[4]
    return deleted, moved, taken[-1], more


def _feeds_a_reference(batch: sqlite3.Row, waiting: set[int]) -> bool:
    """Whether a batch holds successful rows of a version still waiting for its reference."""
    versions = np.frombuffer(batch[6], dtype="<i8")
    ok = ~np.isnan(np.frombuffer(batch[9], dtype="<f8"))
    return bool(np.isin(versions[ok], list(waiting)).any())


def _keep_labelled_rows(conn: sqlite3.Connection, batch: sqlite3.Row) -> int:
    """Copy a batch's labelled rows into single rows (same id, same columns) before the
    batch goes: retraining reads them, and feedback on them still answers duplicate."""
    (batch_id, prefix, at_ms, experiment, _rows, width) = batch[:6]
    labelled = conn.execute(
        "SELECT row, actual, labelled_at_ms FROM batch_labels WHERE batch_id = ?", (batch_id,)
    ).fetchall()
    if not labelled:
        return 0
    versions = np.frombuffer(batch[6], dtype="<i8")
    scores = np.frombuffer(batch[9], dtype="<f8")
    keys = json.loads(batch[10]) if batch[10] is not None else None
    errors = json.loads(batch[11]) if batch[11] is not None else None
    step = 4 * width
    params = []
    for i, actual, labelled_at in labelled:
        hi, lo = ids.key(f"{prefix}{i:05x}")
        score = float(scores[i])
        params.append(
            (
                hi,
                lo,
                None if at_ms == hi >> 16 else at_ms,
                int(versions[i]),
                batch[7][i],
                experiment,
                None if keys is None else keys[i],
                batch[8][i * step : (i + 1) * step],
                None if math.isnan(score) else score,
                batch[12],
                None if errors is None else errors[i],
                actual,
                labelled_at,
            )
        )
    conn.executemany(
        "INSERT OR IGNORE INTO predictions (hi, lo, at_ms, version_id, arm, experiment_id, key,"
        " features, score, latency_us, error, actual, labelled_at_ms)"
        " VALUES (?, ?, ?, ?, ?, (SELECT id FROM experiments WHERE name = ?), ?, ?, ?, ?, ?, ?,"
        " ?)",
        params,
    )
    return len(params)


def now_ms() -> int:
    return int(time.time() * 1000)
