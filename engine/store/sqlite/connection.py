"""The state store: one SQLite file in WAL mode, opened the same way by every process.

Every connection gets `foreign_keys=ON` and a busy timeout. Every write runs inside
`BEGIN IMMEDIATE` (a deferred read-then-write fails at once with SQLITE_BUSY when another
process committed in between, whatever the timeout). SQLite errors are turned into one-line
refusals here, so no raw "database is locked" reaches a user: by SQLite's error code, not by
the wording of the message (a CHECK or trigger text may contain any word).

A file that does not start with SQLite's header is refused before SQLite sees it: SQLite takes
a file of a few bytes for an empty database and writes a new one over it. For the same reason
a missing or 0-byte database is created only in a workspace that shows no sign of having had
one, and after migrating, the database must be the workspace's own (engine.core.workspace): every
door — the facade, the prediction log, the daemon, the console — opens the store here.

sqlite-utils runs the migrations and is imported only when the schema is behind: importing it
pulls in pandas, which would cost `beast status` most of its 0.4 s budget.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from engine.core.errors import StateBusy, StoreError
from engine.core.workspace import WAY_BACK, Workspace
from engine.store.busy import busy_timeout
from engine.store.sqlite.leadership import SoleLeadership
from engine.store.sqlite.notify import PollFeed
from engine.store.sqlite.schema import MIGRATION_SET, MIGRATIONS
from engine.store.sqlite.tx import SqliteTx

PAGE_SIZE = 16384  # bytes, for new databases (see SqliteStore._connect)


SQLITE_HEADER = b"SQLite format 3\x00"
_MIN_PAGE_BYTES = 512  # SQLite's smallest page size: a database file is whole pages

# Primary result codes (the low byte of `sqlite3.Error.sqlite_errorcode`).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN = 5, 6, 8, 10, 11, 13, 14
_CONSTRAINT, _NOTADB = 19, 26
_READONLY_DIRECTORY = _READONLY | (6 << 8)
# Below this much free space an I/O error is taken for a full disk (the -shm file alone
# needs 32 KiB, each WAL frame a page).
_NEARLY_FULL_BYTES = 1 << 20


def _code_from_text(text: str) -> int | None:
    """For errors raised without a SQLite code (built by hand, or by the sqlite3 module)."""
    if "locked" in text or "busy" in text:
        return _BUSY
    if "full" in text:
        return _FULL
    if "readonly" in text or "read-only" in text:
        return _READONLY
    if "not a database" in text:
        return _NOTADB
    if "malformed" in text or "corrupt" in text:
        return _CORRUPT
    if "unable to open" in text:
        return _CANTOPEN
    return None


def _disk_nearly_full(path: Path) -> bool:
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < _NEARLY_FULL_BYTES


def _read_only(path: Path) -> str:
    """Which file is read-only: the database, or the -wal/-shm a read-only reader left."""
    companions = [
        p
        for p in (path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm"))
        if p.exists() and not os.access(p, os.W_OK)
    ]
    if companions and os.access(path, os.W_OK):
        names = " and ".join(p.name for p in companions)
        return (
            f"{names} beside {path} {'is' if len(companions) == 1 else 'are'} read-only (left by "
            f"a process that could only read it): make {'it' if len(companions) == 1 else 'them'} "
            f"writable like {path.name}; nothing was changed"
        )
    return f"{path} is read-only: this command needs to write state"


def _not_a_database(path: Path, detail: str) -> StoreError:
    return StoreError(
        f"{path} is not a usable beast-mode database ({detail}); it was left untouched: "
        "move it aside and restore a backup with `beast restore BACKUP`"
    )


def translate(exc: sqlite3.Error, path: Path, busy_s: float) -> StoreError | StateBusy:
    """Turn a SQLite error into the refusal a user can act on (always one line)."""
    detail = " ".join(str(exc).split())
    extended = getattr(exc, "sqlite_errorcode", None)
    if isinstance(extended, int):
        code: int | None = extended & 0xFF
    elif isinstance(exc, sqlite3.IntegrityError):
        code = _CONSTRAINT
    else:
        code = _code_from_text(detail.lower())
    if code in (_BUSY, _LOCKED):
        return StateBusy(
            f"state busy: another beast process held {path.name} for over {busy_s:g}s; "
            "nothing was changed, retry"
        )
    if code == _FULL or (code == _IOERR and _disk_nearly_full(path)):
        return StoreError(f"disk full writing {path}: nothing was changed; free space and retry")
    if extended == _READONLY_DIRECTORY:
        return StoreError(
            f"{path.parent} is read-only: SQLite must create {path.name}-wal and "
            f"{path.name}-shm there, even to read {path.name}; make the directory writable "
            "(nothing was changed)"
        )
    if code == _READONLY:
        return StoreError(_read_only(path))
    if code in (_NOTADB, _CORRUPT):
        return _not_a_database(path, detail)
    if code == _CANTOPEN:
        return StoreError(f"cannot open {path}: {detail}")
    if code == _CONSTRAINT:
        return StoreError(f"refused by the state store's invariants: {detail}")
    return StoreError(f"state store error on {path}: {detail}")


def check_header(path: Path) -> None:
    """Refuse a non-empty file that is not a SQLite database, before SQLite can touch it.

    SQLite reports "file is not a database" for most garbage, but takes a file shorter than
    its header for an empty database and overwrites it on the first write. An empty file is
    accepted: that is what a database looks like the instant its creator opened it.

    Only a file smaller than SQLite's smallest page (512 bytes) is opened here; anything
    larger SQLite checks itself. Opening the live database from Python would be dangerous:
    closing ANY descriptor of a file drops every POSIX lock this process holds on it, so
    reading the header while another SqliteStore of this process is connected silently released
    that connection's locks; a second process closing its connection then took itself for the
    last one and deleted the -wal and -shm files under the live connection (the next open
    failed with SQLITE_IOERR_SHORT_READ; see sqlite.org/howtocorrupt.html, section 2.2).
    A real database is whole pages, so it is never read here.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot open {path}: {exc.strerror or exc}") from None
    if size == 0 or size >= _MIN_PAGE_BYTES:
        return
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot open {path}: {exc.strerror or exc}") from None
    if head and head != SQLITE_HEADER:
        raise _not_a_database(path, "file is not a database")


