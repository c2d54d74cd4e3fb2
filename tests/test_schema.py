"""What the schema itself refuses (engine/store/sqlite/schema.py), tried with direct SQL.

Each refusal is tried through `SqliteStore.write_sql()` against a real workspace (v1.0–v4.0
registered), so it must come back as the store's one-line refusal and leave every table as it was; a
valid change of the same kind is accepted (then undone), so no refusal is an artefact of the test.
The CHECKs of `line_state` are also tried alone, on a bare copy of the schema without the
triggers that usually refuse first. The fixtures check every invariant after each test.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from engine import Engine
from engine.core import ids
from engine.core.errors import StoreError
from engine.monitoring import feedback as labels
from engine.serving import prediction_log as predlog
from engine.store.sql import prediction_log as sql_log
from engine.store.sqlite.connection import SqliteStore
from engine.store.sqlite.schema import MIGRATION_SET, MIGRATIONS
from engine.store.sqlite.tx import SqliteTx

LINE = "quality-predictor"
NOW = "2026-01-01T00:00:00.000Z"
Change = Callable[[sqlite3.Connection], object]


class _Undo(Exception):
    """Raised inside a write to roll back a change that was accepted."""


def _tables(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    names = ("model_lines", "artifacts", "versions", "experiments", "history", "line_state")
    return {
        name: [tuple(row) for row in engine.store.query(f"SELECT * FROM {name} ORDER BY 1")]
        for name in names
    }


def refused(engine: Engine, change: Change) -> str:
    """Run `change` in one write; it must be refused and leave every table as it was."""
    before = _tables(engine)
    with pytest.raises(StoreError) as info, engine.store.write_sql() as conn:
        change(conn)
    message = str(info.value)
    assert "\n" not in message
    prefix = "refused by the state store's invariants: "
    assert message.startswith(prefix), message
    assert _tables(engine) == before
    return message.removeprefix(prefix)


def accepted(engine: Engine, change: Change) -> None:
    """Run `change` in one write; it must go through (and is then rolled back)."""
    before = _tables(engine)
    with pytest.raises(_Undo), engine.store.write_sql() as conn:
        change(conn)
        raise _Undo
    assert _tables(engine) == before


def _id(conn: sqlite3.Connection, sql: str, *params: object) -> int:
    row = conn.execute(sql, params).fetchone()
    assert row is not None, (sql, params)
    return int(row[0])


def _version(conn: sqlite3.Connection, name: str) -> int:
    return _id(conn, "SELECT id FROM versions WHERE line = ? AND name = ?", LINE, name)


def _new_revision(conn: sqlite3.Connection) -> int:
    """A new history row, so that `line_state.revision` may move forward."""
    cursor = conn.execute(
        "INSERT INTO history (line, at, actor, action, from_state, to_state)"
        " VALUES (?, ?, 'test', 'deploy', '{}', '{}')",
        (LINE, NOW),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


@pytest.fixture
def testing(engine: Engine) -> Engine:
    """v1.0 in production, v2.0 its candidate at 20% in the running test exp-a."""
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", traffic=20, ab_test="exp-a")
    return engine


# -- history ---------------------------------------------------------------------------------


def test_history_is_append_only(testing: Engine) -> None:
    assert refused(testing, lambda c: c.execute("UPDATE history SET note = 'rewritten'")) == (
        "history is append-only"
    )
    assert refused(testing, lambda c: c.execute("DELETE FROM history WHERE id = 1")) == (
        "history is append-only"
    )
    accepted(testing, _new_revision)


# -- line_state -------------------------------------------------------------------------------


def _set_state(**values: object) -> Change:
    """Change the line's state, moving its revision forward as the engine does."""

    def change(conn: sqlite3.Connection) -> None:
        resolved = {
            key: (
                _version(conn, value[1:]) if isinstance(value, str) and value[:1] == "@" else value
            )
            for key, value in values.items()
        }
        if "traffic_bp" in resolved:  # keep the running test in step, as the engine would
            conn.execute(
                "UPDATE experiments SET traffic_bp = ? WHERE status = 'running'",
                (resolved.pop("traffic_bp"),),
            )
        sets = ", ".join(f"{key} = :{key}" for key in resolved)
        conn.execute(
            f"UPDATE line_state SET {sets}, revision = :revision WHERE line = :line",
            {**resolved, "revision": _new_revision(conn), "line": LINE},
        )

    return change


