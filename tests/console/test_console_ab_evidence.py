"""The A/B pane's evidence: the always-valid verdict, the interval's bounds narrowing around
the margin, the sample-ratio check and the rollout's steps, drawn from `ExperimentReport`s
built here with a real interval series (abstats.sequence over a growing sample), and the
promote dialog's SRM block; then the whole of it in the A/B pane at 80×24."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import closing

import numpy as np
import pytest
from rich.text import Text
from textual.pilot import Pilot

from console.app import BeastConsole
from console.data import ConsoleData, fetch
from console.gateway import Gateway
from console.panes import ABEvidence, ABPane, evidence
from console.proposals import promote
from console.sparkline import ASCII, BLOCKS, by_cell
from engine import Experiment, ExperimentReport, IntervalPoint, Rollout, SrmCheck, Workspace, sig
from engine.monitoring import abstats
from engine.monitoring.rollups import WindowMetrics
from tests.console import snapdata
from tests.console.pilot import drive, make_app, press, screen_lines

MARGIN = 0.02
START = 29_000_000  # a minute since the epoch (2025)


def _series(effect: float, minutes: int, per_minute: int = 40) -> tuple[IntervalPoint, ...]:
    """The interval minute by minute as the sample grows: a difference in accuracy of
    `effect` (0/1 outcomes near 0.8), its variance shrinking as 1/n."""
    points = []
    for m in range(1, minutes + 1):
        n = per_minute * m
        var = 2 * 0.8 * 0.2 / n
        seq = abstats.sequence(effect, var, alpha=0.05, n=n, n_max=2000)
        points.append(IntervalPoint(START + m, seq.diff, seq.lo, seq.hi))
    return tuple(points)


def _arm(labelled: int) -> WindowMetrics:
    return WindowMetrics(labelled, 0, labelled, labelled * 4 // 5, 0.0, 0.0, np.zeros(1))


def _report(
    interval: tuple[IntervalPoint, ...] = (),
    srm: SrmCheck | None = None,
    rollout: Rollout | None = None,
    outcome: str = abstats.NOT_ENOUGH,
) -> ExperimentReport:
    last = interval[-1] if interval else IntervalPoint(START, 0.01, -0.05, 0.07)
    verdict = abstats.Verdict(
        outcome, "accuracy", last.diff, last.lo, last.hi, 0.2, MARGIN, 1600, 400, "a reason"
    )
    experiment = Experiment(
        1, "retrain-v3", "quality-predictor", "v2.0", "v3.0", 2500, "running", "t", "ops",
        rollout=rollout,
    )  # fmt: skip
    return ExperimentReport(experiment, _arm(1600), _arm(400), verdict, "regression", interval, srm)


def _cells(row: Text) -> str:
    """The sparkline of an `hi`/`lo` row: after its label, before its figures."""
    body = row.plain[3:].split(" · ")[0]
    return body[: body.rindex(" ")]


def _levels(row: Text, ramp: str = BLOCKS) -> list[int]:
    return [ramp.index(c) for c in _cells(row) if c in ramp]


def _row(lines: list[Text], head: str) -> Text:
    (found,) = [line for line in lines if line.plain.startswith(head)]
    return found


def _styled(line: Text, colour: str) -> list[tuple[int, int]]:
    return [(s.start, s.end) for s in line.spans if colour in str(s.style)]


def test_the_interval_narrows_around_the_margin_a_cell_per_minute() -> None:
    points = _series(0.05, 40)
    lines = evidence(_report(points, outcome=abstats.CANDIDATE_WINS), 76)
    hi, lo = _row(lines, "hi "), _row(lines, "lo ")
    his, los = _levels(hi), _levels(lo)
    assert len(his) == len(los) == 40  # every minute, newest on the right
    assert his[0] > his[-1] and los[0] < los[-1]  # the bounds close in
    assert max(his) == len(BLOCKS) - 1 and min(los) == 0  # one scale for both rows
    # The scale is the latest interval's: the first minutes run off its ends, the latest
    # bounds sit inside it (not flattened to one level by the first, widest minutes).
    assert 0 < los[-1] < his[-1] < len(BLOCKS) - 1
    assert len(set(his[len(his) // 4 :])) > 1 and len(set(los[len(los) // 4 :])) > 1
    # Numbers beside the lines: the last minute's bounds, three significant digits.
    assert hi.plain.endswith(f" {sig(points[-1].hi)}")
    assert lo.plain.split(" · ")[0].endswith(f" {sig(points[-1].lo)}")
    # A lower bound above −margin (non-inferior) is green; the first minutes' are not.
    green = _styled(lo, "green")
    assert green, lo.spans
    first_green = green[0][0] - 3 - (len(_cells(lo)) - 40)  # after "lo " and the padding
    assert all(p.lo > -MARGIN for p in points[first_green:])
    assert all(p.lo <= -MARGIN for p in points[:first_green])
    # −margin's level on the ramp, named at the end of the lower row.
    margin_mark = lo.plain[-1]
    assert margin_mark in BLOCKS
    assert not _styled(hi, "red")  # no upper bound under −margin: not surely worse


def test_a_worse_candidates_upper_bound_under_the_margin_is_red() -> None:
    points = _series(-0.08, 30)
    hi = _row(evidence(_report(points, outcome=abstats.CONTROL_WINS), 76), "hi ")
    red = _styled(hi, "red")
    cells = len(_cells(hi))
    assert red and red[-1][1] == 3 + cells  # the newest minute's bound is under −margin
    assert all(p.hi < -MARGIN for p in points[red[0][0] - 3 - (cells - 30) :])


def test_a_long_test_keeps_its_whole_run_on_screen() -> None:
    minutes = [0, 1, 2, 5, 6]
    assert by_cell(minutes, 10) == [0, 1, 2, None, None, 3, 4]  # a gap: minutes without labels
    long = list(range(600))
    cells = by_cell(long, 60)
    assert len(cells) == 60 and cells[0] == 9 and cells[-1] == 599  # each cell its last point
    points = _series(0.05, 600, per_minute=4)
    hi = _row(evidence(_report(points), 76), "hi ")
    levels = _levels(hi)
    assert hi.cell_len <= 76 and len(levels) >= 50  # the pane's width, not 600 minutes
    assert levels[0] > levels[-1]


def test_without_interval_srm_or_rollout_the_verdict_alone() -> None:
    first, second = (line.plain for line in evidence(_report(), 76))
    assert first == "retrain-v3: not enough data · p=0.200 · lab 1,600 / 400"
    assert second == "acc 0.0100 [-0.0500, 0.0700] · margin ±0.02 · a reason"


def test_srm_mismatch_is_red_until_acknowledged() -> None:
    ok = evidence(_report(srm=SrmCheck(0.41, False, 1500, 500, 0.25)), 76)
    assert ok[-1].plain == "srm ok p=0.410"
    bad = evidence(_report(srm=SrmCheck(2e-6, True, 1800, 200, 0.25)), 76)[-1]
    assert bad.plain == "SRM p=<0.001 (unacknowledged) · pred 1,800 / 200, expected 25% candidate"
    assert "red" in str(bad.style)
    acked = evidence(_report(srm=SrmCheck(2e-6, True, 1800, 200, 0.25, acknowledged=True)), 76)
    assert "(acknowledged)" in acked[-1].plain and "yellow" in str(acked[-1].style)


def test_the_rollout_marks_its_current_step() -> None:
    rollout = Rollout((500, 2500, 5000, 10_000), 1, "running", "2026-01-15T11:50:00Z", "x")
    (line,) = evidence(_report(rollout=rollout), 76)[2:]
    assert line.plain == "rollout 5% → [25%] → 50% → 100% · running"
    paused = dataclasses.replace(rollout, state="paused", step=3)
    (line,) = evidence(_report(rollout=paused), 76, ascii_only=True)[2:]
    assert line.plain == "rollout 5% -> 25% -> 50% -> [100%] · paused"


def test_ascii_only_draws_the_interval_with_ascii() -> None:
    lines = evidence(_report(_series(0.05, 20)), 76, ascii_only=True)
    assert len(_levels(_row(lines, "hi "), ASCII)) == 20
    assert not any(c in BLOCKS for line in lines for c in line.plain)


# -- the promote dialog -------------------------------------------------------------------


@pytest.fixture
def frozen(registered: Workspace, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    snapdata.build(registered, monkeypatch)
    yield registered


def _with_evidence(
    data: ConsoleData,
    *,
    interval: tuple[IntervalPoint, ...] = (),
    srm: SrmCheck | None = None,
    rollout: Rollout | None = None,
) -> ConsoleData:
    """The data as polled, its one test given an interval series, an SRM check, a rollout."""
    assert data.report is not None
    (test,) = data.report.experiments
    experiment = dataclasses.replace(test.experiment, rollout=rollout)
    test = dataclasses.replace(test, experiment=experiment, interval=interval, srm=srm)
    return dataclasses.replace(data, report=dataclasses.replace(data.report, experiments=(test,)))


def test_promote_says_an_unacknowledged_srm_blocks_it(frozen: Workspace) -> None:
    with closing(Gateway(frozen, actor="ops")) as gateway:
        data = fetch(gateway, snapdata.FROZEN)
    assert data.report is not None
    alert = {**data.report.alerts[0], "id": 41, "metric": "srm", "line": snapdata.LINE}
    data = dataclasses.replace(
        data, report=dataclasses.replace(data.report, alerts=(alert, *data.report.alerts))
    )
    plain = promote(data, snapdata.LINE)
    assert not any("blocked" in c for c in plain.context)
    assert data.report is not None
    v = data.report.experiments[0].verdict
    assert any(f"[{v.lo:.3f}, {v.hi:.3f}]" in c and "p = <0.001" in c for c in plain.context)
    skewed = _with_evidence(data, srm=SrmCheck(1e-5, True, 1080, 120, 0.1))
    blocked = promote(skewed, snapdata.LINE).context[0]
    assert blocked == (
        "promotion is blocked: sample-ratio mismatch (SRM p = <0.001, 1,080 / 120 predictions)"
        " until `beast alerts ack 41`"
    )
    acked = _with_evidence(data, srm=SrmCheck(1e-5, True, 1080, 120, 0.1, acknowledged=True))
    assert not any("blocked" in c for c in promote(acked, snapdata.LINE).context)


# -- 80×24 ---------------------------------------------------------------------------------


def test_the_ab_pane_fits_80x24_with_every_part_of_the_evidence(frozen: Workspace) -> None:
    """A running test with an interval series, an SRM mismatch and a rollout at step 2 of 4:
    in the one-column layout the pane holds it all (no line cut before its figures), and
    zoomed too; a redraw with the same data changes nothing on screen."""
    rollout = Rollout((500, 2500, 5000, 10_000), 1, "running", snapdata.iso(snapdata.FROZEN), "x")
    srm = SrmCheck(1e-5, True, 1080, 120, 0.1)
    gateway = Gateway(frozen, actor="ops")
    app = make_app(gateway, clock=lambda: snapdata.FROZEN, workspace_label=".beast-mode")
    seen: dict[str, list[str]] = {}

    async def scenario(app: BeastConsole, pilot: Pilot[None]) -> None:
        assert app.data is not None
        data = _with_evidence(app.data, interval=_series(-0.3, 30), srm=srm, rollout=rollout)
        pane = app.query_one(ABPane)
        pane.draw(data)
        await press(app, pilot, "4")  # focus: the column scrolls the pane into view
        shown = app.query_one(ABEvidence)
        assert shown.size.height == 6  # verdict, its interval, hi, lo, SRM, rollout
        assert pane.region.height <= 12 and shown.region.bottom <= pane.content_region.bottom
        seen["pane"] = screen_lines(app)[pane.region.y : pane.region.bottom]
        refreshed: list[object] = []
        real = shown.refresh
        shown.refresh = lambda *a, **k: refreshed.append(a) or real(*a, **k)  # type: ignore[method-assign]
        pane.draw(data)
        assert refreshed == []  # in place: the same figures draw nothing
        other = _with_evidence(app.data, interval=_series(-0.2, 30), srm=srm, rollout=rollout)
        pane.draw(other)
        assert refreshed  # and new figures are drawn
        pane.draw(data)
        shown.refresh = real  # type: ignore[method-assign]
        await press(app, pilot, "z")
        seen["zoomed"] = screen_lines(app)

    try:
        drive(app, scenario, size=(80, 24))
    finally:
        gateway.close()
    for name, lines in seen.items():
        text = "\n".join(lines)
        assert all(len(line) <= 80 for line in lines), name
        assert "retrain-v3: control wins · p=<0.001 · lab 1,080 / 240" in text, text
        assert "margin ±0.02" in text, text
        assert "│ hi " in text and "│ lo " in text and "-margin at " in text, text
        assert "SRM p=<0.001 (unacknowledged) · pred 1,080 / 120, expected 10% candidate" in text
        assert "rollout 5% → [25%] → 50% → 100% · running" in text, text
