"""The wall clock jumps an hour (RELIABILITY.md): leases keep the monotonic clock, history and
rollback follow ids, never the stored timestamps."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from engine import Engine
from engine.core import clock as engine_clock
from engine.retrain import jobs
from tests.helpers import assert_invariants
from tests.retrain_helpers import queue_job


def jump_wall_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Every wall-clock reading the engine makes moves by `seconds`; the monotonic one not."""
    real_time, real_ns = time.time, time.time_ns
    monkeypatch.setattr(time, "time", lambda: real_time() + seconds)
    monkeypatch.setattr(time, "time_ns", lambda: real_ns() + int(seconds * 1e9))

    class Jumped(datetime):
        @classmethod
        def now(cls, tz: object = None) -> Jumped:  # type: ignore[override]
            moved = datetime.now(UTC) + timedelta(seconds=seconds)
            return cls.fromtimestamp(moved.timestamp(), tz=UTC)

    monkeypatch.setattr(engine_clock, "datetime", Jumped)


@pytest.mark.parametrize("seconds", [3600, -3600])
def test_a_wall_clock_jump_neither_expires_nor_extends_a_lease(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, seconds: int
) -> None:
    with engine.store.write() as tx:
        job_id = queue_job(tx, timeout_s=60)
    jump_wall_clock(monkeypatch, seconds)
    with engine.store.read() as tx:
        assert jobs.lost(tx.jobs) == []  # an hour of wall clock is nothing to the lease
    # What does expire it: the monotonic clock passing the lease (and the claim window).
    later = jobs.monotonic() + jobs.CLAIM_WINDOW_S + 10
    monkeypatch.setattr(jobs, "monotonic", lambda: later)
    with engine.store.read() as tx:
        assert [found.id for found in jobs.lost(tx.jobs)] == [job_id]


def test_history_and_rollback_follow_ids_when_the_clock_goes_back(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine.deploy(version="v1.0")
    jump_wall_clock(monkeypatch, -3600)
    engine.deploy(version="v2.0")
    first, second = engine.history()
    assert second.at < first.at  # stored times went back an hour …
    change = engine.rollback()  # … the production before the last change is still v1.0
    assert "v2.0 → v1.0" in change.message
    entries = engine.history()
    assert [e.action for e in entries] == ["deploy", "deploy", "rollback"]
    assert [e.id for e in entries] == sorted(e.id for e in entries)
    assert_invariants(engine.workspace)
