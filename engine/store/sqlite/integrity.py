"""Whether a store is whole: doctor's first question, asked before any other.

On a damaged SQLite file the other checks would read garbage (a row its index points to is
gone), and a repair would export it. Every store answers through the Store protocol
(`integrity_check`): SQLite's is `PRAGMA integrity_check` over the file; PostgreSQL checks its
own pages, so its answer is whether the schema's guards (the triggers that enforce an
invariant) are all in place. Only a path — a file the workspace refused to open — is
SQLite's alone.
"""

from __future__ import annotations

from pathlib import Path

from engine.core.records import DoctorReport
from engine.core.workspace import WAY_BACK
from engine.store.base import Store
from engine.store.sqlite.connection import SqliteStore


def integrity_report(source: Store | Path) -> DoctorReport | None:
    """What is not whole in the store as doctor's problems (what the database found), or
    None if whole.

    A path is opened as a plain SQLite file, not as its workspace's store: the workspace
    refused it already (engine.core.workspace), and the question now is only whether the file
    is damaged.
    """
    if isinstance(source, Path):
        if _size(source) < 512:  # SQLite's smallest page
            return None  # nothing to inspect, and opening it would create a database
        store = SqliteStore(source, check_workspace=False)
        try:
            found, where, sqlite = store.integrity_check(), str(source), True
        finally:
            store.close()
    else:
        found, where = source.integrity_check(), source.location
        sqlite = isinstance(source, SqliteStore)
    if not found:
        return None
    more = f" and {len(found) - 1} more" if len(found) > 1 else ""
    what = (
        f"is damaged (PRAGMA integrity_check: {found[0]}" if sqlite else f"is not whole ({found[0]}"
    )
    summary = f"database integrity: {where} {what}{more}); {WAY_BACK}"
    return DoctorReport((summary, *(f"database integrity: {line}" for line in found)), ())


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
