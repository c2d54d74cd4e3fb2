"""A test's interval over time (`ExperimentReport.interval`): one point per minute of the test,
from the experiment's minute rollups summed up to that minute, judged by the live verdict's own
sequence, so the last point is the live verdict's interval to the bit."""

from __future__ import annotations

import json

import numpy as np

from engine import Engine
from engine.core import tasks
from engine.core.figures import sig, signed
from engine.core.rollups import CLASS_BINS, SCALARS
from engine.monitoring import abstats
from engine.monitoring import report as monitoring
from engine.monitoring import rollups as metrics
from tests.helpers import beast
from tests.test_monitoring import feed


def test_the_interval_narrows_minute_by_minute_and_ends_at_the_live_verdict(
    engine: Engine,
) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", traffic=50, ab_test="t")
    for minutes_ago in (40, 30, 20, 10, 0):
        feed(engine, "v1.0", 120, within=0.80, experiment="t", minutes_ago=minutes_ago)
        feed(
            engine,
            "v2.0",
            120,
            within=0.90,
            experiment="t",
            arm="candidate",
            minutes_ago=minutes_ago,
        )
    [found] = engine.report().experiments
    points = found.interval
    assert len(points) == 5  # one a minute with predictions, each past ab_min_samples (100)
    assert [p.minute for p in points] == sorted(p.minute for p in points)
    assert points[-1].minute - points[0].minute == 40
    widths = [p.hi - p.lo for p in points]
    assert widths == sorted(widths, reverse=True)
    assert all(p.lo < p.diff < p.hi for p in points)
    last, live = points[-1], found.verdict
    assert (last.diff, last.lo, last.hi) == (live.diff, live.lo, live.hi)
    text = beast(engine.workspace, "monitor", "--readonly")
    assert text.returncode == 0, text.stderr
    assert (
        f"accuracy diff {signed(live.diff)} [{signed(live.lo)}, {signed(live.hi)}]" in text.stdout
    )
    assert f"always-valid p {sig(live.p)}" in text.stdout
    first = points[0]
    assert f"interval ±{sig((first.hi - first.lo) / 2)} at " in text.stdout
    assert "(5 minutes with labels)" in text.stdout
    out = beast(engine.workspace, "monitor", "--json", "--readonly")
    assert out.returncode == 0, out.stderr
    [doc] = json.loads(out.stdout)["experiments"]
    assert doc["interval"][-1] == {
        "minute": last.minute,
        "diff": live.diff,
        "lo": live.lo,
        "hi": live.hi,
    }


def test_minutes_below_the_minimum_have_no_point(engine: Engine) -> None:
    engine.deploy(version="v1.0")
    engine.deploy(version="v2.0", traffic=50, ab_test="t")
    feed(engine, "v1.0", 60, within=0.8, experiment="t", minutes_ago=5)
    feed(engine, "v2.0", 60, within=0.8, experiment="t", arm="candidate", minutes_ago=5)
    assert engine.report().experiments[0].interval == ()
    feed(engine, "v1.0", 60, within=0.8, experiment="t")
    feed(engine, "v2.0", 60, within=0.8, experiment="t", arm="candidate")
    [point] = engine.report().experiments[0].interval
    assert point.minute == monitoring.now_minute() or point.minute == monitoring.now_minute() - 1


def _rollups(rng: np.random.Generator, rows: int, *, hourly: int) -> metrics.VersionRollups:
    """`rows` rows of a binary arm: the first `hourly` compacted hours, then minutes; each
    minute 30–80 labels (an hour 150–250) with random score keys of both classes."""
    minutes = np.concatenate(
        (np.arange(hourly) * 60, hourly * 60 + 120 + np.arange(rows - hourly))
    ).astype(np.int64)
    scalars = np.zeros((rows, SCALARS))
    entries = []
    for row in range(rows):
        n = int(rng.integers(150, 250) if row < hourly else rng.integers(30, 80))
        positive = rng.random(n) < 0.4
        keys = rng.integers(0, 2000, n) + np.where(positive, CLASS_BINS, 0)  # ties happen
        key, count = np.unique(keys, return_counts=True)
        entries.append(np.column_stack((np.full(key.size, row), key, count)))
        scalars[row, 2], scalars[row, 9] = n, int(positive.sum())
    return metrics.VersionRollups(
        minutes,
        scalars,
        np.zeros((rows, 1), np.int64),
        None,
        None,
        np.arange(rows) < hourly,
        np.vstack(entries).astype(np.int64),
    )


def test_a_binary_interval_matches_the_auc_verdict_at_every_minute() -> None:
    rng = np.random.default_rng(7)
    control, candidate = _rollups(rng, 30, hourly=3), _rollups(rng, 30, hourly=3)
    rules = abstats.Rules(min_samples=100)
    points = monitoring.interval_series(control, candidate, tasks.BINARY, rules)
    assert points and points[0].minute == 59  # the first compacted hour, at its last minute
    for point in points:  # each point: the AUC verdict over the rows ended by its minute
        arms = []
        for arm in (control, candidate):
            window = arm._masked(arm.row_ends() <= point.minute)
            arms.append(monitoring._auc_arm(window))
        v = abstats.auc_verdict(arms[0], arms[1], rules)
        assert (point.diff, point.lo, point.hi) == (v.diff, v.lo, v.hi)


def test_the_interval_keeps_its_last_points() -> None:
    rng = np.random.default_rng(8)
    control = _rollups(rng, monitoring.INTERVAL_POINTS + 30, hourly=0)
    candidate = _rollups(rng, monitoring.INTERVAL_POINTS + 30, hourly=0)
    points = monitoring.interval_series(control, candidate, tasks.BINARY, abstats.Rules())
    assert len(points) == monitoring.INTERVAL_POINTS
    assert points[-1].minute == int(control.minutes[-1])
