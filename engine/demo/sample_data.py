"""Demo data for the code-quality predictor: labelled, generated, and labelled as generated.

Each row describes one repository snapshot with twelve measurable features; the target is the
documented function `quality_score` of those features plus Gaussian noise (σ = 3 points),
clipped to 0–100. `drift` shifts the feature distributions the way a codebase ageing would
(coverage down, churn and lint up), for demos and tests of drift detection.

CSV schema (`data/*.csv`): one column per name in FEATURES (floats), then `score` (the label,
0–100) and `observed_at` (UTC ISO-8601; the time order used for holdouts).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from engine.core.config import DEFAULT_LABEL, DEFAULT_TIME

FEATURES: tuple[str, ...] = (
    "test_coverage",  # fraction of lines covered by tests, 0–1
    "cyclomatic_complexity",  # mean per function, 1–40
    "lint_density",  # lint warnings per 100 lines, 0–25
    "duplication",  # fraction of duplicated lines, 0–0.6
    "churn",  # lines changed in 30 days / total lines, 0–3
    "doc_coverage",  # fraction of public symbols documented, 0–1
    "function_length",  # mean lines per function, 3–150
    "dependency_count",  # direct dependencies, 0–120
    "open_issues",  # open bug reports, 0–80
    "age_days",  # repository age, 1–4000
    "contributors",  # active contributors in 90 days, 1–50
    "test_to_code_ratio",  # test lines / code lines, 0–3
)
NOISE_POINTS = 3.0
LABEL = DEFAULT_LABEL
TIME = DEFAULT_TIME


@dataclass(frozen=True)
class Samples:
    features: np.ndarray  # float32, shape (n, len(FEATURES))
    scores: np.ndarray  # float32, shape (n,)
    observed_at: tuple[str, ...]


def quality_score(x: np.ndarray) -> np.ndarray:
    """The documented ground truth: a code-quality score 0–100 before noise."""
    f = {name: x[:, i] for i, name in enumerate(FEATURES)}
    raw = (
        55.0
        + 28.0 * (f["test_coverage"] - 0.6)
        + 9.0 * (f["doc_coverage"] - 0.5)
        - 1.1 * (f["cyclomatic_complexity"] - 8.0)
        - 1.3 * (f["lint_density"] - 4.0)
        - 35.0 * (f["duplication"] - 0.08)
        - 6.0 * np.tanh(f["churn"] - 0.4)
        - 0.12 * (f["function_length"] - 25.0)
        - 0.05 * (f["dependency_count"] - 20.0)
        - 0.2 * (f["open_issues"] - 8.0)
        + 4.0 * np.tanh(f["test_to_code_ratio"] - 0.5)
        + 1.5 * np.log1p(f["contributors"]) * (f["test_coverage"] > 0.5)
        - 2.0 * (f["age_days"] > 2500) * (f["doc_coverage"] < 0.3)
    )
    clipped: np.ndarray = np.clip(raw, 0.0, 100.0)
    return clipped


def generate(
    n: int, *, seed: int = 0, drift: float = 0.0, start: datetime | None = None
) -> Samples:
    """n labelled rows; `drift` in 0–1 ages the codebase (0 = the training distribution)."""
    rng = np.random.default_rng(seed)
    cols = [
        np.clip(rng.beta(5, 3, n) - 0.25 * drift, 0, 1),
        np.clip(rng.gamma(3.0, 2.7, n) + 1 + 4 * drift, 1, 40),
        np.clip(rng.gamma(2.0, 2.0, n) * (1 + drift), 0, 25),
        np.clip(rng.beta(1.5, 15, n) + 0.08 * drift, 0, 0.6),
        np.clip(rng.lognormal(-1.2, 0.8, n) * (1 + 1.5 * drift), 0, 3),
        np.clip(rng.beta(3, 3, n), 0, 1),
        np.clip(rng.lognormal(3.1, 0.5, n), 3, 150),
        np.clip(rng.poisson(20, n).astype(float), 0, 120),
        np.clip(rng.poisson(8 + 6 * drift, n).astype(float), 0, 80),
        np.clip(rng.uniform(1, 4000, n), 1, 4000),
        np.clip(rng.geometric(0.15, n).astype(float), 1, 50),
        np.clip(rng.gamma(2.0, 0.3, n), 0, 3),
    ]
    x = np.column_stack(cols).astype(np.float32)
    y = np.clip(quality_score(x) + rng.normal(0, NOISE_POINTS, n), 0, 100).astype(np.float32)
    times = _times(n, start)
    return Samples(x, y, times)


def _times(n: int, start: datetime | None) -> tuple[str, ...]:
    """One row every 7 minutes from `start` (2026-01-01 UTC), as UTC ISO-8601."""
    t0 = start or datetime(2026, 1, 1, tzinfo=UTC)
    step = timedelta(minutes=7)
    return tuple((t0 + i * step).strftime("%Y-%m-%dT%H:%M:%SZ") for i in range(n))


def _write_rows(
    path: Path, header: list[str], features: np.ndarray, labels: list[str], times: tuple[str, ...]
) -> Path:
    """Write rows of features, a label and a time atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row, label, when in zip(features, labels, times, strict=True):
            writer.writerow([f"{v:.6g}" for v in row] + [label, when])
    tmp.replace(path)
    return path


