"""A busy moment never fails a job (issue 12 §5; RELIABILITY.md "A long writer held the database
past the 5 s busy timeout and a retraining job failed at 63%").

A real second process holds the write lock for longer than the busy timeout while a real
retraining job runs, and while the daemon's scheduler and evaluator tick: the job succeeds and
registers its model once, the ticks warn once and carry on. Long writers commit in bounded
chunks: a feedback file (a failure part-way names what was processed, a `kill -9` part-way
leaves whole chunks; sending the file again answers duplicate for them) and a big batch of
predictions. The evaluation hashes model files outside the write lock.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from engine import Engine, Workspace
from engine.core.errors import StateBusy
from engine.registry import artifacts
from engine.retrain import jobs
from engine.server.daemon import Evaluator, Scheduler
from engine.server.train_worker import FAULT_ENV, RunningJob, register_model
from engine.server.watcher import ModelWatcher, WatchOptions
from engine.store.busy import BUSY_ENV
from engine.store.sql import prediction_log as sql_log
from engine.store.sqlite.connection import SqliteStore
from tests.helpers import REPO, beast, copy_workspace, model_path, train_model
from tests.retrain_helpers import (
    LINE,
    queue_job,
    set_retrain,
    train_on_samples,
    wait_dead,
    wait_for_log,
)
from tests.serving_helpers import count, serving
from tests.test_daemon import wait_for

BUSY_S = 0.5  # the busy timeout the job's processes get
HOLD_S = 5 * BUSY_S  # a writer holding the lock this long refuses the writes that meet it
ROW = [0.8, 12.0, 0.3, 0.05, 40.0]


class LockHolder:
    """The `tests.workers.lock_holder` process: holds the write lock when told to."""

    def __init__(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.workers.lock_holder", str(db)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def hold(self, seconds: float) -> None:
        """Take the lock for `seconds`; returns once it is held."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"hold {seconds}\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline().strip() == "held"

    def released(self) -> None:
        """Wait until the lock taken by `hold` is released."""
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "released"

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[Callable[[Workspace], LockHolder]]:
    started: list[LockHolder] = []

    def start(ws: Workspace) -> LockHolder:
        started.append(LockHolder(ws.db_path))
        return started[-1]

    yield start
    for one in started:
        one.close()


@pytest.fixture
def rws(retrain_template: Workspace, tmp_path: Path) -> Workspace:
    """v1.0 (weak) and v2.0 (strong) on the sample-data schema; data/ holds 300 rows."""
    return copy_workspace(retrain_template, tmp_path / ".beast-mode")


@pytest.fixture
def live(registered: Workspace) -> Workspace:
    with closing(Engine(registered, actor="tester")) as engine:
        engine.deploy(version="v1.0")
    return registered


def _in_order(lines: list[str], starts: list[str]) -> bool:
    """Does each of `starts` begin a line, in this order (other lines between allowed)?"""
    rest = iter(lines)
    return all(any(line.startswith(start) for line in rest) for start in starts)


# -- a retraining job ---------------------------------------------------------------------


