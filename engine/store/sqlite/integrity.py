"""Whether a SQLite database file is whole: doctor's first question, asked before any other.

On a damaged file the other checks would read garbage (a row its index points to is gone),
and a repair would export it.
"""

from __future__ import annotations

from pathlib import Path

from engine.core.records import DoctorReport
from engine.core.workspace import WAY_BACK
from engine.store.base import Store
from engine.store.sqlite.connection import SqliteStore


def integrity_report(source: Store | Path) -> DoctorReport | None:
    """A damaged database file as doctor's problems (what SQLite found), or None if whole.

    A path is opened as a plain file, not as its workspace's store: the workspace refused it
    already (engine.core.workspace), and the question now is only whether the file is damaged.
    """
    if isinstance(source, Path):
        if _size(source) < 512:  # SQLite's smallest page
            return None  # nothing to inspect, and opening it would create a database
        store = SqliteStore(source, check_workspace=False)
        try:
            found, where = store.integrity_check(), str(source)
        finally:
            store.close()
    else:
        found, where = source.integrity_check(), source.location
    if not found:
        return None
    more = f" and {len(found) - 1} more" if len(found) > 1 else ""
    summary = (
        f"database integrity: {where} is damaged (PRAGMA integrity_check: {found[0]}"
        f"{more}); {WAY_BACK}"
    )
    return DoctorReport((summary, *(f"database integrity: {line}" for line in found)), ())


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
