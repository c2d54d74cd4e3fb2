"""A workspace remembers that it exists (issue 12 §2), through real `beast` processes.

A used workspace whose database is missing, empty, older than its history export, or another
workspace's is refused by every command, the engine and the console, naming the evidence and
`beast restore`; restore puts a backup back; history.json never shrinks; `beast doctor` names a
damaged file; `Engine.readiness` says why `/healthz` should not be ok.
"""

from __future__ import annotations

import json
import shutil
import socket
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from engine import Engine, Workspace
from engine.core.engine_lock import EngineLock
from engine.core.errors import BeastError
from engine.core.history_export import ExportRefused, write_export
from engine.core.workspace import WorkspaceLost
from engine.serving.prediction_log import PredictionLog
from engine.store.sqlite.backup import backup
from engine.store.sqlite.connection import SqliteStore
from engine.store.sqlite.schema import MIGRATIONS
from tests.helpers import beast, beast_here, copy_workspace
from tests.test_engine_process import free_port

PID = "01a2177b36277940841fc56b65b2ac0f"
Capture = pytest.CaptureFixture[str]


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {text!r}"
    assert "Traceback" not in text and "internal error" not in text
    return lines[0]


# Would serve or draw for good if their refusal regressed: real processes, with a timeout.
LONG_RUNNING = ("console", "mlflow", "engine")