@pytest.mark.slow
def test_a_job_rides_out_a_writer_holding_the_lock_past_the_busy_timeout(
    rws: Workspace, monkeypatch: pytest.MonkeyPatch, holder: Callable[[Workspace], LockHolder]
) -> None:
    set_retrain(rws, lease_s=5)  # a busy moment of HOLD_S is shorter than the lease
    monkeypatch.setenv(BUSY_ENV, f"{BUSY_S:g}")  # the worker inherits it
    lock = holder(rws)
    with closing(Engine(rws, actor="tester")) as engine:
        engine.deploy(version="v1.0", model=LINE)
        job = engine.start_retrain(force=True)
        lock.hold(HOLD_S)  # the worker starts meanwhile: its claim meets the lock
        lock.released()
        wait_for(lambda: engine.job(job.id).status != "queued", "the claim", timeout=60)
        lock.hold(HOLD_S)  # loading the data and the search: progress and log lines
        lock.released()
        model = rws.models_dir / f"{LINE}-v3.0.json"
        wait_for(model.exists, "the new model's file", timeout=60)
        lock.hold(HOLD_S)  # its registration (after the validation child) and the job's end
        lock.released()
        done = engine.wait_job(job.id, 60)
        log = engine.job_log(job.id)
        sha = hashlib.sha256(model.read_bytes()).hexdigest()
        with engine.store.read_sql() as conn:
            registered = conn.execute(
                "SELECT count(*) FROM artifacts WHERE sha256 = ?", (sha,)
            ).fetchone()[0]
            versions = [r[0] for r in conn.execute("SELECT name FROM versions ORDER BY id")]
    assert done.status == "succeeded" and done.version == "v3.0", (done, log)
    assert registered == 1 and versions == ["v1.0", "v2.0", "v3.0"]
    assert _in_order(
        log,
        [
            "queued by",
            "worker pid",
            "loading data/ and labelled predictions",
            "300 rows (data/samples.csv: 300)",
            "searching 5 configurations",
            *(f"configuration {i}/5" for i in range(1, 6)),
            "scoring the new model",
            f"writing {LINE}-v3.0.json",
            "registering v3.0",
            "not deployed",
            "worker CPU time",
            "succeeded",
        ],
    ), log
    assert any(line.startswith("the store was busy") for line in log), log


@pytest.mark.slow
def test_the_timeout_kills_the_job_while_the_store_is_busy_and_a_reaper_records_it(
    rws: Workspace, monkeypatch: pytest.MonkeyPatch, holder: Callable[[Workspace], LockHolder]
) -> None:
    set_retrain(rws, timeout_s=4, lease_s=6)
    monkeypatch.setenv(FAULT_ENV, "hang")
    monkeypatch.setenv(BUSY_ENV, f"{BUSY_S:g}")
    lock = holder(rws)
    with closing(Engine(rws, actor="tester")) as engine:
        job = engine.start_retrain(force=True)
        child = int(wait_for_log(engine, job.id, "child pid").rsplit(" ", 1)[-1].rstrip(")"))
        with engine.store.read() as tx:
            worker = tx.jobs.lease(job.id).pid
        lock.hold(10)  # across the job's deadline, and past it
        assert wait_dead(worker, timeout=8), "killed at its deadline, busy store or not"
        assert wait_dead(child)
        lock.released()
        done = engine.wait_job(job.id, 30)
    assert done.status == "failed" and done.error == jobs.timed_out(4), done
    assert not [p.name for p in rws.models_dir.iterdir() if p.name.startswith(".")]


def test_a_registration_that_meets_a_busy_store_is_retried_and_validated_once(
    rws: Workspace, monkeypatch: pytest.MonkeyPatch, holder: Callable[[Workspace], LockHolder]
) -> None:
    monkeypatch.setenv(BUSY_ENV, "0.2")
    lock = holder(rws)
    validated: list[Path] = []
    real = artifacts.validate_in_child

    def validate_then_lock(
        path: Path,
        fmt: str,
        timeout_s: float,
        *,
        expected_sha256: str | None = None,
        compile_into: Path | None = None,
    ) -> artifacts.Validation:
        validated.append(path)
        verdict = real(path, fmt, timeout_s, expected_sha256=expected_sha256)
        lock.hold(1.0)  # the registration's write, next, meets a busy store
        return verdict

    monkeypatch.setattr(artifacts, "validate_in_child", validate_then_lock)
    model = train_on_samples(
        rws.models_dir / f"{LINE}-v3.0.json", rows=300, depth=2, rounds=5, seed=4
    )
    with closing(Engine(rws)) as engine:
        with engine.store.write() as tx:
            job_id = queue_job(tx)
        job = RunningJob(engine, job_id, LINE, deadline=jobs.monotonic() + 60)
        try:
            register_model(job, model, "v3.0")
            lock.released()
            job.commit(
                "ending the test's job",
                lambda tx: jobs.finish(
                    tx.jobs, job_id, status="failed", error="done", expect_running=False
                ),
            )
        finally:
            job.close()
        sha = hashlib.sha256(model.read_bytes()).hexdigest()
        with engine.store.read_sql() as conn:
            artifacts_rows = conn.execute(
                "SELECT count(*) FROM artifacts WHERE sha256 = ?", (sha,)
            ).fetchone()[0]
            versions = [r[0] for r in conn.execute("SELECT name FROM versions ORDER BY id")]
        log = engine.job_log(job_id)
    assert validated == [model], "a retry does not start a second validation child"
    assert artifacts_rows == 1 and versions == ["v1.0", "v2.0", "v3.0"]
    assert any(line.startswith("the store was busy: registering v3.0 waited") for line in log)


