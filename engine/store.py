"""The state store: one SQLite file in WAL mode, opened the same way by every process.

Every connection gets `foreign_keys=ON` and a busy timeout. Every write runs inside
`BEGIN IMMEDIATE` (a deferred read-then-write fails at once with SQLITE_BUSY when another
process committed in between, whatever the timeout). SQLite errors are turned into one-line
refusals here, so no raw "database is locked" reaches a user.

sqlite-utils runs the migrations and is imported only when the schema is behind: importing it
pulls in pandas, which would cost `beast status` most of its 0.4 s budget.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from engine.errors import StateBusy, StoreError
from engine.schema import MIGRATION_SET, MIGRATIONS

DEFAULT_BUSY_TIMEOUT_S = 5.0
BUSY_ENV = "BEAST_BUSY_TIMEOUT_S"


def _busy_timeout() -> float:
    raw = os.environ.get(BUSY_ENV)
    if raw is None:
        return DEFAULT_BUSY_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_BUSY_TIMEOUT_S
    return value if value >= 0 else DEFAULT_BUSY_TIMEOUT_S


def translate(exc: sqlite3.Error, path: Path, busy_s: float) -> StoreError | StateBusy:
    """Turn a SQLite error into the refusal a user can act on."""
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return StateBusy(
            f"state busy: another beast process held {path.name} for over {busy_s:g}s; "
            "nothing was changed, retry"
        )
    if "full" in text:
        return StoreError(f"disk full writing {path}: nothing was changed; free space and retry")
    if "readonly" in text or "read-only" in text:
        return StoreError(f"{path} is read-only: this command needs to write state")
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return StoreError(
            f"{path} is not a usable beast-mode database ({exc}); it was left untouched: "
            "move it aside and restore a backup (or run `beast init` for a new one)"
        )
    if "unable to open" in text:
        return StoreError(f"cannot open {path}: {exc}")
    if isinstance(exc, sqlite3.IntegrityError):
        return StoreError(f"refused by the state store's invariants: {exc}")
    return StoreError(f"state store error on {path}: {exc}")


class Store:
    """One connection to a workspace database. Not shared across processes or threads."""

    def __init__(self, path: Path, *, busy_timeout_s: float | None = None) -> None:
        self.path = path
        self.busy_s = _busy_timeout() if busy_timeout_s is None else busy_timeout_s
        self._conn: sqlite3.Connection | None = None
        self._pid = os.getpid()

    @property
    def conn(self) -> sqlite3.Connection:
        # A forked child must never reuse its parent's connection (SQLite forbids it).
        if self._conn is None or self._pid != os.getpid():
            self._conn = self._connect()
            self._pid = os.getpid()
        return self._conn

    def _connect(self) -> sqlite3.Connection:
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
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            # Deployment state changes are rare and precious: sync each commit.
            conn.execute("PRAGMA synchronous = FULL")
        except sqlite3.Error as exc:
            raise translate(exc, self.path, self.busy_s) from None
        return conn

    def close(self) -> None:
        if self._conn is not None and self._pid == os.getpid():
            self._conn.close()
        self._conn = None

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
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
    def read(self) -> Iterator[sqlite3.Connection]:
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
        """Apply pending migrations; return their names. Safe when many processes race.

        The whole check-and-apply runs under one `BEGIN IMMEDIATE`, so exactly one process
        migrates and the others find nothing pending once they get the lock.
        """
        if self.schema_is_current():
            return []
        import sqlite_utils  # deferred: pulls in pandas

        migrations = sqlite_utils.Migrations(MIGRATION_SET)
        for name, sql in MIGRATIONS:
            migrations(name=name)(_script(sql))
        known = {name for name, _sql in MIGRATIONS}
        with self.write() as conn:
            unknown = [name for name in self.applied_migrations() if name not in known]
            if unknown:
                raise StoreError(
                    f"{self.path} was written by a newer beast-mode (migrations "
                    f"{', '.join(unknown)}); upgrade beast-mode to use it"
                )
            db = sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)
            pending = [migration.name for migration in migrations.pending(db)]
            migrations.apply(db)
        return pending

    def integrity_errors(self) -> list[str]:
        """`PRAGMA integrity_check` and `foreign_key_check`, as readable lines."""
        problems: list[str] = []
        rows = self.query("PRAGMA integrity_check")
        if [tuple(row) for row in rows] != [("ok",)]:
            problems.extend(str(row[0]) for row in rows)
        for row in self.query("PRAGMA foreign_key_check"):
            problems.append(f"foreign key broken: {row[0]} row {row[1]} → {row[2]}")
        return problems


def _script(sql: str) -> Any:
    def apply(db: Any) -> None:
        db.executescript(sql)

    return apply
