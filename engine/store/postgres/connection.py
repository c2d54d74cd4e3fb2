"""The state store on a PostgreSQL server: psycopg 3 connections from one pool per process.

Chosen by `[store] url = "postgresql://…"` or `BEAST_STORE_URL` (engine/store/opening.py).
The semantics are SQLite's, so the services above cannot tell the backends apart:

- A write transaction takes one transaction-scoped advisory lock first, so writers run one
  at a time as under SQLite's `BEGIN IMMEDIATE`: a service that reads a revision and then
  writes (the "state changed since you looked" rule) sees nobody commit in between, on any
  replica. Waiting for it is bounded by `lock_timeout` (the busy timeout): past it the
  refusal is `StateBusy`, as SQLite's "database is locked" is. The prediction log's writer
  (`log_writer=True`) does not take it: its flushes only add to the log and to additive
  rollups (upserts), which concurrent replicas may interleave.
- A read transaction is one REPEATABLE READ snapshot, released at once.
- Errors come out as the engine's own one-line refusals (`translate`), by SQLSTATE.

A pool per process and URL, shared by every store of the process (the facade, the router,
the log writer, the HTTP feedback writers), each transaction taking a connection for its
length: a replica holds a handful of connections, whatever number of stores it opened. A
forked child never reuses its parent's pool (its sockets are the parent's).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from engine.core.errors import StateBusy, StoreError, StoreUnreachable
from engine.core.workspace import Workspace
from engine.store.busy import busy_timeout
from engine.store.postgres.leadership import AdvisoryLeadership
from engine.store.postgres.locks import MIGRATE_LOCK, WRITE_LOCK
from engine.store.postgres.notify import ListenFeed
from engine.store.postgres.rows import row_factory
from engine.store.postgres.schema import MIGRATION_SET, MIGRATIONS
from engine.store.postgres.tx import PostgresTx

POOL_MAX = 8  # connections per process: a replica's stores and threads, each brief
CONNECT_TIMEOUT_S = 10.0
LEDGER = "beast_migrations"

_pools: dict[tuple[str, int], ConnectionPool] = {}
_pools_lock = threading.Lock()


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = (parts.username or "") + ":***"
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[-1]}"))


def pool_for(url: str) -> ConnectionPool:
    """This process's pool for `url` (opened on first use; a fork opens its own)."""
    key = (url, os.getpid())
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            _probe(url)
            pool = ConnectionPool(
                url,
                min_size=1,
                max_size=POOL_MAX,
                kwargs={"autocommit": True, "row_factory": row_factory},
                open=False,
                timeout=CONNECT_TIMEOUT_S,
                name=f"beast-{os.getpid()}",
            )
            try:
                pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
            except (PoolTimeout, psycopg.Error) as exc:
                with suppress(Exception):
                    pool.close(timeout=0)
                raise unreachable(url, exc) from None
            _pools[key] = pool
        return pool


def _probe(url: str) -> None:
    """One connection first: a pool retries a refused connection until its timeout (10 s
    for every `beast` command while the server is down); a probe says so at once."""
    try:
        psycopg.connect(url, connect_timeout=int(CONNECT_TIMEOUT_S)).close()
    except psycopg.Error as exc:
        raise unreachable(url, exc) from None


def unreachable(url: str, exc: BaseException) -> StoreUnreachable:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return StoreUnreachable(f"cannot reach PostgreSQL at {redact(url)}: {detail}")


# SQLSTATEs of a server that went away under a connection: shutdown, crash, restart.
_GONE = ("57P01", "57P02", "57P03")


