"""The demo tells the README's story every time ("## The demo", "What to watch").

The real demo workspace (`beast init --demo`: its data, its five trained models, its two A/B
tests rolled out progressively, the binary candidate also a shadow), the simulator's default
traffic in-process, and the engine's evaluation every 5 simulated seconds as `beast engine
--evaluate-every 5` runs it under `make demo`, all on a simulated clock. For five seeds:
production's data drift warns and the A/B candidate warns, then the candidate's drift turns
critical and its rollout's health gate pulls it — on data drift, never on a handful of
labelled rows — not before 60 s and within 4 minutes; and the other line's rollout advances
(revert-v2: 20% → 50%, its paired verdict non-inferior), a step at a time.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from engine import Engine, HistoryEntry, Workspace
from engine.demo import workspace as demo
from engine.demo.simulate import SimOptions, SimulatedClock, Simulation, with_lines
from engine.demo.transport import InProcess
from engine.deploy.rollouts import ROLLOUT_ACTOR
from engine.monitoring.report import AUTO_PULL_ACTOR

EVALUATE_EVERY_S = 5.0  # engine.demo.live.EVALUATE_EVERY_S: what `make demo` runs
STORY_S = 240.0  # the pull comes within 4 minutes
SEEDS = (0, 1, 2, 3, 4)


@dataclass
class Story:
    """What one run showed, in simulated seconds."""

    first: dict[tuple[str, str, str], float] = field(default_factory=dict)  # role, metric, sev
    labelled_judged: list[int] = field(default_factory=list)  # n of each primary finding
    pulls: list[tuple[float, str, str, str]] = field(default_factory=list)  # t, test, by, note
    steps: list[tuple[float, str, str]] = field(default_factory=list)  # t, test, action


def _run(ws: Workspace, seed: int) -> Story:
    """The default traffic of `seed` until the candidate of the demo's test is pulled and the
    other test's rollout stepped (or 4 simulated minutes pass), the engine evaluating every
    5 s."""
    engine = Engine(ws, actor="tester")
    transport = InProcess(engine)
    clock = SimulatedClock()
    story = Story()
    minimum = engine.config.monitoring.min_labelled
    sim: Simulation | None = None
    start = len(engine.history())

    def seen(entries: list[HistoryEntry]) -> None:
        for e in entries:
            if e.action == "abort" and e.actor in (AUTO_PULL_ACTOR, ROLLOUT_ACTOR):
                story.pulls.append((clock.t, e.experiment or "", e.actor, e.note or ""))
            else:
                story.steps.append((clock.t, e.experiment or "", e.action))

    def evaluate() -> list[str]:
        # The log's writer flushes every 0.05 real seconds: by the time `beast engine`
        # evaluates, what was served is logged. A simulated tick outruns it: flush first.
        transport.log.flush()
        before = {v.version: v for v in engine.monitoring.report().versions}
        found = engine.evaluate()  # as `beast engine` evaluates: monitoring, then rollouts
        for v in before.values():
            if v.line != demo.LINE:
                continue
            for f in v.findings:
                story.first.setdefault((v.role, f.metric, f.severity), clock.t)
                if f.metric == v.primary:
                    story.labelled_judged.append(v.window.labelled)
        if found.actions:
            seen(engine.history()[len(story.pulls) + len(story.steps) + start :])
            if _told(story):
                assert sim is not None
                sim.stop.set()
        return []

    options = with_lines(
        SimOptions(duration_s=STORY_S, evaluate_every_s=EVALUATE_EVERY_S, seed=seed),
        {demo.LINE, demo.REVERT_LINE},
    )
    sim = Simulation(transport, options, clock=clock, evaluate=evaluate)
    try:
        sim.run()
    finally:
        transport.close()
        engine.close()
    assert minimum == 200 and all(n >= minimum for n in story.labelled_judged)
    return story


def _told(story: Story) -> bool:
    """The score line's candidate was pulled, and the binary line's rollout stepped."""
    return any(test == demo.DEMO_TEST for _, test, _, _ in story.pulls) and any(
        test == demo.REVERT_TEST and by in ("rollout_step", "promote")
        for _, test, by in story.steps
    )


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_the_demo_tells_its_story(demo_ws: Workspace, seed: int) -> None:
    story = _run(demo_ws, seed)
    ours = [(t, by, note) for t, test, by, note in story.pulls if test == demo.DEMO_TEST]
    assert ours, f"seed {seed}: the candidate was not pulled within {STORY_S:g} s"
    pulled_at, by, note = ours[0]
    # Pulled by its rollout's health gate on drift, after the first minute, within four.
    assert 60 <= pulled_at <= STORY_S, f"seed {seed}: pulled at {pulled_at:g} s"
    assert by == ROLLOUT_ACTOR and note.startswith("rollout gate failed: health: "), note
    assert "data drift PSI" in note and "accuracy" not in note, note
    # Every pull of the run (the revert-risk test's too, if its drift turned first) was on
    # data drift.
    assert all("data drift PSI" in n and "auc" not in n for _, _, _, n in story.pulls)
    # The other line's rollout advanced: 20% → 50% on its gates (its verdict paired).
    stepped = [t for t, test, action in story.steps if test == demo.REVERT_TEST]
    assert stepped, f"seed {seed}: revert-v2's rollout never advanced: {story.steps}"
    engine = Engine(demo_ws)
    try:
        revert = engine.experiment(demo.REVERT_TEST)
    finally:
        engine.close()
    assert revert.rollout is not None and revert.rollout.step >= 1
    # Before it: production's data drift warned, and the candidate warned.
    drift_warned = story.first.get(("production", "data_drift", "warning"))
    candidate_warned = min(
        (
            t
            for (role, _, sev), t in story.first.items()
            if role == "candidate" and sev == "warning"
        ),
        default=None,
    )
    assert drift_warned is not None and drift_warned < pulled_at
    assert candidate_warned is not None and candidate_warned < pulled_at
    # Nothing of the candidate's was critical before its pull but its drift.
    critical = {m for (role, m, sev) in story.first if role == "candidate" and sev == "critical"}
    assert critical == {"data_drift"}