IDENTITY_MIGRATION = "0007_workspace_identity"


class SqliteStore:
    """One connection to a workspace database. Not shared across processes or threads.

    When `path` is a workspace's `beast.db`, the workspace around it is checked on every
    connect and migrate (module docstring); `check_workspace=False` skips that, for a file
    only inspected (`beast doctor` on a database its workspace refused).
    """

    def __init__(
        self, path: Path, *, busy_timeout_s: float | None = None, check_workspace: bool = True
    ) -> None:
        self.path = path
        self.busy_s = busy_timeout() if busy_timeout_s is None else busy_timeout_s
        around = Workspace(path.parent)
        # Only a workspace's own beast.db: a backup or a copy beside it is just a file.
        self.workspace = around if check_workspace and around.db_path == path else None
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()
        self._file: tuple[int, int] | None = None  # (device, inode) of the file connected to

    @property
    def conn(self) -> sqlite3.Connection:
        # A forked child must never reuse its parent's connection (SQLite forbids it).
        if self._conn is None or self._pid != os.getpid():
            self._conn = self._connect()
            self._pid = os.getpid()
        return self._conn

    def _connect(self) -> sqlite3.Connection:
        self._refuse_lost()
        check_header(self.path)
        conn: sqlite3.Connection | None = None
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_s,
                isolation_level=None,  # we issue BEGIN ourselves
                check_same_thread=False,
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_s * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            # Set before the file's first page exists, and a no-op on any existing database:
            # 16 KiB pages make the prediction log's bulk inserts about 1.5x faster than the
            # 4 KiB default (fewer page splits and WAL frames per row; tests/bench).
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            self._use_wal(conn)
            # Deployment state changes are rare and precious: sync each commit.
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            # Close at once: a half-opened connection left to the garbage collector keeps
            # its locks, and a later open of the same file in this process waits on them.
            if conn is not None:
                with suppress(sqlite3.Error):
                    conn.close()
            raise translate(exc, self.path, self.busy_s) from None
        with suppress(OSError):
            stat = self.path.stat()
            self._file = (stat.st_dev, stat.st_ino)
        return conn

    def _refuse_lost(self) -> None:
        """SQLite would create a missing or 0-byte database: not where one was lost."""
        if self.workspace is None:
            return
        try:
            if self.path.stat().st_size > 0:
                return
            what = "is empty (0 bytes)"
        except FileNotFoundError:
            what = "is missing"
        except OSError:
            return  # check_header names it
        self.workspace.refuse_if_used(what)

    @property
    def location(self) -> str:
        return str(self.path)

    def file_problem(self) -> str | None:
        """Why the file at `path` is no longer the database this store has open, or None.

        A connection keeps the file it opened: one deleted, emptied or replaced underneath a
        long-running process (the engine) goes on being written, where nobody will read it.
        """
        if self._file is None or self._conn is None:
            return None
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return f"{self.path} was deleted while this process had it open; {WAY_BACK}"
        except OSError as exc:
            return f"cannot stat {self.path}: {exc.strerror or exc}"
        if (stat.st_dev, stat.st_ino) != self._file:
            return f"{self.path} was replaced by another file while this process had it open"
        if stat.st_size == 0:
            return f"{self.path} was emptied (0 bytes) while this process had it open; {WAY_BACK}"
        return None

    def leadership(self) -> SoleLeadership:
        """Always the leader: one engine per workspace (engine.core.engine_lock)."""
        return SoleLeadership()

    def changes(self) -> PollFeed:
        """No notices: the router polls `PRAGMA data_version` (engine.store.sqlite.notify)."""
        return PollFeed()

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Put the database in WAL mode (a no-op once it is: the mode is kept in the file).

        Switching needs an exclusive lock, and SQLite does not call its busy handler for it
        when another connection holds a write lock (waiting could deadlock): it answers
        SQLITE_BUSY at once. That happens when processes race to open a fresh database, so
        retry here, within the same busy timeout.
        """
        deadline = time.monotonic() + self.busy_s
        pause = 0.002
        while True:
            try:
                if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                code = getattr(exc, "sqlite_errorcode", None)
                busy = isinstance(code, int) and code & 0xFF in (_BUSY, _LOCKED)
                if not busy or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None
        self._file = None

    @contextmanager
    def write_sql(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (`BEGIN IMMEDIATE`): all of it commits, or none of it."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise translate(exc, self.path, self.busy_s) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback_quietly(conn)
            raise translate(exc, self.path, self.busy_s) from None
        except BaseException:
            self._rollback_quietly(conn)
            raise

    @contextmanager
    def read_sql(self) -> Iterator[sqlite3.Connection]:
        """A short read transaction: one consistent snapshot, released at once."""
        conn = self.conn
        try:
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise translate(exc, self.path, self.busy_s) from None
        try:
            yield conn
        except sqlite3.Error as exc:
            raise translate(exc, self.path, self.busy_s) from None
        finally:
            self._rollback_quietly(conn)

    @contextmanager
    def write(self) -> Iterator[SqliteTx]:
        """One write transaction, as repositories (engine.store.base.Store.write)."""
        with self.write_sql() as conn:
            yield SqliteTx(conn)

    @contextmanager
    def read(self) -> Iterator[SqliteTx]:
        """A short read transaction, as repositories (engine.store.base.Store.read)."""
        with self.read_sql() as conn:
            yield SqliteTx(conn)

    @contextmanager
    def peek(self) -> Iterator[SqliteTx]:
        """Repositories outside any transaction: each statement is its own snapshot (autocommit).

        For a lone cheap read that must not open a transaction of its own (the log writer's
        connection asks whether there is anything to compact: its transactions are its flushes).
        """
        try:
            yield SqliteTx(self.conn)
        except sqlite3.Error as exc:
            raise translate(exc, self.path, self.busy_s) from None

    @staticmethod
    def _rollback_quietly(conn: sqlite3.Connection) -> None:
        # On disk full SQLite has already rolled back; a second ROLLBACK must not raise.
        if conn.in_transaction:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def query(self, sql: str, params: tuple[Any, ...] | dict[str, Any] = ()) -> list[sqlite3.Row]:
        """Run one read statement (its own implicit snapshot)."""
        try:
            return self.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, self.path, self.busy_s) from None

    # -- schema -------------------------------------------------------------------------

    def applied_migrations(self) -> list[str]:
        rows = self.query(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlite_migrations'"
        )
        if not rows:
            return []
        return [
            row["name"]
            for row in self.query(
                "SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY id",
                (MIGRATION_SET,),
            )
        ]

    def schema_is_current(self) -> bool:
        return self.applied_migrations() == [name for name, _sql in MIGRATIONS]

    def migrate(self) -> list[str]:
        """Apply pending migrations, then check the database is the workspace's own.

        Returns the names applied. Safe when many processes race: the whole check-and-apply
        runs under one `BEGIN IMMEDIATE`, so exactly one process migrates and the others find
        nothing pending once they get the lock.
        """
        pending = [] if self.schema_is_current() else self._apply_migrations()
        self._check_workspace()
        return pending

    def identity(self) -> tuple[str | None, int]:
        """The workspace id this database records (None before 0007) and its newest change."""
        if IDENTITY_MIGRATION not in self.applied_migrations():
            return None, self.query("SELECT coalesce(max(id), 0) FROM history")[0][0]
        row = self.query(
            "SELECT (SELECT id FROM workspace), (SELECT coalesce(max(id), 0) FROM history)"
        )[0]
        return row[0], row[1]

    def _check_workspace(self) -> None:
        if self.workspace is None or not any(n == IDENTITY_MIGRATION for n, _ in MIGRATIONS):
            return
        workspace_id, last_change = self.identity()
        self.workspace.check_database(workspace_id, last_change)

    def _apply_migrations(self) -> list[str]:
        import sqlite_utils  # deferred: pulls in pandas

        migrations = sqlite_utils.Migrations(MIGRATION_SET)
        for name, sql in MIGRATIONS:
            migrations(name=name)(_script(sql))
        known = {name for name, _sql in MIGRATIONS}
        # Foreign keys off while migrating (SQLite's procedure for changing a table): a
        # migration that rebuilds a table others point at (0013: history) drops the old one,
        # and with them on the drop's implicit delete counts violations that the renamed
        # copy never clears. The keys are checked before the commit instead. The pragma is a
        # no-op inside a transaction, so it is set before the write begins.
        self.conn.execute("PRAGMA foreign_keys = OFF")
        try:
            with self.write_sql() as conn:
                unknown = [name for name in self.applied_migrations() if name not in known]
                if unknown:
                    raise StoreError(
                        f"{self.path} was written by a newer beast-mode (migrations "
                        f"{', '.join(unknown)}); upgrade beast-mode to use it"
                    )
                db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
                pending = [migration.name for migration in migrations.pending(db)]
                migrations.apply(db)
                broken = conn.execute("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise StoreError(
                        f"{self.path}: migrating would break {len(broken)} foreign keys "
                        f"(first: {broken[0][0]} row {broken[0][1]} → {broken[0][2]}); "
                        "nothing was changed"
                    )
        finally:
            self.conn.execute("PRAGMA foreign_keys = ON")
        return pending

    def integrity_errors(self) -> list[str]:
        """`PRAGMA integrity_check` and `foreign_key_check`, as readable lines."""
        return self.integrity_check() + self.foreign_key_errors()

    def integrity_check(self) -> list[str]:
        """What `PRAGMA integrity_check` finds wrong with the file ([] when it is whole)."""
        try:
            return integrity_findings(self.conn)
        except sqlite3.Error as exc:
            raise translate(exc, self.path, self.busy_s) from None

    def foreign_key_errors(self) -> list[str]:
        """Rows whose foreign keys point nowhere (`PRAGMA foreign_key_check`)."""
        return [
            f"foreign key broken: {row[0]} row {row[1]} → {row[2]}"
            for row in self.query("PRAGMA foreign_key_check")
        ]


def integrity_findings(conn: sqlite3.Connection) -> list[str]:
    """What `PRAGMA integrity_check` finds wrong, one finding a line ([] when whole)."""
    rows = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
    if rows == ["ok"]:
        return []
    # SQLite heads its report with "*** in database main ***" (sometimes inside the first
    # row, before a newline): the lines after it say what is wrong.
    lines = [line.strip() for row in rows for line in row.splitlines() if line.strip()]
    return [line for line in lines if not line.startswith("*** in database ")] or lines


def _script(sql: str) -> Any:
    def apply(db: Any) -> None:
        db.executescript(sql)

    return apply
