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
- NotFound (404) — an id that is not a prediction id, or an old id with no logged prediction;
  the message says why when the log knows: the prediction was quarantined (served, but its
  row could not be written: engine.serving.prediction_log), or it is older than the log's retention
  ([log] retention_days) and was pruned.
Nothing is dropped silently. Every item is labelled inside a `BEGIN IMMEDIATE` transaction (a
file's items in chunks of `CHUNK_ITEMS`), so two processes sending feedback for the same id at
once serialize: one records, the other sees it.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from engine.core import ids, tasks, text
from engine.core.config import Config, LineSettings
from engine.core.errors import BeastError, Conflict, NotFound, StateBusy, StoreError
from engine.core.rollups import LabelDelta, class_key
from engine.store.base import Store, Tx

# engine.monitoring.scoring.EPS (float64's epsilon), without importing numpy for it.
EPS = sys.float_info.epsilon
PENDING_WINDOW_MS = 120_000  # ids younger than this may still be buffered by a writer
PENDING_EXPIRY_MS = 600_000  # waiting feedback whose row has not come by then never will
# Items per transaction of `record_many`: about 0.15 s of write lock on a loaded 2-core
# machine (one transaction for a 120,000-line file held it 8.5 s and failed a retraining job).
CHUNK_ITEMS = 2000
# The pause between two chunks. Back to back, the chunks kept the lock from others for the
# whole file all the same: a waiting process polls (SQLite's busy handler sleeps 1 to 100 ms
# between tries) and missed the microseconds between them; with 50 ms a writer that waited
# waits one chunk (a probe's longest wait during a 40,000-item file: 1.5 s without, 0.2 s with).
GIVE_WAY_S = 0.05


class Outcome(NamedTuple):
    """One feedback item's answer: a status, or the refusal's HTTP status and message."""

    prediction_id: str
    status: str  # "recorded" | "duplicate" | "pending" | "conflict" | "not found" | "invalid"
    http_status: int
    message: str | None = None


class OutOfRange(BeastError):
    """An actual value its model line does not accept: outside `[lines.NAME] label_range`, or
    not a 0/1 (false/true) label on a binary line."""

    http_status = 422


_ANY_NUMBER = LineSettings(label_range=(-math.inf, math.inf))


@dataclass(frozen=True)
class Contracts:
    """What each model line accepts as feedback and how a label counts: its `[lines.NAME]`
    contract in config.toml (engine.core.config.Config.line), else `default`: the seed's
    regression (`of_config`: its label range; `Contracts()`: any finite number)."""

    lines: tuple[tuple[str, LineSettings], ...] = ()
    default: LineSettings = field(default_factory=lambda: _ANY_NUMBER)

    @classmethod
    def of_config(cls, config: Config) -> Contracts:
        tolerance = config.thresholds.tolerance_points
        return cls(config.lines, LineSettings(tolerance_points=tolerance))

    def of(self, line: str) -> LineSettings:
        """The contract of model line `line`."""
        return dict(self.lines).get(line, self.default)

    def widest(self, lines: Iterable[str]) -> tuple[float, float]:
        """The smallest range holding every one of `lines`' (the default when there are none)."""
        found = [self.of(line).label_range for line in lines] or [self.default.label_range]
        return min(lo for lo, _ in found), max(hi for _, hi in found)

    def ranges_checked(self) -> Contracts:
        """These contracts without regression label ranges: for feedback that waited for its
        row, whose range was checked on arrival (the widest of the workspace's lines)."""
        return Contracts(
            tuple((name, _unbounded(line)) for name, line in self.lines), _unbounded(self.default)
        )

    def any_binary(self, lines: Iterable[str]) -> bool:
        """Whether one of `lines` is binary (so false/true are labels)."""
        return any(self.of(line).binary for line in lines)


def _unbounded(line: LineSettings) -> LineSettings:
    return line if line.binary else dataclasses.replace(line, label_range=_ANY_NUMBER.label_range)


def check_actual(actual: object) -> float | bool:
    """`actual` as a finite number (false/true kept as such: a binary line takes them), or a
    one-line refusal. Its line's contract is checked by `check_label`."""
    if isinstance(actual, bool):
        return actual
    if not isinstance(actual, int | float):
        raise BeastError(f"actual must be a number, got {type(actual).__name__}")
    try:
        value = float(actual)
    except OverflowError:
        raise BeastError(f"actual must be finite, got {actual!r}") from None
    if not math.isfinite(value):
        raise BeastError(f"actual must be finite, got {actual!r}")
    return value


def check_label(actual: float | bool, contract: LineSettings) -> float:
    """`actual` as its line takes it: a binary line 0 or 1 (false/true), a regression line a
    number inside its label range; OutOfRange (422) otherwise."""
    if contract.binary:
        try:
            return float(tasks.binary_label(actual))
        except ValueError as exc:
            raise OutOfRange(str(exc)) from None
    if isinstance(actual, bool):
        raise OutOfRange("actual must be a number, got bool (false/true label binary lines)")
    lo, hi = contract.label_range
    if not lo <= actual <= hi:
        raise OutOfRange(f"actual {actual:g} is outside the label range [{lo:g}, {hi:g}]")
    return float(actual)


def _line_label(
    tx: Tx, actual: float | bool, contracts: Contracts, version_id: int
) -> tuple[float, LineSettings]:
    """`actual` checked against its prediction's line, and that line's contract."""
    if not contracts.lines:  # every line has the default: no lookup needed
        return check_label(actual, contracts.default), contracts.default
    line = tx.registry.version_by_id(version_id).line
    contract = contracts.of(line)
    try:
        return check_label(actual, contract), contract
    except OutOfRange as exc:
        raise OutOfRange(f"{exc} of {line}") from None


def _any_line_label(tx: Tx, actual: float | bool, contracts: Contracts) -> float:
    """`actual` for a prediction not logged yet (its line is not known): accepted if one of
    the workspace's lines would take it; refused with the first line's reason otherwise."""
    if not contracts.lines:
        return check_label(actual, contracts.default)
    names = tx.registry.line_names() or [""]
    refusal: BeastError | None = None
    for name in names:
        try:
            return check_label(actual, contracts.of(name))
        except BeastError as exc:
            refusal = refusal or exc
    assert refusal is not None
    raise refusal


def label_delta(score: float, actual: float, contract: LineSettings) -> LabelDelta:
    """What a labelled prediction adds to its rollup row under its line's contract (the
    definitions of engine.monitoring.scoring, one row at a time)."""
    error = abs(score - actual)
    if not contract.binary:
        return LabelDelta(within=error <= contract.tolerance_points, error=error)
    positive = actual == 1
    predicted = score >= contract.decision_threshold
    p = min(max(score, EPS), 1 - EPS)
    return LabelDelta(
        within=predicted == positive,
        error=error,
        log_loss=-math.log(p) if positive else -math.log1p(-p),
        pred_pos=predicted,
        actual_pos=positive,
        class_key=class_key(score, positive),
    )


def label(
    tx: Tx,
    pid: str,
    actual: float | bool,
    contracts: Contracts,
    now_ms: int | None = None,
) -> str:
    """Attach `actual` to prediction `pid` inside the caller's write transaction.

    An actual its line does not accept (`check_label`: a binary line's 0/1, a regression
    line's label range) is refused (OutOfRange); the label counts in the prediction's rollup
    row by its line's contract (`label_delta`).
    """
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    if not ids.is_valid(pid):
        shown = pid[:40] if isinstance(pid, str) else type(pid).__name__
        raise NotFound(f"no prediction {shown!r} (not a prediction id)")
    found = tx.feedback.prediction(pid)
    if found is None:
        return _wait(tx, pid, actual, now, contracts)
    value, contract = _line_label(tx, actual, contracts, found.version_id)
    if found.actual is not None:
        if found.actual == value:
            return "duplicate"
        raise Conflict(
            f"prediction {pid} already has actual {found.actual:g}; not replaced by {value:g}"
        )
    tx.feedback.set_actual(found, value, now)
    if found.score is not None:
        tx.rollups.add_label(
            found.version_id,
            found.experiment,
            found.at_ms // 60_000,
            label_delta(found.score, value, contract),
        )
    return "recorded"


def _wait(tx: Tx, pid: str, actual: float | bool, now: int, contracts: Contracts) -> str:
    """Feedback for a prediction not in the log: kept if its row may still come, else refused."""
    _why_not_logged(tx, pid)
    if tx.feedback.is_unmatched(pid):
        raise NotFound(
            f"no prediction {pid}: its feedback waited {PENDING_EXPIRY_MS // 60_000} minutes"
            " and no logged prediction came (counted as unmatched)"
        )
    # Recent either way: a wall clock stepped back must not turn early feedback away.
    if abs(now - ids.issued_ms(pid)) > PENDING_WINDOW_MS:
        raise NotFound(f"no prediction {pid}")
    value = _any_line_label(tx, actual, contracts)
    existing = tx.feedback.pending_actual(pid)
    if existing is not None:
        if existing != value:
            raise Conflict(
                f"prediction {pid} already has feedback {existing:g} waiting; "
                f"not replaced by {value:g}"
            )
        return "pending"
    tx.feedback.add_pending(pid, value, now)
    return "pending"


def _why_not_logged(tx: Tx, pid: str) -> None:
    """Refuse feedback for a prediction the log knows it does not hold: quarantined (its row
    could not be written) or older than the retention window (pruned)."""
    reason = tx.feedback.quarantine_reason(pid)
    if reason is not None:
        raise NotFound(
            f"no prediction {pid} in the log: it was served, but its row could not be written"
            f" and was quarantined ({reason}); feedback cannot be attached to it"
        )
    days = tx.feedback.pruned_days(ids.issued_ms(pid))
    if days is not None:
        raise NotFound(
            f"no prediction {pid}: it is older than the prediction log keeps ({days:g} days,"
            " [log] retention_days), so it was pruned if it was ever logged"
        )


def match_pending(
    tx: Tx,
    contracts: Contracts,
    singles: Collection[str] | None = None,
    batches: Mapping[str, int] | None = None,
) -> int:
    """Attach waiting feedback whose prediction is now logged; return how many were applied.

    Runs in the writer's transaction right after it inserted its rows, so feedback that waited
    for them is applied exactly once (its pending row is deleted in the same transaction). The
    writer names what it just wrote (single ids, batch prefixes and their row counts): only
    those can match, so nothing is looked up in the log; without them every waiting id is.
    """
    waiting = tx.feedback.pending()
    if not waiting:
        return 0
    if singles is not None or batches is not None:
        written = set(singles or ())
        rows = batches or {}
        waiting = [
            (pid, actual)
            for pid, actual in waiting
            if pid in written or ids.batch_row(pid)[1] < rows.get(pid[: ids.PREFIX_CHARS], 0)
        ]
    applied, refused = 0, []
    contracts = contracts.ranges_checked()
    for pid, actual in waiting:
        if not tx.feedback.is_logged(pid):
            continue
        tx.feedback.drop_pending(pid)
        applied += 1
        try:
            label(tx, pid, actual, contracts)
        except (Conflict, NotFound):  # pragma: no cover - the row is fresh and unlabelled
            continue
        except BeastError:
            # Accepted on arrival by another line's contract (its line was not known yet),
            # refused by its own (a binary line's 0/1): counted as unmatched, never dropped.
            refused.append((pid, actual, ids.issued_ms(pid)))
    if refused:
        tx.feedback.set_unmatched(refused, time.time_ns() // 1_000_000)
    return applied


def expire_pending(tx: Tx, now_ms: int | None = None) -> int:
    """Move feedback that waited longer than `PENDING_EXPIRY_MS` for its prediction to
    `unmatched_feedback` (inside the caller's write transaction); return how many moved.

    A writer flushes within seconds, and writes a row or counts it as dropped: a row that
    has not come after ten minutes is not coming.
    """
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    old = tx.feedback.pending_before(now - PENDING_EXPIRY_MS)
    gone = [item for item in old if not tx.feedback.is_logged(item[0])]
    tx.feedback.set_unmatched(gone, now)
    return len(gone)


def counts(tx: Tx) -> tuple[int, int]:
    """(feedback waiting for its prediction, feedback that never matched one)."""
    return tx.feedback.counts()


def record(store: Store, pid: str, actual: object, contracts: Contracts) -> str:
    """One piece of feedback in its own write transaction; the answer, or a refusal.

    `contracts` (the config's, `Contracts.of_config`) refuses actuals their line does not
    take (`check_label`) and counts the label by its line's task.
    """
    value = check_actual(actual)
    with store.write() as tx:
        expire_pending(tx)
        return label(tx, pid, value, contracts)


def record_many(
    store: Store,
    items: Iterable[tuple[str, object]],
    contracts: Contracts,
) -> list[Outcome]:
    """Many (prediction id, actual) pairs, each with its own answer, committed in chunks of
    `CHUNK_ITEMS` (one transaction each, `GIVE_WAY_S` apart), so a big file never keeps the
    write lock from others for long.

    A refused item does not stop the others (a file of feedback with one bad line still
    records the rest); every item gets an answer, so nothing is dropped silently. If a chunk
    cannot be written (a busy store, a full disk), the error says how many items before it
    were processed; sending them all again is safe: the recorded ones answer `duplicate`.
    `contracts` as for `record`.
    """
    pairs = list(items)
    answers: list[Outcome] = []
    for start in range(0, len(pairs), CHUNK_ITEMS):
        try:
            with store.write() as tx:
                if not start:
                    expire_pending(tx)
                chunk = [
                    _answer(tx, pid, actual, contracts)
                    for pid, actual in pairs[start : start + CHUNK_ITEMS]
                ]
        except (StateBusy, StoreError) as exc:
            if not start:
                raise
            raise type(exc)(
                f"{exc}; the first {start} of {len(pairs)} feedback items were processed, "
                f"the rest were not: sending all {len(pairs)} again is safe (those recorded "
                "answer duplicate)"
            ) from None
        answers += chunk
        if start + CHUNK_ITEMS < len(pairs):
            time.sleep(GIVE_WAY_S)
    return answers


def _answer(
    tx: Tx,
    pid: str,
    actual: object,
    contracts: Contracts,
) -> Outcome:
    """One item's answer inside the caller's transaction; a refusal is an answer too."""
    # Echoed in the answer: escaped, so it always encodes and prints on one line.
    shown = text.escape(pid) if isinstance(pid, str) else repr(pid)
    try:
        text.check("prediction id", pid, limit=text.MAX_ID_CHARS)
        status = label(tx, pid, check_actual(actual), contracts)
    except Conflict as exc:
        return Outcome(shown, "conflict", exc.http_status, str(exc))
    except NotFound as exc:
        return Outcome(shown, "not found", exc.http_status, str(exc))
    except BeastError as exc:
        return Outcome(shown, "invalid", 422, str(exc))
    return Outcome(shown, status, 200 if status != "pending" else 202)
