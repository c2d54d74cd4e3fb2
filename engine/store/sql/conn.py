"""`Conn`: what a repository needs of a connection, whichever database is behind it.

sqlite3.Connection is one as it is; a PostgreSQL connection is wrapped in
engine.store.postgres.conn.PgConn, which takes the same SQL. The shared repositories
(engine/store/sql/) are written in the SQL both speak: `?` and `:name` placeholders,
`RETURNING` instead of `lastrowid`, `ON CONFLICT … DO NOTHING` instead of `INSERT OR IGNORE`,
`CAST(sum(…) AS BIGINT)` where an integer sum is read (PostgreSQL's sum of BIGINT is NUMERIC),
ints, never bools, as parameters for integer columns. Where the dialects differ, the
backend's own module overrides the one method that differs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol


class Cursor(Protocol):
    """The result of one statement: rows by position or by column name (`row["id"]`)."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Conn(Protocol):
    """A connection inside one transaction (or in autocommit, for `Store.peek`)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...