def write_csv(path: Path, samples: Samples) -> Path:
    """Write samples with the documented schema (atomically: temp file, then rename)."""
    labels = [f"{score:.3f}" for score in samples.scores]
    return _write_rows(
        path, [*FEATURES, LABEL, TIME], samples.features, labels, samples.observed_at
    )


# -- revert-risk: the demo's binary line ------------------------------------------------------
#
# Each row describes one merged change with seven features; the label `reverted` (0/1) is drawn
# from the documented probability `revert_probability` of those features (a logistic model), so
# even a perfect model has an AUC below 1. `drift` moves the changes the way a rushed release
# would (bigger, less tested, less reviewed). CSV schema (`data/demo-reverts.csv`): one column
# per name in REVERT_FEATURES, then `reverted` (0/1) and `merged_at` (UTC ISO-8601).

REVERT_LINE = "revert-risk"
REVERT_LABEL = "reverted"
REVERT_TIME = "merged_at"
REVERT_FEATURES: tuple[str, ...] = (
    "lines_changed",  # added + removed, 1–5000
    "files_touched",  # 1–200
    "test_coverage_delta",  # change in covered fraction, -0.3–0.3
    "review_comments",  # 0–60
    "author_changes_90d",  # the author's merged changes in 90 days, 0–300
    "ci_retries",  # CI reruns before it went green, 0–10
    "friday_evening",  # merged on a Friday after 16:00, 0/1
)


@dataclass(frozen=True)
class RevertSamples:
    features: np.ndarray  # float32, shape (n, len(REVERT_FEATURES))
    reverted: np.ndarray  # float32 0/1, shape (n,)
    merged_at: tuple[str, ...]


def revert_probability(x: np.ndarray) -> np.ndarray:
    """The documented ground truth: the probability that a change is reverted."""
    f = {name: x[:, i] for i, name in enumerate(REVERT_FEATURES)}
    logit = (
        -1.6
        + 1.1 * np.log1p(f["lines_changed"] / 100.0)
        + 0.6 * np.log1p(f["files_touched"] / 5.0)
        - 12.0 * f["test_coverage_delta"]
        - 0.08 * f["review_comments"]
        - 0.8 * np.log1p(f["author_changes_90d"] / 10.0)
        + 0.5 * f["ci_retries"]
        + 1.2 * f["friday_evening"]
    )
    p: np.ndarray = 1.0 / (1.0 + np.exp(-logit))
    return p


def generate_reverts(
    n: int, *, seed: int = 0, drift: float = 0.0, start: datetime | None = None
) -> RevertSamples:
    """n labelled changes; `drift` in 0–1 rushes the release (0 = the training distribution)."""
    rng = np.random.default_rng(seed)
    cols = [
        np.clip(rng.lognormal(4.0 + 0.8 * drift, 1.1, n), 1, 5000),
        np.clip(rng.lognormal(1.2 + 0.4 * drift, 0.8, n), 1, 200),
        np.clip(rng.normal(0.01 - 0.04 * drift, 0.05, n), -0.3, 0.3),
        np.clip(rng.poisson(6 * (1 - 0.5 * drift), n).astype(float), 0, 60),
        np.clip(rng.gamma(2.0, 20.0, n), 0, 300),
        np.clip(rng.poisson(0.4 + drift, n).astype(float), 0, 10),
        (rng.random(n) < 0.06 + 0.1 * drift).astype(float),
    ]
    x = np.column_stack(cols).astype(np.float32)
    y = (rng.random(n) < revert_probability(x)).astype(np.float32)
    times = _times(n, start)
    return RevertSamples(x, y, times)


def write_reverts_csv(path: Path, samples: RevertSamples) -> Path:
    """Write changes with the documented schema (atomically: temp file, then rename)."""
    labels = [str(int(label)) for label in samples.reverted]
    header = [*REVERT_FEATURES, REVERT_LABEL, REVERT_TIME]
    return _write_rows(path, header, samples.features, labels, samples.merged_at)
