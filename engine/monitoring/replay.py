"""Replay before any exposure: a registered version scored on the requests production served.

`beast replay VERSION` reads the logged, labelled requests of a line that its current
production served within a window (the most recent `LIMIT` of them), scores them with the
version's own booster (loaded as the router loads it: the registered bytes, checked against
their sha256), and compares it with production's logged scores request by request through
`engine.monitoring.paired.compare` — the one paired comparison, so a replay and a shadow's
live verdict over the same rows are the same numbers. Nobody is served the version: this is
the evidence before a deploy (`beast deploy --require-replay` asks for it).

Where it loses most: for each feature, the rows are cut at the feature's quartiles (over
these rows); each bin of at least `MIN_SLICE_ROWS` gets both models' primary metric, and
the bins where the version's is furthest below production's are kept (`WORST_SLICES`).
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine.core import tasks
from engine.core.config import Config
from engine.core.errors import BeastError
from engine.core.records import VersionRef
from engine.monitoring import abstats, paired, scoring
from engine.monitoring.report import verdict_detail
from engine.registry import fetch
from engine.serving.router import load_booster, scorer
from engine.store.base import Store

# The rows a replay reads at most (the most recent): 200,000 rows of 12 features hold ~10 MB
# and scored in 1.4 s with a 60-tree model here (2 cores, heavily loaded); a verdict is
# planned for far fewer (ab_max_samples).
LIMIT = 200_000
# A slice's metric over fewer rows is noise (accuracy's standard error at 30 rows is ~0.08).
MIN_SLICE_ROWS = 30
WORST_SLICES = 5
_UNITS_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}


def window_ms(window: str) -> int:
    """A window such as "30m", "24h" or "7d" in milliseconds (or a one-line refusal)."""
    found = re.fullmatch(r"(\d+(?:\.\d+)?)([mhd])", window.strip())
    if found is None or float(found[1]) <= 0:
        raise BeastError(f"--window takes minutes, hours or days, like 30m, 24h or 7d: {window!r}")
    return int(float(found[1]) * _UNITS_MS[found[2]])


@dataclass(frozen=True)
class Slice:
    """A quartile bin of one feature over the replayed rows, and each model's primary metric."""

    feature: str
    quartile: int  # 1..4
    lo: float  # the feature's range in this bin
    hi: float
    n: int
    production: float
    candidate: float

    @property
    def diff(self) -> float:
        """The version's primary metric minus production's (negative: it loses here)."""
        return self.candidate - self.production

    def to_json(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "quartile": self.quartile,
            "lo": self.lo,
            "hi": self.hi,
            "n": self.n,
            "production": self.production,
            "candidate": self.candidate,
            "diff": self.diff,
        }


@dataclass(frozen=True)
class Replay:
    """A version replayed on its line's logged, labelled requests, beside production."""

    line: str
    version: str
    production: str
    task: str
    window: str
    since: str  # ISO time the window starts
    limit: int
    capped: bool  # the window held more rows than `limit`: the most recent were read
    comparison: paired.Comparison
    slices: tuple[Slice, ...]  # the worst, worst first

    @property
    def verdict(self) -> abstats.Verdict:
        return self.comparison.verdict

    @property
    def n(self) -> int:
        return self.comparison.n

    @property
    def enough(self) -> bool:
        """Whether the replay clears `--require-replay`: enough pairs for a verdict, and the
        version surely no worse than production by more than the margin."""
        return self.verdict.outcome != abstats.NOT_ENOUGH and self.verdict.non_inferior

    def deltas(self) -> dict[str, float]:
        """Each metric both models have: the version's minus production's."""
        ours, theirs = self.comparison.candidate, self.comparison.control
        return {k: ours[k] - theirs[k] for k in ours if k in theirs}

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.line,
            "version": self.version,
            "production": self.production,
            "task": self.task,
            "window": self.window,
            "since": self.since,
            "n": self.n,
            "limit": self.limit,
            "capped": self.capped,
            "metrics": {
                "production": self.comparison.control,
                "candidate": self.comparison.candidate,
                "delta": self.deltas(),
            },
            "verdict": self.verdict.outcome,
            "verdict_detail": verdict_detail(self.verdict, self.task),
            "non_inferior": self.verdict.non_inferior,
            "slices": [s.to_json() for s in self.slices],
        }


