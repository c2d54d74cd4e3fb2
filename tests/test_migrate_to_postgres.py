"""`beast migrate --to postgresql://…` (issue 16, item 4): a SQLite workspace with real models,
deployments, A/B tests, logged predictions (single and batch), labels, rollups, feedback,
alerts and jobs, copied into a real PostgreSQL server: every table's count equal, the engine
on the copy shows what the engine on beast.db shows, a later insert collides with no copied
id; a target that is not empty is refused, and a copy that fails midway leaves none of it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from engine import Engine, Workspace
from engine.cli.main import main
from engine.core import ids
from engine.core.config import LogSettings
from engine.monitoring import feedback as labels
from engine.monitoring import rollups as metrics
from engine.retrain import jobs
from engine.store.postgres.connection import close_pools
from engine.store.postgres.transfer import BEAST_TABLES, IDENTITY_TABLES, TABLES, migrate
from engine.store.sqlite.connection import SqliteStore
from tests.conftest import _Templates
from tests.helpers import copy_workspace
from tests.pg import STORE_URL_ENV, PgServer, database
from tests.serving_helpers import LINE, serving
from tests.test_reference_file import reference_frame

ROW = [0.8, 12.0, 0.3, 0.05, 40.0]
ANY = labels.Contracts()
DAY_MINUTES = 24 * 60


def _build(ws: Workspace) -> None:
    """Every kind of state a workspace accumulates, each written the way the engine does."""
    reference = ws.root.parent / "reference.csv"
    reference_frame(rows=50).to_csv(reference, index=False)
    engine = Engine(ws, actor="tester")
    try:
        engine.deploy(version="v1.0", note="first", reference=reference)
        engine.deploy(version="v2.0")
        engine.deploy(version="v3.0", traffic=20, ab_test="first-test")
        engine.abort("first-test", note="not now")
        engine.deploy(version="v4.0", ab_test="second-test", rollout=[10, 50, 100])
        engine.shadow(version="v3.0")  # its scores come with the traffic below
    finally:
        engine.close()
    store = SqliteStore(ws.db_path)
    try:
        # Yesterday's traffic, compacted into hours; then today's, in minutes.
        _traffic(ws, store, label_every=2)
        with store.write() as tx:
            metrics.compact(tx, time.time_ns() // 60_000_000_000 + DAY_MINUTES)
        _traffic(ws, store, label_every=3)
        _feedback_and_upkeep(store)
    finally:
        store.close()


def _traffic(ws: Workspace, store: SqliteStore, *, label_every: int) -> None:
    with serving(ws, interval=3600) as (router, log):
        assert log is not None
        singles = [router.predict(ROW, key=f"user-{i}") for i in range(12)]
        batch = router.predict_batch([ROW] * 30, keys=[f"k{i}" for i in range(30)])
        log.flush()
    for prediction in (singles + batch)[::label_every]:
        assert prediction.score is not None
        assert labels.record(store, prediction.prediction_id, prediction.score + 1, ANY) == (
            "recorded"
        )


def _feedback_and_upkeep(store: SqliteStore) -> None:
    now = time.time_ns() // 1_000_000
    for _ in range(2):  # feedback that never met its prediction: unmatched once expired
        assert labels.record(store, ids.new_id(now), 50.0, ANY) == "pending"
    with store.write() as tx:
        assert labels.expire_pending(tx, now + DAY_MINUTES * 60_000) == 2
        tx.predictions.quarantine(ids.new_id(now), 1, now, "a row no model could take", now)
        tx.predictions.prune(LogSettings(), now, 1000)  # nothing 30 days old: records where
        tx.alerts.fire(
            line=LINE,
            version="v2.0",
            metric="accuracy",
            severity="warning",
            value=0.7,
            threshold=0.8,
            message="accuracy 0.70 under 0.80",
            at="2026-01-01T00:00:00Z",
        )
        job_id, _ = jobs.create_or_join(
            tx.jobs, LINE, trigger="t", force=True, deploy=False, actor="x", timeout_s=9, lease_s=9
        )
        tx.jobs.append_log(job_id, "2026-01-01T00:00:01Z", "reading 42 rows")
        tx.jobs.finish(
            job_id,
            status="failed",
            at="2026-01-01T00:00:02Z",
            message="failed",
            version=None,
            deployed=False,
            reason=None,
            error="too few rows",
            expect_running=False,
        )
    assert labels.record(store, ids.new_id(now), 60.0, ANY) == "pending"


@pytest.fixture(scope="module")
def _built(tmp_path_factory: pytest.TempPathFactory, _templates: _Templates) -> Workspace:
    """The full workspace, built once for the module on the session's registered template."""
    template, _url = _templates.get("sqlite")
    ws = copy_workspace(template, tmp_path_factory.mktemp("migrate") / ".beast-mode")
    _build(ws)
    return ws


