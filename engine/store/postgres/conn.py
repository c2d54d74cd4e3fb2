"""`PgConn`: a psycopg connection that takes the shared repositories' SQL.

The repositories write `?` and `:name` placeholders (sqlite3's); psycopg takes `%s` and
`%(name)s`, and then reads a literal `%` as the start of one. Each statement's text is
translated once and cached (the repositories' statements are a few hundred constant
strings). Quoted text ('…' and "…") is copied as it is; `::` (a PostgreSQL cast) is not a
named placeholder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

import psycopg

_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|::|\?|:[A-Za-z_]\w*|%")


@lru_cache(maxsize=1024)
def to_pyformat(sql: str) -> str:
    """`sql` with sqlite3's placeholders as psycopg's (and `%` doubled)."""

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "?":
            return "%s"
        if token == "%":
            return "%%"
        if token.startswith(":") and token != "::":
            return f"%({token[1:]})s"
        return token

    return _TOKEN.sub(replace, sql)


class PgConn:
    """engine.store.sql.conn.Conn over one psycopg connection."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw

    def execute(self, sql: str, parameters: Any = None, /) -> psycopg.Cursor[Any]:
        if not parameters and not isinstance(parameters, Mapping):
            # psycopg reads no placeholders (and no %%) in a statement without parameters
            return self.raw.execute(sql)
        return self.raw.execute(to_pyformat(sql), parameters)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> psycopg.Cursor[Any]:
        cursor = self.raw.cursor()
        cursor.executemany(to_pyformat(sql), parameters)
        return cursor
