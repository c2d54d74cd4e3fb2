"""`beast backup DEST` and `beast restore BACKUP`: the database out to a file, and back.

Backup is a consistent copy of the live database, through SQLite's backup API.

Never a file copy: `cp` of a WAL database can pair a main file with a WAL it does not match,
or catch a page half written. The backup API copies every page inside one read transaction
of the source, so the copy is one committed state even while other processes write (in WAL
mode readers do not block writers, and a single step never restarts).

The copy is written to a temporary file beside DEST, switched to a rollback journal (one
self-contained file), checked with `PRAGMA integrity_check`, synced, and only then linked to
DEST, which is never overwritten.

Restore is the way back for a workspace whose database was lost (engine.core.workspace refuses it
until then). It holds the engine lock (refusing while an engine serves the workspace), copies
BACKUP through the backup API into a temporary file beside beast.db, checks that copy (whole,
a beast-mode database, this workspace's unless --force, migrated to this release), and
renames it into place. Nothing is thrown away: a database that was there is kept as
`beast.db.before-restore-TIME` (with its -wal), and a history.json holding changes the backup
lacks is kept as `history.json.before-restore-TIME` before the export is rewritten from the
restored history — history.json itself never shrinks.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.core import history_export as history
from engine.core.engine_lock import EngineLock, running_pid
from engine.core.errors import BeastError, StoreError
from engine.core.history_export import exported_rows
from engine.core.workspace import MARKER, Workspace
from engine.store.sqlite.connection import (
    IDENTITY_MIGRATION,
    SQLITE_HEADER,
    SqliteStore,
    integrity_findings,
    translate,
)
from engine.store.sqlite.history import SqliteHistory
from engine.store.sqlite.schema import MIGRATION_SET


def backup(db_path: Path, dest: Path) -> Path:
    """Copy the database at `db_path` to the new file `dest`; return `dest`."""
    if dest.exists() or dest.is_symlink():
        raise _exists(dest)
    if not dest.parent.is_dir():
        raise BeastError(f"cannot write {dest}: there is no directory {dest.parent}")
    if not db_path.is_file():
        raise BeastError(f"there is no database at {db_path} to back up")
    source = SqliteStore(db_path)
    try:
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    except OSError as exc:
        raise BeastError(f"cannot write {dest}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        _copy(source, tmp, dest)
        _publish(tmp, dest)
    except OSError as exc:
        raise BeastError(f"cannot write {dest}: {exc.strerror or exc}") from None
    finally:
        source.close()
        for leftover in (tmp, tmp.with_name(tmp.name + "-journal")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    return dest


def _exists(dest: Path) -> BeastError:
    return BeastError(f"{dest} already exists: a backup never overwrites a file; choose a new name")


def _copy(source: SqliteStore, tmp: Path, dest: Path) -> None:
    try:
        target = sqlite3.connect(tmp, isolation_level=None)
    except sqlite3.Error as exc:
        raise translate(exc, dest, source.busy_s) from None
    try:
        try:
            source.conn.backup(target)  # pages=-1: every page in one step, one snapshot
        except sqlite3.Error as exc:
            raise translate(exc, source.path, source.busy_s) from None
        try:
            target.execute("PRAGMA journal_mode = DELETE")
            problems = integrity_findings(target)
        except sqlite3.Error as exc:
            raise translate(exc, dest, source.busy_s) from None
        if problems:
            raise StoreError(
                f"the copy of {source.path} failed its integrity check ({problems[0]}); "
                "nothing was written: run `beast doctor`"
            )
    finally:
        target.close()
    with tmp.open("rb+") as handle:
        os.fsync(handle.fileno())
    # The copy holds what the database holds: give it the same permissions (cp does).
    os.chmod(tmp, stat.S_IMODE(source.path.stat().st_mode) & 0o666)


def _publish(tmp: Path, dest: Path) -> None:
    """Give the finished copy its name, refusing (not replacing) a file that appeared there."""
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise _exists(dest) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise BeastError(f"cannot write {dest}: {exc.strerror or exc}") from None
        # No hard links on this file system: rename, after one more look.
        if dest.exists() or dest.is_symlink():
            raise _exists(dest) from None
        os.rename(tmp, dest)
    dir_fd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# -- restore ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Restored:
    """What `beast restore` did."""

    backup: Path
    database: Path
    workspace_id: str
    changes: int  # history rows of the restored database
    kept: tuple[Path, ...]  # what was at beast.db (and its -wal), kept aside
    history_kept: Path | None  # history.json as it was, when the backup lacks some of it
    newer_changes: int  # rows of that history.json the backup lacks
    adopted: bool  # the backup was another workspace's (--force)

    def to_json(self) -> dict[str, Any]:
        return {
            "backup": str(self.backup),
            "database": str(self.database),
            "workspace_id": self.workspace_id,
            "changes": self.changes,
            "kept": [str(p) for p in self.kept],
            "history_kept": str(self.history_kept) if self.history_kept else None,
            "newer_changes": self.newer_changes,
            "adopted": self.adopted,
        }


@dataclass(frozen=True)
class _Staged:
    path: Path
    workspace_id: str
    changes: int
    export: str  # its history as history.json


def restore(workspace: Workspace, source: Path, *, force: bool = False) -> Restored:
    """Put the database of the backup file `source` in place as `workspace`'s database."""
    source = source.expanduser().absolute()
    _refuse_source(workspace, source)
    pid = running_pid(workspace)
    if pid is not None:
        raise BeastError(
            f"a beast engine (pid {pid}) is serving {workspace.root}: stop it before restoring "
            "(it holds the database open); nothing was changed"
        )
    workspace.create()  # restoring may be a workspace's first step on a new machine
    lock = EngineLock(workspace).acquire()  # and no engine starts while this runs
    try:
        staged = _stage(source, workspace)
        try:
            adopted = _check_owner(workspace, source, staged.workspace_id, force)
            kept = _keep_current(workspace)
            os.replace(staged.path, workspace.db_path)
            _sync_dir(workspace.root)
        finally:
            with contextlib.suppress(FileNotFoundError):
                staged.path.unlink()
        workspace.write_marker(staged.workspace_id)
        history_kept, newer = _keep_history(workspace.history_export_path, staged.export)
        history.write_export(workspace.history_export_path, lambda: staged.export)
    finally:
        lock.release()
    return Restored(
        source,
        workspace.db_path,
        staged.workspace_id,
        staged.changes,
        kept,
        history_kept,
        newer,
        adopted,
    )