@pytest.fixture
def source(_built: Workspace, tmp_path: Path) -> Workspace:
    return copy_workspace(_built, tmp_path / "ws" / ".beast-mode")


@pytest.fixture
def target(postgres: PgServer) -> Iterator[str]:
    with database(postgres) as url:
        yield url
        close_pools(url)


def _beast(ws: Workspace, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["--workspace", str(ws.root), *args])
    out, err = capsys.readouterr()
    return code, out, err


def _source_counts(ws: Workspace) -> dict[str, int]:
    conn = sqlite3.connect(ws.db_path)
    try:
        return {t: int(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]) for t in TABLES}
    finally:
        conn.close()


def _target_tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            ).fetchall()
        ]


def test_every_table_is_copied_and_the_engine_on_the_copy_shows_the_same_state(
    source: Workspace,
    target: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    counts = _source_counts(source)
    empty = [table for table, n in counts.items() if n == 0]
    assert not empty, f"the source workspace should hold every kind of row: {empty} are empty"
    before = {cmd: _beast(source, cmd, "--json", capsys=capsys) for cmd in ("status", "history")}

    code, out, err = _beast(source, "migrate", "--to", target, "--json", capsys=capsys)
    assert (code, err) == (0, "")
    done = json.loads(out)
    assert done["tables"] == counts
    assert done["files"] == 4 and not done["not_carried"]
    assert "doctor" in done["verified"] and "history replay" in done["verified"]
    with psycopg.connect(target) as conn:
        for table, n in counts.items():
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (n,), table
        stored = conn.execute("SELECT sha256 FROM artifact_bytes ORDER BY 1").fetchall()
        assert conn.execute("SELECT count(*) FROM replicas").fetchone() == (0,)
        # A later insert gets an id past every copied one, in every identity column.
        for table in IDENTITY_TABLES:
            top, following = conn.execute(
                f"SELECT coalesce(max(id), 0), nextval(pg_get_serial_sequence('{table}', 'id'))"
                f" FROM {table}"
            ).fetchone()
            assert following > top, table
    lite = sqlite3.connect(source.db_path)
    try:
        valid = lite.execute("SELECT sha256 FROM artifacts WHERE status = 'valid' ORDER BY 1")
        assert stored == valid.fetchall()
        workspace_id = lite.execute("SELECT id FROM workspace").fetchone()[0]
    finally:
        lite.close()
    assert done["workspace_id"] == workspace_id

    monkeypatch.setenv(STORE_URL_ENV, target)
    for cmd, (code, out, err) in before.items():
        assert _beast(source, cmd, "--json", capsys=capsys) == (code, out, err), cmd
    code, _out, err = _beast(source, "rollback", "--note", "on PostgreSQL", capsys=capsys)
    assert (code, err) == (0, "")  # a new history row: its id follows the copied ones
    code, out, _err = _beast(source, "doctor", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["problems"] == []


def test_the_plain_output_says_what_was_copied_and_the_next_step(
    source: Workspace, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _beast(source, "migrate", "--to", target, capsys=capsys)
    assert (code, err) == (0, "")
    assert out.startswith(f"copied {source.db_path} into {target} in one transaction")
    assert "history 6" in out and "4 model files" in out
    assert "verified before the commit: doctor, row counts, history replay, id sequences" in out
    assert out.rstrip().endswith(
        "in config.toml (or BEAST_STORE_URL) on every host, start the engines"
    )


def test_a_target_that_is_not_empty_is_refused_and_left_as_it_was(
    source: Workspace, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _beast(source, "migrate", "--to", target, capsys=capsys)[0] == 0
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO alerts (line, version, metric, severity, message, first_seen,"
            " last_seen) VALUES ('l', 'v', 'm', 'warning', 'later', 'a', 'b')"
        )
        alerts = conn.execute("SELECT count(*) FROM alerts").fetchone()
    code, out, err = _beast(source, "migrate", "--to", target, capsys=capsys)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "is not empty" in err and "nothing was written" in err
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM alerts").fetchone() == alerts


def test_one_beast_table_is_enough_to_refuse_a_target(
    source: Workspace, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(target, autocommit=True) as conn:
        conn.execute("CREATE TABLE history (id BIGINT)")
        conn.execute("CREATE TABLE not_ours (x TEXT)")
    code, _out, err = _beast(source, "migrate", "--to", target, capsys=capsys)
    assert code == 1 and "it holds beast-mode tables: history" in err
    assert _target_tables(target) == ["history", "not_ours"]


def test_a_row_postgresql_refuses_midway_leaves_the_target_empty(
    source: Workspace, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # SQLite keeps a NUL inside TEXT; PostgreSQL refuses it. job_log is the last table
    # copied: everything before it was in the target when it failed.
    conn = sqlite3.connect(source.db_path)
    try:
        with conn:
            conn.execute("UPDATE job_log SET line = 'a' || char(0) || 'b'")
    finally:
        conn.close()
    code, out, err = _beast(source, "migrate", "--to", target, capsys=capsys)
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert err.startswith("beast: copying job_log failed (") and "nothing was written" in err
    assert _target_tables(target) == []


def test_a_copy_failing_its_checks_leaves_the_target_empty(source: Workspace, target: str) -> None:
    with pytest.raises(Exception, match="the copy failed its check \\(doctor: found"):
        migrate(source.db_path, source.models_dir, target, check=lambda tx: ["found", "more"])
    assert _target_tables(target) == []
    assert set(_target_tables(target)).isdisjoint(BEAST_TABLES)


def test_a_deployed_model_file_that_changed_is_refused_and_nothing_written(
    source: Workspace, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed = source.models_dir / "quality-predictor-v4.0.json"
    deployed.write_bytes(deployed.read_bytes() + b" ")
    code, _out, err = _beast(source, "migrate", "--to", target, capsys=capsys)
    assert code == 1 and "is deployed but no longer has sha256" in err
    assert _target_tables(target) == []


def test_an_undeployed_model_file_that_is_gone_is_named_not_carried(
    source: Workspace, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (source.models_dir / "quality-predictor-v3.0.json").unlink()  # aborted, never serving
    code, out, _err = _beast(source, "migrate", "--to", target, "--json", capsys=capsys)
    assert code == 0
    done = json.loads(out)
    assert done["files"] == 3 and done["not_carried"] == ["quality-predictor-v3.0.json (missing)"]


def test_backup_and_restore_point_a_postgresql_store_to_pg_dump(
    source: Workspace,
    target: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert _beast(source, "migrate", "--to", target, capsys=capsys)[0] == 0
    monkeypatch.setenv(STORE_URL_ENV, target)
    dest = source.root.parent / "backup.db"
    code, _out, err = _beast(source, "backup", str(dest), capsys=capsys)
    assert code == 1 and "pg_dump -Fc" in err and err.count("\n") == 1
    assert not dest.exists()
    code, _out, err = _beast(source, "restore", str(source.db_path), capsys=capsys)
    assert code == 1 and "pg_restore" in err and err.count("\n") == 1


def test_the_target_must_be_a_postgresql_url_and_the_source_beast_db(
    source: Workspace,
    target: str,
    postgres: PgServer,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, _out, err = _beast(source, "migrate", "--to", "mysql://db/beast", capsys=capsys)
    assert code == 1 and "--to takes a PostgreSQL URL" in err and err.count("\n") == 1
    with database(postgres) as elsewhere:
        monkeypatch.setenv(STORE_URL_ENV, elsewhere)  # the workspace already lives there
        code, _out, err = _beast(source, "migrate", "--to", target, capsys=capsys)
        close_pools(elsewhere)
    assert code == 1 and "already in PostgreSQL" in err and err.count("\n") == 1
    assert _target_tables(target) == []


def test_the_source_is_read_in_one_snapshot_while_the_engine_goes_on_writing(
    source: Workspace, target: str
) -> None:
    before = _source_counts(source)
    writer = Engine(source, actor="engine")

    def write_meanwhile(tx: object) -> list[str]:
        # Every row is copied; the counts and the replay read beast.db after this commit.
        writer.abort("second-test", note="during the copy")
        return []

    try:
        done = migrate(source.db_path, source.models_dir, target, check=write_meanwhile)
    finally:
        writer.close()
    assert dict(done.tables) == before  # the snapshot's rows, checked against themselves
    after = _source_counts(source)
    assert after["history"] == before["history"] + 1  # the write went to beast.db, unharmed
    with psycopg.connect(target) as conn:
        assert conn.execute("SELECT count(*) FROM history").fetchone() == (before["history"],)
        assert conn.execute(
            "SELECT count(*) FROM experiments WHERE status = 'running'"
        ).fetchone() == (1,)
