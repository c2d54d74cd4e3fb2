"""The jobs repository's contract (engine.store.jobs), on both backends (SQLite and
PostgreSQL answer the same way). Clock readings are the caller's, so they are given here."""

from __future__ import annotations

import pytest

from engine import Engine
from engine.core.errors import NotFound, StoreError
from engine.retrain import jobs
from engine.store.base import Tx
from tests.conftest import BOTH_BACKENDS
from tests.retrain_helpers import LINE

pytestmark = BOTH_BACKENDS

BOOT = "this-boot"


def _create(tx: Tx, *, lease_expires: float = 100.0, timeout_s: float = 30.0) -> int:
    return tx.jobs.create(
        line=LINE,
        trigger="t",
        message="waiting",
        force=True,
        deploy=False,
        at="2026-01-01T00:00:00.000Z",
        actor="tester",
        boot_id=BOOT,
        lease_expires=lease_expires,
        timeout_s=timeout_s,
    )


def _claim(tx: Tx, job_id: int, *, now: float = 10.0) -> bool:
    return tx.jobs.claim(
        job_id,
        at="2026-01-01T00:00:01.000Z",
        pid=4242,
        pgid=4242,
        boot_id=BOOT,
        now=now,
        lease_expires=now + 5,
        message="started",
    )


def _finish(tx: Tx, job_id: int, *, version: str | None = None, running: bool = True) -> bool:
    return tx.jobs.finish(
        job_id,
        status="failed",
        at="2026-01-01T00:00:02.000Z",
        message="failed: e",
        version=version,
        deployed=False,
        reason=None,
        error="e",
        expect_running=running,
    )


def test_a_claim_is_taken_once_and_sets_the_deadline_from_the_timeout(engine: Engine) -> None:
    with engine.store.write() as tx:
        job_id = _create(tx, timeout_s=30)
        assert tx.jobs.active(LINE) == tx.jobs.get(job_id)
        assert _claim(tx, job_id, now=10.0)
        assert not _claim(tx, job_id, now=11.0), "a running job is not claimed again"
        lease = tx.jobs.lease(job_id)
    assert (lease.status, lease.pid, lease.pgid, lease.boot_id) == ("running", 4242, 4242, BOOT)
    assert lease.deadline == 40.0 and lease.lease_expires == 15.0


def test_a_job_ends_once_and_keeps_its_recorded_version(engine: Engine) -> None:
    with engine.store.write() as tx:
        job_id = _create(tx)
        assert not _finish(tx, job_id), "a queued job is not running"
        _claim(tx, job_id)
        tx.jobs.set_version(job_id, "v9.0")
        assert _finish(tx, job_id)
        assert not _finish(tx, job_id, running=False), "ended already"
        done = tx.jobs.get(job_id)
        assert not tx.jobs.renew(job_id, 1e9), "a finished job's lease is not renewed"
        assert tx.jobs.active(LINE) is None and tx.jobs.last_finished(LINE) == done
    assert (done.status, done.version, done.error, done.finished) == ("failed", "v9.0", "e", True)


def test_a_joined_trigger_may_ask_for_a_deploy_and_never_takes_it_back(engine: Engine) -> None:
    with engine.store.write() as tx:
        job_id = _create(tx)
        tx.jobs.join(job_id, trigger="t+drift", deploy=True)
        tx.jobs.join(job_id, trigger="t+drift+manual", deploy=False)
        lease, job = tx.jobs.lease(job_id), tx.jobs.get(job_id)
    assert lease.deploy and job.trigger == "t+drift+manual"
    with pytest.raises(StoreError, match="refused"), engine.store.write() as tx:
        _create(tx)  # a second active job on the line: the store's unique index refuses it
    with engine.store.read() as tx:
        assert [j.id for j in tx.jobs.recent(5)] == [job_id], "the refused write left nothing"