BAD_STATES = {
    "candidate at 0 bp": {"candidate_bp": 0},
    "candidate at 10000 bp": {"candidate_bp": 10_000},
    "candidate at 0 bp, test too": {"candidate_bp": 0, "traffic_bp": 0},
    "candidate equal to production": {"candidate_id": "@v1.0"},
    "test without a candidate": {
        "candidate_id": None,
        "candidate_bp": 0,
        "candidate_since": None,
        "candidate_by": None,
    },
    "NaN traffic (stored as NULL)": {"candidate_bp": float("nan")},
    "fractional traffic": {"candidate_bp": 2000.5, "traffic_bp": 2000.5},
    "production of another version than the test's": {"production_id": "@v3.0"},
}


@pytest.mark.parametrize("values", BAD_STATES.values(), ids=BAD_STATES.keys())
def test_line_state_refuses_impossible_deployments(
    testing: Engine, values: dict[str, object]
) -> None:
    refused(testing, _set_state(**values))


def test_line_state_accepts_a_valid_change_of_traffic(testing: Engine) -> None:
    accepted(testing, _set_state(candidate_bp=3000, traffic_bp=3000))


def test_a_deployed_line_cannot_be_deleted(testing: Engine) -> None:
    assert refused(testing, lambda c: c.execute("DELETE FROM line_state")) == (
        "a deployed line cannot be deleted"
    )


