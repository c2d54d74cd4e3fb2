"""`beast backup DEST`: a consistent copy of the live database, through SQLite's backup API.

Never a file copy: `cp` of a WAL database can pair a main file with a WAL it does not match,
or catch a page half written. The backup API copies every page inside one read transaction
of the source, so the copy is one committed state even while other processes write (in WAL
mode readers do not block writers, and a single step never restarts).

The copy is written to a temporary file beside DEST, switched to a rollback journal (one
self-contained file), checked with `PRAGMA integrity_check`, synced, and only then linked to
DEST, which is never overwritten.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
import tempfile
from pathlib import Path

from engine.errors import BeastError, StoreError
from engine.store import Store, translate


def backup(db_path: Path, dest: Path) -> Path:
    """Copy the database at `db_path` to the new file `dest`; return `dest`."""
    if dest.exists() or dest.is_symlink():
        raise _exists(dest)
    if not dest.parent.is_dir():
        raise BeastError(f"cannot write {dest}: there is no directory {dest.parent}")
    if not db_path.is_file():
        raise BeastError(f"there is no database at {db_path} to back up")
    source = Store(db_path)
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


def _copy(source: Store, tmp: Path, dest: Path) -> None:
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
            problems = [row[0] for row in target.execute("PRAGMA integrity_check")]
        except sqlite3.Error as exc:
            raise translate(exc, dest, source.busy_s) from None
        if problems != ["ok"]:
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
