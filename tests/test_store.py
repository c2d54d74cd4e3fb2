"""The state store (engine/store/sqlite/connection.py) and `beast backup`
(engine/store/sqlite/backup.py).

Connection set-up, numbered migrations, refusals translated from real SQLite errors, a garbage
or truncated file never overwritten, disk full (simulated with `max_page_count`, and for real
on a 2 MiB tmpfs), a read-only workspace (as root, through a process without capabilities),
fork safety, and a backup taken while another process writes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, Workspace
from engine.core.errors import BeastError, StateBusy, StoreError
from engine.deploy import invariants
from engine.store.sqlite.backup import backup
from engine.store.sqlite.connection import PAGE_SIZE, SqliteStore, translate
from engine.store.sqlite.schema import MIGRATION_SET, MIGRATIONS
from engine.store.sqlite.tx import SqliteTx
from tests.helpers import REPO, assert_invariants, beast, copy_workspace

NAMES = [name for name, _sql in MIGRATIONS]


def _one_line(message: str) -> str:
    assert message and "\n" not in message, repr(message)
    assert "Traceback" not in message
    return message


def _fresh(tmp_path: Path, **kw: Any) -> SqliteStore:
    store = SqliteStore(tmp_path / "beast.db", **kw)
    store.migrate()
    return store


def _copy(registered: Workspace, tmp_path: Path, name: str = "copy") -> Workspace:
    """A copy the fixtures do not check at teardown (for databases the test breaks on purpose)."""
    return copy_workspace(registered, tmp_path / name / ".beast-mode")


def _open_handles(path: Path) -> list[str]:
    """Files of this process that are the database or its -wal / -shm."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target == str(path) or target.startswith(f"{path}-"):
            found.append(target)
    return found


# -- connections ----------------------------------------------------------------------------


def test_every_connection_is_wal_with_foreign_keys_and_a_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "beast.db"
    with sqlite3.connect(path) as plain:  # created by someone else, in rollback-journal mode
        plain.execute("CREATE TABLE t (x)")
    plain.close()
    monkeypatch.setenv("BEAST_BUSY_TIMEOUT_S", "0.75")
    stores = [SqliteStore(path), SqliteStore(path, busy_timeout_s=2.5)]
    try:
        for store, timeout_ms in zip(stores, (750, 2500), strict=True):
            conn = store.conn
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
            assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == timeout_ms
            assert conn.isolation_level is None  # BEGIN is always ours (IMMEDIATE to write)
    finally:
        for store in stores:
            store.close()


def test_a_new_database_gets_large_pages_and_an_existing_one_keeps_its_own(
    tmp_path: Path,
) -> None:
    fresh = _fresh(tmp_path)
    assert fresh.query("PRAGMA page_size")[0][0] == PAGE_SIZE
    fresh.close()
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as plain:  # written before: 4 KiB pages
        plain.execute("PRAGMA page_size = 4096")
        plain.execute("CREATE TABLE t (x)")
    plain.close()
    store = SqliteStore(old)
    assert store.migrate()  # opened, switched to WAL and migrated: pages untouched
    assert store.query("PRAGMA page_size")[0][0] == 4096
    assert store.query("PRAGMA integrity_check")[0][0] == "ok"
    store.close()