def _bare_schema() -> sqlite3.Connection:
    """The schema with the triggers of line_state dropped, and one running test (id 1)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    for _name, sql in MIGRATIONS:
        conn.executescript(sql)
    for (trigger,) in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'line_state'"
    ).fetchall():
        conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute("INSERT INTO model_lines VALUES ('m', 1, NULL, ?)", (NOW,))
    for n, sha in ((1, "a" * 64), (2, "b" * 64)):
        conn.execute(
            "INSERT INTO artifacts (id, sha256, path, size, status, line, n_features,"
            " registered_at, registered_by) VALUES (?, ?, 'x.json', 1, 'valid', 'm', 1, ?, 't')",
            (n, sha, NOW),
        )
        conn.execute(
            "INSERT INTO versions VALUES (?, 'm', ?, ?, 'version', ?, 't')", (n, f"v{n}", n, NOW)
        )
    conn.execute(
        "INSERT INTO history (id, line, at, actor, action, from_state, to_state)"
        " VALUES (1, 'm', ?, 't', 'ab_start', '{}', '{}')",
        (NOW,),
    )
    conn.execute(
        "INSERT INTO experiments (id, name, line, control_id, candidate_id, traffic_bp, status,"
        " started_at, started_by) VALUES (1, 'e', 'm', 1, 2, 2000, 'running', ?, 't')",
        (NOW,),
    )
    return conn


# (production, candidate, candidate_bp, candidate_since, experiment) -> what refuses it
BARE_CASES = {
    "valid test": ((1, 2, 2000, NOW, 1), None),
    "valid production alone": ((1, None, 0, None, None), None),
    "candidate at 0 bp": ((1, 2, 0, NOW, 1), "CHECK constraint failed"),
    "candidate at 10000 bp": ((1, 2, 10_000, NOW, 1), "CHECK constraint failed"),
    "candidate equal to production": ((1, 1, 2000, NOW, 1), "CHECK constraint failed"),
    "test without a candidate": ((1, None, 0, None, 1), "CHECK constraint failed"),
    "candidate without a test": ((1, 2, 2000, NOW, None), "CHECK constraint failed"),
    "traffic without a candidate": ((1, None, 500, None, None), "CHECK constraint failed"),
    "candidate without since": ((1, 2, 2000, None, 1), "CHECK constraint failed"),
    # NaN is stored as NULL, and a CHECK on NULL passes: NOT NULL is what refuses it.
    "NaN traffic": ((1, 2, float("nan"), NOW, 1), "NOT NULL constraint failed"),
}


@pytest.mark.parametrize("row,refusal", BARE_CASES.values(), ids=BARE_CASES.keys())
def test_line_state_checks_hold_on_their_own(row: tuple[object, ...], refusal: str | None) -> None:
    conn = _bare_schema()
    insert = (
        "INSERT INTO line_state (line, production_id, candidate_id, candidate_bp,"
        " candidate_since, experiment_id, production_since, production_by, revision)"
        " VALUES ('m', ?, ?, ?, ?, ?, 'now', 't', 1)"
    )
    try:
        if refusal is None:
            conn.execute(insert, row)
        else:
            with pytest.raises(sqlite3.IntegrityError, match=refusal):
                conn.execute(insert, row)
    finally:
        conn.close()


def test_nan_comes_back_as_null() -> None:
    conn = sqlite3.connect(":memory:")
    try:
        assert conn.execute("SELECT ?, typeof(?)", (float("nan"), float("nan"))).fetchone() == (
            None,
            "null",
        )
    finally:
        conn.close()


# -- experiments ------------------------------------------------------------------------------


def _insert_test(name: str, status: str, candidate: str = "v3.0") -> Change:
    def change(conn: sqlite3.Connection) -> None:
        ended = None if status == "running" else NOW
        conn.execute(
            "INSERT INTO experiments (name, line, control_id, candidate_id, traffic_bp, status,"
            " started_at, started_by, ended_at) VALUES (?, ?, ?, ?, 1000, ?, ?, 't', ?)",
            (name, LINE, _version(conn, "v1.0"), _version(conn, candidate), status, NOW, ended),
        )

    return change


def test_one_running_test_per_line(testing: Engine) -> None:
    message = refused(testing, _insert_test("exp-b", "running"))
    assert message == "UNIQUE constraint failed: experiments.line"
    accepted(testing, _insert_test("exp-b", "aborted"))  # the index is partial: running only


def test_an_ended_test_cannot_change_nor_be_deleted(testing: Engine) -> None:
    testing.abort("exp-a")
    for sql in (
        "UPDATE experiments SET status = 'running', ended_at = NULL",
        "UPDATE experiments SET end_reason = 'something else'",
        "UPDATE experiments SET forced = 1",
    ):
        assert refused(testing, lambda c, sql=sql: c.execute(sql)) == "an ended test cannot change"
    assert refused(testing, lambda c: c.execute("DELETE FROM experiments")) == (
        "A/B test records are kept"
    )


def test_a_test_keeps_whole_basis_points(testing: Engine) -> None:
    message = refused(testing, lambda c: c.execute("UPDATE experiments SET traffic_bp = 2000.5"))
    assert message == "traffic is stored in whole basis points"
    assert refused(testing, _set_state(candidate_bp=2000.5, traffic_bp=2000.5)) == (
        "traffic is stored in whole basis points"
    )


# -- versions and artifacts -------------------------------------------------------------------


def _rejected_artifact(conn: sqlite3.Connection) -> int:
    cursor = conn.execute(
        "INSERT INTO artifacts (sha256, path, size, status, reason, registered_at,"
        " registered_by) VALUES (?, 'bad.json', 3, 'rejected', 'not a model', ?, 't')",
        ("e" * 64, NOW),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _name_version(line: str, name: str, artifact: Callable[[sqlite3.Connection], int]) -> Change:
    def change(conn: sqlite3.Connection) -> None:
        conn.execute(
            "INSERT INTO versions (line, name, artifact_id, kind, created_at, created_by)"
            " VALUES (?, ?, ?, 'alias', ?, 't')",
            (line, name, artifact(conn), NOW),
        )

    return change


def _artifact_of(version: str) -> Callable[[sqlite3.Connection], int]:
    return lambda conn: _id(
        conn, "SELECT artifact_id FROM versions WHERE line = ? AND name = ?", LINE, version
    )


def test_a_version_names_only_a_valid_artifact_of_its_own_line(engine: Engine) -> None:
    bad = "a version must name a valid artifact of its own line"
    assert refused(engine, _name_version(LINE, "v9", _rejected_artifact)) == bad

    def other_line(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO model_lines VALUES ('other-line', 5, NULL, ?)", (NOW,))
        _name_version("other-line", "v1.0", _artifact_of("v1.0"))(conn)

    assert refused(engine, other_line) == bad
    accepted(engine, _name_version(LINE, "best", _artifact_of("v1.0")))


def test_a_named_artifact_cannot_be_rejected_or_moved(engine: Engine) -> None:
    def reject(conn: sqlite3.Connection) -> None:
        conn.execute(
            "UPDATE artifacts SET status = 'rejected', reason = 'x' WHERE id = ?",
            (_artifact_of("v1.0")(conn),),
        )

    assert refused(engine, reject) == "a named artifact cannot be rejected or moved"


def test_versions_are_immutable_and_never_deleted(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0")  # v1.0 is no longer deployed, but history names it
    for sql in (
        "UPDATE versions SET name = 'v1.1' WHERE name = 'v1.0'",
        "UPDATE versions SET artifact_id = (SELECT artifact_id FROM versions WHERE name = 'v3.0')"
        " WHERE name = 'v1.0'",
        "DELETE FROM versions WHERE name = 'v1.0'",
        "DELETE FROM versions WHERE name = 'v4.0'",
    ):
        assert refused(engine, lambda c, sql=sql: c.execute(sql)) == "versions are immutable"
    back = engine.rollback()
    assert back.entry is not None and back.entry.to_state.production == "v1.0"


# -- 0008: the prediction log keyed by id --------------------------------------------------

_INSERT_0006 = (
    "INSERT INTO predictions (pid, at_ms, line, version_id, arm, experiment, key, features,"
    " score, latency_us, error, actual, labelled_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
    " ?, ?, ?)"
)


def _database_at_0006(path: Path) -> None:
    """A database migrated to 0006 only (released migrations never change: this is the
    schema a workspace of the previous release has)."""
    import sqlite_utils

    migrations = sqlite_utils.Migrations(MIGRATION_SET)
    for name, sql in MIGRATIONS[:6]:
        assert not name.startswith("0007")
        migrations(name=name)(lambda db, sql=sql: db.executescript(sql))
    db = sqlite_utils.Database(path)
    migrations.apply(db)
    db.close()


def _rows_0006(conn: sqlite3.Connection, rng: np.random.Generator) -> list[tuple[object, ...]]:
    """Single predictions as the 0006 writer logged them, inserted out of time order (two
    writers interleave), some served a moment after their id's millisecond, some failed,
    some labelled."""
    now = time.time_ns() // 1_000_000
    rows = []
    for i in range(300):
        issued = now - int(rng.integers(0, 3_600_000))
        failed = i % 17 == 0
        score = None if failed else float(rng.normal(70, 10))
        labelled = not failed and i % 5 == 0
        rows.append(
            (
                ids.new_id(issued),
                issued + (3 if i % 7 == 0 else 0),
                LINE,
                1 + i % 2,
                "candidate" if i % 2 else "production",
                "exp-a" if i % 3 == 0 else "",
                f"user-{i}" if i % 4 == 0 else None,
                rng.random(5).astype(np.float32).tobytes(),
                score,
                int(rng.integers(50, 5000)),
                "model error: boom" if failed else None,
                round(float(rng.normal(70, 10)), 2) if labelled else None,
                now if labelled else None,
            )
        )
    conn.executemany(_INSERT_0006, rows)
    return rows


def test_0008_moves_the_rows_the_0006_schema_holds_and_every_reader_finds_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "beast.db"
    _database_at_0006(path)
    rng = np.random.default_rng(7)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(
        "INSERT INTO model_lines (name, n_features, created_at) VALUES (?, 5, ?)", (LINE, NOW)
    )
    for n in (1, 2):
        conn.execute(
            "INSERT INTO artifacts (sha256, path, size, format, status, line, n_features,"
            " registered_at, registered_by) VALUES (?, ?, 1, 'json', 'valid', ?, 5, ?, 't')",
            (f"{n}" * 64, f"models/v{n}.json", LINE, NOW),
        )
        conn.execute(
            "INSERT INTO versions (line, name, artifact_id, kind, created_at, created_by)"
            " VALUES (?, ?, ?, 'version', ?, 't')",
            (LINE, f"v{n}.0", n, NOW),
        )
    conn.execute(
        "INSERT INTO experiments (name, line, control_id, candidate_id, traffic_bp, status,"
        " started_at, started_by) VALUES ('exp-a', ?, 1, 2, 1000, 'running', ?, 't')",
        (LINE, NOW),
    )
    rows = _rows_0006(conn, rng)
    shuffled = {pid: rowid for rowid, pid in conn.execute("SELECT id, pid FROM predictions")}
    bound = 120  # v1's first predictions, as the 0006 writer recorded them: a rowid bound
    conn.execute("INSERT INTO first_predictions VALUES (1, ?, 1), (2, 100000, 1)", (bound,))
    prefix = ids.batch_prefix()
    conn.execute(
        "INSERT INTO prediction_batches (prefix, at_ms, line, experiment, rows, width,"
        " version_ids, arms, features, scores, keys, errors, latency_us)"
        " VALUES (?, ?, ?, '', 3, 5, ?, ?, ?, ?, NULL, NULL, 40)",
        (
            prefix,
            ids.issued_ms(prefix + "00000"),
            LINE,
            np.array([1, 1, 2], "<i8").tobytes(),
            bytes([0, 0, 1]),
            rng.random((3, 5)).astype("<f4").tobytes(),
            np.array([60.0, 61.0, 62.0], "<f8").tobytes(),
        ),
    )
    conn.execute("INSERT INTO batch_labels VALUES (1, 2, 63.5, 1)")
    conn.close()

    store = SqliteStore(path)
    try:
        assert store.migrate() == [
            "0007_workspace_identity",
            "0008_compact_prediction_rows",
            "0009_line_tasks",
            "0010_evidence",
            "0011_replicas",
            "0012_change_notices",
            "0013_decisions",
            "0014_shadows",
        ]
        assert store.integrity_errors() == []
        with store.read_sql() as read:
            logged = {r.pid: r for r in sql_log.logged_rows(read)}
            assert sql_log.count_logged(read) == len(rows) + 3
            x, y, _at = sql_log.labelled_rows(read, LINE, 5)
            v1_from = read.execute(
                "SELECT from_key FROM first_predictions WHERE version_id = 1"
            ).fetchone()[0]
            v2_from = read.execute(
                "SELECT from_key FROM first_predictions WHERE version_id = 2"
            ).fetchone()[0]
            assert (
                read.execute(
                    "SELECT count(*) FROM sqlite_master WHERE sql LIKE '%pid%'"
                    " AND tbl_name = 'predictions'"
                ).fetchone()[0]
                == 0
            )
        for row in rows:  # every column of every row, as the 0006 schema held it
            assert tuple(logged[row[0]])[:12] == row[:12], row[0]
        labelled = [r for r in rows if r[11] is not None]
        assert sorted(y.tolist()) == sorted([np.float32(r[11]) for r in labelled] + [63.5])
        assert x.shape == (len(labelled) + 1, 5)
        # Where v1's reference scan starts: at its first row past the bound, less the margin
        # the writer leaves for rows another writer may still hold.
        after = {pid for pid, rowid in shuffled.items() if rowid >= bound}
        first = min(r[1] for r in rows if r[3] == 1 and r[0] in after)
        assert v1_from == ids.key_floor(first - predlog.FIRST_ROWS_MARGIN_MS)
        assert v1_from <= min(ids.key(r[0])[0] for r in rows if r[3] == 1 and r[0] in after)
        assert v2_from == max(ids.key(r[0])[0] for r in rows) + 1  # none past its bound
        with store.write_sql() as write:  # feedback finds old rows by id, single or batch
            for row in labelled[:5]:
                assert (
                    labels.label(SqliteTx(write), row[0], row[11], labels.Contracts())
                    == "duplicate"
                )
            unlabelled = next(r for r in rows if r[11] is None and r[8] is not None)
            assert (
                labels.label(SqliteTx(write), unlabelled[0], 50.0, labels.Contracts()) == "recorded"
            )
            assert (
                labels.label(SqliteTx(write), f"{prefix}00002", 63.5, labels.Contracts())
                == "duplicate"
            )
            assert (
                labels.label(SqliteTx(write), f"{prefix}00000", 60.0, labels.Contracts())
                == "recorded"
            )
        with store.read_sql() as read:
            assert (
                read.execute(
                    "SELECT actual FROM predictions WHERE hi = ? AND lo = ?", ids.key(unlabelled[0])
                ).fetchone()[0]
                == 50.0
            )
    finally:
        store.close()
