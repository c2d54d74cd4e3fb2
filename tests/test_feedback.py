"""Feedback (RELIABILITY.md "Predictions and feedback"): the documented answers — recorded,
duplicate, conflict, pending (then matched once the row is flushed), not found — and two
processes answering the same prediction at once.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import Engine, Workspace
from engine.core import ids
from engine.core.errors import BeastError, Conflict, NotFound
from engine.monitoring import feedback as labels
from engine.store.opening import open_store
from tests.conftest import BOTH_BACKENDS
from tests.helpers import REPO
from tests.serving_helpers import count, logged, logged_count, serving

TOLERANCE = 5.0
SEED = labels.Contracts()  # any finite actual; accurate within ±TOLERANCE
ROW = [0.8, 12.0, 0.3, 0.05, 40.0]


@pytest.fixture
def live(registered: Workspace) -> Workspace:
    engine = Engine(registered, actor="tester")
    try:
        engine.deploy(version="v1.0")
    finally:
        engine.close()
    return registered


def _labelled(ws: Workspace) -> int:
    return count(ws, "SELECT sum(labelled) FROM rollups")


def _actuals(ws: Workspace) -> dict[str, Any]:
    """Prediction id → its actual (None while unlabelled), single predictions and batches'."""
    return {r["pid"]: r["actual"] for r in logged(ws)}


def _actual_of(ws: Workspace, pid: str) -> Any:
    return _actuals(ws)[pid]


@BOTH_BACKENDS
def test_recorded_then_duplicate_then_conflict(live: Workspace) -> None:
    with serving(live, interval=3600) as (router, log):
        assert log is not None
        prediction = router.predict(ROW)
        log.flush()
    store = open_store(live.db_path)
    try:
        assert prediction.score is not None
        actual = prediction.score + 2.0
        assert labels.record(store, prediction.prediction_id, actual, SEED) == "recorded"
        assert labels.record(store, prediction.prediction_id, actual, SEED) == "duplicate"
        with pytest.raises(Conflict, match="already has actual") as caught:
            labels.record(store, prediction.prediction_id, actual + 10, SEED)
        assert caught.value.http_status == 409
    finally:
        store.close()
    assert _actual_of(live, prediction.prediction_id) == actual  # the first value stays
    assert _labelled(live) == 1
    assert count(live, "SELECT sum(within) FROM rollups") == 1  # |error| = 2 ≤ 5


@BOTH_BACKENDS
def test_early_feedback_is_pending_then_matched_once_when_the_row_is_flushed(
    live: Workspace,
) -> None:
    with serving(live, interval=3600) as (router, log):
        assert log is not None
        early, other = router.predict(ROW), router.predict(ROW)
        store = open_store(live.db_path)
        try:
            assert early.score is not None
            far = early.score + 50.0
            assert labels.record(store, early.prediction_id, far, SEED) == "pending"
            assert labels.record(store, early.prediction_id, far, SEED) == "pending"
            with pytest.raises(Conflict, match="waiting"):
                labels.record(store, early.prediction_id, far + 1, SEED)
            assert count(live, "SELECT count(*) FROM pending_feedback") == 1
            assert logged_count(live) == 0  # still buffered
            log.flush()
            assert count(live, "SELECT count(*) FROM pending_feedback") == 0
            assert _actual_of(live, early.prediction_id) == far
            assert _labelled(live) == 1
            assert count(live, "SELECT sum(within) FROM rollups") == 0  # 50 points off
            # Later flushes do not count it again; a repeat is now a duplicate.
            router.predict(ROW)
            log.flush()
            assert _labelled(live) == 1
            assert labels.record(store, early.prediction_id, far, SEED) == "duplicate"
            assert _actual_of(live, other.prediction_id) is None
        finally:
            store.close()


