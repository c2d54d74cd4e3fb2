"""`beast simulate` and `beast console --demo`'s live part (engine/demo/live.py), for real.

The workspace has the demo's shape, built smaller (two small real XGBoost models of each of the
demo's lines trained on its generated data — the score line and the binary `revert-risk` —
each with production and an A/B test) and real SQLite.
In-process, the schedule runs on a virtual clock, so a simulated minute takes a second or
two; over HTTP, `beast simulate --url` drives a real `beast engine` for a few real seconds.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from engine import Engine, Workspace
from engine.demo import live as demo_live
from engine.demo import sample_data
from engine.demo import workspace as demo
from engine.demo.simulate import (
    CHANGE_PREFIX,
    KEY_PREFIX,
    SimOptions,
    SimulatedClock,
    Simulation,
    with_lines,
)
from engine.demo.transport import InProcess
from engine.monitoring import baselines, scoring
from engine.store.sql.prediction_log import count_logged
from tests.helpers import REPO, assert_invariants, beast, built_once, copy_workspace
from tests.serving_helpers import logged

DEMO_ROWS = 3000


def _train(ws: Workspace, version: str, depth: int, rounds: int) -> Path:
    """A small real model of the demo's line, with the lineage sidecar training writes."""
    names = list(sample_data.FEATURES)
    data = sample_data.generate(DEMO_ROWS, seed=7)
    cut = int(DEMO_ROWS * 0.8)
    booster = xgb.train(
        {"max_depth": depth, "eta": 0.3, "nthread": 1, "seed": 7},
        xgb.DMatrix(data.features[:cut], label=data.scores[:cut], feature_names=names),
        num_boost_round=rounds,
    )
    path = ws.models_dir / f"{demo.LINE}-{version}.json"
    booster.save_model(str(path))
    errors = np.abs(booster.inplace_predict(data.features[cut:]) - data.scores[cut:])
    reference = baselines.VersionReference.build(
        data.features[:cut],
        np.asarray(booster.inplace_predict(data.features[:cut])),
        sample_data.FEATURES,
    )
    baselines.write_sidecar(
        path,
        reference,
        metrics={"accuracy": float(np.mean(errors <= 5)), "mae": float(np.mean(errors))},
    )
    return path


def _train_binary(ws: Workspace, version: str, depth: int, rounds: int) -> Path:
    """A small real binary:logistic model of the demo's revert-risk line, with its sidecar."""
    names = list(sample_data.REVERT_FEATURES)
    data = sample_data.generate_reverts(DEMO_ROWS, seed=11)
    cut = int(DEMO_ROWS * 0.8)
    x, y = data.features, data.reverted
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": depth, "nthread": 1, "seed": 11},
        xgb.DMatrix(x[:cut], label=y[:cut], feature_names=names),
        num_boost_round=rounds,
    )
    path = ws.models_dir / f"{demo.REVERT_LINE}-{version}.json"
    booster.save_model(str(path))
    reference = baselines.VersionReference.build(
        x[:cut], np.asarray(booster.inplace_predict(x[:cut])), sample_data.REVERT_FEATURES
    )
    holdout = np.asarray(booster.inplace_predict(x[cut:]), dtype=np.float64)
    baselines.write_sidecar(
        path, reference, metrics=scoring.metrics("binary", holdout, y[cut:].astype(np.float64))
    )
    return path


