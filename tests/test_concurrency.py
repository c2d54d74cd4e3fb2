"""Real OS processes racing mutations on ONE workspace (RELIABILITY.md, "Concurrency and the
shared database").

Workers are spawned processes (tests/workers/race_worker.py, which never imports XGBoost);
they start together at a multiprocessing Barrier. Randomness is seeded and only picks actions
and versions; every assertion holds whatever the interleaving.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from engine import Engine, Workspace
from engine.core.records import HistoryEntry, Snapshot
from engine.store.sqlite.schema import MIGRATION_SET, MIGRATIONS
from tests.helpers import assert_invariants, beast, history_of, production_of
from tests.pg import STORE_URL_ENV
from tests.workers import race_worker

CTX = mp.get_context("spawn")
LINE = "quality-predictor"
WORKER_TIMEOUT_S = 180.0
FORBIDDEN = ("database is locked", "Traceback", "internal error", "state busy")


def _run_workers(
    target: Callable[..., None], per_worker_args: list[tuple[Any, ...]], queue: Any
) -> list[dict[str, Any]]:
    """Start one spawned process per args tuple (the queue is appended), collect their reports."""
    procs = [CTX.Process(target=target, args=(*args, queue)) for args in per_worker_args]
    for proc in procs:
        proc.start()
    try:
        reports = [queue.get(timeout=WORKER_TIMEOUT_S) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():  # pragma: no cover - only when a worker hangs
                proc.kill()
                proc.join()
    assert [p.exitcode for p in procs] == [0] * len(procs)
    crashes = [r["crash"] for r in reports if r["crash"]]
    assert not crashes, "a worker crashed:\n" + "\n".join(crashes)
    return sorted(reports, key=lambda r: int(r["worker"]))


def _assert_clean_refusal(outcome: dict[str, Any]) -> None:
    """A refusal is an expected BeastError (API) or exit 1 with one `beast: ...` line (CLI)."""
    message = str(outcome.get("message", ""))
    for bad in FORBIDDEN:
        assert bad not in message, outcome
    if outcome["via"] == "cli":
        assert outcome["returncode"] == 1, outcome
        lines = outcome["stderr"].splitlines()
        assert len(lines) == 1, outcome
        assert lines[0].startswith("beast: "), outcome
    else:
        assert outcome["error"] in ("BeastError", "Conflict", "NotFound", "StateChanged"), outcome


def _assert_history_chain(entries: list[HistoryEntry]) -> None:
    """Ids increase; each row of a line starts from the state the previous row left."""
    ids = [e.id for e in entries]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    last: dict[str, Snapshot] = {}
    for entry in entries:
        assert entry.from_state == last.get(entry.line, Snapshot()), entry
        last[entry.line] = entry.to_state


# -- random mutations from 2 and 8 processes -------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("procs", "rounds", "store_backend"),
    [
        pytest.param(2, 150, "sqlite", id="2procs-300-sqlite"),
        pytest.param(8, 50, "sqlite", id="8procs-400-sqlite"),
        pytest.param(8, 25, "postgresql", id="8procs-200-postgresql"),
    ],
    indirect=["store_backend"],
)
def test_racing_mutations_keep_the_invariants_and_one_history_row_per_change(
    registered: Workspace, procs: int, rounds: int
) -> None:
    root = str(registered.root)
    assert history_of(registered) == []
    barrier = CTX.Barrier(procs)
    queue = CTX.Queue()
    reports = _run_workers(
        race_worker.race_main,
        [
            (root, w, {"seed": 1000 * procs + w, "rounds": rounds, "cli_share": 0.04}, barrier)
            for w in range(procs)
        ],
        queue,
    )
    outcomes = [o for r in reports for o in r["outcomes"]]
    assert len(outcomes) == procs * rounds

    unexpected = [o for o in outcomes if o["result"] not in ("ok", "refused")]
    assert not unexpected, unexpected
    for outcome in outcomes:
        if outcome["result"] == "refused":
            _assert_clean_refusal(outcome)
        elif outcome["via"] == "cli":
            assert outcome["returncode"] == 0 and outcome["stderr"] == "", outcome
    assert any(o["via"] == "cli" for o in outcomes), "no round went through the real CLI"

    # Every change reported by a worker has exactly one history row, and vice versa.
    successes = [o for o in outcomes if o["result"] == "ok"]
    entries = history_of(registered)
    assert len(entries) == len(successes)
    by_id = {e.id: e for e in entries}
    assert sorted(o["history_id"] for o in successes) == sorted(by_id)
    for outcome in successes:
        entry = by_id[outcome["history_id"]]
        assert (entry.action, entry.note) == (outcome["action"], outcome["tag"])
    _assert_history_chain(entries)

    # The export was rewritten under a lock after each commit: never left behind by a race.
    engine = Engine(registered)
    try:
        report = engine.doctor()
    finally:
        engine.close()
    assert report.problems == ()
    assert report.warnings == ()
    assert_invariants(registered)
    counts = Counter((o["action"], o["result"]) for o in outcomes)
    print(f"\n{procs} procs × {rounds} rounds: {sorted(counts.items())}")


# -- duels: two processes acting on the same thing at the same instant ------------------------


def _duel(
    ws: Workspace, rounds: int, setup: Callable[[Engine, int], list[dict[str, Any]]]
) -> list[tuple[list[dict[str, Any]], int]]:
    """Run `rounds` duels; return each round's two outcomes and the history rows it added."""
    barrier = CTX.Barrier(3)  # the two duellists and this process
    queue = CTX.Queue()
    inboxes = [CTX.Queue(), CTX.Queue()]
    procs = [
        CTX.Process(
            target=race_worker.duel_main, args=(str(ws.root), w, inboxes[w], barrier, queue)
        )
        for w in range(2)
    ]
    for proc in procs:
        proc.start()
    engine = Engine(ws, actor="referee")
    added: list[int] = []
    try:
        for n in range(rounds):
            orders = setup(engine, n)
            before = len(engine.history())
            for inbox, order in zip(inboxes, orders, strict=True):
                inbox.put(order)
            barrier.wait(timeout=WORKER_TIMEOUT_S)  # start line: both act now
            barrier.wait(timeout=WORKER_TIMEOUT_S)  # finish line
            added.append(len(engine.history()) - before)
        for inbox in inboxes:
            inbox.put(None)
        reports = sorted(
            (queue.get(timeout=WORKER_TIMEOUT_S) for _ in procs), key=lambda r: int(r["worker"])
        )
    finally:
        engine.close()
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():  # pragma: no cover - only when a worker hangs
                proc.kill()
                proc.join()
    assert [p.exitcode for p in procs] == [0, 0]
    crashes = [r["crash"] for r in reports if r["crash"]]
    assert not crashes, "a duellist crashed:\n" + "\n".join(crashes)
    per_round = list(zip(reports[0]["outcomes"], reports[1]["outcomes"], strict=True))
    assert len(per_round) == rounds
    return [([a, b], rows) for (a, b), rows in zip(per_round, added, strict=True)]