@BOTH_BACKENDS
def test_a_batch_rows_feedback_has_the_same_answers_as_a_single_predictions(
    live: Workspace,
) -> None:
    with serving(live, interval=3600) as (router, log):
        assert log is not None
        batch = router.predict_batch([ROW] * 8)
        store = open_store(live.db_path)
        try:
            third, fifth = batch[3], batch[5]
            assert third.score is not None and fifth.score is not None
            # Before the flush: pending, then matched when the batch is written.
            assert labels.record(store, third.prediction_id, third.score, SEED) == "pending"
            log.flush()
            assert count(live, "SELECT count(*) FROM pending_feedback") == 0
            assert _actual_of(live, third.prediction_id) == third.score
            assert labels.record(store, fifth.prediction_id, fifth.score + 9, SEED) == ("recorded")
            assert labels.record(store, fifth.prediction_id, fifth.score + 9, SEED) == ("duplicate")
            with pytest.raises(Conflict, match="already has actual"):
                labels.record(store, fifth.prediction_id, fifth.score, SEED)
            # The batch's prefix with a row number past its end is no prediction.
            beyond = third.prediction_id[: ids.PREFIX_CHARS] + f"{8:05x}"
            assert labels.record(store, beyond, 1.0, SEED) == "pending"
        finally:
            store.close()
    actuals = _actuals(live)
    assert [actuals[p.prediction_id] for p in batch] == [
        *(None, None, None, third.score, None, fifth.score + 9, None, None)
    ]
    assert _labelled(live) == 2
    assert count(live, "SELECT sum(within) FROM rollups") == 1  # 0 and 9 points off
    assert count(live, "SELECT count(*) FROM batch_labels") == 2
    # The row past the end never comes: its feedback expires as unmatched, the rest stays.
    store = open_store(live.db_path)
    try:
        with store.write() as tx:
            later = ids.issued_ms(beyond) + labels.PENDING_EXPIRY_MS + 60_000
            assert labels.match_pending(tx, SEED) == 0
            assert labels.expire_pending(tx, now_ms=later) == 1
    finally:
        store.close()
    assert count(live, "SELECT count(*) FROM unmatched_feedback") == 1
    assert count(live, "SELECT count(*) FROM pending_feedback") == 0


@BOTH_BACKENDS
def test_pending_feedback_whose_row_never_comes_expires_and_is_reported(
    live: Workspace,
) -> None:
    """Feedback for a prediction whose row never reaches the log (dropped, or never served)
    is not kept waiting forever: after PENDING_EXPIRY_MS it moves to unmatched_feedback,
    `beast monitor` counts it, and the id answers NotFound from then on."""
    with serving(live, interval=3600) as (router, log):
        assert log is not None
        served = router.predict(ROW)  # logged below: its feedback must not expire
        now = ids.issued_ms(served.prediction_id)
        lost = ids.new_id(now)  # an id whose row never arrives
        store = open_store(live.db_path)
        try:
            with store.write() as tx:
                assert labels.label(tx, lost, 70.0, SEED, now_ms=now) == "pending"
                assert labels.label(tx, served.prediction_id, 70.0, SEED, now) == "pending"
            log.flush()  # the served row arrives and its feedback is matched
            later = now + labels.PENDING_EXPIRY_MS + 1
            with store.write() as tx:
                assert labels.expire_pending(tx, now_ms=now + labels.PENDING_EXPIRY_MS) == 0
                assert labels.expire_pending(tx, now_ms=later) == 1
                assert labels.expire_pending(tx, now_ms=later) == 0  # once
                assert labels.counts(tx) == (0, 1)
            with pytest.raises(NotFound):
                labels.record(store, lost, 70.0, SEED)
        finally:
            store.close()
    assert _actual_of(live, served.prediction_id) == 70.0
    engine = Engine(live)
    try:
        doc = engine.report().to_json()
    finally:
        engine.close()
    assert doc["feedback"] == {"pending": 0, "unmatched": 1}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli.main",
            "--workspace",
            str(live.root),
            "monitor",
            "--readonly",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert "1 never matched a logged prediction" in done.stdout


