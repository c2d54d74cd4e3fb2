"""Sample-ratio mismatch: a test's realized split against its configured share.

A router whose split is broken (a key that is not random, a client that retries on one arm, a
log that loses one arm's rows) makes every figure of the test wrong, whatever its verdict
says. Each evaluation checks the predictions each arm SERVED in the test (its own rollup rows)
against the candidate's configured share with `abstats.srm_p`, the always-valid
Dirichlet–multinomial test: reading it at every evaluation does not inflate its error, so
p < `[monitoring] srm_p` (0.001) is a mismatch whenever it is seen.

The unit of a split is what was randomized. A request without a routing key draws its arm alone,
so there the unit is the request; a key keeps its arm (the router hashes it into a bucket), so a
finite set of keys lands in the candidate's buckets in a proportion that is itself random — the
demo's 2,000 repositories put 167 (8.35%) in a 10% share, and counting their requests finds that
honest split "mismatched" once enough requests come (five requests a key: p ≈ 10⁻⁶ on the
requests, 0.21 on the keys). So the split is counted in units: each distinct key once, each
request without a key once (`PredictionLogRepo.split_units`, read from the log). Reading the log
costs a scan of the test's rows, so it is read only when the request counts, from the minute
rollups, look mismatched: on traffic without keys the two counts are the same, and a test that
passes on requests is not read again. A false alarm needs the unit test to reject, so its error
stays at srm_p.

A mismatch fires the `srm` alert (line, the candidate, critical). It has a life of its own
beside the health alerts: it fires while the test runs with a mismatch, resolves when the
split is back in line or the test ends, and — firing or resolved — blocks the test's
promotion until someone acknowledges it (`beast alerts ack ID`): a split that was broken once
may have biased everything counted since.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from engine.core.clock import ms_of, utc_now
from engine.core.config import Config
from engine.core.records import BASIS_POINTS, Alert, Experiment, percent
from engine.monitoring import abstats, evidence
from engine.monitoring import rollups as metrics
from engine.store.base import Tx

METRIC = "srm"


@dataclass(frozen=True)
class SrmCheck:
    """A test's realized split against its configured one ([monitoring] srm_p)."""

    p: float  # always-valid p (abstats.srm_p)
    mismatch: bool  # p < srm_p
    control: int  # units per arm, over what was checked (`unit`)
    candidate: int
    share: float  # the candidate's configured share, 0–1
    acknowledged: bool = False  # an srm alert of this test was acknowledged
    # "prediction": requests counted (no key among them, or their split passed as it was);
    # "key": each distinct key once and each request without one once
    unit: str = "prediction"

    def to_json(self) -> dict[str, Any]:
        return {
            "p": evidence.safe(self.p),
            "mismatch": self.mismatch,
            "unit": self.unit,
            "units": {"control": self.control, "candidate": self.candidate},
            "share": self.share,
            "acknowledged": self.acknowledged,
        }

    @property
    def noun(self) -> str:
        """What was counted, in the plural: "predictions" or "keys"."""
        return "keys" if self.unit == "key" else "predictions"

    def message(self, test: str) -> str:
        """The alert's one line: the counts, the expected share and p."""
        return (
            f"sample-ratio mismatch in test {test}: control {self.control:,}, candidate "
            f"{self.candidate:,} {self.noun}; expected candidate share "
            f"{percent(round(self.share * BASIS_POINTS)):g}%, got "
            f"{self.candidate / max(self.control + self.candidate, 1):.1%} (p = {self.p:.2g})"
        )


def check(
    tx: Tx,
    config: Config,
    experiment: Experiment,
    *,
    since_minute: int | None = None,
    share_bp: int | None = None,
    served: tuple[int, int] | None = None,
) -> SrmCheck | None:
    """The test's split checked from `since_minute` (the whole test without it) against
    `share_bp` (the test's `traffic_bp` without it: a rollout passes its step's share):
    predictions served per arm (`served`: the (control, candidate) counts already read), and
    when those look mismatched, the units the split assigned (the module's docstring). None
    when the share leaves one arm nothing to serve (0% or 100%): there is no split to check."""
    share = (experiment.traffic_bp if share_bp is None else share_bp) / BASIS_POINTS
    if not 0 < share < 1:
        return None
    control, candidate = served if served is not None else counts(tx, experiment, since_minute)
    p = abstats.srm_p(control, candidate, share)
    unit = "prediction"
    if p < config.monitoring.srm_p:
        since_ms = _since_ms(experiment, since_minute)
        arms = tx.predictions.split_units(experiment.name, since_ms)
        if any(arm.keys for arm in arms):
            control, candidate = (arm.units for arm in arms)
            p, unit = abstats.srm_p(control, candidate, share), "key"
    found = alerts_of(tx, experiment)
    acknowledged = bool(found) and all(a.acknowledged_at is not None for a in found)
    return SrmCheck(p, p < config.monitoring.srm_p, control, candidate, share, acknowledged, unit)


def _since_ms(experiment: Experiment, since_minute: int | None) -> int:
    """Where the units are counted from: the minute given, else the test's start."""
    if since_minute is not None:
        return since_minute * 60_000
    return ms_of(experiment.started_at)


def counts(tx: Tx, experiment: Experiment, since_minute: int | None = None) -> tuple[int, int]:
    """Predictions served in the test by (control, candidate), from `since_minute`."""
    out = []
    for name in (experiment.control, experiment.candidate):
        version = tx.registry.get_version(experiment.line, name)
        rows = metrics.load(tx, version.id, since_minute=since_minute, experiment=experiment.name)
        out.append(rows.window(since_minute).predictions)
    return out[0], out[1]


def alerts_of(tx: Tx, experiment: Experiment) -> list[Alert]:
    """The srm alerts fired while `experiment` ran (its candidate's, since it started)."""
    return tx.alerts.since(experiment.line, experiment.candidate, METRIC, experiment.started_at)


def blocking(tx: Tx, experiment: Experiment) -> Alert | None:
    """The first srm alert of the test nobody acknowledged (firing or resolved), or None."""
    return next((a for a in alerts_of(tx, experiment) if a.acknowledged_at is None), None)


def sync(tx: Tx, config: Config, checks: Iterable[tuple[Experiment, SrmCheck | None]]) -> None:
    """Fire, refresh and resolve the srm alerts to match the running tests' checks (inside
    the caller's write transaction): a test no longer checked (ended) resolves its alert."""
    now = utc_now()
    firing = {(a.line, a.version): a.id for a in tx.alerts.firing() if a.metric == METRIC}
    seen: set[tuple[str, str]] = set()
    for experiment, found in checks:
        if found is None or not found.mismatch:
            continue
        key = (experiment.line, experiment.candidate)
        seen.add(key)
        message = found.message(experiment.name)
        if key in firing:
            tx.alerts.refresh(firing[key], message=message, at=now, value=found.p)
            continue
        tx.alerts.fire(
            line=experiment.line,
            version=experiment.candidate,
            metric=METRIC,
            severity="critical",
            value=found.p,
            threshold=config.monitoring.srm_p,
            message=message,
            at=now,
        )
    for key, alert_id in firing.items():
        if key not in seen:
            tx.alerts.resolve(alert_id, now)