def test_progress_and_log_lines_met_by_a_busy_store_wait_in_order(
    registered: Workspace,
    monkeypatch: pytest.MonkeyPatch,
    holder: Callable[[Workspace], LockHolder],
) -> None:
    monkeypatch.setenv(BUSY_ENV, "0.2")
    lock = holder(registered)
    with closing(Engine(registered)) as engine:
        with engine.store.write() as tx:
            job_id = queue_job(tx)
            jobs.claim(tx.jobs, job_id, pid=os.getpid(), pgid=os.getpgid(0), lease_s=60)
        job = RunningJob(engine, job_id, LINE, deadline=jobs.monotonic() + 60)
        try:
            lock.hold(1.0)
            job.step(0.5, "half way")  # cosmetic: kept, not a failure
            job.log("a line")
            with engine.store.read() as tx:  # reading is never blocked by the writer
                assert tx.jobs.get(job_id).progress == 0
                assert "half way" not in jobs.log_lines(tx.jobs, job_id)
            lock.released()
            job.log("after")
            assert engine.job(job_id).progress == 0.5
            assert engine.job_log(job_id)[-3:] == ["half way", "a line", "after"]

            lock.hold(0.8)  # the job's end retries until the lock is free
            job.log("kept while busy")
            ended = job.commit(
                "recording the end",
                lambda tx: jobs.finish(tx.jobs, job_id, status="failed", error="done here"),
            )
            lock.released()
            assert ended
            tail = engine.job_log(job_id)[-3:]
            assert tail[0] == "kept while busy" and tail[1].startswith("the store was busy")
            assert tail[2] == "failed: done here"
        finally:
            job.close()


def test_a_write_the_job_needs_gives_up_at_its_deadline(
    registered: Workspace,
    monkeypatch: pytest.MonkeyPatch,
    holder: Callable[[Workspace], LockHolder],
) -> None:
    monkeypatch.setenv(BUSY_ENV, "0.1")
    lock = holder(registered)
    with closing(Engine(registered)) as engine:
        with engine.store.write() as tx:
            job_id = queue_job(tx)
        job = RunningJob(engine, job_id, LINE, deadline=jobs.monotonic() + 0.4)
        try:
            lock.hold(1.5)
            with pytest.raises(StateBusy):
                job.commit("recording the version", lambda tx: tx.jobs.set_version(job_id, "v9.0"))
            lock.released()
        finally:
            job.close()


def test_reading_training_data_is_not_blocked_by_a_writer(live: Workspace) -> None:
    with serving(live) as (router, plog):
        assert plog is not None
        done = router.predict_batch([ROW] * 5)
        plog.flush()
    with closing(Engine(live)) as engine:
        answers = engine.feedback_many([(p.prediction_id, 50.0) for p in done])
    assert {a.status for a in answers} == {"recorded"}
    writer = sqlite3.connect(live.db_path, isolation_level=None)
    reader = SqliteStore(live.db_path, busy_timeout_s=0)  # any wait for a lock would fail at once
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("DELETE FROM batch_labels")  # uncommitted: a long labelling write
        with reader.read_sql() as conn:
            x, y, _at = sql_log.labelled_rows(conn, LINE, len(ROW))
        writer.execute("ROLLBACK")
    finally:
        writer.close()
        reader.close()
    assert x.shape == (5, len(ROW)) and list(y) == [50.0] * 5


