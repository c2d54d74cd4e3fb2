"""`beast migrate --to postgresql://…`: a SQLite workspace's state copied into an empty
PostgreSQL database, and verified, in one transaction on the target.

The source is only read, in one snapshot (a read transaction on a WAL database: an engine
may go on serving and writing it meanwhile; what it writes after the snapshot is not in the
copy). The target must hold none of beast-mode's tables: the schema is created here, step
for step the source's migrations, the rows are streamed in with COPY in the order their
foreign keys allow (the schema's triggers and CHECKs judge every row as they would an
insert), the model files' validated bytes go into `artifact_bytes`, and the identity
sequences are set past the copied ids. Then, before the commit, the copy is checked: every
table's row count equals the source's, each line's history folds to its `line_state`, every
sequence is past its table's ids, every stored file hashes to its sha256, the schema's own
guards are whole, and the caller's check (the facade passes the deploy invariants of `beast
doctor`) finds nothing. Anything wrong raises, the transaction rolls back, and the target is
left as empty as it was.

Not copied: `replicas` (the engine processes of a deployment, each registers itself), the
SQLite-only bookkeeping (`_sqlite_migrations`, `sqlite_sequence`: the target keeps its own
ledger, and the sequences take the ids), and the target's random workspace id, replaced by
the source's so the workspace directory recognises its state.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from engine.core.errors import StoreError
from engine.core.records import Snapshot
from engine.store.base import Tx
from engine.store.postgres.connection import (
    CONNECT_TIMEOUT_S,
    LEDGER,
    redact,
    schema_findings,
    translate,
    unreachable,
)
from engine.store.postgres.locks import MIGRATE_LOCK
from engine.store.postgres.rows import row_factory
from engine.store.postgres.schema import MIGRATION_SET, MIGRATIONS
from engine.store.postgres.tx import PostgresTx
from engine.store.sqlite.connection import SqliteStore
from engine.store.sqlite.schema import MIGRATIONS as SQLITE_MIGRATIONS

# Every table of the state, in an order their foreign keys allow (line_state after the
# history row its revision names; artifact_bytes is filled from the files, after artifacts).
TABLES: tuple[str, ...] = (
    "model_lines",
    "artifacts",
    "versions",
    "experiments",
    "rollouts",
    "history",
    "shadows",
    "shadow_scores",
    "line_state",
    "predictions",
    "prediction_batches",
    "batch_labels",
    "first_predictions",
    "rollups",
    "rollups_hourly",
    "pending_feedback",
    "unmatched_feedback",
    "quarantined_predictions",
    "log_retention",
    "baselines",
    "alerts",
    "jobs",
    "job_log",
)
# The source's tables that are not copied row for row (module docstring).
NOT_COPIED = ("workspace", "replicas", "_sqlite_migrations", "sqlite_sequence")
# Tables whose `id` is an identity column on PostgreSQL: its sequence must pass the ids.
IDENTITY_TABLES = (
    "artifacts",
    "versions",
    "experiments",
    "history",
    "alerts",
    "jobs",
    "prediction_batches",
    "shadows",
)
# Any of these in the target means it is not empty (or is another workspace's).
BEAST_TABLES = (*TABLES, "workspace", "replicas", "artifact_bytes", LEDGER)
_FETCH = 5000  # rows read from SQLite per round trip: memory stays flat on a large log

Check = Callable[[Tx], Sequence[str]]


@dataclass(frozen=True)
class Migrated:
    """What `beast migrate --to` copied and checked."""

    source: str
    target: str  # the URL without its password
    workspace_id: str
    tables: tuple[tuple[str, int], ...]  # (table, rows) in copy order, every table
    files: int  # model files stored in artifact_bytes
    file_bytes: int
    not_carried: tuple[str, ...]  # valid artifacts of no deployment whose file is gone
    verified: tuple[str, ...]  # the checks the copy passed before its commit
    seconds: float

    def rows(self) -> int:
        return sum(n for _table, n in self.tables)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "workspace_id": self.workspace_id,
            "tables": dict(self.tables),
            "rows": self.rows(),
            "files": self.files,
            "file_bytes": self.file_bytes,
            "not_carried": list(self.not_carried),
            "verified": list(self.verified),
            "seconds": round(self.seconds, 3),
        }


def migrate(db_path: Path, models_dir: Path, url: str, *, check: Check | None = None) -> Migrated:
    """Copy the SQLite database at `db_path` (its workspace's model files under `models_dir`)
    into the empty PostgreSQL database at `url`, verify it, and commit; or change nothing.

    `check`: more verification over the copy before its commit (problems, [] when none).
    """
    started = time.monotonic()
    source = SqliteStore(db_path)
    try:
        if not source.schema_is_current():
            raise StoreError(
                f"{db_path}'s schema is behind this beast-mode: run `beast status` once to "
                "bring it up to date, then migrate (nothing was written)"
            )
        source.migrate()  # nothing to apply: only the check that it is its workspace's own
        with source.read_sql() as lite, _target(url) as pg:
            copied = _Copy(lite, pg, models_dir, url)
            copied.run()
            verified = copied.verify(check)
    finally:
        source.close()
    return Migrated(
        source=str(db_path),
        target=redact(url),
        workspace_id=copied.workspace_id,
        tables=tuple(copied.counts.items()),
        files=copied.files,
        file_bytes=copied.file_bytes,
        not_carried=tuple(copied.not_carried),
        verified=verified,
        seconds=time.monotonic() - started,
    )


@contextmanager
def _target(url: str) -> Iterator[psycopg.Connection[Any]]:
    """One connection to the target inside one transaction: committed when the block ends
    normally, rolled back otherwise (the target left as it was)."""
    try:
        conn = psycopg.connect(
            url, autocommit=True, row_factory=row_factory, connect_timeout=int(CONNECT_TIMEOUT_S)
        )
    except psycopg.Error as exc:
        raise unreachable(url, exc) from None
    try:
        with conn.transaction():
            yield conn
    except psycopg.Error as exc:
        raise translate(exc, url, CONNECT_TIMEOUT_S) from None
    finally:
        conn.close()


class _Copy:
    """One copy: the source's snapshot, the target's transaction, and what went across."""

    def __init__(
        self, lite: sqlite3.Connection, pg: psycopg.Connection[Any], models_dir: Path, url: str
    ) -> None:
        self.lite = lite
        self.pg = pg
        self.models_dir = models_dir
        self.url = url
        self.where = redact(url)
        self.workspace_id = ""
        self.counts: dict[str, int] = {}
        self.files = 0
        self.file_bytes = 0
        self.not_carried: list[str] = []

    # -- copying -----------------------------------------------------------------------

    def run(self) -> None:
        # Two migrations into one database wait for each other here, and so does an engine
        # started on it meanwhile: it finds the schema whole once this commits.
        self.pg.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATE_LOCK,))
        self._refuse_unless_empty()
        self._refuse_unknown_tables()
        self._create_schema()
        self._copy_identity()
        for table in TABLES:
            try:
                self.counts[table] = self._copy_table(table)
            except psycopg.Error as exc:
                # Named: which table, and that the rows before it were rolled back too.
                detail = translate(exc, self.url, CONNECT_TIMEOUT_S)
                raise StoreError(
                    f"copying {table} failed ({detail}); the copy was rolled back: nothing "
                    f"was written to {self.where}"
                ) from None
        self._copy_files()
        self._set_sequences()

    def _refuse_unless_empty(self) -> None:
        found = [
            row[0]
            for row in self.pg.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
                " AND tablename = ANY(%s) ORDER BY tablename",
                (list(BEAST_TABLES),),
            ).fetchall()
        ]
        if found:
            shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
            raise StoreError(
                f"{self.where} is not empty (it holds beast-mode tables: {shown}): migrate "
                "copies into an empty database only; nothing was written"
            )

    def _refuse_unknown_tables(self) -> None:
        """A table this copy does not know would be left behind: refuse instead."""
        present = {
            row[0]
            for row in self.lite.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        unknown = sorted(present - set(TABLES) - set(NOT_COPIED))
        if unknown:
            raise StoreError(
                f"the source holds tables this beast-mode cannot copy ({', '.join(unknown)}); "
                "nothing was written"
            )

    def _create_schema(self) -> None:
        """The schema at the source's step (the same migration names: engine/store/postgres/
        schema.py), inside this transaction so a failure later leaves no table behind."""
        if [n for n, _ in MIGRATIONS] != [n for n, _ in SQLITE_MIGRATIONS]:
            raise StoreError("this beast-mode's PostgreSQL and SQLite schemas differ; cannot copy")
        self.pg.execute(
            f"CREATE TABLE {LEDGER} (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
            "migration_set TEXT NOT NULL, name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL "
            "DEFAULT now(), UNIQUE (migration_set, name))"
        )
        for name, sql in MIGRATIONS:
            self.pg.execute(sql)  # constant DDL without parameters: one simple query
            self.pg.execute(
                f"INSERT INTO {LEDGER} (migration_set, name) VALUES (%s, %s)",
                (MIGRATION_SET, name),
            )

    def _copy_identity(self) -> None:
        """The source's workspace id over the one migration 0007 drew for the target."""
        row = self.lite.execute("SELECT id, created_at FROM workspace").fetchone()
        if row is None:
            raise StoreError("the source database records no workspace id; nothing was written")
        self.workspace_id = str(row[0])
        self.pg.execute(
            "UPDATE workspace SET id = %s, created_at = %s", (self.workspace_id, row[1])
        )

    def _columns(self, table: str) -> list[tuple[str, str]]:
        """The table's columns in the source's order, each with its PostgreSQL type."""
        lite = [str(row[1]) for row in self.lite.execute(f"PRAGMA table_info({table})")]
        pg = {
            str(row[0]): str(row[1])
            for row in self.pg.execute(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_name = %s AND table_schema = current_schema()",
                (table,),
            ).fetchall()
        }
        if sorted(lite) != sorted(pg):
            raise StoreError(
                f"table {table} has columns {lite} in the source but {sorted(pg)} in "
                "PostgreSQL; nothing was written"
            )
        return [(name, pg[name]) for name in lite]

    def _copy_table(self, table: str) -> int:
        columns = self._columns(table)
        names = ", ".join(name for name, _type in columns)
        cursor = self.lite.cursor()
        cursor.row_factory = None  # plain tuples: what COPY writes
        cursor.execute(f"SELECT {names} FROM {table}")
        copied = 0
        # Binary: no text rendering and parsing of every value (about 2x the rows/s).
        sql = f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)"
        with self.pg.cursor() as out, out.copy(sql) as copy:
            copy.set_types([pg_type for _name, pg_type in columns])
            while rows := cursor.fetchmany(_FETCH):
                for row in rows:
                    copy.write_row(row)
                copied += len(rows)
        return copied

    def _copy_files(self) -> None:
        """Each valid artifact's file, hashed as read: the bytes stored are the bytes that
        matched their artifacts row. A deployed version's file must be there (the target's
        replicas must be able to serve it); another's may be gone (a model file deleted
        from models/ after its registration), named in the report."""
        deployed = {
            row[0]
            for row in self.lite.execute(
                "SELECT a.sha256 FROM line_state s JOIN versions v"
                " ON v.id IN (s.production_id, s.candidate_id) JOIN artifacts a"
                " ON a.id = v.artifact_id"
            )
        }
        artifacts = self.lite.execute(
            "SELECT sha256, path FROM artifacts WHERE status = 'valid' ORDER BY id"
        ).fetchall()
        for sha256, path in artifacts:
            data = self._file(Path(path))
            if data is None or hashlib.sha256(data).hexdigest() != sha256:
                why = "missing" if data is None else f"no longer has sha256 {sha256[:12]}…"
                if sha256 in deployed:
                    raise StoreError(
                        f"{self.models_dir / path} is deployed but {why}: put the registered "
                        "file back, then migrate (nothing was written)"
                    )
                self.not_carried.append(f"{path} ({why})")
                continue
            self.pg.execute(
                "INSERT INTO artifact_bytes (sha256, data) VALUES (%s, %s)", (sha256, data)
            )
            self.files += 1
            self.file_bytes += len(data)

    def _file(self, path: Path) -> bytes | None:
        try:
            return (self.models_dir / path).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StoreError(
                f"cannot read {self.models_dir / path}: {exc.strerror or exc}; nothing was written"
            ) from None

    def _floor(self, table: str) -> int:
        """The highest id the source ever gave in `table` (AUTOINCREMENT remembers ids
        deleted since: they are never given again)."""
        top = self.lite.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]
        seq = self.lite.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)
        ).fetchone()
        return max(int(top), int(seq[0]) if seq else 0)

    def _set_sequences(self) -> None:
        for table in IDENTITY_TABLES:
            floor = self._floor(table)
            # setval(…, 1, false): the next id is 1, as on an empty table.
            self.pg.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, %s)",
                (table, max(floor, 1), floor > 0),
            )

    # -- verifying ---------------------------------------------------------------------

    def verify(self, check: Check | None) -> tuple[str, ...]:
        """Every check over the copy, inside its transaction; the first problem raises."""
        steps: list[tuple[str, Callable[[], list[str]]]] = []
        if check is not None:
            steps.append(("doctor", lambda: list(check(PostgresTx(self.pg)))))
        steps += [
            ("row counts", self._counts),
            ("history replay", self._replay),
            ("id sequences", self._sequences),
            ("artifact bytes", self._hashes),
            ("schema guards", lambda: schema_findings(self.pg)),
        ]
        for name, step in steps:
            problems = step()
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                raise StoreError(
                    f"the copy failed its check ({name}: {problems[0]}{more}); nothing was "
                    f"written to {self.where}"
                )
        return tuple(name for name, _step in steps)

    def _counts(self) -> list[str]:
        out = []
        for table in TABLES:
            source = int(self.lite.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            found = self.pg.execute(f"SELECT count(*) FROM {table}").fetchone()
            target = int(found[0]) if found else 0
            if source != target:
                out.append(f"{table} has {source} rows in the source, {target} in the copy")
        return out

    def _replay(self) -> list[str]:
        """Folding each line's history (in id order, each row starting where the last
        ended) gives the line's state, at the revision of its last row."""
        folded: dict[str, tuple[Snapshot, int]] = {}
        out = []
        rows = self.pg.execute(
            "SELECT line, id, from_state, to_state FROM history ORDER BY line, id"
        ).fetchall()
        for line, row_id, before, after in rows:
            current, last = folded.get(line, (Snapshot(), 0))
            if Snapshot.from_json(json.loads(before)) != current:
                out.append(f"history #{row_id} of {line} does not start where #{last} ended")
            folded[line] = (Snapshot.from_json(json.loads(after)), int(row_id))
        states = self.pg.execute(
            "SELECT s.line, p.name, c.name, s.candidate_bp, e.name, s.revision"
            " FROM line_state s JOIN versions p ON p.id = s.production_id"
            " LEFT JOIN versions c ON c.id = s.candidate_id"
            " LEFT JOIN experiments e ON e.id = s.experiment_id"
        ).fetchall()
        for line, production, candidate, bp, test, revision in states:
            state = Snapshot(production, candidate, int(bp), test)
            replayed, last = folded.pop(line, (Snapshot(), 0))
            if (replayed, last) != (state, int(revision)):
                out.append(
                    f"replaying {line}'s history gives {replayed} at #{last}, its state is "
                    f"{state} at revision {revision}"
                )
        out += [f"{line} has history but no state" for line in sorted(folded)]
        return out

    def _sequences(self) -> list[str]:
        """The next id each identity column would give is past every copied id."""
        out = []
        for table in IDENTITY_TABLES:
            row = self.pg.execute(
                f"SELECT (SELECT coalesce(max(id), 0) FROM {table}),"
                " pg_sequence_last_value(pg_get_serial_sequence(%s, 'id')::regclass)",
                (table,),
            ).fetchone()
            assert row is not None
            top, last = int(row[0]), row[1]
            given = 0 if last is None else int(last)  # NULL: never called, next is its start
            if given < max(top, self._floor(table)):
                out.append(f"{table}'s next id would be {given + 1}, its ids reach {top}")
        return out

    def _hashes(self) -> list[str]:
        rows = self.pg.execute(
            "SELECT sha256 FROM artifact_bytes WHERE encode(sha256(data), 'hex') != sha256"
        ).fetchall()
        stored = self.pg.execute("SELECT count(*) FROM artifact_bytes").fetchone()
        out = [f"the stored bytes of {row[0][:12]}… do not hash to it" for row in rows]
        if stored is None or int(stored[0]) != self.files:
            out.append(f"{self.files} files were stored, artifact_bytes holds {stored}")
        return out