@BOTH_BACKENDS
def test_unknown_and_malformed_ids_are_not_found(live: Workspace) -> None:
    store = open_store(live.db_path)
    try:
        old = ids.new_id(time.time_ns() // 1_000_000 - 10 * 60_000)  # ten minutes old
        with pytest.raises(NotFound, match=f"no prediction {old}") as caught:
            labels.record(store, old, 50.0, SEED)
        assert caught.value.http_status == 404
        for bad in ("hello", "", "0" * 32, old.upper(), old[:-1], old + "0", 12345, None):
            with pytest.raises(NotFound, match="not a prediction id"):
                labels.record(store, bad, 50.0, SEED)  # type: ignore[arg-type]
    finally:
        store.close()
    assert count(live, "SELECT count(*) FROM pending_feedback") == 0


@pytest.mark.parametrize("actual", [math.nan, math.inf, -math.inf, True, "70", None, 10**400])
def test_the_actual_must_be_a_finite_number(live: Workspace, actual: Any) -> None:
    store = open_store(live.db_path)
    try:
        with pytest.raises(BeastError, match="actual must be"):
            labels.record(store, ids.new_id(), actual, SEED)
    finally:
        store.close()


@BOTH_BACKENDS
def test_a_batch_of_feedback_answers_every_item(live: Workspace) -> None:
    with serving(live, interval=3600) as (router, log):
        assert log is not None
        done = router.predict_batch(np.random.default_rng(1).random((3, 5)))
        log.flush()
        buffered = router.predict(ROW)
        store = open_store(live.db_path)
        try:
            a, b, c = (p.prediction_id for p in done)
            old = ids.new_id(time.time_ns() // 1_000_000 - 3_600_000)
            answers = labels.record_many(
                store,
                [
                    (a, 70.0),
                    (a, 70.0),
                    (b, 60.0),
                    (b, 61.0),
                    (buffered.prediction_id, 80.0),
                    (old, 1.0),
                    ("nope", 1.0),
                    (c, math.nan),
                ],
                SEED,
            )
        finally:
            store.close()
    assert [(o.status, o.http_status) for o in answers] == [
        ("recorded", 200),
        ("duplicate", 200),
        ("recorded", 200),
        ("conflict", 409),
        ("pending", 202),
        ("not found", 404),
        ("not found", 404),
        ("invalid", 422),
    ]
    assert all(o.message for o in answers if o.http_status >= 400)
    assert _labelled(live) == 3  # a, b, and the buffered one matched at close


def test_feedback_from_two_processes_at_once_records_exactly_one(
    live: Workspace, tmp_path: Path
) -> None:
    with serving(live) as (router, _log):
        predictions = router.predict_batch(np.random.default_rng(2).random((300, 5)))
    pids = [p.prediction_id for p in predictions]
    (tmp_path / "pids.json").write_text(json.dumps(pids))
    start_at = time.time() + 1.5
    code = (
        "import json, sys, time\n"
        "from engine.monitoring import feedback as labels\n"
        "from engine.core.errors import Conflict\n"
        "from engine.store.opening import open_store\n"
        "pids = json.load(open(sys.argv[1])); value = float(sys.argv[3])\n"
        "store = open_store(__import__('pathlib').Path(sys.argv[2]))\n"
        "time.sleep(max(0, float(sys.argv[4]) - time.time()))\n"
        "out = []\n"
        "for pid in pids:\n"
        "    try:\n"
        "        out.append(labels.record(store, pid, value, labels.Contracts()))\n"
        "    except Conflict:\n"
        "        out.append('conflict')\n"
        "print(json.dumps(out))\n"
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                code,
                str(tmp_path / "pids.json"),
                str(live.db_path),
                value,
                str(start_at),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for value in ("10", "20")
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        results.append(json.loads(out))
    actuals = _actuals(live)
    for i, pid in enumerate(pids):
        answers = sorted([results[0][i], results[1][i]])
        assert answers == ["conflict", "recorded"], (pid, answers)
        winner = 10.0 if results[0][i] == "recorded" else 20.0
        assert actuals[pid] == winner
    assert _labelled(live) == len(pids)  # each counted once


def test_prediction_ids_are_uuid7_unique_time_ordered_and_fork_safe() -> None:
    import os
    import uuid

    now = time.time_ns() // 1_000_000
    singles = [ids.new_id() for _ in range(5000)]
    batch = ids.batch_ids(ids.batch_prefix(), 5000)
    for pid in (*singles[:100], *batch[:100]):
        parsed = uuid.UUID(pid)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert ids.is_valid(pid) and abs(ids.issued_ms(pid) - now) < 60_000
    assert len({*singles, *batch}) == 10_000
    assert ids.issued_ms(ids.new_id(1234)) == 1234
    assert ids.batch_prefix(1234)[:12] == ids.new_id(1234)[:12]
    # A batch's ids: one prefix, the row number in the last five hex digits.
    assert {ids.batch_row(pid)[0] for pid in batch} == {batch[0][: ids.PREFIX_CHARS]}
    assert [ids.batch_row(pid)[1] for pid in batch] == list(range(5000))
    assert ids.batch_ids(batch[0][: ids.PREFIX_CHARS], 1) == [batch[0]]
    with pytest.raises(ValueError, match="1 to 1048576 rows"):
        ids.batch_ids(ids.batch_prefix(), ids.MAX_BATCH_ROWS + 1)
    # A forked child must not replay the parent's buffered randomness.
    ids.new_id()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write, ids.new_id(7).encode())
        os._exit(0)
    os.waitpid(child, 0)
    from_child = os.read(read, 64).decode()
    os.close(read)
    os.close(write)
    assert from_child != ids.new_id(7)