def replay(
    store: Store,
    config: Config,
    models_dir: Path,
    target: VersionRef,
    *,
    window: str = "7d",
    limit: int = LIMIT,
    now_ms: int | None = None,
) -> Replay:
    """Score `target` on the labelled requests its line's production served within `window`
    (the most recent `limit`) and compare it with production's logged scores, paired."""
    span = window_ms(window)
    since_ms = (time.time_ns() // 1_000_000 if now_ms is None else now_ms) - span
    line = target.line
    with store.read() as tx:
        state = tx.deployments.state(line)
        schema = tx.registry.line_schema(line)
        if state is None or schema is None:
            raise BeastError(f"nothing is deployed on {line}: no production to replay against")
        width = schema.n_features
        x, logged, actual, _ = tx.predictions.served_rows(
            state.production.id, width, since_ms, limit + 1
        )
        path = fetch.local_copy(
            tx, models_dir, tx.registry.artifact_file(target.artifact_id), target.sha256
        )
    production = state.production.name
    if actual.size == 0:
        raise BeastError(
            f"no labelled predictions of {line}'s production {production} in the last "
            f"{window}: nothing to replay {target.name} on"
        )
    capped = actual.size > limit
    x, logged, actual = x[-limit:], logged[-limit:], actual[-limit:]
    scores = scorer(load_booster(path, target.sha256), width)(np.ascontiguousarray(x))
    settings = config.line(line)
    figures = {"tolerance": settings.tolerance_points, "threshold": settings.decision_threshold}
    rules = abstats.Rules.of(config)
    found = paired.compare(settings.task, scores.ravel(), logged, actual, rules, **figures)
    names = schema.feature_names or tuple(f"f{i}" for i in range(width))
    worst = slices(
        settings.task,
        names,
        x,
        actual,
        candidate=scores.ravel(),
        control=logged,
        tolerance=settings.tolerance_points,
    )
    since = datetime.fromtimestamp(since_ms / 1000, UTC).isoformat(timespec="seconds")
    return Replay(
        line,
        target.name,
        production,
        settings.task,
        window,
        since.replace("+00:00", "Z"),
        limit,
        capped,
        found,
        worst[:WORST_SLICES],
    )


def slices(
    task: str,
    names: tuple[str, ...],
    x: np.ndarray,
    actual: np.ndarray,
    *,
    candidate: np.ndarray,
    control: np.ndarray,
    tolerance: float = 5.0,
) -> tuple[Slice, ...]:
    """The quartile bins (per feature, over these rows) where the candidate's primary metric
    is below production's, worst first; bins of fewer than `MIN_SLICE_ROWS` rows (or, on a
    binary line, of one class only) are left out."""
    ours, theirs = (_primary(task, s, actual, tolerance) for s in (candidate, control))
    found: list[Slice] = []
    for j, name in enumerate(names):
        # Sorted once: each quartile bin is a run of the order, its range the run's ends.
        order = np.argsort(x[:, j])
        column = x[order, j].astype(np.float64)
        seen = int(np.count_nonzero(~np.isnan(column)))  # NaN sorts last: no quartile
        if seen < MIN_SLICE_ROWS:
            continue
        column, order = column[:seen], order[:seen]
        edges = np.unique(np.quantile(column, [0.25, 0.5, 0.75]))
        cuts = [0, *np.searchsorted(column, edges, side="right").tolist(), seen]
        for b, (start, end) in enumerate(itertools.pairwise(cuts)):
            if end - start < MIN_SLICE_ROWS:
                continue
            rows = order[start:end]
            mine, production = ours(rows), theirs(rows)
            if mine is None or production is None or not mine < production:
                continue
            lo, hi = float(column[start]), float(column[end - 1])
            found.append(Slice(name, b + 1, lo, hi, end - start, production, mine))
    return tuple(sorted(found, key=lambda s: (s.diff, -s.n)))


def _primary(
    task: str, scores: np.ndarray, actual: np.ndarray, tolerance: float
) -> Callable[[np.ndarray], float | None]:
    """The line's primary metric over some rows (their indices), as `scoring.metrics` defines it
    (accuracy: within ±tolerance; AUC: None with one class), without its other metrics
    (48 bins of 200,000 rows took 5.3 s through `scoring.metrics`, 0.1 s here: measured
    on this machine under load)."""
    if task == tasks.BINARY:
        positive = actual == 1
        return lambda rows: scoring.auc(scores[rows], positive[rows])
    hits = np.abs(scores - actual) <= tolerance
    return lambda rows: float(hits[rows].mean())
