"""The deployment checklist, made a preflight: what `beast deploy` prints before any change.

The seed guide's "Deployment Checklist" was boxes to tick by hand. Each is now a fact the
workspace holds, read in one transaction by the facade (`Facts`) and judged here by a pure
function; `--strict` (or `[deploy] strict = true`) refuses a deploy while an item is unchecked.

- model validated: registered, with a reference file's or training's metrics (its baseline);
- tested on a validation set: a reference file's figures, or a replay's (`beast replay`);
- metrics acceptable: the line's primary metric (replay's, else the baseline's) at least the
  line's threshold ([thresholds] accuracy.min, or auc.min on a binary line);
- A/B test configured: a share and a test are given — needed when a production serves
  already (a first production has nothing to be compared with);
- monitoring enabled: an engine leads this workspace (its heartbeat seen within
  `engine.store.replicas.STALE_S`): alerts, the auto-pull and the tests' verdicts run;
- rollback plan ready: a previous production to go back to (the current one, which the
  deploy's history row puts on the rollback stack).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.core.figures import sig

MODEL_VALIDATED = "model validated"
VALIDATION_SET = "tested on a validation set"
METRICS_ACCEPTABLE = "metrics acceptable"
AB_TEST = "A/B test configured"
MONITORING = "monitoring enabled"
ROLLBACK_PLAN = "rollback plan ready"


@dataclass(frozen=True)
class Facts:
    """What the preflight judges, read by the facade in one transaction."""

    line: str
    version: str
    metric: str  # the line's primary metric: "accuracy" | "auc"
    metric_min: float  # its threshold
    baseline_source: str | None  # "reference" | "training" | "first_predictions" | None
    baseline_detail: str | None
    baseline: tuple[tuple[str, float], ...]  # the baseline's metrics
    production: str | None  # what serves now
    share_bp: int  # the candidate's share asked for (0: production at 100%)
    ab_test: str | None
    leader: str | None  # the engine replica that leads now
    replay_n: int = 0  # labelled requests a replay ran on (0: none)
    replay: tuple[tuple[str, float], ...] = ()  # the version's metrics on them
    replay_production: tuple[tuple[str, float], ...] = ()  # production's on the same


@dataclass(frozen=True)
class Item:
    """One checklist item: checked or not, and the figure it was judged on."""

    name: str
    checked: bool
    figure: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "checked": self.checked, "figure": self.figure}


@dataclass(frozen=True)
class Preflight:
    """The checklist of one deploy."""

    line: str
    version: str
    items: tuple[Item, ...]

    @property
    def unchecked(self) -> tuple[str, ...]:
        return tuple(i.name for i in self.items if not i.checked)

    @property
    def ok(self) -> bool:
        return not self.unchecked

    def refusal(self) -> str:
        """The one line a strict deploy is refused with (only when not `ok`)."""
        return (
            f"refused (strict deploy): unchecked {', '.join(self.unchecked)}; "
            f"nothing changed on {self.line}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.line,
            "version": self.version,
            "ok": self.ok,
            "items": [i.to_json() for i in self.items],
        }


def check(facts: Facts) -> Preflight:
    """The checklist of a deploy judged on `facts`."""
    items = (
        _validated(facts),
        _validation_set(facts),
        _acceptable(facts),
        _ab_test(facts),
        _monitoring(facts),
        _rollback(facts),
    )
    return Preflight(facts.line, facts.version, items)


def _figures(metrics: tuple[tuple[str, float], ...]) -> str:
    return ", ".join(f"{k} {sig(v)}" for k, v in metrics[:3])


def _validated(f: Facts) -> Item:
    if f.baseline_source in ("reference", "training") and f.baseline:
        return Item(
            MODEL_VALIDATED,
            True,
            f"{f.version} registered; {f.baseline_source} metrics: {_figures(f.baseline)}",
        )
    source = f.baseline_source.replace("_", " ") if f.baseline_source else "none"
    return Item(
        MODEL_VALIDATED,
        False,
        f"{f.version} registered without reference or training metrics (baseline: {source})",
    )


def _validation_set(f: Facts) -> Item:
    if f.replay_n:
        return Item(
            VALIDATION_SET, True, f"replay on {f.replay_n} labelled requests: {_figures(f.replay)}"
        )
    if f.baseline_source == "reference" and f.baseline:
        where = f" ({f.baseline_detail})" if f.baseline_detail else ""
        return Item(VALIDATION_SET, True, f"reference file{where}: {_figures(f.baseline)}")
    return Item(
        VALIDATION_SET,
        False,
        "no reference file or replay figures (--reference FILE, or --require-replay)",
    )


def _acceptable(f: Facts) -> Item:
    source, figures = ("replay", f.replay) if f.replay_n else ("baseline", f.baseline)
    value = dict(figures).get(f.metric)
    if value is None:
        return Item(
            METRICS_ACCEPTABLE, False, f"no {f.metric} figure to judge (min {sig(f.metric_min)})"
        )
    ok = value >= f.metric_min
    sign = "≥" if ok else "<"
    return Item(
        METRICS_ACCEPTABLE, ok, f"{source} {f.metric} {sig(value)} {sign} min {sig(f.metric_min)}"
    )


def _ab_test(f: Facts) -> Item:
    if f.share_bp and f.ab_test:
        return Item(AB_TEST, True, f"A/B test {f.ab_test}: candidate at {sig(f.share_bp / 100)}%")
    if f.production is None:
        return Item(AB_TEST, True, f"not needed: first production of {f.line}")
    return Item(
        AB_TEST,
        False,
        f"replaces production {f.production} at 100% without a test (--traffic N --ab-test NAME)",
    )


def _monitoring(f: Facts) -> Item:
    if f.leader is not None:
        return Item(MONITORING, True, f"engine {f.leader} leads this workspace")
    return Item(MONITORING, False, "no engine is evaluating this workspace (`beast engine`)")


def _rollback(f: Facts) -> Item:
    if f.production is not None and f.production != f.version:
        return Item(ROLLBACK_PLAN, True, f"`beast rollback` goes back to {f.production}")
    if f.production is not None:
        return Item(
            ROLLBACK_PLAN, False, f"{f.version} is production already: nothing to go back to"
        )
    return Item(ROLLBACK_PLAN, False, f"no previous production of {f.line} to go back to")
