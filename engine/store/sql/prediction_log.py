"""The prediction log in SQL: `predictions`, `prediction_batches` and their neighbours.

A single prediction is a row of `predictions`, keyed by its id as two integers (`ids.key`,
WITHOUT ROWID: the table is the id's index, ~142 B a row); a batch is one row of
`prediction_batches`, its columns as blobs — inserting a row per prediction is what bounded
batch throughput, and a batch's rows are still found by id (its prefix, engine.core.ids).
`logged_rows` and `labelled_rows` read both back as rows.

What a logged row costs is what bounds batch throughput, so the hot path is lean: rows are
bound straight from the batch's columns into multi-row INSERTs, the table has one index (the
prediction id's), and the writer's connection (engine.store.sqlite.log_store) commits with
`synchronous = NORMAL` (WAL: a committed batch survives a crash of this process; an OS crash
or power cut may lose the last batches, as it would lose the rows still queued in memory).

Written once for both backends; how a flush's rows go in is each backend's own
(`append`: SQLite's multi-row INSERTs, engine.store.sqlite.prediction_log; PostgreSQL's COPY,
engine.store.postgres.prediction_log), as is which failure is a row's (`row_fault`).

One bad row never costs its neighbours: `row_fault` tells a failure caused by a row's value
from one of the store, so the writer can split a flush and quarantine only that row (in
`quarantined_predictions`, with its reason).
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import numpy as np

from engine.core import ids
from engine.core.config import LogSettings
from engine.core.predictions import (
    ARM_NAMES,
    ARMS,
    DAY_MS,
    Chunk,
    LoggedRow,
    Pruned,
    Record,
    SplitUnits,
)
from engine.store.sql.conn import Conn

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


def row(record: Record, experiments: Mapping[str, int | None]) -> tuple[object, ...]:
    """The parameters of a record's `predictions` INSERT (`_INSERT`): `params` of one."""
    return tuple(params([record], experiments))


_LO_OFFSET = 1 << 63  # ids.key's
_LOW64 = (1 << 64) - 1


def params(records: Sequence[Record], experiments: Mapping[str, int | None]) -> list[object]:
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


def experiment_ids(conn: Conn, names: Iterable[str]) -> dict[str, int | None]:
    """Name → id of the A/B tests named ('' is no test: None); unknown names are left out."""
    wanted = sorted(set(names) - {""})
    marks = ", ".join("?" * len(wanted))
    found: dict[str, int | None] = {"": None}
    if wanted:
        found.update(
            conn.execute(f"SELECT name, id FROM experiments WHERE name IN ({marks})", wanted)
        )
    return found


def batch_params(chunk: Chunk) -> tuple[object, ...]:
    """The parameters of a batch's `prediction_batches` INSERT (`_INSERT_BATCH`)."""
    keys = chunk.keys if chunk.keys is not None and any(chunk.keys) else None
    return (
        chunk.prefix,
        chunk.at_ms,
        chunk.line,
        chunk.experiment,
        chunk.rows,
        chunk.features.shape[1] if chunk.features.ndim == 2 else 0,
        chunk.version_ids.astype("<i8", copy=False).tobytes(),
        bytes(a == "candidate" for a in chunk.arms),
        np.ascontiguousarray(chunk.features, dtype="<f4").tobytes(),
        chunk.scores.astype("<f8", copy=False).tobytes(),
        None if keys is None else json.dumps(keys),
        None if chunk.errors is None else json.dumps(chunk.errors),
        chunk.latency_us,
    )


