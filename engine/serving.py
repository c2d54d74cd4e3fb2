"""The router: predictions from the deployed models, split by the A/B test's traffic share.

A route per model line is an immutable snapshot (production, candidate, share, test) swapped
in one assignment, so the hot path takes no lock. Every `refresh_s` a predict call looks at
`PRAGMA data_version` (it changes when any other connection commits) and reloads the routes
whose revision moved: a deploy, promote or rollback by any process is picked up within a
second, without a restart. Models load from their artifact's bytes after a sha256 check and
stay in memory, so a deleted file keeps serving (and status says the artifact is missing).

With a `key` the arm is sticky: a hash of test and key into 10,000 buckets, the candidate
taking the buckets below its share — the same key lands on the same arm across restarts, and
raising the share never moves a key back to production. Without a key the arm is random.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine import artifacts, features, ids, registry
from engine.errors import BeastError, NotFound, StoreError
from engine.facade import Engine
from engine.predlog import PredictionLog, Record
from engine.records import BASIS_POINTS, VersionRef
from engine.store import Store

FeatureInput = Mapping[str, Any] | Sequence[Any]


class Unavailable(BeastError):
    """Nothing can serve this request (nothing deployed, or a model failed to load)."""

    http_status = 503


@dataclass(frozen=True)
class Prediction:
    prediction_id: str
    score: float | None
    version: str
    line: str
    experiment: str | None
    arm: str
    latency_ms: float
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "prediction_id": self.prediction_id,
            "score": self.score,
            "version": self.version,
            "line": self.line,
            "experiment": self.experiment,
            "arm": self.arm,
            "latency_ms": round(self.latency_ms, 4),
            "error": self.error,
        }


@dataclass(frozen=True)
class Arm:
    name: str  # "production" | "candidate"
    ref: VersionRef
    booster: Any  # xgboost.Booster (imported lazily)


@dataclass(frozen=True)
class Route:
    line: str
    schema: features.Schema
    production: Arm
    candidate: Arm | None
    candidate_bp: int
    experiment: str | None
    revision: int

    def pick(self, key: str | None) -> Arm:
        if self.candidate is None:
            return self.production
        return (
            self.candidate
            if bucket(self.experiment or "", key) < self.candidate_bp
            else self.production
        )


def bucket(experiment: str, key: str | None) -> int:
    """0–9999: sticky for a key within a test, random without one."""
    if key is None:
        return random.randrange(BASIS_POINTS)
    digest = hashlib.blake2b(f"{experiment}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BASIS_POINTS


class Router:
    """Serve predictions for a workspace. Thread-safe for concurrent predict calls."""

    def __init__(
        self, engine: Engine, *, log: PredictionLog | None = None, refresh_s: float = 0.5
    ) -> None:
        self.engine = engine
        self.workspace = engine.workspace
        self.refresh_s = refresh_s
        self.log = log
        engine.store.migrate()  # routes are read from the current schema
        self._store = Store(engine.workspace.db_path)
        self._routes: dict[str, Route] = {}
        self._boosters: dict[int, Any] = {}  # artifact id -> Booster
        self._checked = -math.inf
        self._data_version: int | None = None
        self._refreshing = threading.Lock()
        self.nullable = frozenset(engine.config.serving.nullable_features)
        self.refresh(force=True)

    def close(self) -> None:
        self._store.close()

    # -- routes ----------------------------------------------------------------------------

    def routes(self) -> dict[str, Route]:
        return dict(self._routes)

    def refresh(self, *, force: bool = False) -> None:
        """Reload routes whose state revision changed (cheap when nothing changed)."""
        if not self._refreshing.acquire(blocking=force):
            return  # another thread is refreshing; serve from the current snapshot
        try:
            self._checked = time.monotonic()
            version = self._store.query("PRAGMA data_version")[0][0]
            if not force and version == self._data_version:
                return
            self._data_version = version
            self._routes = self._load_routes()
        finally:
            self._refreshing.release()

    def _load_routes(self) -> dict[str, Route]:
        routes: dict[str, Route] = {}
        with self._store.read() as conn:
            rows = conn.execute(
                "SELECT s.line, s.production_id, s.candidate_id, s.candidate_bp, s.revision,"
                " e.name, m.feature_names, m.n_features FROM line_state s"
                " JOIN model_lines m ON m.name = s.line"
                " LEFT JOIN experiments e ON e.id = s.experiment_id"
            ).fetchall()
            for line, prod_id, cand_id, bp, revision, experiment, names_json, width in rows:
                current = self._routes.get(line)
                if current is not None and current.revision == revision:
                    routes[line] = current
                    continue
                names = (
                    tuple(json.loads(names_json))
                    if names_json
                    else tuple(f"f{i}" for i in range(width))
                )
                production = self._arm(conn, "production", prod_id)
                candidate = self._arm(conn, "candidate", cand_id) if cand_id else None
                routes[line] = Route(
                    line,
                    features.Schema(names, self.nullable & set(names)),
                    production,
                    candidate,
                    bp,
                    experiment,
                    revision,
                )
        return routes

    def _arm(self, conn: Any, role: str, version_id: int) -> Arm:
        ref = registry.version_by_id(conn, version_id)
        booster = self._boosters.get(ref.artifact_id)
        if booster is None:
            path = registry.artifact_path(conn, self.workspace.models_dir, ref.artifact_id)
            booster = load_booster(path, ref.sha256)
            self._boosters[ref.artifact_id] = booster
        return Arm(role, ref, booster)

    def _route(self, model: str | None) -> Route:
        if time.monotonic() - self._checked >= self.refresh_s:
            with contextlib.suppress(StoreError):  # serve from memory while the store is down
                self.refresh()
        routes = self._routes
        if model is not None:
            try:
                return routes[model]
            except KeyError:
                raise NotFound(f"nothing deployed for model line {model}") from None
        if len(routes) == 1:
            return next(iter(routes.values()))
        if not routes:
            raise Unavailable("nothing is deployed: deploy a model first")
        raise BeastError(f"several model lines are deployed ({', '.join(routes)}): name one")

    # -- predictions -----------------------------------------------------------------------

    def predict(
        self, values: FeatureInput, *, key: str | None = None, model: str | None = None
    ) -> Prediction:
        """One prediction: validated, routed, scored, logged."""
        start = time.perf_counter_ns()
        route = self._route(model)
        row = features.row(route.schema, values)
        arm = route.pick(key)
        x = np.asarray([row], dtype=np.float32)
        score, error = _score(arm.booster, x)
        latency_us = (time.perf_counter_ns() - start) // 1000
        first = score[0] if score is not None else None
        return self._record(
            route, arm, x[0], key=key, score=first, error=error, latency_us=latency_us
        )

    def predict_batch(
        self,
        rows: Sequence[FeatureInput],
        *,
        keys: Sequence[str | None] | None = None,
        model: str | None = None,
    ) -> list[Prediction]:
        """Many rows in one call; each row is routed (and keyed) on its own."""
        start = time.perf_counter_ns()
        route = self._route(model)
        x = features.matrix(route.schema, rows)
        if keys is not None and len(keys) != len(rows):
            raise features.InvalidFeatures(f"{len(keys)} keys for {len(rows)} rows")
        chosen = [route.pick(keys[i] if keys else None) for i in range(len(rows))]
        scores: list[float | None] = [None] * len(rows)
        errors: list[str | None] = [None] * len(rows)
        for arm in {id(a): a for a in chosen}.values():
            idx = [i for i, a in enumerate(chosen) if a is arm]
            got, error = _score(arm.booster, x[idx])
            for j, i in enumerate(idx):
                scores[i] = got[j] if got is not None else None
                errors[i] = error
        per_row_us = (time.perf_counter_ns() - start) // 1000 // len(rows)
        return [
            self._record(
                route,
                chosen[i],
                x[i],
                key=keys[i] if keys else None,
                score=scores[i],
                error=errors[i],
                latency_us=per_row_us,
            )
            for i in range(len(rows))
        ]

    def _record(
        self,
        route: Route,
        arm: Arm,
        x: np.ndarray,
        *,
        key: str | None,
        score: float | None,
        error: str | None,
        latency_us: int,
    ) -> Prediction:
        pid = ids.new_id()
        if self.log is not None:
            self.log.submit(
                Record(
                    pid,
                    int(time.time() * 1000),
                    route.line,
                    arm.ref.id,
                    arm.name,
                    route.experiment or "",
                    key,
                    x.tobytes(),
                    score,
                    latency_us,
                    error,
                )
            )
        return Prediction(
            pid,
            score,
            arm.ref.name,
            route.line,
            route.experiment,
            arm.name,
            latency_us / 1000,
            error,
        )


def _score(booster: Any, x: np.ndarray) -> tuple[list[float] | None, str | None]:
    import xgboost

    try:
        out = np.asarray(booster.inplace_predict(x, validate_features=False), dtype=np.float64)
    except xgboost.core.XGBoostError as exc:
        return None, f"model error: {str(exc).strip().splitlines()[0][:200]}"
    if not np.all(np.isfinite(out)):
        return None, "model returned a non-finite score"
    return [float(v) for v in out.ravel()], None


def load_booster(path: Any, sha256: str) -> Any:
    """Load a registered artifact after checking its bytes still are the registered ones."""
    import xgboost

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise Unavailable(f"cannot load {path}: {exc.strerror or exc}") from None
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise Unavailable(f"{path} no longer matches its registered sha256 {sha256[:12]}…")
    booster = xgboost.Booster(params={"nthread": 1})
    booster.load_model(bytearray(raw))
    return booster


__all__ = ["Prediction", "Route", "Router", "Unavailable", "artifacts", "load_booster"]
