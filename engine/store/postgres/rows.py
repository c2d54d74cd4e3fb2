"""Rows as the repositories read them: by position or by column name, like sqlite3.Row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Cursor


class Row(tuple[Any, ...]):
    """A row's values, also addressed by column name (`row["id"]`), as sqlite3.Row is."""

    _index: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


def row_factory(cursor: Cursor[Any]) -> Any:
    """psycopg's row factory: one Row subclass per result's columns (made once per result)."""
    description = cursor.description
    if description is None:
        return tuple
    index = {column.name: i for i, column in enumerate(description)}
    row_type = type("Row", (Row,), {"_index": index, "__slots__": ()})

    def make(values: Sequence[Any]) -> Row:
        row: Row = row_type(values)
        return row

    return make