class _savepoint:
    """A nested transaction: a failure inside rolls back only what it did."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("SAVEPOINT beast_optional")

    def __exit__(self, kind: object, exc: object, tb: object) -> None:
        if kind is not None:
            self.conn.execute("ROLLBACK TO beast_optional")
        self.conn.execute("RELEASE beast_optional")


def labelled_rows(conn: Conn, line: str, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        "SELECT substr(b.features, CAST(4 * b.width * l.row + 1 AS INTEGER),"
        " CAST(4 * b.width AS INTEGER)), l.actual, b.at_ms,"
        " substr(b.scores, CAST(8 * l.row + 1 AS INTEGER), 8) FROM batch_labels l"
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


def served_rows(
    conn: Conn, version_id: int, width: int, since_ms: int, limit: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The labelled, successful predictions `version_id` served from `since_ms` on, the most
    recent `limit` of them: (features as float32 (n, width), logged scores, actuals, at_ms),
    oldest first. What a replay scores another version on (engine.monitoring.replay)."""
    singles = conn.execute(
        "SELECT features, score, actual, coalesce(at_ms, hi >> 16) FROM predictions"
        " WHERE version_id = ? AND actual IS NOT NULL AND error IS NULL"
        " AND length(features) = ? AND coalesce(at_ms, hi >> 16) >= ?"
        " ORDER BY hi DESC, lo DESC LIMIT ?",
        (version_id, 4 * width, since_ms, limit),
    ).fetchall()
    # A batch row's version is the 8 bytes at its place in `version_ids`: compared there, so
    # the limit counts only this version's rows.
    in_batches = conn.execute(
        "SELECT substr(b.features, CAST(4 * b.width * l.row + 1 AS INTEGER),"
        " CAST(4 * b.width AS INTEGER)), substr(b.scores, CAST(8 * l.row + 1 AS INTEGER), 8),"
        " l.actual, b.at_ms FROM batch_labels l JOIN prediction_batches b ON b.id = l.batch_id"
        " WHERE b.width = ? AND b.at_ms >= ?"
        " AND substr(b.version_ids, CAST(8 * l.row + 1 AS INTEGER), 8) = ?"
        " ORDER BY b.id DESC, l.row LIMIT ?",
        (width, since_ms, np.int64(version_id).astype("<i8").tobytes(), limit),
    ).fetchall()
    found = singles + [
        (f, score, a, at)
        for f, s, a, at in in_batches
        if not math.isnan(score := float(np.frombuffer(s, dtype="<f8")[0]))  # a failed row
    ]
    x = np.frombuffer(b"".join(r[0] for r in found), dtype=np.float32).reshape(-1, width)
    scores = np.array([r[1] for r in found], dtype=np.float64)
    y = np.array([r[2] for r in found], dtype=np.float64)
    at = np.array([r[3] for r in found], dtype=np.int64)
    keep = np.argsort(at, kind="stable")[-limit:]
    return x[keep], scores[keep], y[keep], at[keep]


def count_logged(conn: Conn) -> int:
    """How many predictions the log holds: single ones plus every batch's rows."""
    found = conn.execute(
        "SELECT (SELECT count(*) FROM predictions)"
        " + (SELECT CAST(coalesce(sum(rows), 0) AS BIGINT) FROM prediction_batches)"
    ).fetchone()
    return int(found[0])


