"""The prediction log's SQLite side: how a flush's rows go in, and which failure is a row's.

Everything else of the log is shared with PostgreSQL (engine.store.sql.prediction_log).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Mapping, Sequence

from engine.core.predictions import Chunk, Record
from engine.store.sql.prediction_log import (
    _COLUMNS,
    _INSERT_BATCH,
    _INSERT_INTO,
    _ROW,
    SqlPredictionLog,
    batch_params,
    params,
)

_MAX_ROWS_PER_STATEMENT = 1024


@functools.cache
def _statement(rows: int) -> str:
    return _INSERT_INTO + ", ".join([_ROW] * rows)


def insert(
    conn: sqlite3.Connection, rows: Sequence[Record], experiments: Mapping[str, int | None]
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


# SQLite result codes that name a value, not the store: string or blob too big, a CHECK or
# NOT NULL broken, a datatype mismatch, a bound parameter out of range.
_ROW_CODES = frozenset({18, 19, 20, 25})


def row_fault(exc: BaseException) -> bool:
    """Whether a failed flush failed because of a row (split and retry) rather than the
    store (disk full, read-only, I/O, a missing table: every row would fail the same way)."""
    if not isinstance(exc, sqlite3.Error):
        return True  # Python refused a value: a text it cannot encode, an int too large
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.DataError):
        return True  # a constraint, or a parameter SQLite cannot bind
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _ROW_CODES


class SqlitePredictionLog(SqlPredictionLog):
    """engine.store.prediction_log.PredictionLogRepo over one SQLite transaction."""

    conn: sqlite3.Connection

    def __init__(self, conn: sqlite3.Connection) -> None:
        super().__init__(conn)

    def append(
        self,
        chunks: Sequence[Chunk],
        records: Sequence[Record],
        experiments: Mapping[str, int | None],
    ) -> None:
        if chunks:
            self.conn.executemany(_INSERT_BATCH, [batch_params(chunk) for chunk in chunks])
        if records:
            insert(self.conn, records, experiments)

    def row_fault(self, exc: BaseException) -> bool:
        return row_fault(exc)