def test_a_busy_writer_waits_the_timeout_then_refuses_in_one_line(tmp_path: Path) -> None:
    store = _fresh(tmp_path, busy_timeout_s=0.3)
    holder = sqlite3.connect(store.path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(StateBusy) as info, store.write_sql() as conn:
            conn.execute("CREATE TABLE never (x)")  # not reached: BEGIN is refused
        waited = time.monotonic() - started
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    assert 0.3 <= waited < 3
    message = _one_line(str(info.value))
    assert message.startswith("state busy") and "retry" in message and "locked" not in message
    assert not store.conn.in_transaction
    assert not store.query("SELECT name FROM sqlite_master WHERE name = 'never'")
    store.close()


def test_opening_waits_for_a_writer_before_switching_to_wal(tmp_path: Path) -> None:
    # A fresh (rollback-journal) database with a writer in the middle of a transaction, as
    # when processes race to open it: SQLite answers SQLITE_BUSY to the switch to WAL at
    # once, without its busy handler. The store must wait (within its timeout), not refuse.
    path = tmp_path / "beast.db"
    with sqlite3.connect(path) as plain:
        plain.execute("CREATE TABLE t (x)")
    plain.close()
    writer = sqlite3.connect(path, isolation_level=None, timeout=10, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (1)")
    commit = threading.Timer(0.3, writer.execute, args=("COMMIT",))
    store = SqliteStore(path, busy_timeout_s=5)
    started = time.monotonic()
    commit.start()
    try:
        mode = store.conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        commit.join()
        writer.close()
    assert mode == "wal"
    assert 0.25 <= time.monotonic() - started < 5
    assert store.query("SELECT count(*) FROM t")[0][0] == 1
    store.close()


def test_a_failed_open_leaves_no_handle_on_the_file(tmp_path: Path) -> None:
    # A connection that failed its set-up must be closed at once: left to the garbage
    # collector it keeps its locks, and this process's next open of the file waits on them.
    store = _fresh(tmp_path)
    store.close()
    good = store.path.read_bytes()
    store.path.write_bytes(good[:4096])  # truncated to its first page
    broken = SqliteStore(store.path)
    with pytest.raises(StoreError, match="not a usable beast-mode database"):
        broken.conn  # noqa: B018
    assert _open_handles(store.path) == []
    store.path.write_bytes(good)
    assert broken.applied_migrations() == NAMES  # the same SqliteStore opens it once it is whole
    broken.close()


LAST_CLOSE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
conn.close()
"""


@pytest.mark.parametrize("second_open", ["another SqliteStore", "a Python open() (the hazard)"])
def test_opening_the_file_again_keeps_this_processs_locks(tmp_path: Path, second_open: str) -> None:
    # Closing ANY descriptor of a file drops every POSIX lock the process holds on it. If the
    # store read the file itself, a live connection of this process would lose its locks, and
    # the next process to close its connection would take itself for the last one and delete
    # the -wal and -shm under the live connection. The second case shows the probe works.
    store = _fresh(tmp_path)
    store.query("SELECT 1")
    other = SqliteStore(store.path)
    try:
        if second_open == "another SqliteStore":
            other.query("SELECT 1")
        else:
            store.path.open("rb").close()
        subprocess.run([sys.executable, "-c", LAST_CLOSE, str(store.path)], check=True, timeout=30)
        left = sorted(p.name for p in tmp_path.glob("beast.db*"))
    finally:
        other.close()
        store.close()
    if second_open == "another SqliteStore":
        assert left == ["beast.db", "beast.db-shm", "beast.db-wal"]
    else:
        assert left == ["beast.db"]


# -- migrations -----------------------------------------------------------------------------


def test_migrations_are_numbered_recorded_and_applied_once(tmp_path: Path) -> None:
    matches = [re.fullmatch(r"(\d{4})_[a-z0-9_]+", name) for name in NAMES]
    assert [int(m.group(1)) if m else None for m in matches] == list(range(1, len(NAMES) + 1))
    store = SqliteStore(tmp_path / "beast.db")
    assert store.migrate() == NAMES
    rows = store.query("SELECT migration_set, name FROM _sqlite_migrations ORDER BY id")
    assert [tuple(row) for row in rows] == [(MIGRATION_SET, name) for name in NAMES]
    before = [tuple(r) for r in store.query("SELECT * FROM _sqlite_migrations")]
    assert store.migrate() == []
    again = SqliteStore(store.path)
    assert again.migrate() == []
    assert again.schema_is_current()
    assert [tuple(r) for r in again.query("SELECT * FROM _sqlite_migrations")] == before
    store.close()
    again.close()


def test_a_database_of_the_previous_release_is_migrated_forward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = SqliteStore(tmp_path / "beast.db")
    monkeypatch.setattr("engine.store.sqlite.connection.MIGRATIONS", MIGRATIONS[:1])
    assert old.migrate() == NAMES[:1]
    old.close()
    monkeypatch.undo()
    store = SqliteStore(tmp_path / "beast.db")
    assert not store.schema_is_current()
    assert store.migrate() == NAMES[1:]
    assert store.applied_migrations() == NAMES
    store.close()


def test_a_database_written_by_a_newer_beast_is_refused(
    registered: Workspace, tmp_path: Path
) -> None:
    ws = _copy(registered, tmp_path)
    with sqlite3.connect(ws.db_path) as conn:
        conn.execute(
            "INSERT INTO _sqlite_migrations (migration_set, name, applied_at)"
            " VALUES (?, '0099_from_the_future', '2031-01-01')",
            (MIGRATION_SET,),
        )
    conn.close()
    before = ws.db_path.read_bytes()
    engine = Engine(ws)
    try:
        with pytest.raises(StoreError) as info:
            engine.status()
    finally:
        engine.close()
    message = _one_line(str(info.value))
    assert str(ws.db_path) in message and "newer beast-mode" in message
    assert "0099_from_the_future" in message and "upgrade" in message
    assert ws.db_path.read_bytes() == before


# -- a garbage or truncated database --------------------------------------------------------


def _break(db: Path, kind: str) -> bytes:
    good = db.read_bytes()
    data = {
        "random": os.urandom(len(good)),
        "one_byte": good[:1],  # SQLite alone would take this for an empty database
        "fifteen_bytes": good[:15],
        "header_only": good[:100],
        "first_page": good[:4096],
        "half": good[: len(good) // 2],
    }[kind]
    db.write_bytes(data)
    return data


BROKEN = ["random", "one_byte", "fifteen_bytes", "header_only", "first_page", "half"]


def _engine_operations(ws: Workspace) -> dict[str, Callable[[Engine], object]]:
    model = str(ws.models_dir / "quality-predictor-v2.0.json")
    return {
        "lines": lambda e: e.lines(),
        "status": lambda e: e.status(),
        "models": lambda e: e.models(),
        "history": lambda e: e.history(),
        "doctor": lambda e: e.doctor(),
        "register": lambda e: e.register(model),
        "deploy": lambda e: e.deploy(version="v2.0"),
        "rollback": lambda e: e.rollback(),
        "promote": lambda e: e.promote("t", force=True),
        "init": lambda e: Engine.init(e.workspace),
    }


@pytest.mark.parametrize("kind", BROKEN)
def test_a_broken_database_is_refused_by_every_operation_and_never_overwritten(
    registered: Workspace, tmp_path: Path, kind: str
) -> None:
    ws = _copy(registered, tmp_path)
    data = _break(ws.db_path, kind)
    for name, operation in _engine_operations(ws).items():
        engine = Engine(ws)
        try:
            with pytest.raises(StoreError) as info:
                operation(engine)
        finally:
            engine.close()
        message = _one_line(str(info.value))
        assert str(ws.db_path) in message, (name, message)
        assert "not a usable beast-mode database" in message, (name, message)
        assert "move it aside" in message and "backup" in message, (name, message)
        assert ws.db_path.read_bytes() == data, f"{name} changed the file"
    assert _open_handles(ws.db_path) == []


@pytest.mark.parametrize("kind", ["random", "one_byte"])
def test_the_cli_refuses_a_broken_database_in_one_line(
    registered: Workspace, tmp_path: Path, kind: str
) -> None:
    ws = _copy(registered, tmp_path)
    data = _break(ws.db_path, kind)
    for args in (("status",), ("deploy", "--version", "v2.0")):
        out = beast(ws, *args)
        assert out.returncode == 1, out
        message = _one_line(out.stderr.strip())
        assert message.startswith(f"beast: {ws.db_path} is not a usable beast-mode database")
        assert ws.db_path.read_bytes() == data


# -- disk full ------------------------------------------------------------------------------


def test_disk_full_during_deploys_is_a_clean_refusal(engine: Engine) -> None:
    ws = engine.workspace
    engine.deploy(version="v1.0")
    conn = engine.store.conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 1}")
    done = 0
    failure: StoreError | None = None
    for n in range(500):
        try:
            engine.deploy(version=("v2.0", "v1.0")[n % 2], note="n" * 400)
        except StoreError as exc:
            failure = exc
            break
        done += 1
    assert failure is not None, "the page limit was never reached"
    message = _one_line(str(failure))
    assert (
        message.startswith(f"disk full writing {ws.db_path}") and "nothing was changed" in message
    )
    assert not conn.in_transaction
    # Nothing of the failed deploy is left: history and state are those of the last success.
    history = engine.history()
    assert len(history) == 1 + done
    assert engine.status().deployments[0].version == ("v1.0", "v2.0")[done % 2]
    assert engine.doctor().ok and not engine.doctor().warnings
    assert_invariants(ws)
    # Space comes back: the same engine and connection carry on.
    conn.execute("PRAGMA max_page_count = 1073741823")
    engine.deploy(version=("v2.0", "v1.0")[done % 2])
    assert len(engine.history()) == 2 + done


def test_disk_full_inside_a_write_rolls_back_everything_of_it(tmp_path: Path) -> None:
    store = _fresh(tmp_path)
    with store.write_sql() as conn:
        conn.execute("CREATE TABLE blobs (b BLOB NOT NULL)")
    conn = store.conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 4}")
    with pytest.raises(StoreError, match=r"^disk full") as info, store.write_sql() as conn:
        conn.execute("INSERT INTO blobs VALUES (randomblob(100))")
        conn.execute("INSERT INTO blobs VALUES (randomblob(100000))")
    _one_line(str(info.value))
    assert not conn.in_transaction
    assert store.query("SELECT count(*) FROM blobs")[0][0] == 0
    assert store.integrity_errors() == []
    with store.write_sql() as conn:
        conn.execute("INSERT INTO blobs VALUES (randomblob(100))")
    assert store.query("SELECT count(*) FROM blobs")[0][0] == 1
    store.close()


class _RollbackFails:
    """A connection whose ROLLBACK rolls back and then raises (as after SQLite's own)."""

    def __init__(self, real: sqlite3.Connection) -> None:
        self.real = real

    @property
    def in_transaction(self) -> bool:
        return self.real.in_transaction

    def execute(self, sql: str, *params: Any) -> sqlite3.Cursor:
        if sql == "ROLLBACK":
            self.real.execute(sql)
            raise sqlite3.OperationalError("cannot rollback - no transaction is active")
        return self.real.execute(sql, *params)


@pytest.mark.parametrize("raised", ["sqlite", "python"])
def test_a_failing_rollback_never_replaces_the_real_error(tmp_path: Path, raised: str) -> None:
    store = _fresh(tmp_path)
    with store.write_sql() as conn:
        conn.execute("CREATE TABLE t (x INTEGER CHECK (x > 0))")
    real = store.conn
    store._conn = _RollbackFails(real)  # type: ignore[assignment]
    expected: type[BaseException] = StoreError if raised == "sqlite" else KeyError
    with pytest.raises(expected) as info, store.write_sql() as conn:
        conn.execute("INSERT INTO t VALUES (1)")
        if raised == "sqlite":
            conn.execute("INSERT INTO t VALUES (-1)")
        raise KeyError("the caller's own error")
    if raised == "sqlite":
        assert str(info.value).startswith("refused by the state store's invariants")
    assert not real.in_transaction
    store._conn = real
    assert store.query("SELECT count(*) FROM t")[0][0] == 0
    store.close()


REAL_DISK_FULL = r"""
import json, os, sys
from pathlib import Path
from engine.core.errors import StoreError
from engine.store.sqlite.connection import SqliteStore

mnt = Path(sys.argv[1])
out = {}
store = SqliteStore(mnt / "beast.db")
store.migrate()
with store.write_sql() as conn:
    conn.execute("CREATE TABLE rows (n INTEGER PRIMARY KEY, b BLOB NOT NULL)")
filler = mnt / "filler"
fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
try:
    while True:
        os.write(fd, b"\0" * 65536)
except OSError:
    pass
os.ftruncate(fd, os.fstat(fd).st_size - 256 * 1024)  # leave 256 KiB
committed = 0
for n in range(1, 1000):
    try:
        with store.write_sql() as conn:
            conn.execute("INSERT INTO rows VALUES (?, randomblob(3000))", (n,))
        committed = n
    except StoreError as exc:
        out["write_error"] = str(exc)
        out["in_transaction"] = store.conn.in_transaction
        break
out["committed"] = committed
out["stored"] = list(store.query("SELECT count(*), max(n) FROM rows")[0])
store.close()
# Fill the disk completely, without the -shm file (never the -wal: it may hold commits):
# the next open must create it, cannot, and must say why as clearly.
(mnt / "beast.db-shm").unlink(missing_ok=True)
try:
    while True:
        os.write(fd, b"\0" * 4096)
except OSError:
    pass
try:
    SqliteStore(mnt / "beast.db").applied_migrations()
    out["open_error"] = None
except StoreError as exc:
    out["open_error"] = str(exc)
os.close(fd)
filler.unlink()
again = SqliteStore(mnt / "beast.db")
out["after"] = list(again.query("SELECT count(*), max(n) FROM rows")[0])
out["integrity"] = again.integrity_errors()
with again.write_sql() as conn:
    conn.execute("INSERT INTO rows VALUES (?, randomblob(3000))", (10_000,))
again.close()
print(json.dumps(out))
"""


def test_a_real_full_disk_is_a_clean_refusal_and_nothing_committed_is_lost(
    tmp_path: Path,
) -> None:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    script = 'mount -t tmpfs -o size=2m none "$1" && cd "$2" && exec "$3" -c "$4" "$1"'
    run = subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            script,
            "sh",
            str(mnt),
            str(REPO),
            sys.executable,
            REAL_DISK_FULL,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    db = mnt / "beast.db"
    assert out["write_error"] == (
        f"disk full writing {db}: nothing was changed; free space and retry"
    ), out
    assert out["in_transaction"] is False
    assert out["committed"] > 0
    assert out["stored"] == [out["committed"], out["committed"]]
    assert out["after"] == out["stored"]
    assert out["integrity"] == []
    # SQLite says "disk I/O error" when it cannot size the -shm file; the refusal says why.
    assert out["open_error"] == out["write_error"]


# -- a read-only workspace ------------------------------------------------------------------


def _without_privileges(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `beast` as a process that file permissions apply to.

    Tests run as root, and root ignores file modes (CAP_DAC_OVERRIDE). `setpriv` drops every
    capability for the child, which stays uid 0: the modes of the files then apply to it.
    """
    prefix = (
        ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"] if os.geteuid() == 0 else []
    )
    env = {k: v for k, v in os.environ.items() if k != "BEAST_HOME"}
    return subprocess.run(
        [*prefix, sys.executable, "-m", "engine.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=str(REPO),
        check=False,
    )


@pytest.fixture
def deployed(engine: Engine) -> Iterator[Workspace]:
    """v1.0 in production, the engine closed (no -wal or -shm beside the database)."""
    engine.deploy(version="v1.0")
    engine.close()
    ws = engine.workspace
    assert sorted(p.name for p in ws.root.glob("beast.db*")) == ["beast.db"]
    yield ws


def _chmod_tree(root: Path, writable: bool) -> None:
    for path in [root, *root.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode | 0o200 if writable else mode & ~0o222)


def test_a_read_only_workspace_refuses_writers_and_says_why_readers_cannot_read(
    deployed: Workspace,
) -> None:
    ws = deployed
    before = ws.db_path.read_bytes()
    _chmod_tree(ws.root, writable=False)
    try:
        probe = _without_privileges("-w", str(ws.root), "status")
        writer = _without_privileges("-w", str(ws.root), "deploy", "--version", "v2.0")
        files = sorted(p.name for p in ws.root.glob("beast.db*"))
    finally:
        _chmod_tree(ws.root, writable=True)
    assert probe.returncode == 1 and writer.returncode == 1, (probe, writer)
    # WAL mode needs beast.db-shm even to read, so the reader cannot work: it says why.
    reader_message = _one_line(probe.stderr.strip())
    assert reader_message == (
        f"beast: {ws.root} is read-only: SQLite must create beast.db-wal and beast.db-shm "
        "there, even to read beast.db; make the directory writable (nothing was changed)"
    )
    assert "read-only" in _one_line(writer.stderr.strip())
    assert files == ["beast.db"]
    assert ws.db_path.read_bytes() == before


def test_a_read_only_database_file_serves_readers_and_refuses_writers(
    deployed: Workspace,
) -> None:
    ws = deployed
    before = ws.db_path.read_bytes()
    ws.db_path.chmod(0o444)
    try:
        status = _without_privileges("-w", str(ws.root), "status", "--json")
        writer = _without_privileges("-w", str(ws.root), "deploy", "--version", "v2.0")
        test = _without_privileges(
            "-w", str(ws.root), "deploy", "--version", "v3.0", "--traffic", "10", "--ab-test", "t"
        )
    finally:
        ws.db_path.chmod(0o644)
    assert status.returncode == 0, status.stderr
    assert [d["version"] for d in json.loads(status.stdout)["deployments"]] == ["v1.0"]
    for refused in (writer, test):
        assert refused.returncode == 1
        assert _one_line(refused.stderr.strip()) == (
            f"beast: {ws.db_path} is read-only: this command needs to write state"
        )
    assert ws.db_path.read_bytes() == before
    engine = Engine(ws)
    try:
        assert [e.version for e in engine.history()] == ["v1.0"]
    finally:
        engine.close()


def test_companions_left_read_only_by_a_reader_are_named(deployed: Workspace) -> None:
    ws = deployed
    ws.db_path.chmod(0o444)
    try:
        reader = _without_privileges("-w", str(ws.root), "status")
    finally:
        ws.db_path.chmod(0o644)
    assert reader.returncode == 0, reader.stderr
    # The reader could not delete the -wal and -shm it created: they have the database's
    # old mode. Once the database is writable again, a writer must name them, not it.
    companions = [ws.root / "beast.db-wal", ws.root / "beast.db-shm"]
    assert [p.stat().st_mode & 0o777 for p in companions] == [0o444, 0o444]
    writer = _without_privileges("-w", str(ws.root), "deploy", "--version", "v2.0")
    assert writer.returncode == 1
    assert re.fullmatch(
        rf"beast: (beast\.db-wal and )?beast\.db-shm beside {re.escape(str(ws.db_path))} "
        r"(is|are) read-only \(left by a process that could only read it\): "
        r"make (it|them) writable like beast\.db; nothing was changed",
        _one_line(writer.stderr.strip()),
    )
    for path in companions:
        path.chmod(0o644)
    again = _without_privileges("-w", str(ws.root), "deploy", "--version", "v2.0")
    assert again.returncode == 0, again.stderr


# -- fork -----------------------------------------------------------------------------------


def _child_deploys(engine: Engine, parent_conn_id: int, out: Any) -> None:
    conn = engine.store.conn
    out.put(
        {
            "new_connection": id(conn) != parent_conn_id,
            "foreign_keys": conn.execute("PRAGMA foreign_keys").fetchone()[0],
            "production": engine.status().deployments[0].version,
        }
    )
    engine.deploy(version="v2.0")
    engine.close()


def test_a_forked_child_never_reuses_the_parents_connection(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    parent_conn = engine.store.conn
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child_deploys, args=(engine, id(parent_conn), out))
    child.start()
    report = out.get(timeout=30)
    child.join(timeout=30)
    assert child.exitcode == 0
    assert report == {"new_connection": True, "foreign_keys": 1, "production": "v1.0"}
    assert engine.store.conn is parent_conn  # the parent keeps its own, still working
    assert engine.status().deployments[0].version == "v2.0"  # and sees the child's commit
    assert [e.version for e in engine.history()] == ["v1.0", "v2.0"]


# -- translate(): real SQLite errors into one-line refusals ---------------------------------


def _error_of(action: Callable[[], object]) -> sqlite3.Error:
    try:
        action()
    except sqlite3.Error as exc:
        return exc
    raise AssertionError("no SQLite error")


def _query_once(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute(sql)
    finally:
        conn.close()


def test_translate_maps_real_sqlite_errors(tmp_path: Path) -> None:
    (tmp_path / "donor").mkdir()
    donor = _fresh(tmp_path / "donor")
    donor.close()
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(donor.path.read_bytes()[:100])  # read while nothing has it open
    store = _fresh(tmp_path)
    path = store.path
    with store.write_sql() as conn:
        conn.execute("CREATE TABLE t (full_lock_busy INTEGER CHECK (full_lock_busy > 0))")
    locker = sqlite3.connect(path, isolation_level=None, timeout=0)
    other = sqlite3.connect(path, isolation_level=None, timeout=0)
    read_only = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(8192))
    try:
        locker.execute("BEGIN IMMEDIATE")
        busy = _error_of(lambda: other.execute("BEGIN IMMEDIATE"))
        locker.execute("ROLLBACK")
        cursor = locker.execute("SELECT * FROM sqlite_master")
        cursor.fetchone()
        locked = _error_of(lambda: locker.execute("DROP TABLE t"))
        cursor.close()
        other.execute(f"PRAGMA max_page_count = {store.query('PRAGMA page_count')[0][0]}")
        full = _error_of(lambda: other.execute("INSERT INTO t VALUES (randomblob(1000000))"))
        readonly = _error_of(lambda: read_only.execute("INSERT INTO t VALUES (1)"))
        integrity = _error_of(lambda: other.execute("INSERT INTO t VALUES (-1)"))
        not_db = _error_of(lambda: _query_once(garbage, "SELECT 1 FROM t"))
        corrupt = _error_of(lambda: _query_once(truncated, "SELECT * FROM history"))
        cantopen = _error_of(lambda: _query_once(tmp_path / "no" / "such.db", "SELECT 1"))
    finally:
        for conn in (locker, other, read_only):
            conn.close()
        store.close()
    assert "database is locked" in str(busy) and "table is locked" in str(locked)
    assert "readonly" in str(readonly) and "full" in str(full)

    def said(exc: sqlite3.Error) -> BeastError:
        refusal = translate(exc, path, 5)
        _one_line(str(refusal))
        return refusal

    for exc in (busy, locked):
        refusal = said(exc)
        assert isinstance(refusal, StateBusy)
        assert str(refusal) == (
            "state busy: another beast process held beast.db for over 5s; "
            "nothing was changed, retry"
        )
    assert str(said(full)) == f"disk full writing {path}: nothing was changed; free space and retry"
    assert str(said(readonly)) == f"{path} is read-only: this command needs to write state"
    for exc in (not_db, corrupt):
        message = str(said(exc))
        assert message.startswith(f"{path} is not a usable beast-mode database (")
        assert message.endswith("move it aside and restore a backup with `beast restore BACKUP`")
    assert str(said(cantopen)) == f"cannot open {path}: unable to open database file"
    # The code decides, not the words: this CHECK's text says "full", "lock" and "busy".
    refusal = said(integrity)
    assert type(refusal) is StoreError
    assert str(refusal) == (
        "refused by the state store's invariants: CHECK constraint failed: full_lock_busy > 0"
    )


def test_translate_falls_back_to_the_text_of_errors_without_a_code(tmp_path: Path) -> None:
    path = tmp_path / "beast.db"
    assert isinstance(translate(sqlite3.OperationalError("database is locked"), path, 1), StateBusy)
    assert str(translate(sqlite3.OperationalError("database or disk is full"), path, 1)).startswith(
        "disk full"
    )
    assert str(translate(sqlite3.IntegrityError("whatever"), path, 1)).startswith("refused")
    assert str(translate(sqlite3.ProgrammingError("closed\ndatabase"), path, 1)) == (
        f"state store error on {path}: closed database"
    )


# -- backup ---------------------------------------------------------------------------------


WRITER = r"""
import sys
from pathlib import Path
from engine import Workspace
from tests.helpers import beast

ws = Workspace(Path(sys.argv[1]))
stop, started = Path(sys.argv[2]), Path(sys.argv[3])
done = 0
while not stop.exists():
    for args in (("deploy", "--version", ("v2.0", "v3.0", "v4.0")[done % 3]), ("rollback",)):
        out = beast(ws, *args)
        if out.returncode != 0:
            sys.exit(f"{args}: {out.stderr}")
        done += 1
        started.touch()
print(done)
"""


def _check_backup(copy: Path, ws: Workspace) -> int:
    conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall()[0][0] == "ok"
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        report = invariants.check(SqliteTx(conn), ws)
        assert report.ok, report.problems
        return int(conn.execute("SELECT count(*) FROM history").fetchone()[0])
    finally:
        conn.close()


def _wait_for(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _history_rows(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(conn.execute("SELECT count(*) FROM history").fetchone()[0])
    finally:
        conn.close()


def test_backup_while_another_process_deploys_and_rolls_back(
    registered: Workspace, tmp_path: Path
) -> None:
    ws = registered
    engine = Engine(ws)
    try:
        engine.deploy(version="v1.0")
    finally:
        engine.close()
    stop, started = tmp_path / "stop", tmp_path / "started"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(ws.root), str(stop), str(started)],
        cwd=str(REPO),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    copies: list[Path] = []
    counts: list[int] = []
    try:
        _wait_for(lambda: started.exists() or writer.poll() is not None)
        for n in range(3):
            assert writer.poll() is None, writer.communicate()
            copies.append(backup(ws.db_path, tmp_path / f"copy-{n}.db"))
            counts.append(_check_backup(copies[-1], ws))
            # The next copy is of a later state: the writer goes on while copies are taken.
            _wait_for(lambda: _history_rows(ws.db_path) > counts[-1] or writer.poll() is not None)
    finally:
        stop.touch()
        stdout, stderr = writer.communicate(timeout=60)
    assert writer.returncode == 0, stderr
    changes = int(stdout)
    assert counts == sorted(set(counts)) and counts[0] >= 1
    assert counts[-1] < 1 + changes == _history_rows(ws.db_path)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_backup_restores_to_the_same_state(registered: Workspace, tmp_path: Path) -> None:
    engine = Engine(registered)
    try:
        engine.deploy(version="v1.0")
        engine.deploy(version="v2.0", traffic=10, ab_test="t")
        expected = engine.status(), engine.history()
        copy = backup(registered.db_path, tmp_path / "beast.db.bak")
    finally:
        engine.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beast.db.bak", "ws"]
    restored = Workspace(tmp_path / "restored")
    shutil.copytree(registered.root, restored.root, ignore=shutil.ignore_patterns("beast.db*"))
    shutil.copyfile(copy, restored.db_path)
    engine = Engine(restored)
    try:
        assert (engine.status(), engine.history()) == expected
    finally:
        engine.close()
    assert_invariants(restored)


def test_backup_never_overwrites(registered: Workspace, tmp_path: Path) -> None:
    dest = tmp_path / "precious.db"
    dest.write_bytes(b"someone else's file")
    for target in (dest, tmp_path):
        with pytest.raises(BeastError) as info:
            backup(registered.db_path, target)
        assert str(info.value) == (
            f"{target} already exists: a backup never overwrites a file; choose a new name"
        )
    assert dest.read_bytes() == b"someone else's file"
    with pytest.raises(BeastError, match="there is no directory"):
        backup(registered.db_path, tmp_path / "missing" / "x.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.db", "ws"]


def test_backup_of_a_broken_database_is_refused_and_leaves_nothing(
    registered: Workspace, tmp_path: Path
) -> None:
    ws = _copy(registered, tmp_path)
    data = _break(ws.db_path, "half")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(StoreError, match="not a usable beast-mode database"):
        backup(ws.db_path, out / "copy.db")
    assert list(out.iterdir()) == []
    assert ws.db_path.read_bytes() == data
