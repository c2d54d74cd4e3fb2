"""Retraining: triggers at their boundaries, the gate, and real jobs in real worker processes
(a model registered and deployed as a candidate, a worse one kept out, a hanging, crashing and
killed trainer, two triggers joining one job)."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from engine import Engine, Workspace
from engine.core import tasks
from engine.core.config import RetrainSettings, parse_config
from engine.core.errors import BeastError, ConfigError
from engine.demo import sample_data
from engine.monitoring import scoring
from engine.retrain import data as retrain_data
from engine.retrain import jobs, triggers
from engine.retrain import search as retrain
from tests.helpers import assert_invariants, beast, beast_here, copy_workspace
from tests.retrain_helpers import (
    LINE,
    model_files,
    queue_job,
    run_job,
    set_retrain,
    version_names,
    wait_dead,
    wait_for_log,
    wait_reaped,
)
from tests.serving_helpers import serving


@pytest.fixture
def rws(retrain_template: Workspace, tmp_path: Path) -> Iterator[Workspace]:
    """A workspace with v1.0 (weak) and v2.0 (strong) registered, nothing deployed."""
    ws = copy_workspace(retrain_template, tmp_path / ".beast-mode")
    yield ws
    assert_invariants(ws)


def _engine(ws: Workspace, production: str | None = None) -> Engine:
    engine = Engine(ws, actor="tester")
    if production is not None:
        engine.deploy(version=production, model=LINE)
    return engine


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


# -- triggers -----------------------------------------------------------------------------


def test_time_trigger_fires_at_interval_days(rws: Workspace) -> None:
    engine = _engine(rws, "v1.0")
    try:
        with engine.store.read() as tx:
            last = triggers.last_training(tx, LINE)
            assert last is not None
            at = _parse(last)
            before = triggers.evaluate(
                tx, LINE, RetrainSettings(), at + timedelta(days=7, seconds=-1)
            )
            exactly = triggers.evaluate(tx, LINE, RetrainSettings(), at + timedelta(days=7))
        assert not before.triggers[0].fires and not before.fires
        assert exactly.triggers[0].fires and exactly.fires
        assert exactly.triggers[0].figure == pytest.approx(7.0)
    finally:
        engine.close()


def test_last_training_is_the_newest_finished_job(rws: Workspace) -> None:
    engine = _engine(rws, "v1.0")
    try:
        with engine.store.write() as tx:
            job_id = queue_job(tx)
            jobs.finish(tx.jobs, job_id, status="failed", error="e", expect_running=False)
            finished = tx.jobs.get(job_id).finished_at
            assert triggers.last_training(tx, LINE) == finished
    finally:
        engine.close()


def _label(ws: Workspace, count: int, seed: int) -> None:
    rows = sample_data.generate(count, seed=seed)
    with serving(ws) as (router, plog):
        assert plog is not None
        done = router.predict_batch([list(map(float, r)) for r in rows.features])
        plog.flush()
    engine = Engine(ws)
    try:
        outcomes = engine.feedback_many(
            [(p.prediction_id, float(s)) for p, s in zip(done, rows.scores, strict=True)]
        )
    finally:
        engine.close()
    assert {o.status for o in outcomes} == {"recorded"}


def test_data_trigger_fires_at_min_new_samples(rws: Workspace) -> None:
    engine = _engine(rws, "v1.0")
    engine.close()
    _label(rws, 99, seed=11)
    engine = Engine(rws)
    try:
        report = engine.retrain_check()
        assert report.triggers[1].figure == 99 and not report.triggers[1].fires
        _label(rws, 1, seed=12)
        report = engine.retrain_check()
        assert report.triggers[1].figure == 100 and report.triggers[1].fires and report.fires
    finally:
        engine.close()


def test_health_trigger_fires_on_a_critical_production_alert(rws: Workspace) -> None:
    engine = _engine(rws, "v1.0")
    try:

        def alert(severity: str, resolved: str | None) -> bool:
            with engine.store.write_sql() as conn:
                conn.execute("DELETE FROM alerts")
                conn.execute(
                    "INSERT INTO alerts (line, version, metric, severity, value, threshold,"
                    " message, first_seen, last_seen, resolved_at)"
                    " VALUES (?, 'v1.0', 'accuracy', ?, 0.5, 0.75, 'accuracy low', 'x', 'x', ?)",
                    (LINE, severity, resolved),
                )
            return engine.retrain_check().triggers[2].fires

        assert alert("critical", None)
        assert not alert("warning", None)
        assert not alert("critical", "2026-01-01T00:00:00.000Z")
    finally:
        engine.close()


def test_no_trigger_without_force_is_refused_by_start(rws: Workspace) -> None:
    engine = _engine(rws, "v1.0")
    try:
        assert not engine.retrain_check().fires
        with pytest.raises(BeastError, match="no retraining trigger fires"):
            engine.start_retrain()
        assert engine.retrain_if_due() is None
        assert engine.jobs() == []
    finally:
        engine.close()


# -- the pure parts ----------------------------------------------------------------------


def _regression(accuracy: float, mae: float) -> retrain.Scores:
    return retrain.Scores("regression", {"accuracy": accuracy, "mae": mae, "rmse": mae}, 100)


def test_gate_boundaries() -> None:
    prod = _regression(0.80, 3.0)
    at = retrain.decide(_regression(0.81, 2.9), prod, min_improvement=0.01, wanted=True)
    below = retrain.decide(_regression(0.809, 2.9), prod, min_improvement=0.01, wanted=True)
    unwanted = retrain.decide(_regression(0.9, 2.0), prod, min_improvement=0.01, wanted=False)
    nan = retrain.decide(
        retrain.score("regression", np.array([np.nan]), np.array([1.0])),
        prod,
        min_improvement=0.0,
        wanted=True,
    )
    alone = retrain.decide(_regression(0.9, 2.0), None, min_improvement=0.0, wanted=True)
    assert at.deploy and "beats production" in at.reason
    assert "holdout accuracy 0.810 vs production 0.800" in at.reason and "MAE 2.90" in at.reason
    assert not below.deploy and "not better than production" in below.reason
    assert not unwanted.deploy and "no --deploy" in unwanted.reason
    assert not nan.deploy and "NaN" in nan.reason
    assert not alone.deploy and "nothing in production" in alone.reason
    nan_scores = retrain.score("regression", np.array([1.0, np.nan]), np.array([1.0, 1.0]))
    assert nan_scores.finite is False


def test_the_binary_gate_compares_auc_from_scoring_metrics() -> None:
    labels = np.array([0, 0, 1, 1, 0, 1], dtype=np.float32)
    ranked = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    good = retrain.score("binary", ranked, labels, threshold=0.5)
    poor = retrain.score("binary", np.array([0.6, 0.2, 0.4, 0.9, 0.3, 0.5]), labels)
    assert good.metrics == scoring.metrics("binary", ranked, labels, threshold=0.5)
    assert set(good.to_json()) == {*tasks.METRICS["binary"], "rows"}
    assert good.primary == 1.0 and poor.primary is not None and poor.primary < 1.0
    wins = retrain.decide(good, poor, min_improvement=0.01, wanted=True)
    loses = retrain.decide(poor, good, min_improvement=0.01, wanted=True)
    assert wins.deploy and "holdout auc 1.000 vs production" in wins.reason
    assert "log loss" in wins.reason
    assert not loses.deploy and "not better than production" in loses.reason
    one_class = retrain.score("binary", np.array([0.2, 0.9]), np.array([1.0, 1.0]))
    refused = retrain.decide(one_class, poor, min_improvement=0.0, wanted=True)
    assert not refused.deploy and "no auc" in refused.reason


def test_next_version_follows_the_seed_convention() -> None:
    assert retrain.next_version(["v1.0", "v1-enhanced", "v3-advanced"], lambda v: False) == "v4.0"
    assert retrain.next_version([], lambda v: False) == "v1.0"
    assert retrain.next_version(["v2.0", "ab-winner-x"], lambda v: v == "v3.0") == "v4.0"


def test_time_split_orders_and_refuses_too_little_data() -> None:
    split = retrain.time_split(100)
    assert (split.train.stop, split.valid.stop, split.holdout.stop) == (64, 80, 100)
    with pytest.raises(ValueError, match="not enough training data"):
        retrain.time_split(retrain.MIN_ROWS - 1)


SEED_COLUMNS = retrain_data.Columns(
    sample_data.FEATURES, "score", "observed_at", "regression", (0.0, 100.0)
)
NO_PREDICTIONS = (
    np.zeros((0, len(sample_data.FEATURES)), np.float32),
    np.zeros(0, np.float32),
    np.zeros(0, np.int64),
)


def test_data_files_skip_foreign_schemas(tmp_path: Path) -> None:
    names = sample_data.FEATURES
    sample_data.write_csv(tmp_path / "a.csv", sample_data.generate(80, seed=1))
    (tmp_path / "other.csv").write_text("x,y\n1,2\n")
    (tmp_path / ".hidden.csv").write_text("junk")
    data = retrain_data.load(tmp_path, SEED_COLUMNS, NO_PREDICTIONS)
    assert data.rows == 80 and [s.name for s in data.used] == ["data/a.csv"]
    assert [s.note() for s in data.skipped] == [
        "data/other.csv: skipped: missing columns "
        + ", ".join((*names, "score", "observed_at"))
        + " (it has x, y)"
    ]
    assert (np.diff(data.at_ms) >= 0).all()
    assert data.at_ms[0] == 1_767_225_600_000  # 2026-01-01T00:00:00Z in ms, as at_ms is logged


def test_retrain_config_keys_are_validated() -> None:
    config = parse_config("[retrain]\ncandidate_traffic = 25\ntimeout_s = 60\n")
    assert config.retrain.candidate_traffic == 25 and config.retrain.timeout_s == 60
    for bad in ("candidate_traffic = 0", "candidate_traffic = 100", "timeout_s = 0", "lease_s = 1"):
        with pytest.raises(ConfigError, match=f"retrain.{bad.split()[0]}"):
            parse_config(f"[retrain]\n{bad}\n")


# -- real jobs ---------------------------------------------------------------------------


def test_job_trains_registers_and_deploys_a_candidate(rws: Workspace) -> None:
    engine = _engine(rws, "v1.0")  # the weak model serves: the retrained one beats it
    engine.close()
    _label(rws, 60, seed=21)
    result = beast(rws, "retrain", "--force", "--deploy", "--json")
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout)
    assert job["status"] == "succeeded" and job["deployed"] is True, job
    assert job["version"] == "v3.0" and "beats production" in job["reason"]
    status = json.loads(beast(rws, "status", "--json").stdout)
    candidate = [d for d in status["deployments"] if d["role"] == "candidate"]
    assert candidate == [dict(candidate[0], version="v3.0", traffic=10, experiment="retrain-v3.0")]
    history = json.loads(beast(rws, "history", "--json").stdout)
    assert history[-1]["action"] == "ab_start" and history[-1]["actor"] == "beast-retrain"
    lineage = json.loads((rws.models_dir / f"{LINE}-v3.0.json.lineage").read_text())
    assert lineage["parent_version"] == "v1.0" and lineage["job"] == job["id"]
    assert lineage["data"]["rows"] == 360 and len(lineage["data"]["sha256"]) == 64
    assert {s["name"] for s in lineage["data"]["sources"]} == {
        "data/samples.csv",
        "labelled predictions",
    }
    assert (
        lineage["metrics"]["holdout"]["accuracy"]
        > lineage["metrics"]["production_holdout"]["accuracy"]
    )
    assert not [n for n in model_files(rws) if n.startswith(".")]
    shown = json.loads(beast(rws, "jobs", str(job["id"]), "--json").stdout)
    assert any("registering v3.0" in line for line in shown["log"])


def test_a_worse_model_is_registered_not_deployed(rws: Workspace) -> None:
    engine = _engine(rws, "v2.0")  # the strong model serves
    try:
        job = run_job(engine, deploy=True)
        assert job.status == "succeeded" and job.version == "v3.0" and not job.deployed
        assert job.reason is not None and "not better than production" in job.reason
        assert "v3.0" in version_names(engine)
        assert [d.version for d in engine.status().deployments] == ["v2.0"]
    finally:
        engine.close()


def test_nan_metrics_are_never_deployed(rws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEAST_TEST_TRAINER_FAULT", "nan")
    engine = _engine(rws, "v1.0")
    try:
        job = run_job(engine, deploy=True)
        assert job.status == "succeeded" and not job.deployed
        assert job.reason is not None and "NaN" in job.reason
    finally:
        engine.close()


def test_a_hanging_trainer_is_killed_with_its_group(
    rws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_retrain(rws, timeout_s=2, lease_s=6)  # the worker's own timer acts, not the lease
    monkeypatch.setenv("BEAST_TEST_TRAINER_FAULT", "hang")
    engine = _engine(rws, "v1.0")
    try:
        before = version_names(engine)
        job = engine.start_retrain(force=True)
        child = int(wait_for_log(engine, job.id, "child pid").rsplit(" ", 1)[-1].rstrip(")"))
        with engine.store.read() as tx:
            worker = tx.jobs.lease(job.id).pid
        job = engine.wait_job(job.id, 20)
        assert job.status == "failed" and job.error is not None and "timed out" in job.error
        assert wait_reaped(worker), "the worker is dead and reaped: no zombie"
        assert wait_dead(child), "the timeout killed the whole process group"
        assert version_names(engine) == before
        assert model_files(rws) == sorted(f"{LINE}-{v}.json" for v in ("v1.0", "v2.0"))
    finally:
        engine.close()


def test_a_crashing_trainer_fails_the_job(rws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEAST_TEST_TRAINER_FAULT", "crash")
    engine = _engine(rws, "v1.0")
    try:
        before = version_names(engine)
        job = run_job(engine)
        assert job.status == "failed" and job.error == "RuntimeError: test fault: trainer crashed"
        assert version_names(engine) == before
        result = beast(rws, "retrain", "--force")
        assert result.returncode == 1 and "trainer crashed" in result.stdout + result.stderr
    finally:
        engine.close()


def test_a_killed_worker_fails_when_its_lease_expires(
    rws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_retrain(rws, lease_s=4)
    monkeypatch.setenv("BEAST_TEST_TRAINER_FAULT", "hang")
    engine = _engine(rws, "v1.0")
    try:
        job = engine.start_retrain(force=True)
        child = int(wait_for_log(engine, job.id, "child pid").rsplit(" ", 1)[-1].rstrip(")"))
        with engine.store.read() as tx:
            worker = tx.jobs.lease(job.id).pid
        os.kill(worker, signal.SIGKILL)
        assert wait_dead(worker)
        job = engine.wait_job(job.id, 20)
        assert job.status == "failed" and job.error is not None and "lease expired" in job.error
        assert wait_dead(child), "the reaper kills what the lost worker left running"
        assert wait_reaped(worker) and not [n for n in model_files(rws) if n.startswith(".")]
    finally:
        engine.close()


def test_two_triggers_at_once_make_one_job(rws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    set_retrain(rws, timeout_s=3, lease_s=2)
    monkeypatch.setenv("BEAST_TEST_TRAINER_FAULT", "hang")
    _engine(rws, "v1.0").close()
    found: list[int] = []
    barrier = threading.Barrier(4)

    def trigger(name: str) -> None:
        engine = Engine(rws, actor=name)
        try:
            barrier.wait()
            found.append(engine.start_retrain(force=True, trigger=name).id)
        finally:
            engine.close()

    threads = [threading.Thread(target=trigger, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    engine = Engine(rws)
    try:
        assert len(set(found)) == 1 and len(engine.jobs()) == 1
        assert sorted(engine.job(found[0]).trigger.split(", ")) == ["t0", "t1", "t2", "t3"]
        assert engine.wait_job(found[0], 20).status == "failed"
    finally:
        engine.close()


def test_the_scheduler_starts_a_due_job_once(
    rws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_retrain(rws, min_new_samples=50)
    monkeypatch.setenv("BEAST_TEST_TRAINER_FAULT", "crash")
    _engine(rws, "v1.0").close()
    _label(rws, 50, seed=31)
    engine = Engine(rws)
    try:
        job = engine.retrain_if_due()
        assert job is not None and job.trigger == "data"
        assert engine.wait_job(job.id, 30).status == "failed"
        assert engine.retrain_if_due() is None, "the cooldown holds the next attempt back"
        assert len(engine.jobs()) == 1
    finally:
        engine.close()


def test_cli_check_and_nothing_to_do(rws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    _engine(rws, "v1.0").close()
    check = beast_here(capsys, rws, "retrain", "--check", "--json")
    assert check.returncode == 0
    doc = json.loads(check.stdout)
    assert [t["name"] for t in doc["triggers"]] == ["time", "data", "health"]
    assert doc["fires"] is False
    idle = beast_here(capsys, rws, "retrain")
    assert idle.returncode == 0 and "nothing to do" in idle.stdout
    assert json.loads(beast_here(capsys, rws, "jobs", "--json").stdout) == []
    assert beast_here(capsys, rws, "jobs", "0").returncode == 2
    assert beast_here(capsys, rws, "jobs", "7").returncode == 1


def test_parquet_data_files_are_read(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow", reason="Parquet support comes with pyarrow (mlflow extra)")
    import pandas as pd

    samples = sample_data.generate(60, seed=4)
    frame = pd.DataFrame(samples.features, columns=list(sample_data.FEATURES))
    frame["score"] = samples.scores
    frame["observed_at"] = list(samples.observed_at)
    frame.to_parquet(tmp_path / "s.parquet")
    data = retrain_data.load(tmp_path, SEED_COLUMNS, NO_PREDICTIONS)
    assert data.rows == 60 and data.skipped == ()
    assert np.allclose(data.x, samples.features) and np.allclose(data.y, samples.scores)


def test_reaping_fails_lost_and_overdue_jobs_and_spares_strangers(rws: Workspace) -> None:
    import subprocess

    from engine.retrain import workers

    engine = _engine(rws, "v1.0")
    stranger = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        with engine.store.write() as tx:
            old_boot = queue_job(tx, trigger="a", lease_s=60)
            tx.conn.execute("UPDATE jobs SET boot_id = 'an-earlier-boot' WHERE id = ?", (old_boot,))
        assert [j.id for j in engine.reap_jobs()] == [old_boot]
        assert "never started" in (engine.job(old_boot).error or "")
        with engine.store.write() as tx:
            overdue = queue_job(tx, trigger="b", timeout_s=1, lease_s=60)
            jobs.claim(tx.jobs, overdue, pid=stranger.pid, pgid=stranger.pid, lease_s=60)
            tx.conn.execute("UPDATE jobs SET deadline = deadline - 60 WHERE id = ?", (overdue,))
        assert [j.id for j in engine.reap_jobs()] == [overdue]
        assert "timed out" in (engine.job(overdue).error or "")
        assert stranger.poll() is None, "a process without the job's marker is never killed"
        assert engine.reap_jobs() == []
        assert not workers.kill_group(stranger.pid, overdue, rws.root)
    finally:
        stranger.kill()
        stranger.wait()
        engine.close()


def test_clean_files_removes_only_what_a_job_left_half_done(tmp_path: Path) -> None:
    from engine.retrain import workers

    temp = workers.temp_model_path(tmp_path, 7)
    leftovers = [
        temp,
        temp.with_name(temp.name + ".lineage"),
        tmp_path / f".{temp.name}.lineage.tmp",
        tmp_path / f"{LINE}-v9.0.json.lineage",  # its model never got its final name
    ]
    kept = [tmp_path / f"{LINE}-v1.0.json", tmp_path / f"{LINE}-v1.0.json.lineage"]
    for path in leftovers + kept:
        path.write_text("x")
    workers.clean_files(tmp_path, 7, LINE, "v9.0")
    workers.clean_files(tmp_path, 7, LINE, "v1.0")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in kept)


def test_a_worker_finds_the_project_on_its_python_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's PYTHONPATH leads with the directory that holds the `engine` package (not
    the package itself, whose sub-packages would shadow top-level names such as `core`)."""
    import subprocess

    import engine
    from engine.retrain import workers

    started: list[dict[str, str]] = []

    class Spawned:  # the edge: record what would be started, start nothing
        pid = 4242

        def __init__(self, args: list[str], *, env: dict[str, str], **_: object) -> None:
            started.append(env)

        def wait(self) -> int:
            return 0

    monkeypatch.setattr(subprocess, "Popen", Spawned)
    assert workers.launch(tmp_path, 7) == 4242
    first = Path(started[0]["PYTHONPATH"].split(os.pathsep)[0])
    assert first == Path(engine.__file__).resolve().parent.parent


