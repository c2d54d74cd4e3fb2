"""`beast simulate`: demo traffic for the code-quality predictor, labelled as demo traffic.

What it sends, on a schedule in simulated seconds (the real clock unless a test passes its own):
- a backlog first: `backlog` snapshots scored in batches at the start (the morning's queue),
  so each A/B arm has more than a handful of rows when monitoring first looks — PSI over ten
  bins on thirty rows is mostly sampling noise, enough to pull a healthy candidate;
- predictions at `rate` per second, one row per request, each keyed by a repository id
  (`demo-repo-0042`: the `demo-` prefix marks every simulated request in the log), so a
  repository stays on its A/B arm;
- ground truth later: for `labelled_share` of them, `sample_data.quality_score` of the row plus
  its noise (the generator's own label) is sent as feedback `label_delay_s` (±20%) after the
  prediction;
- the binary line too, when the workspace serves it (`binary_line`, the demo's `revert-risk`):
  `binary_share` requests of it per score request, keyed by a change id (`demo-change-0042`),
  a backlog of `binary_share × backlog` rows, and its 0/1 ground truth (`reverted`, drawn by
  the generator) sent as feedback the same way, so both kinds of metrics move;
- drift creeping in: rows come from `sample_data.generate(drift=d)` with d rising by
  `drift_per_minute` per minute up to `max_drift`, so coverage falls and churn, lint,
  duplication and open issues rise;
- a latency spike now and then, made real: for `spike_s` every `spike_every_s`, `storm_workers`
  threads ask for the monitoring report back to back (`GET /v1/monitor`; in-process,
  `monitoring.report` on connections of their own) — dashboards refreshing at once. That work
  competes with the one-row predictions for the engine's CPU and GIL, so the latencies the
  engine measures and logs rise (one-row p95 ≈ 0.6 → 4 ms over HTTP, 0.7 → 4–5 ms in-process,
  on a 2-core machine). A CPU hog in another process would not do it: the kernel favours the
  briefly running server (measured: p95 unchanged). Nothing here writes a latency.

With the defaults on the demo workspace (tests/test_demo_story.py: seeds 0–4 on a simulated
clock, evaluating every 5 s as `make demo`'s engine does): production's data drift warns
50–55 s in; the candidate (10% of the traffic) warns 45–70 s in (data drift, or accuracy under
0.80 once 200 labels are in); its drift turns critical and its rollout's health gate pulls it
to 0% 75–100 s in — on data drift, never on a handful of labels — while revert-v2's rollout
steps from 20% to 50% 65–95 s in. `max_drift` is 0.5: at 0.25 the PSI of the
candidate's window crept up to 0.25 only after 135 s to more than 4 minutes.

It stops by itself after `duration_s` (or on `stop`), sending no further feedback; the
in-process transport then flushes its prediction log.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from engine.demo import sample_data
from engine.demo.transport import Row, Transport

SCORE_LINE = "quality-predictor"  # the demo's (engine.demo.workspace.LINE)
KEY_PREFIX = "demo-repo-"
CHANGE_PREFIX = "demo-change-"  # the binary line's keys: demo traffic too
TICK_S = 0.05  # the schedule's resolution: requests due in a tick are sent together
LABEL_JITTER = 0.2
BACKLOG_BATCH = 500  # rows per request: well under the HTTP API's 1 MiB body limit


@dataclass(frozen=True)
class SimOptions:
    """The schedule. Times are simulated seconds (the real clock in `beast simulate`)."""

    rate: float = 50.0
    backlog: int = 1000  # rows scored in one batch at the start (see the module docstring)
    duration_s: float = 600.0
    label_delay_s: float = 10.0
    drift_per_minute: float = 0.5
    max_drift: float = 0.5
    seed: int = 0
    labelled_share: float = 0.9
    repositories: int = 2000
    spike_every_s: float = 40.0  # 0: no spikes
    spike_first_s: float = 20.0
    spike_s: float = 4.0
    storm_workers: int = 3
    evaluate_every_s: float = 0.0  # in-process: run the monitoring evaluation; 0: never
    progress_every_s: float = 10.0
    score_line: str | None = None  # the score line's name; None: the only line deployed
    binary_line: str | None = None  # the demo's binary line when served; None: none
    binary_share: float = 0.3  # binary requests per score request

    def check(self) -> None:
        """Refuse options the schedule cannot honour, naming the option."""
        if not 0 < self.rate <= 10_000:
            raise ValueError(f"--rate must be in (0, 10000] requests/s, got {self.rate:g}")
        if not 0 < self.duration_s <= 7 * 86400:
            raise ValueError(f"--duration must be in (0, 604800] s, got {self.duration_s:g}")
        if self.label_delay_s < 0:
            raise ValueError(f"--label-delay must be ≥ 0 s, got {self.label_delay_s:g}")
        if not 0 <= self.drift_per_minute <= 10:
            raise ValueError(
                f"--drift-per-minute must be in [0, 10], got {self.drift_per_minute:g}"
            )
        if not 0 <= self.backlog <= 100_000:
            raise ValueError(f"--backlog must be in [0, 100000] rows, got {self.backlog}")
        if not 0 <= self.max_drift <= 1:
            raise ValueError(f"--max-drift must be in [0, 1], got {self.max_drift:g}")
        if not 0 <= self.labelled_share <= 1:
            raise ValueError(f"the labelled share must be in [0, 1], got {self.labelled_share:g}")
        if not 0 <= self.binary_share <= 10:
            raise ValueError(f"the binary share must be in [0, 10], got {self.binary_share:g}")
        if self.spike_every_s < 0 or self.spike_s < 0 or self.storm_workers < 1:
            raise ValueError("spike timings must be ≥ 0, with at least one storm worker")

    def drift_at(self, t: float) -> float:
        """The drift level at simulated second t."""
        return min(self.max_drift, self.drift_per_minute * t / 60.0)

    def spiking_at(self, t: float) -> bool:
        if self.spike_every_s <= 0 or self.spike_s <= 0 or t < self.spike_first_s:
            return False
        return (t - self.spike_first_s) % self.spike_every_s < self.spike_s


@dataclass(frozen=True)
class SimReport:
    """What one run sent and what the engine answered."""

    elapsed_s: float  # simulated seconds
    predictions: int
    failed: int
    labels_sent: int
    label_answers: dict[str, int]
    labels_unsent: int  # still waiting for their delay when the run stopped
    spikes: int
    storm_reads: int
    drift: float
    evaluations: int
    alerts_seen: tuple[str, ...] = ()
    by_line: dict[str, int] = field(default_factory=dict)  # predictions per line named

    def to_json(self) -> dict[str, object]:
        return {
            "demo_traffic": True,
            "elapsed_s": round(self.elapsed_s, 3),
            "predictions": self.predictions,
            "failed": self.failed,
            "labels_sent": self.labels_sent,
            "label_answers": self.label_answers,
            "labels_unsent": self.labels_unsent,
            "spikes": self.spikes,
            "storm_reads": self.storm_reads,
            "drift": round(self.drift, 4),
            "evaluations": self.evaluations,
            "alerts_seen": list(self.alerts_seen),
            "by_line": self.by_line,
        }


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class RealClock:
    """The monotonic clock; a sleep ends early when `stop` is set."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        self._stop.wait(max(0.0, seconds))


