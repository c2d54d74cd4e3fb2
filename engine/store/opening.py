"""Opening a workspace's state store: the one place that names a backend.

Every part that needs a store of its own — the facade, the router (the change counter is per
connection), the prediction log's writer, the HTTP API's feedback writers, a retraining worker —
opens it here, so a second backend (PostgreSQL, a later issue) is chosen in these functions,
not at every call site.
"""

from __future__ import annotations

from pathlib import Path

from engine.store.base import Store
from engine.store.sqlite.connection import SqliteStore
from engine.store.sqlite.log_store import LogStore


def open_store(db_path: Path, *, busy_timeout_s: float | None = None) -> Store:
    """The workspace's store, on a connection of its own (opened on first use).

    `busy_timeout_s`: how long a transaction waits for another writer before `StateBusy`
    (default: the engine's, `BEAST_BUSY_TIMEOUT`).
    """
    return SqliteStore(db_path, busy_timeout_s=busy_timeout_s)


def open_log_store(db_path: Path) -> Store:
    """The prediction log writer's store: its flushes commit without waiting for the disk
    each time (a crash may lose the last flush, never corrupt the store)."""
    return LogStore(db_path)
