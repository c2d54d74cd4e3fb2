"""The prediction log: every prediction goes through one batched writer per process.

Serving threads append a tuple to a deque (no lock, no I/O); a writer thread flushes every
`interval` seconds or when `batch` rows wait, in one `BEGIN IMMEDIATE` transaction that
inserts the rows, updates the per-minute rollups and matches early feedback. Never a
transaction per request. On close everything queued is flushed.

Losses are counted, never silent: if the disk is full (or any other write failure) the batch
is dropped and counted in `stats().dropped`, serving goes on, and logging resumes as soon as
a write succeeds again; a full queue (the writer cannot keep up) counts its overflow the same
way. A busy database (another process holding the write lock past the busy timeout) loses
nothing: the rows go back to the head of the queue and are written at the next attempt.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import NamedTuple

import numpy as np

from engine import baselines, labels, latency
from engine.errors import StateBusy
from engine.store import Store

log = logging.getLogger("beast.predlog")

CLOSE_ATTEMPTS = 3  # busy retries at close before what is left is counted as dropped


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


_INSERT_INTO = (
    "INSERT INTO predictions (pid, at_ms, line, version_id, arm, experiment, key, features,"
    " score, latency_us, error) VALUES "
)
_ROW = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_INSERT = _INSERT_INTO + _ROW  # one row (executemany), as the benchmarks use it
_COLUMNS = len(Record._fields)
_MAX_ROWS_PER_STATEMENT = 1024


@functools.cache
def _statement(rows: int) -> str:
    return _INSERT_INTO + ", ".join([_ROW] * rows)


def insert(conn: sqlite3.Connection, rows: list[Record]) -> None:
    """Insert rows with multi-row INSERT statements of power-of-two sizes.

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
    start, total = 0, len(rows)
    while start < total:
        size = chunk
        while size > total - start:
            size //= 2
        params = list(chain.from_iterable(rows[start : start + size]))
        conn.execute(_statement(size), params)
        start += size