def translate(exc: psycopg.Error, url: str, busy_s: float) -> StoreError | StateBusy:
    """A PostgreSQL error as the refusal a user can act on (one line), by its SQLSTATE."""
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc)
    detail = " ".join(str(primary).split())
    state = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, pg_errors.LockNotAvailable | pg_errors.SerializationFailure) or state in (
        "40P01",
        "55P03",
    ):
        return StateBusy(
            f"state busy: another beast process held the store at {redact(url)} for over "
            f"{busy_s:g}s; nothing was changed, retry"
        )
    if state.startswith("23"):
        return StoreError(f"refused by the state store's invariants: {detail}")
    if state in ("53100", "53200"):
        return StoreError(f"PostgreSQL at {redact(url)} is out of space: nothing was changed")
    if state == "25006":
        return StoreError(f"{redact(url)} is read-only: this command needs to write state")
    if state.startswith("08") or state in _GONE:
        return unreachable(url, exc)
    if isinstance(exc, psycopg.OperationalError) and not state:
        return unreachable(url, exc)
    return StoreError(f"state store error on {redact(url)}: {detail}")


class PostgresStore:
    """engine.store.base.Store on a PostgreSQL database.

    `workspace`: the workspace whose store this is (its identity is checked on migrate, as
    SQLite's is); None for a database only inspected or filled (`beast migrate --to`).
    """

    def __init__(
        self,
        url: str,
        *,
        workspace: Workspace | None = None,
        busy_timeout_s: float | None = None,
        log_writer: bool = False,
    ) -> None:
        self.url = url
        self.workspace = workspace
        self.busy_s = busy_timeout() if busy_timeout_s is None else busy_timeout_s
        self.log_writer = log_writer

    @property
    def location(self) -> str:
        return redact(self.url)

    @property
    def pool(self) -> ConnectionPool:
        return pool_for(self.url)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the pool, in autocommit, for the length of the block."""
        try:
            with self.pool.connection(timeout=self.busy_s + CONNECT_TIMEOUT_S) as conn:
                yield conn
        except PoolTimeout as exc:
            raise unreachable(self.url, exc) from None
        except psycopg.Error as exc:
            raise translate(exc, self.url, self.busy_s) from None

    def _lock_timeout(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(f"SET LOCAL lock_timeout = {max(1, int(self.busy_s * 1000))}")

    @contextmanager
    def write(self) -> Iterator[PostgresTx]:
        """One write transaction (module docstring: one writer at a time, bar the log's)."""
        with self.connection() as conn, conn.transaction():
            self._lock_timeout(conn)
            if not self.log_writer:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            yield PostgresTx(conn)

    @contextmanager
    def read(self) -> Iterator[PostgresTx]:
        """One REPEATABLE READ snapshot, rolled back (nothing to keep) when the block ends."""
        with self.connection() as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield PostgresTx(conn)
            finally:
                with suppress(psycopg.Error):
                    conn.execute("ROLLBACK")

    @contextmanager
    def peek(self) -> Iterator[PostgresTx]:
        """Repositories in autocommit: each statement its own snapshot."""
        with self.connection() as conn:
            yield PostgresTx(conn)

    def close(self) -> None:
        """Nothing to release per store: the pool is the process's (`close_pools`)."""

    def file_problem(self) -> str | None:
        return None  # a server's database cannot be swapped under a connection

    def leadership(self) -> AdvisoryLeadership:
        """An advisory lock on a connection of its own (engine.store.postgres.leadership)."""
        return AdvisoryLeadership(self.url)

    def changes(self) -> ListenFeed:
        """LISTEN on a connection of its own (engine.store.postgres.notify)."""
        return ListenFeed(self.url)

    # -- schema -------------------------------------------------------------------------

    def applied_migrations(self) -> list[str]:
        with self.connection() as conn:
            return self._applied(conn)

    @staticmethod
    def _applied(conn: psycopg.Connection[Any]) -> list[str]:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (LEDGER,)).fetchone()
        if not exists or not exists[0]:
            return []
        rows = conn.execute(
            f"SELECT name FROM {LEDGER} WHERE migration_set = %s ORDER BY id", (MIGRATION_SET,)
        ).fetchall()
        return [row[0] for row in rows]

    def schema_is_current(self) -> bool:
        return self.applied_migrations() == [name for name, _sql in MIGRATIONS]

    def migrate(self) -> list[str]:
        """Apply pending migrations (one process at a time: an advisory lock), then check the
        database is the workspace's own. A database with no schema yet is created only for a
        workspace that shows no sign of having had state (a wiped database is not new)."""
        pending: list[str] = []
        if not self.schema_is_current():
            pending = self._apply_migrations()
        self._check_workspace()
        return pending

    def _apply_migrations(self) -> list[str]:
        known = [name for name, _sql in MIGRATIONS]
        with self.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
            applied = self._applied(conn)
            unknown = [name for name in applied if name not in known]
            if unknown:
                raise StoreError(
                    f"{self.location} was written by a newer beast-mode (migrations "
                    f"{', '.join(unknown)}); upgrade beast-mode to use it"
                )
            if not applied and self.workspace is not None:
                self.workspace.refuse_if_used(f"(PostgreSQL {self.location}) holds no schema")
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {LEDGER} (id BIGINT GENERATED BY DEFAULT AS "
                "IDENTITY PRIMARY KEY, migration_set TEXT NOT NULL, name TEXT NOT NULL, "
                "applied_at TIMESTAMPTZ NOT NULL DEFAULT now(), UNIQUE (migration_set, name))"
            )
            pending = [(name, sql) for name, sql in MIGRATIONS if name not in applied]
            for name, sql in pending:
                conn.execute(sql)  # no parameters: one simple query, many statements
                conn.execute(
                    f"INSERT INTO {LEDGER} (migration_set, name) VALUES (%s, %s)",
                    (MIGRATION_SET, name),
                )
        return [name for name, _sql in pending]

    def identity(self) -> tuple[str | None, int]:
        """The workspace id this database records and its newest change."""
        with self.connection() as conn:
            row = conn.execute(
                "SELECT (SELECT id FROM workspace), (SELECT coalesce(max(id), 0) FROM history)"
            ).fetchone()
        assert row is not None
        return row[0], int(row[1])

    def _check_workspace(self) -> None:
        if self.workspace is None:
            return
        workspace_id, last_change = self.identity()
        self.workspace.check_database(workspace_id, last_change)

    # -- doctor -------------------------------------------------------------------------

    def integrity_check(self) -> list[str]:
        """What is missing of the schema's own guards ([] when whole): the migrations this
        beast-mode knows, and every trigger that enforces an invariant (a superuser can
        drop one; SQLite's file check has no counterpart on a server that checks its pages)."""
        with self.connection() as conn:
            return schema_findings(conn)

    def foreign_key_errors(self) -> list[str]:
        """[]: PostgreSQL checks every foreign key when a row is written (none is deferred)."""
        return []


