"""Shadow scoring: a version scored on production's requests after they are answered.

A line's shadow (`beast deploy … --shadow`) is part of its route (engine.serving.router). When
production has answered a request and handed it to the prediction log, the router puts the
row it already built (float32 features, the prediction id, production's score) on this
scorer's queue, and returns. The scorer's one thread wakes every `tick` seconds, takes what
waits, skips (and counts) every row that waited longer than `[shadow] budget_ms`, scores the
rest of each shadow in one call (XGBoost releases the GIL above `router.HELD_ROWS` rows, so a
burst is scored beside the serving threads, not in front of them) and writes the scores —
keyed by the production prediction's id — in one transaction of its own.

Why its own writer, not the prediction log's: the log's writer is on the path of every
acknowledged prediction (its queue, its flushes, its quarantine); a shadow must never cost
production a logged row or a flush's time. Its writes are batched the same way (one
transaction per `write_every_s`, or sooner when `write_rows` wait) on a connection of its own.

Bounded everywhere: the queue holds at most `max_items` submissions (a full queue skips the
row, counted); a row waits at most the budget; a failed write is counted and not retried
(a shadow's score is evidence, not a record anyone was promised). Counts go to the shadow's
row (`shadows.dropped`) with its scores, so `beast status` shows them from any process.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from engine.core.records import VersionRef
from engine.store.base import Store
from engine.store.opening import open_log_store
from engine.store.shadows import ShadowScores

log = logging.getLogger("beast.shadow")
# The router's scorer holds the GIL on a call of at most `router.HELD_ROWS` rows (16): right for
# production's own one-row call, wrong beside it. A shadow's call always has more rows (the
# first row repeated, its scores discarded), so XGBoost releases the GIL and a serving thread
# never waits on the shadow's trees.
RELEASED_ROWS = 17
# Not below the serving threads in CPU priority: a niced scorer descheduled while it holds
# the interpreter lock made production wait for it (priority inversion; `make bench`).


class ShadowArm(NamedTuple):
    """A line's running shadow as the router holds it."""

    shadow_id: int
    ref: VersionRef
    score: Callable[[np.ndarray], np.ndarray]  # float32 rows -> float32 scores
    bp: int  # share of production's requests scored, basis points
    control_id: int  # the production version whose requests it scores


class _Item(NamedTuple):
    at_ns: int  # when production answered (time.perf_counter_ns)
    arm: ShadowArm
    pids: Sequence[str]
    batch: bool  # rows of a logged batch
    x: np.ndarray  # float32 (rows, width)
    control: Sequence[float]  # production's scores of the same rows


@dataclass(frozen=True)
class ShadowStats:
    """What this process's scorer did: every submitted row is scored, dropped or queued."""

    queued: int
    scored: int
    dropped: int  # over the budget, or the queue full
    write_failed: int  # scored, but the store refused the write (counted, not retried)
    last_error: str | None