def split_units(conn: Conn, experiment: str, since_ms: int) -> tuple[SplitUnits, SplitUnits]:
    """Per arm (production, candidate): the distinct keys and the requests without a key
    test `experiment` routed from `since_ms` on, single rows and batches' rows.

    The single rows are counted in SQL, on the id's range from `since_ms` (the table is the
    id's index, time first: one range scan). A batch's keys and arms are blobs, so they are
    read here — batches in an A/B test are few, and only when one carries keys are the
    single rows' keys themselves read, so a key in both is counted once.
    """
    test = experiment_ids(conn, [experiment]).get(experiment)
    keys = [0, 0]
    unkeyed = [0, 0]
    if test is not None:
        for arm, distinct, bare in conn.execute(
            "SELECT arm, count(DISTINCT key), count(*) - count(key) FROM predictions"
            " WHERE hi >= ? AND experiment_id = ? AND coalesce(at_ms, hi >> 16) >= ?"
            " GROUP BY arm",
            (since_ms << 16, test, since_ms),
        ):
            keys[int(arm)], unkeyed[int(arm)] = int(distinct), int(bare)
    batch_keys: list[set[str]] = [set(), set()]
    for arms, found in conn.execute(
        "SELECT arms, keys FROM prediction_batches WHERE experiment = ? AND at_ms >= ?",
        (experiment, since_ms),
    ):
        row_keys = json.loads(found) if found is not None else [None] * len(arms)
        for arm, key in zip(bytes(arms), row_keys, strict=True):
            if key is None:
                unkeyed[arm] += 1
            else:
                batch_keys[arm].add(key)
    if test is not None and any(batch_keys):
        for arm, key in conn.execute(
            "SELECT DISTINCT arm, key FROM predictions WHERE hi >= ? AND experiment_id = ?"
            " AND coalesce(at_ms, hi >> 16) >= ? AND key IS NOT NULL",
            (since_ms << 16, test, since_ms),
        ):
            batch_keys[int(arm)].add(key)
        keys = [len(found) for found in batch_keys]
    else:
        keys = [keys[arm] + len(batch_keys[arm]) for arm in (0, 1)]
    return SplitUnits(keys[0], unkeyed[0]), SplitUnits(keys[1], unkeyed[1])


def labelled_since(conn: Conn, experiment: str, since_ms: int) -> tuple[int, int]:
    """Per arm (production, candidate): the predictions test `experiment` served from
    `since_ms` on that are labelled by now, single rows and batches' rows — exact to the
    millisecond, where the minute rollups would count the minute's earlier rows too."""
    test = experiment_ids(conn, [experiment]).get(experiment)
    out = [0, 0]
    if test is not None:
        for arm, n in conn.execute(
            "SELECT arm, count(actual) FROM predictions WHERE hi >= ? AND experiment_id = ?"
            " AND coalesce(at_ms, hi >> 16) >= ? GROUP BY arm",
            (since_ms << 16, test, since_ms),
        ):
            out[int(arm)] += int(n)
    for arms, row in conn.execute(
        "SELECT b.arms, l.row FROM batch_labels l JOIN prediction_batches b ON b.id = l.batch_id"
        " WHERE b.experiment = ? AND b.at_ms >= ?",
        (experiment, since_ms),
    ):
        out[bytes(arms)[int(row)]] += 1
    return out[0], out[1]


def logged_rows(conn: Conn, line: str | None = None) -> Iterator[LoggedRow]:
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


# Versions whose drift reference is still to be built from their first predictions: their
# successful rows are kept (baselines.ensure_from_first_predictions reads them).
_WAITING_FOR_REFERENCE = (
    "SELECT v.id FROM versions v LEFT JOIN baselines b ON b.artifact_id = v.artifact_id"
    " AND b.reference IS NOT NULL WHERE b.artifact_id IS NULL"
)


def prune(
    conn: Conn,
    settings: LogSettings,
    at_ms: int,
    budget: int,
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
            conn, labelled_key, ids.key_floor(labelled_ms), "TRUE", budget - looked
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
        "DELETE FROM quarantined_predictions WHERE pid IN (SELECT pid FROM"
        " quarantined_predictions WHERE at_ms < ? LIMIT ?)",
        (cutoff_ms, budget),
    )
    conn.execute(
        "INSERT INTO log_retention (id, unlabelled_key, labelled_key, batch_id,"
        " pruned_before_ms, days) VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
        " unlabelled_key = excluded.unlabelled_key, labelled_key = excluded.labelled_key,"
        " batch_id = excluded.batch_id, days = excluded.days, pruned_before_ms = CASE"
        " WHEN excluded.pruned_before_ms > log_retention.pruned_before_ms"
        " THEN excluded.pruned_before_ms ELSE log_retention.pruned_before_ms END",
        (unlabelled_key, labelled_key, batch_id, cutoff_ms, settings.retention_days),
    )
    return Pruned(singles, batch_rows, moved, more)