def _refuse_source(workspace: Workspace, source: Path) -> None:
    if not source.is_file():
        raise BeastError(f"there is no backup file at {source}")
    with contextlib.suppress(OSError):
        if source.samefile(workspace.db_path):
            raise BeastError(f"{source} is this workspace's own database, not a backup of it")
    try:
        with source.open("rb") as handle:
            head = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise BeastError(f"cannot read {source}: {exc.strerror or exc}") from None
    if head != SQLITE_HEADER:
        raise _not_restorable(source, "it is not a SQLite database")


def _not_restorable(source: Path, why: str) -> BeastError:
    return BeastError(f"{source} cannot be restored: {why}; nothing was changed")


def _stage(source: Path, workspace: Workspace) -> _Staged:
    """The backup, copied beside beast.db, checked and migrated; the caller removes it."""
    fd, name = tempfile.mkstemp(dir=workspace.root, prefix=".beast.db.restore-", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        _copy_checked(source, tmp)
        store = SqliteStore(tmp, check_workspace=False)
        try:
            had_identity = IDENTITY_MIGRATION in store.applied_migrations()
            store.migrate()  # refuses a database of a newer beast-mode
            marker = workspace.marker()
            if not had_identity and marker is not None:
                # Written before databases knew their workspace: take this one's.
                with store.write_sql() as conn:
                    conn.execute("UPDATE workspace SET id = ?", (marker,))
            workspace_id, changes = store.identity()
            with store.read_sql() as conn:
                export = SqliteHistory(conn).export_text()
            store.conn.execute("PRAGMA journal_mode = DELETE")  # one file to rename
        finally:
            store.close()
        with tmp.open("rb+") as handle:
            os.fsync(handle.fileno())
        # The backup kept the database's permissions (as cp does): give them back.
        os.chmod(tmp, stat.S_IMODE(source.stat().st_mode) & 0o666)
    except BaseException:
        for leftover in (tmp, *(tmp.with_name(tmp.name + s) for s in ("-wal", "-shm", "-journal"))):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        raise
    assert workspace_id is not None  # migration 0007 gives every database one
    return _Staged(tmp, workspace_id, changes, export)


def _copy_checked(source: Path, tmp: Path) -> None:
    """The backup API copy of `source` (read-only), refused unless whole and beast-mode's."""
    try:
        src = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise _not_restorable(source, str(exc)) from None
    try:
        target = sqlite3.connect(tmp, isolation_level=None)
        try:
            src.backup(target)
            target.execute("PRAGMA journal_mode = DELETE")
            found = integrity_findings(target)
            ours = target.execute(
                "SELECT count(*) FROM sqlite_master m, _sqlite_migrations s"
                " WHERE m.name = 'history' AND s.migration_set = ?",
                (MIGRATION_SET,),
            ).fetchone()[0]
        finally:
            target.close()
    except sqlite3.Error as exc:
        detail = " ".join(str(exc).split())
        if "no such table" in detail:
            raise _not_restorable(source, "it is not a beast-mode database") from None
        raise _not_restorable(source, detail) from None
    finally:
        src.close()
    if found:
        raise _not_restorable(source, f"it fails its integrity check ({found[0]})")
    if not ours:
        raise _not_restorable(source, "it is not a beast-mode database")


def _check_owner(workspace: Workspace, source: Path, backup_id: str, force: bool) -> bool:
    """Whether the backup is adopted from another workspace (only with --force)."""
    marker = workspace.marker()
    if marker is None or marker == backup_id:
        return False
    if not force:
        raise BeastError(
            f"{source} is a backup of another workspace (id {backup_id[:12]}), not of this "
            f"one ({MARKER} {marker[:12]}); nothing was changed: pass --force to make its "
            "state this workspace's"
        )
    return True


def _keep_current(workspace: Workspace) -> tuple[Path, ...]:
    """Keep what is at beast.db aside (a database with its -wal), never delete it."""
    db = workspace.db_path
    aside = db.with_name(f"{db.name}.before-restore-{history.stamp()}")
    kept: list[Path] = []
    if db.is_file() and db.stat().st_size > 0:
        _checkpoint(db)
        os.link(db, aside)  # beast.db itself is replaced by the rename, atomically
        kept.append(aside)
    wal = db.with_name(f"{db.name}-wal")
    if wal.is_file() and wal.stat().st_size > 0:
        os.rename(wal, aside.with_name(f"{aside.name}-wal"))  # SQLite pairs them by name
        kept.append(aside.with_name(f"{aside.name}-wal"))
    for stale in (wal, db.with_name(f"{db.name}-shm")):
        # A -wal or -shm left beside the new file would be read as its own.
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    return tuple(kept)


def _checkpoint(db: Path) -> None:
    """Fold a database's WAL into it (best effort: it may be the damaged one)."""
    with contextlib.suppress(sqlite3.Error):
        conn = sqlite3.connect(db, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()


def _keep_history(path: Path, restored: str) -> tuple[Path | None, int]:
    """Keep history.json aside when it holds rows the restored history does not start with."""
    try:
        held = exported_rows(path)
    except ValueError:
        return history.set_aside(path, "before-restore"), 0
    rows = json.loads(restored)
    if rows[: len(held)] == held:
        return None, 0
    same = next((i for i, (a, b) in enumerate(zip(held, rows, strict=False)) if a != b), None)
    common = len(rows) if same is None else same
    return history.set_aside(path, "before-restore"), len(held) - common


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
