"""Worker processes for tests/test_concurrency.py and tests/test_crash.py.

Each worker is a real OS process acting on one shared workspace through `Engine` (or through
the real `beast` command). This module imports only the engine — never XGBoost nor
tests.helpers — so a worker starts in a fraction of a second: the models are registered by the
`registered` fixture already, and workers deploy them by version name only.

Used two ways:
- as multiprocessing targets (spawn context): `race_main`, `duel_main`, `migrate_main`; each
  puts one report dict on a queue when done;
- as a script, `python -m tests.workers.race_worker chaos WS SEED` (loop forever until killed,
  printing `ok <history id>` after every change) and
  `python -m tests.workers.race_worker die WS POINT ACTION [ARG]` (kill -9 itself at a chosen
  point of one mutation).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import traceback
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from engine import BeastError, Change, Conflict, Engine, Expect, NotFound, StateChanged, Workspace
from engine.deploy import service as deploy_service

REPO = Path(__file__).resolve().parents[2]
VERSIONS = ("v1.0", "v2.0", "v3.0", "v4.0")
ACTIONS = ("deploy", "ab_start", "promote", "abort", "rollback")
WEIGHTS = (25, 25, 20, 15, 15)
# The refusals a racing client may get. Anything else (StateBusy, StoreError, a non-BeastError)
# is a failure of the state store, and the tests fail on it.
EXPECTED_REFUSALS = (BeastError, Conflict, NotFound, StateChanged)
BARRIER_TIMEOUT_S = 120.0

Outcome = dict[str, Any]


def _is_expected_refusal(exc: BaseException) -> bool:
    return type(exc) in EXPECTED_REFUSALS


def mutate(
    engine: Engine,
    action: str,
    *,
    version: str | None = None,
    test: str | None = None,
    expect: Expect | None = None,
    note: str | None = None,
) -> Change:
    """One mutation through the facade, by action name."""
    if action == "deploy":
        return engine.deploy(version=version, expect=expect, note=note)
    if action == "ab_start":
        assert test is not None
        return engine.deploy(version=version, traffic=10, ab_test=test, expect=expect, note=note)
    if action == "promote":
        assert test is not None
        return engine.promote(test, force=True, expect=expect, note=note)
    if action == "abort":
        assert test is not None
        return engine.abort(test, expect=expect, note=note)
    if action == "rollback":
        return engine.rollback(version, expect=expect, note=note)
    raise ValueError(f"unknown action {action}")


def cli_args(
    action: str,
    *,
    version: str | None = None,
    test: str | None = None,
    expect_revision: int | None = None,
    note: str | None = None,
) -> list[str]:
    """The `beast` command line doing what `mutate` does."""
    if action == "deploy":
        args = ["deploy", "--version", str(version)]
    elif action == "ab_start":
        args = ["deploy", "--version", str(version), "--traffic", "10", "--ab-test", str(test)]
    elif action == "promote":
        args = ["promote", str(test), "--force"]
    elif action == "abort":
        args = ["abort", str(test)]
    elif action == "rollback":
        args = ["rollback"] + ([version] if version else [])
    else:
        raise ValueError(f"unknown action {action}")
    if expect_revision is not None:
        args += ["--expect-revision", str(expect_revision)]
    if note is not None:
        args += ["--note", note]
    return [*args, "--json"]


def run_cli(ws_root: str, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real `beast` command, as tests.helpers.beast runs it (without importing XGBoost)."""
    env = dict(os.environ)
    env.pop("BEAST_HOME", None)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.main", "--workspace", ws_root, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(REPO),
        check=False,
    )


def _api_outcome(engine: Engine, action: str, **kw: Any) -> Outcome:
    out: Outcome = {"action": action, "via": "api", "note": kw.get("note")}
    try:
        change = mutate(engine, action, **kw)
    except Exception as exc:
        out["error"] = type(exc).__name__
        out["message"] = str(exc)
        if _is_expected_refusal(exc):
            out["result"] = "refused"
        else:
            out["result"] = "unexpected"
            out["traceback"] = traceback.format_exc()
        return out
    out["result"] = "ok" if change.changed else "unchanged"
    out["history_id"] = change.entry.id if change.entry else None
    out["message"] = change.message
    return out