def run(capsys: Capture, ws: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    """`beast` by its entry point in this process (a cold one is a second of imports, and
    this module ran 149 of them), except the LONG_RUNNING commands."""
    if args and args[0] in LONG_RUNNING:
        return beast(ws, *args)
    return beast_here(capsys, ws, *args)


def ok(capsys: Capture, ws: Workspace, *args: str) -> str:
    out = run(capsys, ws, *args)
    assert out.returncode == 0, (args, out.stderr)
    return out.stdout


def status(capsys: Capture, ws: Workspace) -> dict[str, object]:
    document = json.loads(ok(capsys, ws, "status", "--json"))
    assert isinstance(document, dict)
    return document


@pytest.fixture
def used(registered: Workspace, tmp_path: Path, capsys: Capture) -> tuple[Workspace, Path]:
    """Two changes through `beast`, then a `beast backup` of that state."""
    ok(capsys, registered, "deploy", "--version", "v1.0")
    ok(capsys, registered, "deploy", "--version", "v2.0", "--traffic", "10", "--ab-test", "t")
    dest = tmp_path / "backup.db"
    ok(capsys, registered, "backup", str(dest))
    return registered, dest


WIPES: dict[str, Callable[[Path], None]] = {
    "empty": lambda db: db.write_bytes(b""),
    "deleted": lambda db: db.unlink(),
}


def _wipe(ws: Workspace, how: str) -> None:
    for companion in ws.root.glob("beast.db-*"):
        companion.unlink()
    WIPES[how](ws.db_path)


def _commands(ws: Workspace, tmp_path: Path) -> list[tuple[str, ...]]:
    return [
        ("status",),
        ("status", "--json"),
        ("history",),
        ("models",),
        ("register",),
        ("deploy", "--version", "v3.0"),
        ("deploy", str(ws.models_dir / "quality-predictor-v4.0.json")),
        ("rollback",),
        ("promote", "t", "--force"),
        ("abort", "t"),
        ("monitor",),
        ("predict", "[0.5, 3, 1, 0.1, 0.2]"),
        ("feedback", PID, "50"),
        ("jobs",),
        ("retrain", "--check"),
        ("backup", str(tmp_path / "from-a-wiped-db.db")),
        ("doctor",),
        ("doctor", "--repair"),
        ("init",),
        ("console",),
        ("mlflow",),
    ]


@pytest.mark.parametrize("how", list(WIPES))
def test_a_wiped_database_is_refused_by_every_command_and_restore_brings_it_back(
    used: tuple[Workspace, Path], tmp_path: Path, how: str, capsys: Capture
) -> None:
    ws, saved = used
    before = status(capsys, ws)
    export = ws.history_export_path.read_bytes()
    _wipe(ws, how)
    said = "is empty (0 bytes)" if how == "empty" else "is missing"
    for args in _commands(ws, tmp_path):
        out = run(capsys, ws, *args)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        message = one_line(out.stderr)
        assert message.startswith(f"beast: {ws.db_path} {said}, but this workspace was in use ("), (
            args,
            message,
        )
        assert "workspace-id " in message and "history.json with 2 changes" in message, message
        assert "`beast restore BACKUP`" in message, message
        # Nothing was created or rewritten: above all, not the export (the only record left).
        assert ws.history_export_path.read_bytes() == export, f"{args} rewrote history.json"
        assert ws.db_path.exists() == (how == "empty"), args
        assert not ws.db_path.exists() or ws.db_path.stat().st_size == 0, args
        assert not (tmp_path / "from-a-wiped-db.db").exists()
        assert not (ws.root / "mlflow.db").exists()

    restored = run(capsys, ws, "restore", str(saved))
    assert restored.returncode == 0, restored.stderr
    assert f"restored {saved} as {ws.db_path}" in restored.stdout
    assert "beast doctor:" not in restored.stdout
    assert status(capsys, ws) == before
    assert ws.history_export_path.read_bytes() == export


def test_the_engine_refuses_a_wiped_database_before_binding_or_locking(
    used: tuple[Workspace, Path], capsys: Capture
) -> None:
    ws, saved = used
    _wipe(ws, "empty")
    port = free_port()
    out = beast(ws, "engine", "--port", str(port), timeout=60)
    assert out.returncode == 1
    assert "but this workspace was in use" in one_line(out.stderr)
    assert not (ws.root / ".engine.lock").exists() and not (ws.root / "api-token").exists()
    with socket.socket() as probe:  # nothing listens there: it never bound
        probe.bind(("127.0.0.1", port))
    ok(capsys, ws, "restore", str(saved))


def test_every_door_to_the_store_refuses_a_wiped_database(
    used: tuple[Workspace, Path], tmp_path: Path, capsys: Capture
) -> None:
    from console.gateway import Gateway

    ws, saved = used
    _wipe(ws, "empty")
    doors: dict[str, Callable[[], object]] = {
        "the facade": lambda: Engine(ws).status(),
        "the prediction log": lambda: PredictionLog(ws.db_path, tolerance=5).start(),
        "a store of its own (feedback, a job's watchdog)": lambda: SqliteStore(ws.db_path).query(
            "SELECT 1"
        ),
        "backup": lambda: backup(ws.db_path, tmp_path / "copy.db"),
        "the console's gateway": lambda: Gateway(ws, readonly=True).status(),
    }
    for door, call in doors.items():
        with pytest.raises(WorkspaceLost, match="is empty \\(0 bytes\\), but this workspace"):
            call()
        assert ws.db_path.stat().st_size == 0, door
    ok(capsys, ws, "restore", str(saved))


def test_init_creates_a_workspace_whose_marker_is_its_databases_id(
    tmp_path: Path, capsys: Capture
) -> None:
    ws = Workspace(tmp_path / "new")
    out = ok(capsys, ws, "init")
    assert f"created {ws.marker_path}" in out and f"created {ws.db_path}" in out
    store = SqliteStore(ws.db_path)
    try:
        store.migrate()
        assert store.identity() == (ws.marker(), 0)
    finally:
        store.close()
    assert "already initialised" in ok(capsys, ws, "init")


def test_a_missing_database_without_evidence_of_use_is_a_new_workspace(
    tmp_path: Path, capsys: Capture
) -> None:
    ws = Workspace(tmp_path / "w")
    ws.create()
    ws.models_dir.joinpath("quality-predictor-v1.0.json").write_text("{}")  # copied in first
    ws.history_export_path.write_text("[]\n")
    assert ws.evidence_of_use() == []
    assert status(capsys, ws)["deployments"] == []
    assert ws.db_path.is_file() and ws.marker() is not None


@pytest.mark.parametrize("evidence", ["api-token", "beast.db-wal"])
def test_other_evidence_of_use_is_enough(tmp_path: Path, evidence: str, capsys: Capture) -> None:
    ws = Workspace(tmp_path / "w")
    ws.create()
    (ws.root / evidence).write_text("x")
    out = run(capsys, ws, "status")
    assert out.returncode == 1
    assert f"in use ({evidence}" in one_line(out.stderr)
    assert not ws.db_path.exists()


def test_a_workspace_from_before_ids_adopts_its_databases_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    ws = Workspace(tmp_path / "old")
    ws.create()
    monkeypatch.setattr(
        "engine.store.sqlite.connection.MIGRATIONS",
        [m for m in MIGRATIONS if m[0] < "0007_workspace_identity"],
    )
    store = SqliteStore(ws.db_path)
    store.migrate()
    store.close()
    assert ws.marker() is None  # the release before: no id anywhere
    monkeypatch.undo()
    assert status(capsys, ws)["deployments"] == []
    store = SqliteStore(ws.db_path)
    try:
        store.migrate()
        workspace_id, _ = store.identity()
    finally:
        store.close()
    assert workspace_id is not None and ws.marker() == workspace_id


# -- a database that is not the workspace's own ------------------------------------------------


def test_another_workspaces_database_is_refused_and_restore_force_adopts_it(
    used: tuple[Workspace, Path], tmp_path: Path, capsys: Capture
) -> None:
    ws, _saved = used
    other = Workspace(tmp_path / "other")
    ok(capsys, other, "init")
    ok(capsys, other, "backup", str(tmp_path / "other.db"))
    mine = ws.marker()
    ws.db_path.unlink()
    shutil.copyfile(tmp_path / "other.db", ws.db_path)  # a copy put in place by hand
    out = run(capsys, ws, "status")
    assert out.returncode == 1
    message = one_line(out.stderr)
    assert f"is another workspace's database (id {other.marker()[:12]})" in message  # type: ignore[index]
    assert f"workspace-id {mine[:12]}" in message  # type: ignore[index]

    refused = run(capsys, ws, "restore", str(tmp_path / "other.db"))
    assert refused.returncode == 1 and "pass --force" in one_line(refused.stderr)
    assert ws.marker() == mine
    adopted = run(capsys, ws, "restore", str(tmp_path / "other.db"), "--force")
    assert adopted.returncode == 0, adopted.stderr
    assert "adopted from another workspace" in adopted.stdout
    assert ws.marker() == other.marker()
    # The export this workspace held is not the adopted history: kept aside, whole.
    (kept,) = ws.deployments_dir.glob("history.json.before-restore-*")
    assert len(json.loads(kept.read_text())) == 2
    assert json.loads(ws.history_export_path.read_text()) == []
    assert status(capsys, ws)["deployments"] == []


def test_an_older_copy_put_in_place_is_refused(
    used: tuple[Workspace, Path], capsys: Capture
) -> None:
    ws, saved = used
    ok(capsys, ws, "promote", "t", "--force")
    ws.db_path.unlink()
    for companion in ws.root.glob("beast.db-*"):
        companion.unlink()
    shutil.copyfile(saved, ws.db_path)  # yesterday's backup, copied over by hand
    out = run(capsys, ws, "status")
    assert out.returncode == 1
    message = one_line(out.stderr)
    assert "holds only up to #2, but" in message and "records changes up to #3" in message
    assert "`beast restore BACKUP`" in message
    ok(capsys, ws, "restore", str(saved))  # the way back from it, too


# -- restore ----------------------------------------------------------------------------------


def test_restore_keeps_what_it_replaces(used: tuple[Workspace, Path], capsys: Capture) -> None:
    ws, saved = used
    ok(capsys, ws, "promote", "t", "--force")
    newer = ws.history_export_path.read_text()
    out = ok(capsys, ws, "restore", str(saved))
    assert "history.json held 1 changes the backup lacks" in out
    (kept_db,) = ws.root.glob("beast.db.before-restore-*")
    (kept_history,) = ws.deployments_dir.glob("history.json.before-restore-*")
    assert kept_history.read_text() == newer
    assert [row["id"] for row in json.loads(ws.history_export_path.read_text())] == [1, 2]
    assert [d["role"] for d in status(capsys, ws)["deployments"]] == ["production", "candidate"]  # type: ignore[index]
    with sqlite3.connect(kept_db) as conn:  # the replaced database, whole, with the promote
        assert conn.execute("SELECT max(id) FROM history").fetchone()[0] == 3
    conn.close()


def test_restore_refuses_while_an_engine_serves_the_workspace(
    used: tuple[Workspace, Path], capsys: Capture
) -> None:
    ws, saved = used
    before = ws.db_path.read_bytes()
    lock = EngineLock(ws).acquire()  # what a running `beast engine` holds
    try:
        out = run(capsys, ws, "restore", str(saved))
    finally:
        lock.release()
    assert out.returncode == 1
    assert "stop it before restoring" in one_line(out.stderr)
    assert ws.db_path.read_bytes() == before
    assert list(ws.root.glob(".beast.db.restore-*")) == []


def _garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"not a database at all" * 100)
    return path


