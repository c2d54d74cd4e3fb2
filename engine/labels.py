"""Ground truth that arrives later: attach an actual value to a logged prediction.

Answers (documented for the CLI and HTTP):
- `recorded` — the actual is attached, and the prediction's minute rollup counts it;
- `duplicate` — the same value again: idempotent, nothing changes;
- `pending` — the id is recent (issued within `PENDING_WINDOW_MS`) and its row is not in the
  log yet (still in a writer's buffer): the value is kept and attached when the row is flushed,
  exactly once; the same value again is still `pending`. If no row arrives within
  `PENDING_EXPIRY_MS` (its row was dropped — disk full — or the id was never served), the
  value moves to `unmatched_feedback`: counted by `beast monitor` ("feedback": "unmatched"),
  no longer waited for, and the id answers NotFound from then on;
- Conflict (409) — a different value for a prediction that already has one (or has one
  pending): the first value stays;
- NotFound (404) — an id that is not a prediction id, or an old id with no logged prediction.
Nothing is dropped silently. Every call runs in one `BEGIN IMMEDIATE` transaction, so two
processes sending feedback for the same id at once serialize: one records, the other sees it.
"""

from __future__ import annotations

import math
import sqlite3
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from engine import ids
from engine.config import DEFAULT_LABEL_RANGE, Config
from engine.errors import BeastError, Conflict, NotFound
from engine.store import Store

PENDING_WINDOW_MS = 120_000  # ids younger than this may still be buffered by a writer
PENDING_EXPIRY_MS = 600_000  # waiting feedback whose row has not come by then never will
_ADD_LABEL = (
    "UPDATE {table} SET labelled = labelled + 1, within = within + ?,"
    " abs_err_sum = abs_err_sum + ?, abs_err_sq_sum = abs_err_sq_sum + ?"
    " WHERE version_id = ? AND experiment = ? AND {unit} = ?"
)


class Outcome(NamedTuple):
    """One feedback item's answer: a status, or the refusal's HTTP status and message."""

    prediction_id: str
    status: str  # "recorded" | "duplicate" | "pending" | "conflict" | "not found" | "invalid"
    http_status: int
    message: str | None = None


class OutOfRange(BeastError):
    """An actual value outside its model line's label range (`[lines.NAME] label_range`)."""

    http_status = 422


@dataclass(frozen=True)
class LabelRanges:
    """The actual values each model line accepts: `[lines.NAME] label_range` in config.toml,
    else the seed's score range (0–100)."""

    lines: tuple[tuple[str, tuple[float, float]], ...] = ()
    default: tuple[float, float] = DEFAULT_LABEL_RANGE

    @classmethod
    def of_config(cls, config: Config) -> LabelRanges:
        return cls(tuple((name, line.label_range) for name, line in config.lines))

    def of(self, line: str) -> tuple[float, float]:
        """The range of model line `line`."""
        return dict(self.lines).get(line, self.default)

    def widest(self, lines: Iterable[str]) -> tuple[float, float]:
        """The smallest range holding every one of `lines`' (the default when there are none)."""
        found = [self.of(line) for line in lines] or [self.default]
        return min(lo for lo, _ in found), max(hi for _, hi in found)


def check_actual(actual: object, label_range: tuple[float, float] | None = None) -> float:
    """`actual` as a finite float inside `label_range`, or a one-line refusal."""
    if isinstance(actual, bool) or not isinstance(actual, int | float):
        raise BeastError(f"actual must be a number, got {type(actual).__name__}")
    try:
        value = float(actual)
    except OverflowError:
        raise BeastError(f"actual must be finite, got {actual!r}") from None
    if not math.isfinite(value):
        raise BeastError(f"actual must be finite, got {actual!r}")
    if label_range is not None and not label_range[0] <= value <= label_range[1]:
        lo, hi = label_range
        raise OutOfRange(f"actual {value:g} is outside the label range [{lo:g}, {hi:g}]")
    return value


def _check_range(
    conn: sqlite3.Connection, actual: float, ranges: LabelRanges, version_id: int | None
) -> None:
    """Refuse `actual` outside its line's range; a prediction not logged yet (version_id None)
    is held to the widest range of the workspace's lines (its line is not known yet)."""
    if not ranges.lines:  # every line has the default: no lookup needed
        check_actual(actual, ranges.default)
        return
    if version_id is None:
        names = [r[0] for r in conn.execute("SELECT name FROM model_lines")]
        check_actual(actual, ranges.widest(names))
        return
    (line,) = conn.execute("SELECT line FROM versions WHERE id = ?", (version_id,)).fetchone()
    try:
        check_actual(actual, ranges.of(line))
    except OutOfRange as exc:
        raise OutOfRange(f"{exc} of {line}") from None