def test_expired_and_overdue_jobs_by_the_callers_clock(engine: Engine) -> None:
    with engine.store.write() as tx:
        job_id = _create(tx, lease_expires=100.0, timeout_s=30)
        assert tx.jobs.expired(BOOT, now=99.0) == []
        assert [j.id for j in tx.jobs.expired(BOOT, now=101.0)] == [job_id]
        assert [j.id for j in tx.jobs.expired("another-boot", now=0.0)] == [job_id]
        assert tx.jobs.expired("another-boot", now=0.0, line="another-line") == []
        _claim(tx, job_id, now=10.0)  # deadline 40
        assert tx.jobs.overdue(BOOT, now=39.0) == []
        assert [j.id for j in tx.jobs.overdue(BOOT, now=41.0)] == [job_id]
        assert tx.jobs.overdue("another-boot", now=41.0) == []


def test_log_lines_come_back_in_the_order_written(engine: Engine) -> None:
    with engine.store.write() as tx:
        job_id = _create(tx)
        for i, at in enumerate(["2026-01-01T00:00:09.000Z", "2026-01-01T00:00:01.000Z"]):
            tx.jobs.append_log(job_id, at, f"line {i}")
        assert tx.jobs.log(job_id) == [
            ("2026-01-01T00:00:09.000Z", "line 0"),
            ("2026-01-01T00:00:01.000Z", "line 1"),
        ], "order is the order of writing, never the times"
        assert tx.jobs.recent(5) == [tx.jobs.get(job_id)]
        with pytest.raises(NotFound, match="no job 999"):
            tx.jobs.get(999)


def test_what_retraining_reads_of_the_other_domains(engine: Engine) -> None:
    with engine.store.read() as tx:
        names = tx.retrain_inputs.feature_names(LINE)
        assert names is not None and len(names) > 0
        assert tx.retrain_inputs.feature_names("no-such-line") is None
        assert tx.retrain_inputs.version_names(LINE) == ["v1.0", "v2.0", "v3.0", "v4.0"]
        assert tx.retrain_inputs.production_registered_at(LINE) is None  # nothing deployed
        assert tx.retrain_inputs.labelled_since(LINE, 0) == 0


def test_labelled_predictions_are_counted_from_minutes_and_compacted_hours(
    engine: Engine,
) -> None:
    from engine.core.rollups import Delta

    hour, later = 60 * 100, 60 * 200  # minutes since the epoch
    with engine.store.write() as tx:
        version_id = tx.registry.get_version(LINE, "v1.0").id
        tx.rollups.add_minutes(
            {
                (version_id, "", hour + 5): Delta(n=2, labelled=2, within=2),
                (version_id, "", later + 1): Delta(n=4, labelled=3, within=1),
            }
        )
        tx.rollups.compact_before(hour + 60)  # the first minute is now its hour's row
    with engine.store.read() as tx:
        counted = [tx.retrain_inputs.labelled_since(LINE, m) for m in (0, hour + 30, later + 2)]
        assert tx.retrain_inputs.labelled_since("another-line", 0) == 0
    assert counted == [5, 5, 0], "an hour holding the minute counts whole"


def _succeed(tx: Tx, job_id: int, version: str | None) -> bool:
    return tx.jobs.finish(
        job_id,
        status="succeeded",
        at="2026-01-01T00:00:02.000Z",
        message="done",
        version=version,
        deployed=False,
        reason=None,
        error=None,
        expect_running=True,
    )


def test_the_last_trained_input_is_the_newest_succeeded_job_that_made_a_version(
    engine: Engine,
) -> None:
    with engine.store.write() as tx:
        assert tx.jobs.last_trained(LINE) is None
        made = _create(tx)
        _claim(tx, made)
        assert jobs.record_input(tx.jobs, made, LINE, "h1") is None
        _succeed(tx, made, "v3.0")
        tx.jobs.set_input_hash(made, "changed after the end")  # not running: left alone
        assert tx.jobs.last_trained(LINE) == ("h1", "v3.0")
        same = _create(tx)
        _claim(tx, same)
        assert jobs.record_input(tx.jobs, same, LINE, "h1") == "v3.0"
        _succeed(tx, same, None)  # registered nothing: not a trained input
        failed = _create(tx)
        _claim(tx, failed)
        jobs.record_input(tx.jobs, failed, LINE, "h2")
        _finish(tx, failed, version="v4.0")
        assert tx.jobs.last_trained(LINE) == ("h1", "v3.0")
        other = _create(tx)
        _claim(tx, other)
        assert jobs.record_input(tx.jobs, other, LINE, "h3") is None