@dataclass(frozen=True)
class LogStats:
    queued: int
    written: int
    dropped: int
    last_error: str | None  # why the last write attempt failed; None once one succeeds
    batches: int = 0  # write transactions committed
    last_drop: str | None = None  # why rows were last dropped (kept after writes resume)


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
        self.store = Store(db_path)
        self.tolerance = tolerance
        self.interval = interval
        self.batch = batch
        self.max_queue = max_queue
        self._queue: deque[Record] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._flush_lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._references = baselines.ReferenceCache()
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

    def submit(self, record: Record) -> None:
        queue = self._queue
        if len(queue) >= self.max_queue or self._closed:
            self._lose(1, "the prediction log is closed" if self._closed else "queue full")
            return
        queue.append(record)
        if len(queue) >= self.batch:
            self._wake.set()

    def submit_many(self, records: list[Record]) -> None:
        """A batch's records, queued in one step (all or, if the queue is full, none)."""
        if len(self._queue) + len(records) > self.max_queue or self._closed:
            self._lose(
                len(records), "the prediction log is closed" if self._closed else "queue full"
            )
            return
        self._queue.extend(records)
        if len(self._queue) >= self.batch:
            self._wake.set()

    def _lose(self, count: int, why: str) -> None:
        with self._count_lock:
            self.dropped += count
            self.last_error = self.last_drop = why

    def stats(self) -> LogStats:
        with self._count_lock:
            return LogStats(
                len(self._queue),
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
            if not self._queue:
                break
        self._closed = True
        left = len(self._queue)
        if left:
            self._queue.clear()
            self._lose(left, f"{left} rows could not be written before close")
        self.store.close()

    def flush(self) -> int:
        """Write everything queued now; return the number of rows written.

        Stops early (rows kept, in order) when the database stays busy past its timeout.
        """
        total = 0
        with self._flush_lock:
            queue = self._queue
            while queue:
                rows = [queue.popleft() for _ in range(min(self.batch, len(queue)))]
                written = self._write(rows)
                if written is None:
                    queue.extendleft(reversed(rows))
                    break
                total += written
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # never let the writer die: serving depends on it
                log.exception("prediction log flush failed")

    def _write(self, rows: list[Record]) -> int | None:
        """One transaction; the number of rows written, or None when busy (retry later)."""
        try:
            with self.store.write() as conn:
                insert(conn, rows)
                self._rollup(conn, rows)
                labels.match_pending(conn, self.tolerance)
                try:
                    with _savepoint(conn):
                        baselines.ensure_from_first_predictions(conn, {r.version_id for r in rows})
                except Exception:  # a reference is a nicety; the log must not depend on it
                    log.exception("building a drift reference from first predictions failed")
        except StateBusy as exc:
            with self._count_lock:
                self.last_error = str(exc)
            log.warning("prediction log busy, %d rows kept for the next attempt", len(rows))
            return None
        except Exception as exc:  # disk full, read-only, a bug: counted, serving goes on
            self._lose(len(rows), str(exc) or type(exc).__name__)
            log.warning("dropped %d prediction log rows: %s", len(rows), exc)
            return 0
        with self._count_lock:
            self.written += len(rows)
            self.batches += 1
            self.last_error = None
        return len(rows)

    def _rollup(self, conn: sqlite3.Connection, rows: list[Record]) -> None:
        columns = list(zip(*rows, strict=True))
        version_ids, experiments, at_ms = columns[3], columns[5], columns[1]
        feats, lat_us = columns[7], columns[9]
        scores = np.array(columns[8], dtype=np.float64)  # None (an error) becomes NaN
        lat_all = np.array(lat_us, dtype=np.float64)
        groups: dict[tuple[int, str, int], list[int]] = {}
        for i, group_key in enumerate(
            zip(version_ids, experiments, [t // 60_000 for t in at_ms], strict=True)
        ):
            found = groups.get(group_key)
            if found is None:
                groups[group_key] = [i]
            else:
                found.append(i)
        for (version_id, experiment, minute), members in groups.items():
            idx = np.array(members, dtype=np.int64)
            group_scores = scores[idx]
            ok = ~np.isnan(group_scores)
            n, scored = idx.size, int(ok.sum())
            lat = latency.histogram(lat_all[idx])
            score_sum = float(group_scores[ok].sum())
            feat_hist = score_hist = None
            drift_n = 0
            ref = self._references.get(conn, version_id)
            if ref is not None and scored:
                width = 4 * ref.width
                blobs = [feats[i] for i in idx[ok].tolist()]
                if all(b is not None and len(b) == width for b in blobs):
                    x = np.frombuffer(b"".join(blobs), dtype=np.float32)
                    feat_hist = ref.feature_counts(x.reshape(scored, ref.width))
                    score_hist = ref.score_counts(group_scores[ok])
                    drift_n = scored
            old = conn.execute(
                "SELECT n, errors, score_sum, latency_hist, drift_n, feature_hist, score_hist,"
                " labelled, within, abs_err_sum, abs_err_sq_sum"
                " FROM rollups WHERE version_id = ? AND experiment = ? AND minute = ?",
                (version_id, experiment, minute),
            ).fetchone()
            errors = n - scored
            labelled = within = 0
            abs_sum = abs_sq = 0.0
            if old is not None:
                n += old[0]
                errors += old[1]
                score_sum += old[2]
                lat = _add(lat, old[3])
                feat_hist, drift_n = _merge(feat_hist, drift_n, old[5], old[4])
                score_hist, _ = _merge(score_hist, 0, old[6], 0)
                labelled, within, abs_sum, abs_sq = old[7], old[8], old[9], old[10]
            conn.execute(
                "INSERT OR REPLACE INTO rollups (version_id, experiment, minute, n, errors,"
                " score_sum, latency_hist, drift_n, feature_hist, score_hist, labelled, within,"
                " abs_err_sum, abs_err_sq_sum) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    version_id,
                    experiment,
                    minute,
                    n,
                    errors,
                    score_sum,
                    _blob(lat),
                    drift_n,
                    _blob(feat_hist),
                    _blob(score_hist),
                    labelled,
                    within,
                    abs_sum,
                    abs_sq,
                ),
            )


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


def _array(blob: bytes | None) -> np.ndarray:
    return np.frombuffer(blob, dtype="<i8").astype(np.int64) if blob else np.zeros(0, np.int64)


def _add(new: np.ndarray, old_blob: bytes | None) -> np.ndarray:
    old = _array(old_blob)
    if old.size == new.size:
        total: np.ndarray = new + old
        return total
    size = max(old.size, new.size)  # a histogram written with other bucket count
    out = np.zeros(size, np.int64)
    out[: new.size] += new
    out[: old.size] += old
    return out


def _blob(values: np.ndarray | None) -> bytes | None:
    return None if values is None else np.asarray(values, dtype="<i8").tobytes()


def _merge(
    new: np.ndarray | None, new_n: int, old_blob: bytes | None, old_n: int
) -> tuple[np.ndarray | None, int]:
    old = _array(old_blob) if old_blob else None
    if new is None:
        return old, old_n
    if old is None or old.size != new.size:
        return new, new_n
    return new + old, new_n + old_n


def now_ms() -> int:
    return int(time.time() * 1000)