def label(
    conn: sqlite3.Connection,
    pid: str,
    actual: float,
    tolerance: float,
    now_ms: int | None = None,
    *,
    ranges: LabelRanges | None = None,
) -> str:
    """Attach `actual` to prediction `pid` inside the caller's write transaction.

    With `ranges`, an actual outside the prediction's line's label range is refused
    (OutOfRange); without, the caller has checked it (waiting feedback was, on arrival).
    """
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if not ids.is_valid(pid):
        shown = pid[:40] if isinstance(pid, str) else type(pid).__name__
        raise NotFound(f"no prediction {shown!r} (not a prediction id)")
    row = conn.execute(
        "SELECT version_id, experiment, at_ms, score, actual FROM predictions WHERE pid = ?",
        (pid,),
    ).fetchone()
    in_batch = _batch_row(conn, pid) if row is None else None
    if in_batch is not None:
        row = in_batch[1:]
    if row is None:
        if conn.execute("SELECT 1 FROM unmatched_feedback WHERE pid = ?", (pid,)).fetchone():
            raise NotFound(
                f"no prediction {pid}: its feedback waited {PENDING_EXPIRY_MS // 60_000} minutes"
                " and no logged prediction came (counted as unmatched)"
            )
        # Recent either way: a wall clock stepped back must not turn early feedback away.
        if abs(now - ids.issued_ms(pid)) <= PENDING_WINDOW_MS:
            if ranges is not None:
                _check_range(conn, actual, ranges, None)
            existing = conn.execute(
                "SELECT actual FROM pending_feedback WHERE pid = ?", (pid,)
            ).fetchone()
            if existing is not None:
                if existing[0] != actual:
                    raise Conflict(
                        f"prediction {pid} already has feedback {existing[0]:g} waiting; "
                        f"not replaced by {actual:g}"
                    )
                return "pending"
            conn.execute(
                "INSERT INTO pending_feedback (pid, actual, received_ms) VALUES (?, ?, ?)",
                (pid, actual, now),
            )
            return "pending"
        raise NotFound(f"no prediction {pid}")
    version_id, experiment, at_ms, score, recorded = row
    if ranges is not None:
        _check_range(conn, actual, ranges, version_id)
    if recorded is not None:
        if recorded == actual:
            return "duplicate"
        raise Conflict(
            f"prediction {pid} already has actual {recorded:g}; not replaced by {actual:g}"
        )
    if in_batch is None:
        conn.execute(
            "UPDATE predictions SET actual = ?, labelled_at_ms = ? WHERE pid = ?",
            (actual, now, pid),
        )
    else:
        conn.execute(
            "INSERT INTO batch_labels (batch_id, row, actual, labelled_at_ms) VALUES (?, ?, ?, ?)",
            (*in_batch[0], actual, now),
        )
    if score is not None:
        error = abs(score - actual)
        delta = (int(error <= tolerance), error, error * error, version_id, experiment)
        minute = at_ms // 60_000
        # Its minute's row, or the hour's once that minute was compacted (never both).
        if not conn.execute(
            _ADD_LABEL.format(table="rollups", unit="minute"), (*delta, minute)
        ).rowcount:
            conn.execute(
                _ADD_LABEL.format(table="rollups_hourly", unit="hour"), (*delta, minute // 60)
            )
    return "recorded"


def _batch_row(
    conn: sqlite3.Connection, pid: str
) -> tuple[tuple[int, int], int, str, int, float | None, float | None] | None:
    """((batch id, row), version_id, experiment, at_ms, score, actual) of a batch's row."""
    prefix, i = ids.batch_row(pid)
    found = conn.execute(
        "SELECT b.id, substr(b.version_ids, 8 * ? + 1, 8), b.experiment, b.at_ms,"
        " substr(b.scores, 8 * ? + 1, 8), l.actual FROM prediction_batches b"
        " LEFT JOIN batch_labels l ON l.batch_id = b.id AND l.row = ?"
        " WHERE b.prefix = ? AND b.rows > ?",
        (i, i, i, prefix, i),
    ).fetchone()
    if found is None:
        return None
    batch_id, version_id, experiment, at_ms, score, actual = found
    (value,) = struct.unpack("<d", score)
    return (
        (batch_id, i),
        struct.unpack("<q", version_id)[0],
        experiment,
        at_ms,
        None if math.isnan(value) else value,
        actual,
    )


def match_pending(conn: sqlite3.Connection, tolerance: float) -> int:
    """Attach waiting feedback whose prediction is now logged; return how many were applied.

    Runs in the writer's transaction right after it inserted its rows, so feedback that waited
    for them is applied exactly once (its pending row is deleted in the same transaction).
    """
    waiting = conn.execute(
        "SELECT f.pid, f.actual FROM pending_feedback f JOIN predictions p ON p.pid = f.pid"
        " UNION ALL SELECT f.pid, f.actual FROM pending_feedback f JOIN prediction_batches b"
        f" ON b.prefix = substr(f.pid, 1, {ids.PREFIX_CHARS})"
    ).fetchall()
    applied = 0
    for pid, actual in waiting:
        if not _logged(conn, pid):  # its batch, but a row number past the batch's end
            continue
        conn.execute("DELETE FROM pending_feedback WHERE pid = ?", (pid,))
        applied += 1
        try:
            label(conn, pid, actual, tolerance)
        except (Conflict, NotFound):  # pragma: no cover - the row is fresh and unlabelled
            continue
    return applied


def _logged(conn: sqlite3.Connection, pid: str) -> bool:
    """Whether the prediction is in the log: a single one's row, or a row of a batch."""
    single = conn.execute("SELECT 1 FROM predictions WHERE pid = ?", (pid,)).fetchone()
    return single is not None or _batch_row(conn, pid) is not None


def expire_pending(conn: sqlite3.Connection, now_ms: int | None = None) -> int:
    """Move feedback that waited longer than `PENDING_EXPIRY_MS` for its prediction to
    `unmatched_feedback` (inside the caller's write transaction); return how many moved.

    A writer flushes within seconds, and writes a row or counts it as dropped: a row that
    has not come after ten minutes is not coming.
    """
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    old = conn.execute(
        "SELECT pid, actual, received_ms FROM pending_feedback WHERE received_ms < ?",
        (now - PENDING_EXPIRY_MS,),
    ).fetchall()
    gone = [(pid, actual, received, now) for pid, actual, received in old if not _logged(conn, pid)]
    conn.executemany(
        "INSERT OR IGNORE INTO unmatched_feedback (pid, actual, received_ms, expired_ms)"
        " VALUES (?, ?, ?, ?)",
        gone,
    )
    conn.executemany("DELETE FROM pending_feedback WHERE pid = ?", [(g[0],) for g in gone])
    return len(gone)


def counts(conn: sqlite3.Connection) -> tuple[int, int]:
    """(feedback waiting for its prediction, feedback that never matched one)."""
    pending = conn.execute("SELECT count(*) FROM pending_feedback").fetchone()[0]
    unmatched = conn.execute("SELECT count(*) FROM unmatched_feedback").fetchone()[0]
    return int(pending), int(unmatched)


def record(
    store: Store,
    pid: str,
    actual: object,
    tolerance: float,
    *,
    ranges: LabelRanges | None = None,
) -> str:
    """One piece of feedback in its own write transaction; the answer, or a refusal.

    `ranges` (the config's, `LabelRanges.of_config`) refuses actuals outside their line's
    label range; None checks only that the actual is a finite number.
    """
    value = check_actual(actual)
    with store.write() as conn:
        expire_pending(conn)
        return label(conn, pid, value, tolerance, ranges=ranges)


def record_many(
    store: Store,
    items: Iterable[tuple[str, object]],
    tolerance: float,
    *,
    ranges: LabelRanges | None = None,
) -> list[Outcome]:
    """Many (prediction id, actual) pairs in one transaction, each with its own answer.

    A refused item does not stop the others (a file of feedback with one bad line still
    records the rest); every item gets an answer, so nothing is dropped silently. `ranges`
    as for `record`.
    """
    answers: list[Outcome] = []
    with store.write() as conn:
        expire_pending(conn)
        for pid, actual in items:
            shown = pid if isinstance(pid, str) else repr(pid)
            try:
                status = label(conn, pid, check_actual(actual), tolerance, ranges=ranges)
            except Conflict as exc:
                answers.append(Outcome(shown, "conflict", exc.http_status, str(exc)))
            except NotFound as exc:
                answers.append(Outcome(shown, "not found", exc.http_status, str(exc)))
            except BeastError as exc:
                answers.append(Outcome(shown, "invalid", 422, str(exc)))
            else:
                answers.append(Outcome(shown, status, 200 if status != "pending" else 202))
    return answers