def _plain_sqlite(tmp_path: Path) -> Path:
    path = tmp_path / "plain.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    return path


def _damaged_backup(tmp_path: Path) -> Path:
    path = tmp_path / "damaged.db"
    shutil.copyfile(tmp_path / "backup.db", path)
    _zero_cell_count(path, "history")
    return path


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (_garbage, "it is not a SQLite database"),
        (_plain_sqlite, "it is not a beast-mode database"),
        (_damaged_backup, "it fails its integrity check ("),
    ],
)
def test_restore_refuses_a_file_that_is_not_a_whole_beast_mode_database(
    used: tuple[Workspace, Path],
    tmp_path: Path,
    make: Callable[[Path], Path],
    why: str,
    capsys: Capture,
) -> None:
    ws, _saved = used
    source = make(tmp_path)
    before = ws.db_path.read_bytes(), ws.history_export_path.read_bytes()
    out = run(capsys, ws, "restore", str(source))
    assert out.returncode == 1
    assert one_line(out.stderr).startswith(f"beast: {source} cannot be restored: {why}")
    assert (ws.db_path.read_bytes(), ws.history_export_path.read_bytes()) == before
    assert sorted(p.name for p in ws.root.glob("*beast.db*")) == ["beast.db"]


def test_restore_refuses_the_workspaces_own_database(
    used: tuple[Workspace, Path], capsys: Capture
) -> None:
    ws, _saved = used
    out = run(capsys, ws, "restore", str(ws.db_path))
    assert out.returncode == 1 and "own database, not a backup" in one_line(out.stderr)