# -- the daemon's periodic work ------------------------------------------------------------


@pytest.mark.parametrize("periodic", [Scheduler, Evaluator])
def test_a_busy_store_costs_a_periodic_tick_one_warning_not_its_thread(
    registered: Workspace,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    holder: Callable[[Workspace], LockHolder],
    periodic: type[Scheduler | Evaluator],
) -> None:
    monkeypatch.setenv(BUSY_ENV, "0.2")
    caplog.set_level(logging.INFO, logger="beast.engine")
    with closing(Engine(registered)) as engine, engine.store.write() as tx:
        lost = queue_job(tx)  # a job whose worker never came: reaped once the store is free
        tx.conn.execute("UPDATE jobs SET lease_expires = 0 WHERE id = ?", (lost,))
    lock = holder(registered)
    lock.hold(1.5)
    thread = periodic(registered, every_s=0.05).start()
    try:
        lock.released()
        if periodic is Scheduler:
            with closing(Engine(registered)) as engine:
                wait_for(lambda: engine.job(lost).finished, "the lost job to be reaped")
        wait_for(lambda: any("again" in r.getMessage() for r in caplog.records), "a round after")
    finally:
        thread.stop()
    busy = [r for r in caplog.records if "state busy" in r.getMessage()]
    assert len(busy) == 1 and busy[0].levelname == "WARNING", [r.getMessage() for r in busy]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_the_watcher_registers_a_file_that_settled_while_the_store_was_busy(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, holder: Callable[[Workspace], LockHolder]
) -> None:
    monkeypatch.setenv(BUSY_ENV, "0.3")
    temps = [
        train_model(workspace.models_dir / f".quality-predictor-v{i}.0.partial.json", seed=i)
        for i in (1, 2)
    ]
    lock = holder(workspace)
    with (
        ModelWatcher(workspace, WatchOptions(rescan_every_s=3600.0)),
        closing(Engine(workspace)) as engine,
    ):

        def valid() -> int:
            return sum(a.status == "valid" for a in engine.models().artifacts)

        temps[0].rename(model_path(workspace, "v1.0"))
        wait_for(lambda: valid() == 1, "the first file (its validator is warm then)")
        lock.hold(2.0)
        temps[1].rename(model_path(workspace, "v2.0"))  # its registration meets the busy store
        lock.released()
        wait_for(lambda: valid() == 2, "the second file, once the store is free")


# -- long writers commit in bounded chunks -------------------------------------------------