def schema_findings(conn: psycopg.Connection[Any]) -> list[str]:
    """What is missing of the schema's guards, read on `conn` (its transaction's view: `beast
    migrate --to` asks before its copy commits): the migrations, every invariant trigger."""
    known = [name for name, _sql in MIGRATIONS]
    applied = PostgresStore._applied(conn)
    findings = (
        [] if applied == known else [f"migrations {applied} are not this beast-mode's {known}"]
    )
    present = {
        row[0]
        for row in conn.execute(
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled != 'D'"
        ).fetchall()
    }
    missing = sorted(set(GUARD_TRIGGERS) - present)
    if missing:
        findings.append(f"invariant triggers missing or disabled: {', '.join(missing)}")
    return findings


# Every trigger the migrations create: doctor asks that each is present and enabled.
GUARD_TRIGGERS = (
    "versions_name_valid_artifact",
    "versions_immutable",
    "artifacts_keep_named_valid",
    "experiments_end_once",
    "history_append_only_update",
    "history_append_only_delete",
    "history_append_only_truncate",
    "line_state_arms",
    "line_state_no_delete",
    "versions_no_delete",
    "experiments_no_delete",
    "jobs_finish_once",
)


def close_pools(url: str | None = None) -> None:
    """Close this process's pools (of `url` only, when given): at exit of a long-running
    process, or before a database is copied or dropped."""
    with _pools_lock:
        mine = [key for key in _pools if key[1] == os.getpid() and url in (None, key[0])]
        for key in mine:
            with suppress(Exception):
                _pools.pop(key).close(timeout=1)
