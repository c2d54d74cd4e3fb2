"""Reading deployments/history.json, the history's export (engine.deploy.history writes it).

Here, below the store, because every open of the store reads it: the workspace checks that its
database is not behind the export (engine.core.workspace), and a restore compares its rows.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

_TAIL_BYTES = 16384  # enough for the last row of any export (notes are capped)


def exported_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of an export ([] when there is no file); ValueError when it is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc}") from None
    rows = json.loads(text)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError("not a JSON array of history rows")
    return rows


def exported_last_id(path: Path) -> int | None:
    """The id of the export's last row (None without rows), read from the file's tail.

    Every open of the store asks (engine.core.workspace), so the whole file is parsed only when
    its tail is not what `export_text` writes (one row per line, then `]`).
    """
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _TAIL_BYTES))
            lines = handle.read().rstrip().split(b"\n")
    except FileNotFoundError:
        return None
    if lines == [b"[]"]:
        return None
    whole = size <= _TAIL_BYTES or len(lines) >= 3  # the row before `]` began in the tail
    if whole and len(lines) >= 2 and lines[-1] == b"]":
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return int(json.loads(lines[-2])["id"])
    ids = [row.get("id") for row in exported_rows(path)]
    return max((i for i in ids if isinstance(i, int)), default=None)
