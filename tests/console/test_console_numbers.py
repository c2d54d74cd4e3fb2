"""One source for every number: the console's figures are `beast monitor --json`'s, rounded.

A workspace with an A/B test and 30 minutes of labelled traffic up to now; the console reads
it (Pilot), then the real CLI reads it in a subprocess over the same window, and every figure
on screen — the A/B pane's cells and verdict line, the Metrics pane's values, the health of
each Deployments row — must be the JSON's after the console's 3-significant-digit rounding.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import DataTable, Label, Static

from console.app import BeastConsole
from console.format import p_value
from console.gateway import Gateway
from engine import Workspace, sig
from tests.console import snapdata
from tests.console.pilot import drive, make_app
from tests.helpers import beast


def _cells(app: BeastConsole, table_id: str) -> dict[str, list[str]]:
    table = app.query_one(f"#{table_id}", DataTable)
    out = {}
    for i in range(table.row_count):
        cells = [c.plain if isinstance(c, Text) else str(c) for c in table.get_row_at(i)]
        out[cells[0]] = cells
    return out


def _read_console(ws: Workspace) -> dict[str, Any]:
    gateway = Gateway(ws, actor="ops")
    app = make_app(gateway)
    seen: dict[str, Any] = {}

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        seen["ab"] = _cells(app, "ab-table")
        seen["verdict"] = str(app.query_one("#ab-verdict", Static).render())
        seen["deployments"] = _cells(app, "deployments-table")
        seen["selected"] = app.selected
        seen["metrics"] = {
            label.id.removeprefix("value-"): str(label.render())
            for label in app.query(".metric-value").results(Label)
            if label.id is not None
        }

    try:
        drive(app, scenario)
    finally:
        gateway.close()
    return seen


def test_the_console_shows_beast_monitor_json_figures(
    registered: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    testing = registered
    # Deployed 3, 2 and 1 hours ago, 30 minutes of traffic up to now, three predictions in
    # four labelled (so `pred` and `lab` differ). The engine's clock is pinned to that now
    # in this process; the CLI's runs on (a minute later at most: the window holds it all).
    snapdata.build(testing, monkeypatch, at=time.time(), unlabelled_every=4)
    shown = _read_console(testing)
    done = beast(testing, "monitor", "--json", "--readonly", "--window", "1h")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    (test,) = report["experiments"]
    arms = test["arms"]
    for arm in ("control", "candidate"):
        figures = arms[arm]
        row = shown["ab"][f"retrain-v3:{arm}"]
        _, _, pred, lab, acc, mae, p95 = row
        assert (pred, lab) == (sig(figures["predictions"]), sig(figures["labelled"])), row
        assert (acc, mae) == (sig(figures["accuracy"]), sig(figures["mae"])), row
        assert p95 == sig(figures["latency_ms"]["p95"]), row
    assert arms["control"]["predictions"] == 30 * 36  # real data, three in four labelled
    assert arms["control"]["labelled"] == 30 * 36 * 3 // 4
    _evidence_agrees(shown["verdict"].splitlines(), test)

    versions = {v["version"]: v for v in report["versions"]}
    healths = {name: cells[3].split(" ", 1)[-1] for name, cells in shown["deployments"].items()}
    assert {name: healths[name] for name in versions} == {
        name: v["health"] for name, v in versions.items()
    }
    assert set(versions) == {"v2.0", "v3.0"}

    assert shown["selected"] == "quality-predictor/v2.0"
    v2, values = versions["v2.0"], shown["metrics"]
    assert values["primary"].startswith(f"{sig(v2['accuracy'])} (min "), values
    assert values["second"].startswith(f"{sig(v2['mae'])} pts"), values
    assert values["p95"].startswith(f"{sig(v2['latency_ms']['p95'])} ms"), values
    assert values["errors"].startswith(f"{sig(v2['error_rate'])} (max"), values
    assert values["traffic"] == f"{sig(v2['predictions'])} pred, {sig(v2['labelled'])} lab, 82%"
    drift = v2["drift"]["model"]
    assert values["drift"].startswith(f"{sig(drift * 100)}% (max" if drift is not None else "-")


def _evidence_agrees(lines: list[str], test: dict[str, Any]) -> None:
    """The A/B pane's evidence lines against the test's JSON: the verdict, p, n, the
    interval and margin; the last minute of the interval series, the SRM check and the
    rollout where the JSON has them (and no line for them where it has none)."""
    arms, detail = test["arms"], test["verdict_detail"]
    n = f"lab {sig(arms['control']['labelled'])} / {sig(arms['candidate']['labelled'])}"
    assert lines[0] == f"retrain-v3: {test['verdict']} · p={p_value(detail['p'])} · {n}", lines
    assert lines[1].startswith(
        f"acc {sig(detail['diff'])} [{sig(detail['lo'])}, {sig(detail['hi'])}]"
        f" · margin ±{detail['margin']:g} · "
    ), lines
    rest = lines[2:]
    if test["interval"]:
        last = test["interval"][-1]
        hi, lo, *rest = rest
        assert hi.startswith("hi ") and hi.endswith(f" {sig(last['hi'])}"), hi
        assert lo.startswith("lo ") and f" {sig(last['lo'])} · -margin at " in lo, lo
    if test["srm"] is not None:
        srm, *rest = rest
        mark = f"srm ok p={p_value(test['srm']['p'])}"
        if test["srm"]["mismatch"]:
            mark = f"SRM p={p_value(test['srm']['p'])}"
        assert srm.startswith(mark), srm
    if test["rollout"] is not None:
        rollout, *rest = rest
        rollout_json = test["rollout"]
        steps = [f"{step:g}%" for step in rollout_json["steps"]]  # percent in the JSON
        steps[rollout_json["step"]] = f"[{steps[rollout_json['step']]}]"
        assert rollout == f"rollout {' → '.join(steps)} · {rollout_json['state']}", rollout
    assert rest == [], rest
