"""`beast init --demo --reset` and `make demo-reset`: the demo workspace rebuilt from nothing,
and never a workspace the demo did not build; `make demo` on an old one says how old it is."""

from __future__ import annotations

import json
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from engine import Engine, Workspace
from engine.core import engine_lock
from engine.demo import live as demo_live
from engine.demo import workspace as demo
from tests.helpers import REPO, assert_invariants, beast


def _one_line_refusal(done: subprocess.CompletedProcess[str], words: str) -> None:
    assert done.returncode == 1, done.stdout
    assert done.stderr.count("\n") == 1 and words in done.stderr, done.stderr


def test_reset_refuses_a_workspace_the_demo_did_not_build(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / ".beast-mode")
    Engine.init(ws)[0].close()  # what `beast init` does; the refusal below is the real command's
    (ws.data_dir / "mine.csv").write_text("precious\n")
    before = sorted(p.relative_to(ws.root) for p in ws.root.rglob("*"))
    _one_line_refusal(beast(ws, "init", "--demo", "--reset"), "is not a demo workspace")
    assert sorted(p.relative_to(ws.root) for p in ws.root.rglob("*")) == before
    assert (ws.data_dir / "mine.csv").read_text() == "precious\n"


def test_reset_refuses_a_demo_workspace_an_engine_serves(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / ".beast-mode")
    engine, _ = Engine.init(ws)
    engine.close()
    (ws.root / demo.MARKER).write_text(json.dumps({"demo": True, "built_at": "2026-12-06"}))
    port = demo_live.free_port()
    log = tmp_path / "engine.log"
    with log.open("ab") as out:
        served = subprocess.Popen(
            demo_live.beast_command(ws, "engine", "--port", str(port)),
            stdout=out,
            stderr=out,
            cwd=str(REPO),
        )
    try:
        deadline = time.monotonic() + 60
        while engine_lock.running_pid(ws) is None:  # its lock: taken before it serves
            assert served.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        _one_line_refusal(beast(ws, "init", "--demo", "--reset"), f"(pid {served.pid})")
        assert ws.db_path.is_file() and (ws.root / demo.MARKER).is_file()
    finally:
        assert demo_live.stop(served) == 0, log.read_text()


def test_reset_wants_demo(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / ".beast-mode")
    _one_line_refusal(beast(ws, "init", "--reset"), "use it with --demo")
    assert not ws.root.exists()


def test_reset_rebuilds_the_demo_from_nothing(demo_ws: Workspace) -> None:
    # The session's demo build, copied (a build trains and validates five versions: ~20 s);
    # the reset below is this test's own, through the real `beast`.
    ws = demo_ws
    built = demo.built_at(ws)
    assert built is not None
    engine = Engine(ws, actor="tester")
    try:
        engine.abort(demo.DEMO_TEST, note="played with it", reason="test")
    finally:
        engine.close()
    (ws.root / "logs").mkdir()
    (ws.root / "logs" / "demo-engine.log").write_text("yesterday's run\n")
    # A second `beast init --demo` refuses (it has deployments); --reset starts over.
    _one_line_refusal(beast(ws, "init", "--demo"), "already has deployments")
    done = beast(ws, "init", "--demo", "--reset", timeout=300)
    assert done.returncode == 0, done.stderr
    assert "demo workspace" in done.stdout
    assert not (ws.root / "logs").exists()
    again = demo.built_at(ws)
    assert again is not None and again > built
    engine = Engine(ws)
    try:
        assert engine.experiment(demo.DEMO_TEST).status == "running"
        assert [e.action for e in engine.history() if e.action == "abort"] == []
        assert len(engine.models().artifacts) == 5
    finally:
        engine.close()
    assert_invariants(ws)


def test_make_demo_reset_runs_the_reset_on_the_demo_workspace() -> None:
    done = subprocess.run(
        ["make", "-n", "demo-reset"], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert f"--workspace {demo_live.DEFAULT_DEMO_DIR} init --demo --reset" in done.stdout


def test_an_existing_demo_says_how_old_it_is_and_how_to_start_fresh(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / ".beast-mode")
    engine, _ = Engine.init(ws)
    engine.close()
    assert "built before demo.json" in demo.describe(ws)
    at = datetime(2026, 12, 6, 14, 2, tzinfo=UTC)
    (ws.root / demo.MARKER).write_text(json.dumps({"demo": True, "built_at": at.isoformat()}))
    line = demo.describe(ws, now=at + timedelta(hours=19, minutes=10))
    local = at.astimezone().strftime("%Y-%m-%d %H:%M")
    assert line == (
        f"demo workspace {ws.root} from {local} (19 h ago, no test {demo.DEMO_TEST}); "
        "start fresh: make demo-reset"
    )
    assert "(25 min ago," in demo.describe(ws, now=at + timedelta(minutes=25))