def _cli_outcome(ws_root: str, action: str, **kw: Any) -> Outcome:
    expect = kw.pop("expect", None)
    revision = expect.revision if expect is not None else None
    proc = run_cli(ws_root, cli_args(action, expect_revision=revision, **kw))
    out: Outcome = {
        "action": action,
        "via": "cli",
        "note": kw.get("note"),
        "returncode": proc.returncode,
        "stderr": proc.stderr,
    }
    if proc.returncode == 0:
        document = json.loads(proc.stdout)
        out["result"] = "ok" if document["changed"] else "unchanged"
        out["history_id"] = document["history"]["id"] if document["history"] else None
        out["message"] = document["message"]
    elif proc.returncode == 1:
        out["result"] = "refused"
        out["message"] = proc.stderr.strip()
    else:
        out["result"] = "unexpected"
        out["message"] = proc.stderr.strip()
    return out


def random_round(
    engine: Engine, rng: random.Random, tag: str, *, ws_root: str | None = None, cli: bool = False
) -> Outcome:
    """One random mutation, as a racing client would issue it after glancing at the state."""
    action = rng.choices(ACTIONS, weights=WEIGHTS)[0]
    status = engine.status()
    running = [e.name for e in status.experiments if e.status == "running"]
    ended = [e.name for e in status.experiments if e.status != "running"]
    kw: dict[str, Any] = {"note": tag}
    if action in ("deploy", "ab_start"):
        kw["version"] = rng.choice(VERSIONS)
    if action == "ab_start":
        kw["test"] = tag
    if action in ("promote", "abort"):
        if running:
            kw["test"] = running[0]
        elif ended and rng.random() < 0.5:
            kw["test"] = rng.choice(ended)
        else:
            kw["test"] = f"no-such-test-{tag}"
    if rng.random() < 0.25:
        # What the client saw; the race may have moved it on (StateChanged).
        kw["expect"] = Expect(revision=status.revisions.get("quality-predictor", 0))
    if cli:
        assert ws_root is not None
        out = _cli_outcome(ws_root, action, **kw)
    else:
        out = _api_outcome(engine, action, **kw)
    out["tag"] = tag
    return out


def _report(queue: Queue[Any], worker: int, outcomes: list[Outcome], crash: str | None) -> None:
    queue.put({"worker": worker, "pid": os.getpid(), "outcomes": outcomes, "crash": crash})


def race_main(
    ws_root: str, worker: int, spec: dict[str, Any], barrier: Barrier, queue: Queue[Any]
) -> None:
    """`spec["rounds"]` random mutations (seeded by `spec["seed"]`; a `spec["cli_share"]` of
    them through the real `beast` command), started together with the other workers."""
    outcomes: list[Outcome] = []
    engine = Engine(Workspace(Path(ws_root)), actor=f"racer-{worker}")
    try:
        rng = random.Random(spec["seed"])
        engine.status()  # open and warm the connection before the start line
        barrier.wait(timeout=BARRIER_TIMEOUT_S)
        for n in range(spec["rounds"]):
            cli = rng.random() < spec["cli_share"]
            tag = f"w{worker}-r{n}"
            outcomes.append(random_round(engine, rng, tag, ws_root=ws_root, cli=cli))
        _report(queue, worker, outcomes, None)
    except BaseException:
        _report(queue, worker, outcomes, traceback.format_exc())
    finally:
        engine.close()


