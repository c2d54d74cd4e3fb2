"""The prediction log: every prediction goes through one batched writer per process.

Serving threads append a tuple to a deque (no lock, no I/O); a writer thread flushes every
`interval` seconds or when `batch` rows wait, in one `BEGIN IMMEDIATE` transaction that
inserts the rows, updates the per-minute rollups and matches early feedback. Never a
transaction per request. On close everything queued is flushed. If the disk is full the
batch is dropped and counted (serving goes on); logging resumes when writes succeed again.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from engine import baselines, labels, latency
from engine.errors import BeastError
from engine.store import Store

log = logging.getLogger("beast.predlog")


class Record(NamedTuple):
    """One logged prediction; a tuple, so executemany takes it as it is."""

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


_INSERT = (
    "INSERT INTO predictions (pid, at_ms, line, version_id, arm, experiment, key, features,"
    " score, latency_us, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class LogStats:
    queued: int
    written: int
    dropped: int
    last_error: str | None


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
        self._flush_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._references = baselines.ReferenceCache()
        self.written = 0
        self.dropped = 0
        self.last_error: str | None = None

    def start(self) -> PredictionLog:
        self.store.migrate()  # the writer may be the first to open a fresh database
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="beast-predlog", daemon=True)
            self._thread.start()
        return self

    def submit(self, record: Record) -> None:
        if len(self._queue) >= self.max_queue:
            self.dropped += 1  # the writer cannot keep up (or the disk is full): count it
            return
        self._queue.append(record)
        if len(self._queue) >= self.batch:
            self._wake.set()

    def stats(self) -> LogStats:
        return LogStats(len(self._queue), self.written, self.dropped, self.last_error)

    def close(self) -> None:
        """Stop the writer and flush everything still queued."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.flush()
        self.store.close()

    def flush(self) -> int:
        """Write everything queued now; return the number of rows written."""
        total = 0
        with self._flush_lock:
            while self._queue:
                rows = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
                total += self._write(rows)
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # never let the writer die: serving depends on it
                log.exception("prediction log flush failed")

    def _write(self, rows: list[Record]) -> int:
        try:
            with self.store.write() as conn:
                conn.executemany(_INSERT, rows)
                self._rollup(conn, rows)
                labels.match_pending(conn, {r.pid for r in rows}, self.tolerance)
                baselines.ensure_from_first_predictions(conn, {r.version_id for r in rows})
        except BeastError as exc:
            self.dropped += len(rows)
            self.last_error = str(exc)
            log.warning("dropped %d prediction log rows: %s", len(rows), exc)
            return 0
        self.written += len(rows)
        self.last_error = None
        return len(rows)

    def _rollup(self, conn: sqlite3.Connection, rows: list[Record]) -> None:
        groups: dict[tuple[int, str, int], list[Record]] = defaultdict(list)
        for r in rows:
            groups[(r.version_id, r.experiment, r.at_ms // 60_000)].append(r)
        for (version_id, experiment, minute), group in groups.items():
            scored = [r for r in group if r.score is not None]
            lat = latency.histogram(np.fromiter((r.latency_us for r in group), dtype=np.float64))
            ref = self._references.get(conn, version_id)
            feat_hist = score_hist = None
            if ref is not None and scored:
                x = np.frombuffer(b"".join(r.features or b"" for r in scored), dtype=np.float32)
                if x.size == len(scored) * ref.width:
                    feat_hist = ref.feature_counts(x.reshape(len(scored), ref.width))
                    score_hist = ref.score_counts(np.array([r.score or 0.0 for r in scored]))
            old = conn.execute(
                "SELECT n, errors, score_sum, latency_hist, drift_n, feature_hist, score_hist,"
                " labelled, within, abs_err_sum, abs_err_sq_sum"
                " FROM rollups WHERE version_id = ? AND experiment = ? AND minute = ?",
                (version_id, experiment, minute),
            ).fetchone()
            n, errors = len(group), len(group) - len(scored)
            score_sum = float(sum(r.score or 0.0 for r in scored))
            drift_n = len(scored) if feat_hist is not None else 0
            labelled = within = 0
            abs_sum = abs_sq = 0.0
            if old is not None:
                n += old[0]
                errors += old[1]
                score_sum += old[2]
                lat = lat + _array(old[3])
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


def _array(blob: bytes | None) -> np.ndarray:
    return np.frombuffer(blob, dtype="<i8").astype(np.int64) if blob else np.zeros(0, np.int64)


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