def _prune_singles(
    conn: Conn, after: int, below: int, which: str, budget: int
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
    conn: Conn,
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


def _feeds_a_reference(batch: Any, waiting: set[int]) -> bool:
    """Whether a batch holds successful rows of a version still waiting for its reference."""
    versions = np.frombuffer(batch[6], dtype="<i8")
    ok = ~np.isnan(np.frombuffer(batch[9], dtype="<f8"))
    return bool(np.isin(versions[ok], list(waiting)).any())


def _keep_labelled_rows(conn: Conn, batch: Any) -> int:
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
        "INSERT INTO predictions (hi, lo, at_ms, version_id, arm, experiment_id, key,"
        " features, score, latency_us, error, actual, labelled_at_ms)"
        " VALUES (?, ?, ?, ?, ?, (SELECT id FROM experiments WHERE name = ?), ?, ?, ?, ?, ?, ?,"
        " ?) ON CONFLICT DO NOTHING",
        params,
    )
    return len(params)


def mark_first_rows(conn: Conn, version_ids: Iterable[int], from_ms: int) -> None:
    """`first_predictions`: where a version's rows begin (engine.monitoring.baselines)."""
    from_key = ids.key_floor(from_ms)
    conn.executemany(
        "INSERT INTO first_predictions (version_id, from_key, from_batch)"
        " SELECT CAST(? AS BIGINT), CAST(? AS BIGINT),"
        " (SELECT coalesce(max(id), 0) + 1 FROM prediction_batches) WHERE TRUE"
        " ON CONFLICT DO NOTHING",
        [(version_id, from_key) for version_id in version_ids],
    )


class SqlPredictionLog(ABC):
    """engine.store.prediction_log.PredictionLogRepo over one transaction, either backend's;
    `append` and `row_fault` are the backend's own (its subclass)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    def experiment_ids(self, names: Iterable[str]) -> dict[str, int | None]:
        return experiment_ids(self.conn, names)

    def mark_first_rows(self, version_ids: Iterable[int], from_ms: int) -> None:
        mark_first_rows(self.conn, version_ids, from_ms)

    @abstractmethod
    def append(
        self,
        chunks: Sequence[Chunk],
        records: Sequence[Record],
        experiments: Mapping[str, int | None],
    ) -> None:
        """engine.store.prediction_log.PredictionLogRepo.append: the backend's fastest way."""

    @abstractmethod
    def row_fault(self, exc: BaseException) -> bool:
        """engine.store.prediction_log.PredictionLogRepo.row_fault: by the backend's errors."""

    def quarantine(self, pid: str, rows: int, at_ms: int, reason: str, now_ms: int) -> None:
        self.conn.execute(
            "INSERT INTO quarantined_predictions (pid, rows, at_ms, reason,"
            " quarantined_ms) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (pid, rows, at_ms, reason, now_ms),
        )

    def upkeep(self) -> AbstractContextManager[None]:
        return _savepoint(self.conn)

    def prune(self, settings: LogSettings, at_ms: int, budget: int) -> Pruned:
        return prune(self.conn, settings, at_ms, budget)

    def labelled_rows(self, line: str, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return labelled_rows(self.conn, line, width)

    def served_rows(
        self, version_id: int, width: int, since_ms: int, limit: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return served_rows(self.conn, version_id, width, since_ms, limit)

    def split_units(self, experiment: str, since_ms: int) -> tuple[SplitUnits, SplitUnits]:
        return split_units(self.conn, experiment, since_ms)

    def labelled_since(self, experiment: str, since_ms: int) -> tuple[int, int]:
        return labelled_since(self.conn, experiment, since_ms)

    def count(self) -> int:
        return count_logged(self.conn)

    def logged_rows(self, line: str | None = None) -> Iterator[LoggedRow]:
        return logged_rows(self.conn, line)