def _feedback_file(path: Path, pairs: list[tuple[str, float]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prediction_id", "actual"])
        writer.writerows(pairs)
    return path


def test_a_feedback_file_commits_in_chunks_and_a_failure_names_what_was_recorded(
    live: Workspace, tmp_path: Path
) -> None:
    with serving(live) as (router, plog):
        assert plog is not None
        done = router.predict_batch([ROW] * 2500)
        plog.flush()
    pairs = [(p.prediction_id, 40.0) for p in done]
    pairs[2100] = (pairs[2100][0], 66.6)
    actuals = _feedback_file(tmp_path / "actuals.csv", pairs)
    # The store refuses item 2101 (an invariant of its own, here a trigger): the file's second
    # chunk rolls back whole, the first stays recorded.
    with closing(sqlite3.connect(live.db_path)) as conn, conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON batch_labels WHEN NEW.actual = 66.6"
            " BEGIN SELECT RAISE(ABORT, 'not this one'); END"
        )
    failed = beast(live, "feedback", "--file", str(actuals))
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1, failed.stderr
    assert "not this one" in failed.stderr
    assert "the first 2000 of 2500 feedback items were processed" in failed.stderr
    assert count(live, "SELECT count(*) FROM batch_labels") == 2000
    with closing(sqlite3.connect(live.db_path)) as conn, conn:
        conn.execute("DROP TRIGGER refuse")
    again = beast(live, "feedback", "--file", str(actuals), "--json")
    assert again.returncode == 0, again.stderr
    statuses = [r["status"] for r in json.loads(again.stdout)]
    assert statuses == ["duplicate"] * 2000 + ["recorded"] * 500


def test_a_feedback_file_killed_part_way_leaves_whole_chunks_and_a_rerun_finishes_it(
    live: Workspace, tmp_path: Path
) -> None:
    with serving(live) as (router, plog):
        assert plog is not None
        done = router.predict_batch([ROW] * 20_000)
        plog.flush()
    actuals = _feedback_file(tmp_path / "actuals.csv", [(p.prediction_id, 40.0) for p in done])
    cli = [sys.executable, "-m", "engine.cli.main", "--workspace", str(live.root)]
    labelling = subprocess.Popen(
        [*cli, "feedback", "--file", str(actuals)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: count(live, "SELECT count(*) FROM batch_labels") > 0, "a first chunk")
    finally:
        labelling.kill()  # kill -9, part-way through the file
        labelling.wait()
    recorded = count(live, "SELECT count(*) FROM batch_labels")
    assert recorded % 2000 == 0 and 0 < recorded < 20_000, recorded
    assert count(live, "SELECT sum(labelled) FROM rollups") == recorded
    again = beast(live, "feedback", "--file", str(actuals))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"{recorded} duplicate, {20_000 - recorded} recorded"


def test_a_big_csv_of_predictions_is_logged_in_bounded_chunks(
    live: Workspace, tmp_path: Path
) -> None:
    rows = 25_000
    big = tmp_path / "big.csv"
    with big.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["coverage", "complexity", "lint_density", "duplication", "churn"])
        writer.writerows([ROW] * rows)
    result = beast(live, "predict", "--csv", str(big))
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == rows
    sizes = [
        r[0]
        for r in sqlite3.connect(live.db_path).execute(
            "SELECT rows FROM prediction_batches ORDER BY id"
        )
    ]
    assert sizes == [10_000, 10_000, 5_000]
    last = result.stdout.splitlines()[-1].split()[0]
    assert beast(live, "feedback", last, "50").returncode == 0


def test_predictions_the_cli_could_not_log_are_said_so(
    live: Workspace, holder: Callable[[Workspace], LockHolder]
) -> None:
    lock = holder(live)
    lock.hold(60)  # longer than the command: killed below
    try:
        result = beast(live, "predict", json.dumps(ROW), env={BUSY_ENV: "0.2"})
    finally:
        lock.proc.kill()
    assert result.returncode == 1 and result.stdout.count("\n") == 1  # the answer, and
    last = result.stderr.splitlines()[-1]  # after the log writer's own warnings
    assert last.startswith("beast: 1 of 1 predictions were not logged ("), result.stderr


def test_the_evaluation_hashes_model_files_before_it_takes_the_write_lock(
    live: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.monitoring import artifact_alerts

    unlocked: list[bool] = []
    real = artifacts.sha256_of

    def probing(path: Path) -> str:
        other = sqlite3.connect(live.db_path, isolation_level=None, timeout=0)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            unlocked.append(True)
        except sqlite3.OperationalError:
            unlocked.append(False)
        finally:
            other.close()
        return real(path)

    monkeypatch.setattr(artifacts, "sha256_of", probing)
    monkeypatch.setattr(artifact_alerts, "_verified", {})
    with closing(Engine(live)) as engine:
        engine.monitoring.evaluate()
    assert unlocked and all(unlocked), unlocked
