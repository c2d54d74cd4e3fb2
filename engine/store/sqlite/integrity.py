"""Whether a SQLite database file is whole: doctor's first question, asked before any other.

On a damaged file the other checks would read garbage (a row its index points to is gone),
and a repair would export it.
"""

from __future__ import annotations

from pathlib import Path

from engine.core.records import DoctorReport
from engine.core.workspace import WAY_BACK
from engine.store.sqlite.connection import SqliteStore


def integrity_report(source: SqliteStore | Path) -> DoctorReport | None:
    """A damaged database file as doctor's problems (what SQLite found), or None if whole.

    A path is opened as a plain file, not as its workspace's store: the workspace refused it
    already (engine.core.workspace), and the question now is only whether the file is damaged.
    """
    if not isinstance(source, SqliteStore) and _size(source) < 512:  # SQLite's smallest page
        return None  # nothing to inspect, and opening it would create a database
    store = (
        source if isinstance(source, SqliteStore) else SqliteStore(source, check_workspace=False)
    )
    try:
        found = store.integrity_check()
    finally:
        if store is not source:
            store.close()
    if not found:
        return None
    more = f" and {len(found) - 1} more" if len(found) > 1 else ""
    summary = (
        f"database integrity: {store.path} is damaged (PRAGMA integrity_check: {found[0]}"
        f"{more}); {WAY_BACK}"
    )
    return DoctorReport((summary, *(f"database integrity: {line}" for line in found)), ())


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