def _other_version(production: str | None, n: int) -> str:
    choices = [v for v in race_worker.VERSIONS if v != production]
    return choices[n % len(choices)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("store_backend", "rounds"), [("sqlite", 150), ("postgresql", 20)], indirect=["store_backend"]
)
def test_promote_and_abort_of_the_same_test_at_the_same_instant_one_wins(
    registered: Workspace, rounds: int
) -> None:
    rng = random.Random(7)
    expected_status: list[str] = []

    def setup(engine: Engine, n: int) -> list[dict[str, Any]]:
        if n == 0:
            engine.deploy(version="v1.0")
        production = production_of(registered)
        engine.deploy(version=_other_version(production, n), traffic=10, ab_test=f"duel-{n}")
        actions = [rng.choice(("promote", "abort")) for _ in range(2)]
        return [
            {"action": a, "test": f"duel-{n}", "tag": f"duel-{n}-w{w}"}
            for w, a in enumerate(actions)
        ]

    results = _duel(registered, rounds, setup)
    engine = Engine(registered)
    try:
        experiments = {e.name: e for e in engine.status().experiments}
    finally:
        engine.close()
    for n, (pair, added) in enumerate(results):
        winners = [o for o in pair if o["result"] == "ok"]
        losers = [o for o in pair if o["result"] != "ok"]
        assert len(winners) == 1, (n, pair)
        assert added == 1, (n, pair)
        (loser,) = losers
        assert loser["result"] == "refused", (n, loser)
        assert loser["error"] == "Conflict", (n, loser)
        assert "already ended" in loser["message"], (n, loser)
        _assert_clean_refusal(loser)
        want = "promoted" if winners[0]["action"] == "promote" else "aborted"
        assert experiments[f"duel-{n}"].status == want, (n, pair)
        expected_status.append(want)
    entries = history_of(registered)
    assert len(entries) == 1 + 2 * rounds  # the first deploy, then a start and an end per round
    _assert_history_chain(entries)
    assert_invariants(registered)
    print(f"\nduels: {Counter(expected_status)}")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("store_backend", "rounds"), [("sqlite", 100), ("postgresql", 20)], indirect=["store_backend"]
)
def test_the_same_rollback_from_two_processes_at_once_rolls_back_once(
    registered: Workspace, rounds: int
) -> None:
    previous: list[str] = []

    def setup(engine: Engine, n: int) -> list[dict[str, Any]]:
        if n == 0:
            engine.deploy(version="v1.0")
        before = production_of(registered)
        assert before is not None
        target = _other_version(before, n)
        engine.deploy(version=target)
        previous.append(before)
        return [
            {"action": "rollback", "expect_production": target, "tag": f"rb-{n}-w{w}"}
            for w in range(2)
        ]

    results = _duel(registered, rounds, setup)
    for n, (pair, added) in enumerate(results):
        assert added == 1, (n, pair)
        assert [o["result"] for o in pair].count("ok") == 1, (n, pair)
        for outcome in pair:
            if outcome["result"] == "refused":
                assert outcome["error"] == "StateChanged", (n, outcome)
                _assert_clean_refusal(outcome)
            else:
                assert outcome["result"] in ("ok", "unchanged"), (n, outcome)
    assert production_of(registered) == previous[-1]
    entries = history_of(registered)
    assert [e.action for e in entries].count("rollback") == rounds
    _assert_history_chain(entries)
    assert_invariants(registered)