def test_restore_builds_a_workspace_on_a_new_machine(
    used: tuple[Workspace, Path], tmp_path: Path, capsys: Capture
) -> None:
    ws, saved = used
    fresh = Workspace(tmp_path / "elsewhere")
    shutil.copytree(ws.models_dir, fresh.models_dir)
    ok(capsys, fresh, "restore", str(saved))
    assert fresh.marker() == ws.marker()
    assert status(capsys, fresh)["deployments"] == status(capsys, ws)["deployments"]


# -- history.json never shrinks -----------------------------------------------------------------


def _rows(n: int) -> str:
    rows = [
        json.dumps({"id": i, "action": "deploy"}, separators=(",", ":")) for i in range(1, n + 1)
    ]
    return "[\n" + ",\n".join(rows) + "\n]\n" if rows else "[]\n"


def test_the_export_refuses_fewer_rows_naming_both_counts(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    path.write_text(_rows(3))
    with pytest.raises(ExportRefused) as info:
        write_export(path, lambda: _rows(0))
    assert str(info.value).startswith(
        f"refusing to rewrite {path} with 0 rows: it holds 3; history.json never shrinks"
    )
    with pytest.raises(ExportRefused, match="with 2 rows: it holds 3"):
        write_export(path, lambda: _rows(2))
    assert path.read_text() == _rows(3)


def test_the_export_refuses_rows_that_disagree_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    path.write_text(_rows(2))
    changed = _rows(3).replace('"id":2,"action":"deploy"', '"id":2,"action":"rollback"')
    with pytest.raises(ExportRefused) as info:
        write_export(path, lambda: changed)
    assert "with 3 rows: it holds 2, and its row 2 differs from the database's" in str(info.value)
    assert path.read_text() == _rows(2)


def test_the_export_grows_and_accepts_the_same_rows_written_differently(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    write_export(path, lambda: _rows(0))
    write_export(path, lambda: _rows(2))
    path.write_text(json.dumps(json.loads(_rows(2)), indent=4))  # reformatted by hand
    write_export(path, lambda: _rows(3))
    assert path.read_text() == _rows(3)


def test_an_unreadable_export_is_kept_aside_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    path.write_text("[{half a file")
    write_export(path, lambda: _rows(1))
    (kept,) = tmp_path.glob("history.json.unreadable-*")
    assert kept.read_text() == "[{half a file" and path.read_text() == _rows(1)


def test_doctor_repair_never_empties_the_export(
    used: tuple[Workspace, Path], capsys: Capture
) -> None:
    ws, saved = used
    export = ws.history_export_path.read_bytes()
    _wipe(ws, "empty")
    out = run(capsys, ws, "doctor", "--repair")
    assert out.returncode == 1 and "in use" in one_line(out.stderr)
    assert ws.history_export_path.read_bytes() == export
    ok(capsys, ws, "restore", str(saved))


# -- doctor on a damaged file -------------------------------------------------------------------


def _zero_cell_count(db: Path, table: str) -> None:
    """Damage `table` as a bad sector or a stray write would: its root page reads as empty."""
    with sqlite3.connect(db) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,))
        (page,) = root.fetchone()
    conn.close()
    data = bytearray(db.read_bytes())
    header = (page - 1) * page_size + (100 if page == 1 else 0)
    data[header + 3 : header + 5] = b"\0\0"  # the b-tree page header's cell count
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("table", ["experiments", "versions", "artifacts", "history"])
def test_doctor_names_the_damage_of_a_corrupted_database(
    used: tuple[Workspace, Path], tmp_path: Path, table: str, capsys: Capture
) -> None:
    ws, _saved = used
    damaged = copy_workspace(ws, tmp_path / "damaged" / ".beast-mode")
    _zero_cell_count(damaged.db_path, table)
    out = run(capsys, damaged, "doctor")
    assert out.returncode == 1
    message = one_line(out.stderr)
    assert message.startswith(f"beast: database integrity: {damaged.db_path} is damaged ")
    assert "is damaged (PRAGMA integrity_check: " in message  # what SQLite found, named
    assert "`beast restore BACKUP`" in message
    assert "PROBLEM  database integrity: wrong # of entries in index" in out.stdout