def duel_main(
    ws_root: str, worker: int, inbox: Queue[Any], barrier: Barrier, queue: Queue[Any]
) -> None:
    """Rounds of one order each, released at the same instant as the other duellist's.

    An order is a dict {"action", "test", "expect_production", "tag"}; None ends the duel.
    Per round: get the order, wait at the start line, act, wait at the finish line.
    """
    outcomes: list[Outcome] = []
    engine = Engine(Workspace(Path(ws_root)), actor=f"duellist-{worker}")
    try:
        engine.status()
        while True:
            order = inbox.get(timeout=BARRIER_TIMEOUT_S)
            if order is None:
                break
            expect = (
                Expect(production=order["expect_production"])
                if order.get("expect_production")
                else None
            )
            barrier.wait(timeout=BARRIER_TIMEOUT_S)
            out = _api_outcome(
                engine, order["action"], test=order.get("test"), expect=expect, note=order["tag"]
            )
            out["tag"] = order["tag"]
            outcomes.append(out)
            barrier.wait(timeout=BARRIER_TIMEOUT_S)
        _report(queue, worker, outcomes, None)
    except BaseException:
        _report(queue, worker, outcomes, traceback.format_exc())
    finally:
        engine.close()


def migrate_main(roots: list[str], worker: int, barrier: Barrier, queue: Queue[Any]) -> None:
    """For each fresh workspace: at the start line, open it (migrating) and read its status."""
    from engine.store.sqlite.connection import SqliteStore

    outcomes: list[Outcome] = []
    try:
        for root in roots:
            barrier.wait(timeout=BARRIER_TIMEOUT_S)
            ws = Workspace(Path(root))
            store = SqliteStore(ws.db_path)
            engine = Engine(ws, actor=f"opener-{worker}")
            out: Outcome = {"root": root}
            try:
                out["applied"] = store.migrate()
                out["deployments"] = len(engine.status().deployments)
                out["result"] = "ok"
            except Exception as exc:
                out["result"] = "error"
                out["error"] = type(exc).__name__
                out["message"] = str(exc)
                out["traceback"] = traceback.format_exc()
            finally:
                store.close()
                engine.close()
            outcomes.append(out)
        _report(queue, worker, outcomes, None)
    except BaseException:
        _report(queue, worker, outcomes, traceback.format_exc())


# -- script modes (for kill -9) --------------------------------------------------------------


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def chaos(ws_root: str, seed: int) -> None:
    """Mutate forever; print `ok <history id>` after each change that returned."""
    engine = Engine(Workspace(Path(ws_root)), actor=f"chaos-{seed}")
    rng = random.Random(seed)
    engine.status()
    _say("ready")
    n = 0
    while True:
        out = random_round(engine, rng, f"c{seed}-r{n}")
        if out["result"] == "ok":
            _say(f"ok {out['history_id']}")
        elif out["result"] == "refused":
            _say(f"refused {out['tag']} {out['action']} {out['error']}: {out['message']}")
        else:
            _say(f"unexpected {json.dumps(out)}")
        n += 1


def _sigkill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    threading.Event().wait()  # pragma: no cover - never returns


def die(ws_root: str, point: str, action: str, arg: str | None) -> None:
    """Run one mutation and kill -9 this process at `point`:

    - `in-transaction`: after the state and its history row are written, before COMMIT;
    - `after-commit`: after COMMIT, before deployments/history.json is rewritten.
    """
    engine = Engine(Workspace(Path(ws_root)), actor="doomed")
    if point == "in-transaction":
        original = deploy_service.apply

        def apply_then_die(*args: Any, **kw: Any) -> Any:
            original(*args, **kw)
            _sigkill_self()

        deploy_service.apply = apply_then_die
    elif point == "after-commit":
        Engine.export_history = lambda self: _sigkill_self()  # type: ignore[method-assign]
    else:
        raise SystemExit(f"unknown point {point}")
    if action == "rollback":
        mutate(engine, "rollback", expect=Expect(production=arg) if arg else None)
    elif action in ("deploy",):
        mutate(engine, "deploy", version=arg)
    elif action in ("promote", "abort"):
        mutate(engine, action, test=arg)
    else:
        raise SystemExit(f"unknown action {action}")
    raise SystemExit("the mutation returned: the crash point was never reached")


def main(argv: list[str]) -> None:
    mode = argv[0]
    if mode == "chaos":
        chaos(argv[1], int(argv[2]))
    elif mode == "die":
        die(argv[1], argv[2], argv[3], argv[4] if len(argv) > 4 else None)
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