class ShadowScorer:
    """One thread that scores the shadows of one process's router (see the module's doc)."""

    def __init__(
        self,
        db_path: Path,
        *,
        budget_ms: float,
        tick: float = 0.005,
        max_items: int = 20_000,
        write_every_s: float = 0.05,
        write_rows: int = 5000,
    ) -> None:
        self.db_path = db_path
        self.budget_ns = int(budget_ms * 1e6)
        self.tick = min(tick, budget_ms / 4000)  # a row is looked at well within its budget
        self.max_items = max_items
        self.write_every_s = write_every_s
        self.write_rows = write_rows
        self._queue: deque[_Item] = deque()
        self._pending: list[ShadowScores] = []
        self._dropped: dict[int, int] = {}  # shadow id -> rows skipped, not yet written
        self._count_lock = threading.Lock()
        self._work = threading.Lock()  # one drain at a time (the thread, or `flush`)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._store: Store | None = None
        self._last_write = time.monotonic()
        self.scored = 0
        self.dropped = 0
        self.write_failed = 0
        self.last_error: str | None = None

    def start(self) -> ShadowScorer:
        """Start the thread (once; the router starts it when a route first has a shadow)."""
        with self._count_lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="beast-shadow", daemon=True)
                self._thread.start()
        return self

    # -- the serving threads' side: an append, no lock, no I/O -----------------------------

    def submit(self, arm: ShadowArm, pid: str, x: np.ndarray, control: float) -> None:
        """One answered request's row (x: its (1, width) float32 matrix)."""
        if len(self._queue) >= self.max_items:
            self._skip(arm.shadow_id, 1)
            return
        self._queue.append(_Item(time.perf_counter_ns(), arm, (pid,), False, x, (control,)))

    def submit_rows(
        self, arm: ShadowArm, pids: Sequence[str], x: np.ndarray, control: Sequence[float]
    ) -> None:
        """A served batch's rows that production answered (one vectorized score later)."""
        if len(self._queue) >= self.max_items:
            self._skip(arm.shadow_id, len(pids))
            return
        self._queue.append(_Item(time.perf_counter_ns(), arm, pids, True, x, control))

    def _skip(self, shadow_id: int, rows: int) -> None:
        with self._count_lock:
            self._dropped[shadow_id] = self._dropped.get(shadow_id, 0) + rows
            self.dropped += rows

    def stats(self) -> ShadowStats:
        with self._count_lock:
            queued = sum(len(item.pids) for item in list(self._queue))
            return ShadowStats(
                queued, self.scored, self.dropped, self.write_failed, self.last_error
            )

    # -- the scorer's thread ---------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.tick):
            try:
                self._drain(write=False)
            except Exception:  # never let the thread die: the next tick tries again
                log.exception("shadow scoring failed")

    def flush(self) -> None:
        """Score what waits and write every score and count now (tests; close)."""
        self._drain(write=True)

    def close(self) -> None:
        """Stop the thread, score and write what waits, close the connection."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.flush()
        with self._work:
            if self._store is not None:
                self._store.close()
                self._store = None

    def _drain(self, *, write: bool) -> None:
        with self._work:
            items = []
            queue = self._queue
            while queue:
                items.append(queue.popleft())
            if items:
                self._score(items)
            due = time.monotonic() - self._last_write >= self.write_every_s
            if write or due or sum(len(p.pids) for p in self._pending) >= self.write_rows:
                self._write()

    def _score(self, items: list[_Item]) -> None:
        now = time.perf_counter_ns()
        by_shadow: dict[int, list[_Item]] = {}
        late: dict[int, int] = {}
        for item in items:
            if now - item.at_ns > self.budget_ns:
                late[item.arm.shadow_id] = late.get(item.arm.shadow_id, 0) + len(item.pids)
            else:
                by_shadow.setdefault(item.arm.shadow_id, []).append(item)
        for shadow_id, rows in late.items():
            self._skip(shadow_id, rows)
        for group in by_shadow.values():
            self._pending.append(_scores(group))
        scored = sum(len(item.pids) for group in by_shadow.values() for item in group)
        with self._count_lock:
            self.scored += scored

    def _write(self) -> None:
        self._last_write = time.monotonic()
        with self._count_lock:
            dropped, self._dropped = self._dropped, {}
        pending, self._pending = self._pending, []
        if not pending and not dropped:
            return
        try:
            if self._store is None:
                self._store = open_log_store(self.db_path)
            with self._store.write() as tx:
                tx.shadows.add_scores(pending)
                for shadow_id, count in dropped.items():
                    tx.shadows.add_dropped(shadow_id, count)
        except Exception as exc:  # a shadow never takes the engine down with it
            with self._count_lock:
                self.write_failed += sum(len(p.pids) for p in pending)
                self.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.warning("shadow scores not written: %s", self.last_error)
        else:
            self.last_error = None


def _scores(group: list[_Item]) -> ShadowScores:
    """One shadow's queued rows scored in one call."""
    arm = group[0].arm
    x = group[0].x if len(group) == 1 else np.vstack([item.x for item in group])
    n = x.shape[0]
    if n < RELEASED_ROWS:
        x = np.vstack([x, np.repeat(x[:1], RELEASED_ROWS - n, axis=0)])
    start = time.perf_counter_ns()
    error: str | None = None
    try:
        out = arm.score(np.ascontiguousarray(x, dtype=np.float32)).ravel()
    except Exception as exc:  # the model's own refusal: every row carries it
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        error, out = f"model error: {lines[0][:200]}", np.full(x.shape[0], np.nan)
    if out.size != x.shape[0]:
        error = f"model returned {out.size} values for {x.shape[0]} rows"
        out = np.full(x.shape[0], np.nan)
    out = out[:n]
    per_row_us = (time.perf_counter_ns() - start) // 1000 // max(n, 1)
    scores = out.astype(np.float64)
    bad = ~np.isfinite(scores)
    errors: list[str | None] = [None] * n
    if bad.any():
        scores[bad] = np.nan
        why = error or "model returned a non-finite score"
        for i in np.flatnonzero(bad).tolist():
            errors[i] = why
    pids = [pid for item in group for pid in item.pids]
    batch = np.fromiter((item.batch for item in group for _ in item.pids), dtype=bool, count=n)
    control = np.fromiter((c for item in group for c in item.control), dtype=np.float64, count=n)
    return ShadowScores(
        arm.shadow_id, arm.control_id, pids, batch, control, scores, errors, per_row_us
    )


__all__ = ["ShadowArm", "ShadowScorer", "ShadowStats"]
