"""Opening a workspace's state store: the one place that names a backend.

Every part that needs a store of its own — the facade, the router (the change counter is per
connection), the prediction log's writer, the HTTP API's feedback writers, a retraining worker —
opens it here. The backend is the workspace's choice: `BEAST_STORE_URL`, else `[store] url` in
its config.toml; none (the default) is the SQLite file `beast.db` in the workspace.
PostgreSQL's driver is imported only when a URL names it (the `postgresql` extra).
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.core.config import load_config
from engine.core.errors import ConfigError, StoreError
from engine.core.workspace import Workspace
from engine.store.base import Store
from engine.store.sqlite.connection import SqliteStore
from engine.store.sqlite.log_store import LogStore

STORE_URL_ENV = "BEAST_STORE_URL"


def store_url(root: Path) -> str:
    """The PostgreSQL URL the workspace at `root` keeps its state in ("" for its SQLite file).

    An unreadable config.toml is the SQLite default here: the command that reads the config
    next names the problem.
    """
    url = os.environ.get(STORE_URL_ENV, "").strip()
    if url:
        return url
    try:
        return load_config(root / "config.toml").store.store_url
    except ConfigError:
        return ""


def open_store(db_path: Path, *, busy_timeout_s: float | None = None) -> Store:
    """The workspace's store, on a connection of its own (opened on first use).

    `db_path` is the workspace's `beast.db`: the store itself when no URL is set.
    `busy_timeout_s`: how long a transaction waits for another writer before `StateBusy`
    (default: the engine's, `BEAST_BUSY_TIMEOUT`).
    """
    url = store_url(db_path.parent)
    if url:
        return _postgres(url, db_path, busy_timeout_s=busy_timeout_s, log_writer=False)
    return SqliteStore(db_path, busy_timeout_s=busy_timeout_s)


def open_log_store(db_path: Path) -> Store:
    """The prediction log writer's store: its flushes commit without waiting for the disk
    each time (a crash may lose the last flush, never corrupt the store); on PostgreSQL,
    without the writers' lock (its flushes only add)."""
    url = store_url(db_path.parent)
    if url:
        return _postgres(url, db_path, busy_timeout_s=None, log_writer=True)
    return LogStore(db_path)


def _postgres(url: str, db_path: Path, *, busy_timeout_s: float | None, log_writer: bool) -> Store:
    try:
        from engine.store.postgres.connection import PostgresStore  # the postgresql extra
    except ImportError as exc:
        raise StoreError(
            f"the store is PostgreSQL ({STORE_URL_ENV} or [store] url) but its driver is not "
            f"installed ({exc.name}): pip install 'beast-mode[postgresql]'"
        ) from None
    workspace = Workspace(db_path.parent)
    own = workspace if workspace.db_path == db_path else None
    return PostgresStore(url, workspace=own, busy_timeout_s=busy_timeout_s, log_writer=log_writer)
