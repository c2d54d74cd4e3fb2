"""The prediction log: every prediction goes through one batched writer per process.

Serving threads append to a deque (no lock, no I/O): a `Record` per single prediction, a
`Chunk` (the batch's columns: an id prefix, one float32 matrix, one score array) per batch.
A writer thread flushes every `interval` seconds or when `batch` rows wait, in one write
transaction that appends the rows (`tx.predictions`: how they are laid out is the store's,
engine/store/sqlite/prediction_log.py), updates the per-minute rollups and matches early
feedback. Never a transaction per request. On close everything queued is flushed. About once
a minute the same transaction compacts minutes older than two hours into hours
(`metrics.compact`).

What a logged row costs is what bounds batch throughput, so the hot path is lean: no Python
call per row here (the store binds rows straight from the batch's columns), and rollups and
drift bins are computed with numpy once per group of a flush.

One bad row never costs its neighbours: when a flush fails because of what a row holds (a
text that cannot be encoded, a value out of range, a CHECK it breaks, anything Python refuses
to bind: the store's `row_fault` says which), the flush is split in halves and each retried,
down to the one row (or batch) that fails alone. That row is quarantined — its id and the
reason kept, so feedback for it is refused with the reason — and counted; the rest are
written. Nothing of this runs while writes succeed: one transaction per flush.

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

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.core import ids
from engine.core.config import LineSettings, LogSettings, load_config
from engine.core.errors import ConfigError, StateBusy
from engine.core.predictions import DAY_MS, Chunk, LoggedRow, Pruned, Record
from engine.core.rollups import Delta
from engine.monitoring import baselines
from engine.monitoring import feedback as labels
from engine.monitoring import rollups as metrics
from engine.serving import latency
from engine.store.base import Store, Tx
from engine.store.opening import open_log_store

log = logging.getLogger("beast.predlog")

CLOSE_ATTEMPTS = 3  # busy retries at close before what is left is counted as dropped
COMPACT_EVERY_S = 60.0
# Retention steps: 5,000 rows looked at hold the write lock ~10 ms (30 at worst: tests/bench).
# One step a minute keeps up with a quiet log, one every half second while a backlog remains
# (10,000 rows/s, above what one writer logs one row at a time) catches up with a busy one.
PRUNE_CHUNK_ROWS = 5000
PRUNE_EVERY_S = 60.0
PRUNE_BACKLOG_S = 0.5
# A version's single rows are looked for this far before the first flush that saw it: another
# process's writer may still hold earlier rows of it (ids younger than this may be buffered).
FIRST_ROWS_MARGIN_MS = labels.PENDING_WINDOW_MS


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
    restarts: int = 0  # writer processes that died and were replaced (`[log] writer`)


class _RowFault(Exception):
    """A flush failed because of what one of its rows holds (the cause says what)."""


def _reason(exc: BaseException) -> str:
    """One printable, storable line (a quarantined row's text may not be encodable)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


_Rows = tuple[list[Chunk], list[Record]]


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
        self.store: Store = open_log_store(db_path)
        self.settings = _workspace_settings(db_path) if settings is None else settings
        self.tolerance = tolerance
        self.contracts = _workspace_contracts(db_path, tolerance)
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
            with self.store.peek() as tx:  # no transaction: the writer's are its flushes
                if not metrics.compactable(tx, now_ms() // 60_000):
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
            with self._flush_lock, self.store.write() as tx:  # one user of the connection
                when = now_ms() if at_ms is None else at_ms
                done = tx.predictions.prune(self.settings, when, PRUNE_CHUNK_ROWS)
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

        One transaction while writes succeed. When one fails because of a row (`row_fault`),
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
        with self.store.write() as tx:
            try:
                self._apply(tx, chunks, records)
            except Exception as exc:
                if tx.predictions.row_fault(exc):
                    raise _RowFault(_reason(exc)) from exc
                raise
        rows = _count((chunks, records))
        with self._count_lock:
            self.written += rows
            self.batches += 1
            self.last_error = None
        return rows

    def _apply(self, tx: Tx, chunks: list[Chunk], records: list[Record]) -> None:
        """Insert the rows, add them to the rollups, match the feedback that waited for them."""
        log_rows = tx.predictions
        versions = {int(v) for c in chunks for v in np.unique(c.version_ids)}
        versions.update(r.version_id for r in records)
        unbinned = {v for v in versions if self._references.get(tx, v) is None}
        if unbinned:  # where a reference scan will start
            first_ms = min((r.at_ms for r in records), default=now_ms())
            log_rows.mark_first_rows(unbinned, first_ms - FIRST_ROWS_MARGIN_MS)
        if records:
            names = {r.experiment for r in records}
            if not names <= self._experiments.keys():
                self._experiments.update(log_rows.experiment_ids(names))
        log_rows.append(chunks, records, self._experiments)
        self._rollup(tx, chunks, records)
        labels.match_pending(
            tx,
            self.contracts,
            singles=[r.pid for r in records],
            batches={c.prefix: c.rows for c in chunks},
        )
        self._upkeep(tx, unbinned)

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
                with self.store.write() as tx:
                    tx.predictions.quarantine(pid, rows, at_ms, reason, now_ms())
            except Exception as exc:  # the count below is what must not fail
                log.warning("cannot record the quarantined prediction %s: %s", pid, exc)
        with self._count_lock:
            self.quarantined += rows
            self.dropped += rows
            self.last_error = self.last_drop = f"quarantined {rows} row(s): {reason}"
        log.warning("quarantined %d prediction log row(s) that cannot be written: %s", rows, reason)

    def _upkeep(self, tx: Tx, unbinned: set[int]) -> None:
        """References from first predictions, rollup compaction and the expiry of feedback
        that waited too long: upkeep the log must not depend on, each in a savepoint that a
        failure rolls back alone."""
        if unbinned:
            try:
                with tx.predictions.upkeep():
                    baselines.ensure_from_first_predictions(tx, unbinned)
            except Exception:
                log.exception("building a drift reference from first predictions failed")
        if time.monotonic() >= self._next_compaction:
            self._next_compaction = time.monotonic() + COMPACT_EVERY_S
            try:
                with tx.predictions.upkeep():
                    metrics.compact(tx, now_ms() // 60_000)
                    labels.expire_pending(tx)
            except Exception:
                log.exception("compacting rollups or expiring feedback failed")

    def _rollup(self, tx: Tx, chunks: list[Chunk], records: list[Record]) -> None:
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


def _workspace_contracts(db_path: Path, tolerance: float) -> labels.Contracts:
    """The lines' feedback contracts of the workspace's config.toml ([lines.NAME]), for
    feedback that waited for its row; the seed's regression at `tolerance` when unreadable."""
    try:
        lines = load_config(db_path.parent / "config.toml").lines
    except ConfigError:  # said once by _workspace_settings
        lines = ()
    return labels.Contracts(lines, LineSettings(tolerance_points=tolerance))


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


def now_ms() -> int:
    return int(time.time() * 1000)


__all__ = [
    "DAY_MS",
    "Chunk",
    "LogStats",
    "LoggedRow",
    "PredictionLog",
    "Pruned",
    "Record",
]