def test_doctor_names_sqlites_error_for_pages_of_garbage(
    used: tuple[Workspace, Path], tmp_path: Path, capsys: Capture
) -> None:
    ws, _saved = used
    damaged = copy_workspace(ws, tmp_path / "damaged" / ".beast-mode")
    data = bytearray(damaged.db_path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 3 * 16384] = bytes(range(256)) * (3 * 16384 // 256)
    damaged.db_path.write_bytes(bytes(data))
    out = run(capsys, damaged, "doctor")
    assert out.returncode == 1
    message = one_line(out.stderr)
    assert str(damaged.db_path) in message
    assert "malformed" in message or "integrity_check" in message, message


# -- readiness (for /healthz) -------------------------------------------------------------------


def test_readiness_says_why_not_ready(registered: Workspace, tmp_path: Path) -> None:
    engine = Engine(registered, actor="tester")
    try:
        assert engine.readiness() == "nothing deployed yet"
        engine.deploy(version="v1.0")
        assert engine.readiness() is None
        copy = backup(registered.db_path, tmp_path / "copy.db")
        moved = registered.db_path.with_name("moved.db")
        registered.db_path.rename(moved)
        assert engine.readiness() == (
            f"{registered.db_path} was deleted while this process had it open; restore a "
            "backup with `beast restore BACKUP` (a file `beast backup` wrote), or move the "
            "workspace aside and `beast init` a new one"
        )
        shutil.copyfile(copy, registered.db_path)
        assert engine.readiness() == (
            f"{registered.db_path} was replaced by another file while this process had it open"
        )
        registered.db_path.unlink()
        moved.rename(registered.db_path)
        assert engine.readiness() is None
    finally:
        engine.close()


def test_readiness_names_a_store_it_cannot_open(
    used: tuple[Workspace, Path], capsys: Capture
) -> None:
    ws, saved = used
    _wipe(ws, "empty")
    engine = Engine(ws)
    try:
        problem = engine.readiness()
    finally:
        engine.close()
    assert problem is not None and "but this workspace was in use" in problem
    with pytest.raises(WorkspaceLost):
        Engine(ws).status()
    ok(capsys, ws, "restore", str(saved))


def test_readiness_sees_a_database_emptied_under_it(registered: Workspace, tmp_path: Path) -> None:
    ws = copy_workspace(registered, tmp_path / "emptied" / ".beast-mode")
    engine = Engine(ws)
    try:
        engine.deploy(version="v1.0")
        ws.db_path.write_bytes(b"")
        assert "was emptied (0 bytes) while this process had it open" in str(engine.readiness())
    finally:
        engine.close()


def test_a_refusal_is_a_beast_error_with_one_line(
    used: tuple[Workspace, Path], capsys: Capture
) -> None:
    ws, saved = used
    _wipe(ws, "deleted")
    with pytest.raises(BeastError) as info:
        Engine.init(ws)
    assert "\n" not in str(info.value) and "is missing" in str(info.value)
    assert not ws.db_path.exists()
    ok(capsys, ws, "restore", str(saved))