def test_too_little_data_fails_the_job_plainly(rws: Workspace) -> None:
    sample_data.write_csv(rws.data_dir / "samples.csv", sample_data.generate(20, seed=3))
    engine = _engine(rws, "v1.0")
    try:
        job = run_job(engine)
        assert job.status == "failed"
        assert job.error == "not enough training data: 20 rows (needs at least 50)"
        assert not [n for n in model_files(rws) if n.startswith(".")]
    finally:
        engine.close()


def test_deploy_is_wanted_by_flag_by_a_joining_trigger_or_by_auto_deploy(rws: Workspace) -> None:
    from engine.server.train_worker import RunningJob

    def wanted(*, flags: tuple[bool, ...], auto: bool) -> bool:
        set_retrain(rws, auto_deploy=auto)
        engine = _engine(rws)
        try:
            with engine.store.write() as tx:
                for i, flag in enumerate(flags):
                    job_id = queue_job(tx, trigger=f"t{i}", deploy=flag)
            answer = RunningJob(engine, job_id, LINE).wants_deploy()
            with engine.store.write() as tx:
                jobs.finish(tx.jobs, job_id, status="failed", error="done", expect_running=False)
            return answer
        finally:
            engine.close()

    assert not wanted(flags=(False,), auto=False)
    assert wanted(flags=(False, True), auto=False), "a joining --deploy is kept"
    assert wanted(flags=(True, False), auto=False), "a joining trigger never takes it back"
    assert wanted(flags=(False,), auto=True)