class SimulatedClock:
    """Simulated seconds for a test: a sleep moves time on at once (no real waiting)."""

    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def key_of(index: int) -> str:
    return f"{KEY_PREFIX}{index:04d}"


def with_lines(options: SimOptions, deployed: set[str]) -> SimOptions:
    """`options` for a workspace serving the lines `deployed`: the demo's binary line when it
    is served, and then the score line by name (left unnamed when it is the only one)."""
    binary = sample_data.REVERT_LINE if sample_data.REVERT_LINE in deployed else None
    score = SCORE_LINE if binary is not None and SCORE_LINE in deployed else None
    return replace(options, score_line=score, binary_line=binary)


class _Rows:
    """Generated repository snapshots at the current drift, with their true scores."""

    def __init__(self, seed: int, repositories: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._repositories = repositories

    def take(self, n: int, drift: float) -> tuple[list[Row], list[str], list[float]]:
        chunk_seed = int(self._rng.integers(2**31))
        repos = self._rng.integers(self._repositories, size=n)
        samples = sample_data.generate(n, seed=chunk_seed, drift=drift)
        names = sample_data.FEATURES
        rows = [dict(zip(names, map(float, r), strict=True)) for r in samples.features]
        return rows, [key_of(int(i)) for i in repos], samples.scores.astype(float).tolist()


class _Changes:
    """Generated merged changes at the current drift, with whether each got reverted."""

    def __init__(self, seed: int, count: int) -> None:
        self._rng = np.random.default_rng(seed)
        self._count = count

    def take(self, n: int, drift: float) -> tuple[list[Row], list[str], list[float]]:
        chunk_seed = int(self._rng.integers(2**31))
        ids = self._rng.integers(self._count, size=n)
        samples = sample_data.generate_reverts(n, seed=chunk_seed, drift=drift)
        names = sample_data.REVERT_FEATURES
        rows = [dict(zip(names, map(float, r), strict=True)) for r in samples.features]
        keys = [f"{CHANGE_PREFIX}{int(i):04d}" for i in ids]
        return rows, keys, samples.reverted.astype(float).tolist()


@dataclass
class _Storm:
    """Worker threads reading the monitoring report back to back until stopped (one spike)."""

    transport: Transport
    workers: int
    stop: threading.Event = field(default_factory=threading.Event)
    reads: int = 0
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> _Storm:
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"beast-sim-storm-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _work(self) -> None:
        while True:  # at least one read per worker, whatever the clock does meanwhile
            try:
                self.transport.read_monitor()
            except Exception:  # a failed read is not the simulation's end
                pass
            else:
                with self._lock:
                    self.reads += 1
            if self.stop.is_set():
                return

    def finish(self) -> int:
        self.stop.set()
        for thread in self._threads:
            thread.join()
        return self.reads


@dataclass
class _Tally:
    predictions: int = 0
    failed: int = 0
    labels_sent: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    spikes: int = 0
    storm_reads: int = 0
    evaluations: int = 0
    alerts: list[str] = field(default_factory=list)
    by_line: Counter[str] = field(default_factory=Counter)


class Simulation:
    """One bounded run of the schedule against a transport."""

    def __init__(
        self,
        transport: Transport,
        options: SimOptions,
        *,
        clock: Clock | None = None,
        stop: threading.Event | None = None,
        evaluate: Callable[[], list[str]] | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        options.check()
        self.transport = transport
        self.options = options
        self.stop = stop or threading.Event()
        self.clock = clock or RealClock(self.stop)
        self.evaluate = evaluate
        self.progress = progress
        self._rows = _Rows(options.seed, options.repositories)
        self._changes = _Changes(options.seed + 2, options.repositories)
        self._labels_rng = np.random.default_rng(options.seed + 1)
        self._pending: list[tuple[float, int, str, float]] = []  # (due, seq, pid, actual)
        self._seq = 0
        self._sent = 0  # one-row requests sent on the rate's schedule
        self._sent_binary = 0  # the same, of the binary line
        self.tally = _Tally()

    def run(self) -> SimReport:
        """Send the schedule until `duration_s` (or `stop`); the report of what happened."""
        o = self.options
        start = self.clock.now()
        storm: _Storm | None = None
        next_eval = o.evaluate_every_s
        next_progress = o.progress_every_s
        t = 0.0
        try:
            self._send_backlog()
            while not self.stop.is_set() and (t := self.clock.now() - start) < o.duration_s:
                storm = self._spike(t, storm)
                self._send_due(t)
                self._send_labels(t)
                if self.evaluate is not None and o.evaluate_every_s > 0 and t >= next_eval:
                    next_eval += o.evaluate_every_s
                    self._evaluate()
                if self.progress is not None and o.progress_every_s > 0 and t >= next_progress:
                    next_progress += o.progress_every_s
                    self.progress(self._progress_line(t))
                self.clock.sleep(TICK_S)
        finally:
            if storm is not None:
                self.tally.storm_reads += storm.finish()
        t = min(t, o.duration_s)
        return self._report(t)

    def _spike(self, t: float, storm: _Storm | None) -> _Storm | None:
        spiking = self.options.spiking_at(t)
        if spiking and storm is None:
            self.tally.spikes += 1
            return _Storm(self.transport, self.options.storm_workers).start()
        if not spiking and storm is not None:
            self.tally.storm_reads += storm.finish()
            return None
        return storm

    def _send_backlog(self) -> None:
        o = self.options
        count = o.backlog
        for start in range(0, count, BACKLOG_BATCH):
            rows, keys, truths = self._rows.take(min(BACKLOG_BATCH, count - start), 0.0)
            pids = self.transport.predict_many(rows, keys, model=o.score_line)
            self._expect_labels(0.0, pids, truths, o.score_line)
        if o.binary_line is None:
            return
        count = int(o.backlog * o.binary_share)
        for start in range(0, count, BACKLOG_BATCH):
            rows, keys, truths = self._changes.take(min(BACKLOG_BATCH, count - start), 0.0)
            pids = self.transport.predict_many(rows, keys, model=o.binary_line)
            self._expect_labels(0.0, pids, truths, o.binary_line)

    def _send_due(self, t: float) -> None:
        o = self.options
        scheduled = int(o.rate * t) + 1
        due = scheduled - self._sent
        if due <= 0:
            return
        # More than a second behind (a slow engine): send a second's worth, skip the rest,
        # rather than a growing flood that would only measure the backlog.
        due = min(due, max(1, int(o.rate)))
        self._sent = scheduled
        rows, keys, truths = self._rows.take(due, o.drift_at(t))
        pids = [
            self.transport.predict(row, key, model=o.score_line)
            for row, key in zip(rows, keys, strict=True)
        ]
        self._expect_labels(t, pids, truths, o.score_line)
        if o.binary_line is not None:
            self._send_binary_due(t)

    def _send_binary_due(self, t: float) -> None:
        o = self.options
        assert o.binary_line is not None
        rate = o.rate * o.binary_share
        scheduled = int(rate * t) + 1
        due = min(scheduled - self._sent_binary, max(1, int(rate)))
        if due <= 0:
            return
        self._sent_binary = scheduled
        rows, keys, truths = self._changes.take(due, o.drift_at(t))
        pids = [
            self.transport.predict(row, key, model=o.binary_line)
            for row, key in zip(rows, keys, strict=True)
        ]
        self._expect_labels(t, pids, truths, o.binary_line)

    def _expect_labels(
        self, t: float, pids: list[str | None], truths: list[float], line: str | None
    ) -> None:
        """Count what was served, and schedule the ground truth of a share of it."""
        o, n = self.options, len(pids)
        labelled = (self._labels_rng.random(n) < o.labelled_share).tolist()
        delays = (
            o.label_delay_s * (1 + LABEL_JITTER * (2 * self._labels_rng.random(n) - 1))
        ).tolist()
        for pid, truth, wanted, delay in zip(pids, truths, labelled, delays, strict=True):
            if pid is None:
                self.tally.failed += 1
                continue
            self.tally.predictions += 1
            if line is not None:
                self.tally.by_line[line] += 1
            if wanted:
                self._seq += 1
                heapq.heappush(self._pending, (t + delay, self._seq, pid, round(truth, 3)))

    def _send_labels(self, t: float) -> None:
        items = []
        while self._pending and self._pending[0][0] <= t:
            _, _, pid, actual = heapq.heappop(self._pending)
            items.append((pid, actual))
        if items:
            self.tally.answers.update(self.transport.feedback(items))
            self.tally.labels_sent += len(items)

    def _evaluate(self) -> None:
        assert self.evaluate is not None
        self.tally.evaluations += 1
        for alert in self.evaluate():
            if alert not in self.tally.alerts:
                self.tally.alerts.append(alert)

    def _progress_line(self, t: float) -> str:
        s = self.tally
        return (
            f"demo traffic t={t:.0f}s drift={self.options.drift_at(t):.2f} "
            f"predictions={s.predictions} labels={s.labels_sent} failed={s.failed} "
            f"spikes={s.spikes} storm_reads={s.storm_reads}"
        )

    def _report(self, t: float) -> SimReport:
        s = self.tally
        return SimReport(
            elapsed_s=t,
            predictions=s.predictions,
            failed=s.failed,
            labels_sent=s.labels_sent,
            label_answers=dict(s.answers),
            labels_unsent=len(self._pending),
            spikes=s.spikes,
            storm_reads=s.storm_reads,
            drift=self.options.drift_at(t),
            evaluations=s.evaluations,
            alerts_seen=tuple(s.alerts),
            by_line=dict(s.by_line),
        )
