"""The prediction log's PostgreSQL side: a flush's rows go in by COPY, and which failure is a
row's is told by SQLSTATE. Everything else of the log is shared with SQLite
(engine.store.sql.prediction_log).

COPY in binary: a row is written as typed values, not parsed from text on the server; per
row it costs the Python loop that builds the row and psycopg's C dumpers (tests/bench:
binary measured against text, and against multi-row INSERTs).

Several replicas' writers flush at once and take no writers' lock (engine.store.postgres.
connection). A flush does take that lock SHARED: writers of the log never wait for each
other, but a transaction holding it exclusively (feedback through the CLI or HTTP, which
looks for the prediction and else leaves the label pending) sees each flush either
committed or not begun — never a row committed after it looked and before its pending label
was there to be matched, which would leave that label pending until it expires.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg

from engine.core.config import LogSettings
from engine.core.predictions import ARMS, Chunk, Pruned, Record
from engine.store.postgres.conn import PgConn
from engine.store.postgres.locks import PRUNE_LOCK, WRITE_LOCK
from engine.store.sql.prediction_log import SqlPredictionLog, batch_params

_COPY_ROWS = (
    "COPY predictions (hi, lo, at_ms, version_id, arm, experiment_id, key, features, score,"
    " latency_us, error) FROM STDIN (FORMAT BINARY)"
)
_ROW_TYPES = ["int8", "int8", "int8", "int8", "int8", "int8", "text", "bytea", "float8", "int8"]
_ROW_TYPES.append("text")
_COPY_BATCHES = (
    "COPY prediction_batches (prefix, at_ms, line, experiment, rows, width, version_ids, arms,"
    " features, scores, keys, errors, latency_us) FROM STDIN (FORMAT BINARY)"
)
_BATCH_TYPES = ["text", "int8", "text", "text", "int8", "int8", "bytea", "bytea", "bytea"]
_BATCH_TYPES += ["bytea", "text", "text", "int8"]
_LO_OFFSET = 1 << 63  # ids.key's
_LOW64 = (1 << 64) - 1


def copy_rows(records: Sequence[Record], experiments: Mapping[str, int | None]) -> Iterator[Any]:
    """The records as `predictions` rows, in `_COPY_ROWS` order: what
    engine.store.sql.prediction_log.params binds, one tuple a row (ValueError or KeyError
    for an id that is no prediction id, an unknown arm or test: that row's fault)."""
    arms = ARMS
    for pid, at, _line, version_id, arm, experiment, *rest in records:
        n = int(pid, 16)
        hi = n >> 64
        yield (
            hi,
            (n & _LOW64) - _LO_OFFSET,
            None if at == hi >> 16 else at,
            version_id,
            arms[arm],
            experiments[experiment],
            *rest,
        )


class PostgresPredictionLog(SqlPredictionLog):
    """engine.store.prediction_log.PredictionLogRepo over one PostgreSQL transaction."""

    conn: PgConn

    def __init__(self, conn: PgConn) -> None:
        super().__init__(conn)
        self._shared = False

    def _share_writers_lock(self) -> None:
        """The writers' lock, shared, for the rest of this transaction (module docstring)."""
        if not self._shared:
            self.conn.raw.execute("SELECT pg_advisory_xact_lock_shared(%s)", (WRITE_LOCK,))
            self._shared = True

    def mark_first_rows(self, version_ids: Any, from_ms: int) -> None:
        self._share_writers_lock()
        super().mark_first_rows(version_ids, from_ms)

    def append(
        self,
        chunks: Sequence[Chunk],
        records: Sequence[Record],
        experiments: Mapping[str, int | None],
    ) -> None:
        self._share_writers_lock()
        with self.conn.raw.cursor() as cursor:
            if chunks:
                with cursor.copy(_COPY_BATCHES) as copy:
                    copy.set_types(_BATCH_TYPES)
                    for chunk in chunks:
                        copy.write_row(batch_params(chunk))
            if records:
                with cursor.copy(_COPY_ROWS) as copy:
                    copy.set_types(_ROW_TYPES)
                    write = copy.write_row
                    for row in copy_rows(records, experiments):
                        write(row)

    def row_fault(self, exc: BaseException) -> bool:
        """A value PostgreSQL refuses (class 22: out of range, a NUL in a text; class 23: a
        CHECK or NOT NULL), or one Python or psycopg cannot dump; not the store's faults."""
        if not isinstance(exc, psycopg.Error):
            return True  # Python refused a value: a text it cannot encode, an int too large
        if isinstance(exc, psycopg.DataError | psycopg.IntegrityError):
            return True
        state = exc.sqlstate or ""
        # psycopg's own dump errors carry no SQLSTATE (an int past int8, a bad bytes type);
        # a lost connection is an OperationalError, also without one: the store's.
        return not state and not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)

    def prune(self, settings: LogSettings, at_ms: int, budget: int) -> Pruned:
        """One replica's writer prunes at a time; the others leave the step to it."""
        got = self.conn.raw.execute("SELECT pg_try_advisory_xact_lock(%s)", (PRUNE_LOCK,))
        row = got.fetchone()
        if row is None or not row[0]:
            return Pruned()
        return super().prune(settings, at_ms, budget)