# -- a writer holding the lock past the busy timeout ------------------------------------------


@contextmanager
def _writer_lock_held(ws: Workspace) -> Iterator[None]:
    """Another process's write transaction, open for the block: SQLite's BEGIN IMMEDIATE, or
    PostgreSQL's writers' advisory lock (what every write transaction takes first)."""
    store_url = os.environ.get(STORE_URL_ENV)
    if not store_url:
        holder = sqlite3.connect(ws.db_path, isolation_level=None, timeout=0)
        try:
            holder.execute("BEGIN IMMEDIATE")
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    import psycopg

    from engine.store.postgres.locks import WRITE_LOCK

    with psycopg.connect(store_url) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
        yield


@pytest.mark.parametrize(
    ("args", "store_backend"),
    [
        pytest.param(("rollback",), "sqlite", id="rollback"),
        pytest.param(("deploy", "--version", "v3.0"), "sqlite", id="deploy"),
        pytest.param(
            ("deploy", "--version", "v3.0", "--traffic", "10", "--ab-test", "held"),
            "sqlite",
            id="ab-start",
        ),
        pytest.param(("rollback",), "postgresql", id="rollback-postgresql"),
    ],
    indirect=["store_backend"],
)
def test_cli_reports_state_busy_when_a_writer_holds_the_lock(
    registered: Workspace, args: tuple[str, ...]
) -> None:
    engine = Engine(registered)
    try:
        engine.deploy(version="v1.0")
        engine.deploy(version="v2.0")
        history_before = engine.history()
    finally:
        engine.close()
    export_before = registered.history_export_path.read_bytes()

    with _writer_lock_held(registered):
        started = time.monotonic()
        proc = beast(registered, *args, env={"BEAST_BUSY_TIMEOUT_S": "0.5"})
        elapsed = time.monotonic() - started

    assert proc.returncode == 1, proc
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("beast: state busy"), proc.stderr
    assert "0.5s" in lines[0]
    for bad in ("database is locked", "Traceback"):
        assert bad not in proc.stderr
    # at most the deploy's checklist, printed before the change was tried: no result
    assert all(line.startswith(("preflight ", "  [")) for line in proc.stdout.splitlines())
    assert elapsed >= 0.5  # it did wait for the timeout, not fail at once
    # Nothing was changed, nothing half-done.
    assert history_of(registered) == history_before
    assert production_of(registered) == "v2.0"
    assert registered.history_export_path.read_bytes() == export_before
    # And once the lock is released, the same command goes through.
    assert beast(registered, *args).returncode == 0
    assert len(history_of(registered)) == len(history_before) + 1
    assert_invariants(registered)