@pytest.fixture(scope="session")
def _demo_template(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The demo's shape, smaller: production v1-enhanced, v3-advanced on 10% in retrain-v3;
    revert-risk v1.0 in production, v2.0 on 20% in revert-v2."""
    return built_once(tmp_path_factory, "small-demo", _build_small_demo)


def _build_small_demo(ws: Workspace) -> None:
    engine, _ = Engine.init(ws)
    engine.close()
    demo.declare_revert_line(ws)
    engine = Engine(ws)
    try:
        engine.register(_train(ws, "v1-enhanced", 3, 40))
        engine.register(_train(ws, "v3-advanced", 4, 60))
        engine.register(_train_binary(ws, "v1.0", 2, 20))
        engine.register(_train_binary(ws, "v2.0", 3, 40))
        engine.deploy(version="v1-enhanced", model=demo.LINE)
        engine.deploy(version="v3-advanced", model=demo.LINE, traffic=10, ab_test=demo.DEMO_TEST)
        engine.deploy(version="v1.0", model=demo.REVERT_LINE)
        engine.deploy(version="v2.0", model=demo.REVERT_LINE, traffic=20, ab_test=demo.REVERT_TEST)
    finally:
        engine.close()


@pytest.fixture
def demo_ws(_demo_template: Workspace, tmp_path: Path) -> Iterator[Workspace]:
    ws = copy_workspace(_demo_template, tmp_path / "demo" / ".beast-mode")
    yield ws
    assert_invariants(ws)


def _db(ws: Workspace) -> sqlite3.Connection:
    conn = sqlite3.connect(ws.db_path)
    conn.row_factory = sqlite3.Row
    return conn


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper that is not us counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def test_a_simulated_minute_in_process_logs_labels_drifts_and_fires_an_alert(
    demo_ws: Workspace,
) -> None:
    engine = Engine(demo_ws, actor="tester")
    transport = InProcess(engine)
    production_psi: list[tuple[float, float]] = []
    clock = SimulatedClock()

    def evaluate() -> list[str]:
        found = engine.monitoring.evaluate()
        for v in found.versions:
            if v.line == demo.LINE and v.role == "production" and v.drift.data is not None:
                production_psi.append((clock.t, v.drift.data))
        return [a["message"] for a in found.alerts if a["status"] == "firing"]

    options = with_lines(
        SimOptions(duration_s=60, evaluate_every_s=10, spike_first_s=20, spike_s=2),
        {demo.LINE, demo.REVERT_LINE},
    )
    assert (options.score_line, options.binary_line) == (demo.LINE, demo.REVERT_LINE)
    try:
        report = Simulation(transport, options, clock=clock, evaluate=evaluate).run()
    finally:
        transport.close()
        engine.close()

    assert report.elapsed_s == pytest.approx(60, abs=0.1)
    binary = int(options.backlog * options.binary_share) + int(
        options.rate * options.binary_share * 60
    )
    scored = options.backlog + int(options.rate * 60)
    assert report.by_line == {demo.LINE: scored, demo.REVERT_LINE: binary}
    assert report.predictions == scored + binary and report.failed == 0
    assert report.spikes == 1 and report.storm_reads >= options.storm_workers
    assert report.alerts_seen, "no alert fired within the first simulated minute"
    rows = logged(demo_ws)
    with _db(demo_ws) as conn:
        alerts = conn.execute("SELECT count(*) FROM alerts").fetchone()[0]
    keyed = [r for r in rows if (r["key"] or "").startswith((KEY_PREFIX, CHANGE_PREFIX))]
    assert len(rows) == report.predictions == len(keyed)  # every row keyed as demo traffic
    assert len({r["key"] for r in rows}) > 500  # many repositories and changes …
    for test in (demo.DEMO_TEST, demo.REVERT_TEST):
        arms: dict[str, set[str]] = defaultdict(set)
        for r in rows:
            if r["experiment"] == test:
                arms[r["key"]].add(r["arm"])
        assert arms and max(map(len, arms.values())) == 1  # … each always on the same arm
        assert {a for found in arms.values() for a in found} == {"production", "candidate"}
    # The binary line is predicted and labelled 0/1, in both arms.
    binary_rows = [r for r in rows if r["line"] == demo.REVERT_LINE]
    assert len(binary_rows) == binary
    assert all(0 <= r["score"] <= 1 for r in binary_rows)
    binary_labels = [r["actual"] for r in binary_rows if r["actual"] is not None]
    assert len(binary_labels) > 0.7 * binary and set(binary_labels) == {0.0, 1.0}
    # Every label sent found its prediction (pending ones were matched at the flush).
    labelled = sum(r["actual"] is not None for r in rows)
    assert labelled == report.labels_sent > 0.7 * report.predictions
    assert set(report.label_answers) <= {"recorded", "pending"}
    assert alerts >= 1
    early = [psi for t, psi in production_psi if 15 <= t <= 25]
    assert early and production_psi[-1][1] > 1.5 * max(early)  # drift creeps in


def test_cli_drives_a_real_engine_over_http(demo_ws: Workspace, tmp_path: Path) -> None:
    port = demo_live.free_port()
    log = tmp_path / "engine.log"
    with log.open("ab") as out:
        engine = subprocess.Popen(
            demo_live.beast_command(demo_ws, "engine", "--port", str(port)),
            stdout=out,
            stderr=out,
            cwd=str(REPO),
        )
    try:
        demo_live.wait_healthy(engine, port, log)
        done = beast(
            demo_ws,
            "simulate",
            "--url",
            f"http://127.0.0.1:{port}",
            "--duration",
            "3",
            "--rate",
            "40",
            "--backlog",
            "200",
            "--label-delay",
            "1",
            "--json",
            "--quiet",
            timeout=60,
        )
    finally:
        code = demo_live.stop(engine)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["demo_traffic"] is True and report["failed"] == 0
    assert report["predictions"] >= 200 + 60 and report["labels_sent"] > 0
    # Both lines are served: the binary one gets its share of requests, by name.
    assert report["by_line"][demo.LINE] >= 200 + 60
    assert report["by_line"][demo.REVERT_LINE] >= int(200 * 0.3) + 20
    assert code == 0, log.read_text()  # SIGTERM: flushed and exited cleanly
    rows = logged(demo_ws)
    keyed = sum((r["key"] or "").startswith((KEY_PREFIX, CHANGE_PREFIX)) for r in rows)
    assert len(rows) == keyed == report["predictions"]
    assert sum(r["actual"] is not None for r in rows) == report["labels_sent"]


def test_the_command_line_defaults_are_the_simulators() -> None:
    from engine.cli.main import build_parser

    args = build_parser().parse_args(["simulate"])
    defaults = SimOptions()
    assert (
        args.rate,
        args.duration,
        args.label_delay,
        args.drift_per_minute,
        args.max_drift,
        args.backlog,
        args.seed,
        args.spike_every,
        args.spike_seconds,
    ) == (
        defaults.rate,
        defaults.duration_s,
        defaults.label_delay_s,
        defaults.drift_per_minute,
        defaults.max_drift,
        defaults.backlog,
        defaults.seed,
        defaults.spike_every_s,
        defaults.spike_s,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--rate", "0"), "--rate"),
        (("--url", "ftp://x"), "--url"),
        (("--max-drift", "2"), "--max-drift"),
    ],
)
def test_bad_options_are_one_line_refusals(
    demo_ws: Workspace, args: tuple[str, ...], message: str
) -> None:
    done = beast(demo_ws, "simulate", "--duration", "1", *args)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and message in done.stderr


def test_the_demo_never_defaults_to_the_working_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert demo_live.workspace_for(None).root == tmp_path / "demo" / ".beast-mode"
    assert demo_live.workspace_for("elsewhere").root == tmp_path / "elsewhere"
    monkeypatch.setenv("BEAST_HOME", str(tmp_path / "home"))
    assert demo_live.workspace_for(None).root == tmp_path / "home"


def test_demo_live_runs_engine_and_traffic_and_stops_both(demo_ws: Workspace) -> None:
    assert not demo_live.needs_build(demo_ws)
    assert demo_live.needs_build(Workspace(demo_ws.root.parent / "nothing-here"))
    lines: list[str] = []
    with demo_live.running(demo_ws, say=lines.append) as live:
        pids = [live.engine_pid, live.simulator_pid]
        assert all(_alive(p) and os.getpgid(p) == p for p in pids)  # own process groups
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with _db(demo_ws) as conn:
                if count_logged(conn) > 0:
                    break
            time.sleep(0.2)
        else:
            pytest.fail("the demo's traffic never reached the engine's log")
    assert _wait_gone(pids, 1) == []
    assert lines and live.url in lines[-1]
    # An existing workspace is not rebuilt: one line says so, and how to start fresh.
    assert lines[0].startswith("demo workspace ") and "start fresh:" in lines[0]
    assert "beast engine stopped" in (live.logs / "demo-engine.log").read_text()


def test_demo_live_children_die_with_a_killed_console(demo_ws: Workspace) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from engine import Workspace\n"
        "from engine.demo import live as demo_live\n"
        "with demo_live.running(Workspace(Path(sys.argv[1])), say=lambda s: None) as d:\n"
        "    print(d.engine_pid, d.simulator_pid, flush=True)\n"
        "    time.sleep(120)\n"
    )
    console = subprocess.Popen(
        [sys.executable, "-c", script, str(demo_ws.root)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(REPO),
    )
    try:
        assert console.stdout is not None
        pids = [int(p) for p in console.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        console.send_signal(signal.SIGKILL)  # no finally, no context manager exit
        console.wait()
        assert _wait_gone(pids, 15) == [], "children outlived the killed console"
    finally:
        if console.poll() is None:
            console.kill()
            console.wait()
