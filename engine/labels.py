"""Ground truth that arrives later: attach an actual value to a logged prediction.

Answers (documented for the CLI and HTTP): `recorded`; `duplicate` (the same value again:
idempotent, nothing changes); `pending` (the id is seconds old and its row is still in a
writer's buffer: kept and matched when the row is flushed); an unknown old id is NotFound; a
different value for an already labelled prediction is a Conflict. Nothing is dropped silently.
"""

from __future__ import annotations

import contextlib
import math
import sqlite3
import time

from engine import ids
from engine.errors import BeastError, Conflict, NotFound

PENDING_WINDOW_MS = 120_000  # ids younger than this may still be buffered by a writer


def check_actual(actual: object) -> float:
    if isinstance(actual, bool) or not isinstance(actual, int | float):
        raise BeastError(f"actual must be a number, got {type(actual).__name__}")
    value = float(actual)
    if not math.isfinite(value):
        raise BeastError(f"actual must be finite, got {actual!r}")
    return value


def label(
    conn: sqlite3.Connection, pid: str, actual: float, tolerance: float, now_ms: int | None = None
) -> str:
    """Attach `actual` to prediction `pid` inside the caller's write transaction."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if not ids.is_valid(pid):
        raise NotFound(f"no prediction {pid[:40]!r} (not a prediction id)")
    row = conn.execute(
        "SELECT version_id, experiment, at_ms, score, actual FROM predictions WHERE pid = ?",
        (pid,),
    ).fetchone()
    if row is None:
        if now - ids.issued_ms(pid) <= PENDING_WINDOW_MS:
            existing = conn.execute(
                "SELECT actual FROM pending_feedback WHERE pid = ?", (pid,)
            ).fetchone()
            if existing is not None and existing[0] != actual:
                raise Conflict(f"prediction {pid} already has pending feedback {existing[0]:g}")
            conn.execute(
                "INSERT OR IGNORE INTO pending_feedback (pid, actual, received_ms)"
                " VALUES (?, ?, ?)",
                (pid, actual, now),
            )
            return "pending"
        raise NotFound(f"no prediction {pid}")
    version_id, experiment, at_ms, score, recorded = row
    if recorded is not None:
        if recorded == actual:
            return "duplicate"
        raise Conflict(
            f"prediction {pid} already has actual {recorded:g}; not replaced by {actual:g}"
        )
    conn.execute(
        "UPDATE predictions SET actual = ?, labelled_at_ms = ? WHERE pid = ?", (actual, now, pid)
    )
    if score is not None:
        error = abs(score - actual)
        conn.execute(
            "UPDATE rollups SET labelled = labelled + 1, within = within + ?,"
            " abs_err_sum = abs_err_sum + ?, abs_err_sq_sum = abs_err_sq_sum + ?"
            " WHERE version_id = ? AND experiment = ? AND minute = ?",
            (
                int(error <= tolerance),
                error,
                error * error,
                version_id,
                experiment,
                at_ms // 60_000,
            ),
        )
    return "recorded"


def match_pending(conn: sqlite3.Connection, pids: set[str], tolerance: float) -> int:
    """Apply feedback that waited for these freshly flushed predictions; return how many."""
    waiting = [
        (pid, actual)
        for pid, actual in conn.execute("SELECT pid, actual FROM pending_feedback")
        if pid in pids
    ]
    for pid, actual in waiting:
        conn.execute("DELETE FROM pending_feedback WHERE pid = ?", (pid,))
        with contextlib.suppress(Conflict, NotFound):  # a different second value loses
            label(conn, pid, actual, tolerance)
    return len(waiting)