# -- eight processes opening a fresh database at once -----------------------------------------


@pytest.mark.slow
def test_eight_processes_opening_a_fresh_database_migrate_it_exactly_once(tmp_path: Path) -> None:
    procs, rounds = 8, 6
    roots: list[str] = []
    for n in range(rounds):
        ws = Workspace(tmp_path / f"fresh-{n}" / ".beast-mode")
        ws.create()  # directories and config.toml only: no database yet
        if n % 2:
            ws.db_path.touch()  # an empty file (say, left by a crash before the first write)
        roots.append(str(ws.root))
    barrier = CTX.Barrier(procs)
    queue = CTX.Queue()
    reports = _run_workers(
        race_worker.migrate_main, [(roots, w, barrier) for w in range(procs)], queue
    )
    names = [name for name, _sql in MIGRATIONS]
    for n, root in enumerate(roots):
        outcomes = [o for r in reports for o in r["outcomes"] if o["root"] == root]
        assert len(outcomes) == procs
        errors = [o for o in outcomes if o["result"] != "ok"]
        assert not errors, (n, errors)
        migrators = [o for o in outcomes if o["applied"]]
        assert len(migrators) == 1, (n, outcomes)
        assert migrators[0]["applied"] == names
        assert all(o["deployments"] == 0 for o in outcomes)
        with sqlite3.connect(Path(root) / "beast.db") as conn:
            rows = conn.execute(
                "SELECT name, count(*) FROM _sqlite_migrations WHERE migration_set = ?"
                " GROUP BY name ORDER BY min(id)",
                (MIGRATION_SET,),
            ).fetchall()
            total = conn.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0]
        conn.close()
        assert rows == [(name, 1) for name in names]
        assert total == len(names)
        assert_invariants(Workspace(Path(root)))


# -- a process with several connections to the database ---------------------------------------


def test_a_second_engine_in_this_process_does_not_release_the_first_ones_locks(
    registered: Workspace,
) -> None:
    """Closing any descriptor of a file drops every POSIX lock the process holds on it. If
    opening an engine read the database file from Python while another engine of the same
    process was connected, a second process closing its connection took itself for the last
    one and deleted the -wal and -shm files under the live connection (the next open failed
    with "disk I/O error")."""
    first = Engine(registered)
    try:
        first.deploy(version="v1.0")
        for n in range(3):
            second = Engine(registered)
            try:
                second.status()
            finally:
                second.close()
            other = beast(registered, "status")
            assert other.returncode == 0, other.stderr
            wal = registered.db_path.with_name(registered.db_path.name + "-wal")
            shm = registered.db_path.with_name(registered.db_path.name + "-shm")
            assert wal.exists() and shm.exists(), n
            first.deploy(version=("v2.0", "v1.0")[n % 2])
            third = Engine(registered)
            try:
                assert len(third.history()) == n + 2
            finally:
                third.close()
    finally:
        first.close()
    assert_invariants(registered)
