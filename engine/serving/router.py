"""The router: predictions from the deployed models, split by the A/B test's traffic share.

A route per model line is an immutable snapshot (production, candidate, share, test) swapped
in one assignment, so the hot path takes no lock. Every `refresh_s` a predict call looks at
`PRAGMA data_version` (it changes when any other connection commits) and reloads the routes
whose revision moved: a deploy, promote or rollback by any process is picked up within a
second, without a restart. Models load from their artifact's bytes after a sha256 check and
stay in memory, so a deleted file keeps serving (and status says the artifact is missing). A
version registered on another replica (PostgreSQL) loads from the bytes the store keeps,
copied into this workspace once (engine.registry.fetch).

A line whose new deployment cannot be loaded (artifact missing or changed on disk) keeps
serving the last routes that loaded, and says so in `problems()`; the load is retried on every
refresh until it works. A line that never loaded answers Unavailable with the reason.

With a `key` the arm is sticky: a hash of test and key into 10,000 buckets, the candidate
taking the buckets below its share — the same key lands on the same arm across restarts, and
raising the share never moves a key back to production. Without a key the arm is random.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from itertools import repeat
from typing import Any, NamedTuple, Protocol

import numpy as np

from engine.core import ids, text
from engine.core.config import Config
from engine.core.errors import BeastError, NotFound, StoreError
from engine.core.records import BASIS_POINTS, ServedLine, VersionRef
from engine.core.workspace import Workspace
from engine.registry import artifacts, compiled, fetch
from engine.serving import features
from engine.serving.compiled_scorer import RowScorer
from engine.serving.prediction_log import Chunk, PredictionLog, Record
from engine.serving.shadow import ShadowArm, ShadowScorer
from engine.store.base import Store, Tx
from engine.store.opening import open_store

FeatureInput = Mapping[str, Any] | Sequence[Any]
MAX_KEY_CHARS = text.MAX_KEY_CHARS  # as the HTTP API's limit
_find_unsafe = text.find_unsafe  # a module global: one lookup on the one-row path
# A batch is logged in chunks of at most this many rows (one `prediction_batches` row, one
# writer transaction each; the HTTP API's cap): a 200,000-row `beast predict --csv` logged
# as one chunk held the write lock for 1.0 s on a loaded 2-core machine, in 10,000-row
# chunks 7 to 22 ms each.
LOG_CHUNK_ROWS = 10_000
_log = logging.getLogger("beast.router")


class Served(Protocol):
    """What a router is given (the facade is one): the workspace whose deployments it serves,
    its settings, and its store (migrated before the router reads routes from it)."""

    @property
    def workspace(self) -> Workspace: ...

    @property
    def config(self) -> Config: ...

    @property
    def store(self) -> Store: ...


class Unavailable(BeastError):
    """Nothing can serve this request (nothing deployed, or a model failed to load)."""

    http_status = 503


class Prediction(NamedTuple):
    """One served prediction (a tuple: cheap to build a thousand of for a batch)."""

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


class Arm(NamedTuple):
    name: str  # "production" | "candidate"
    ref: VersionRef
    booster: Any  # xgboost.Booster (imported lazily)
    score: Callable[[np.ndarray], np.ndarray]  # float32 rows -> float32 scores


class Route(NamedTuple):
    line: str
    schema: features.Schema
    production: Arm
    candidate: Arm | None
    candidate_bp: int
    experiment: str | None
    revision: int
    # The line's shadow: scored on its share of production's requests once they are
    # answered, never served (engine.serving.shadow).
    shadow: ShadowArm | None = None

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


def buckets(experiment: str, keys: Sequence[str | None] | None, count: int) -> np.ndarray:
    """`bucket` for a batch: keyed rows hashed, the others random (64-bit draws mod 10,000)."""
    drawn = np.frombuffer(os.urandom(8 * count), dtype=np.uint64) % BASIS_POINTS
    if keys is None:
        return drawn.astype(np.int64)
    return np.fromiter(
        (
            bucket(experiment, k) if k is not None else int(d)
            for k, d in zip(keys, drawn, strict=True)
        ),
        dtype=np.int64,
        count=count,
    )


def check_key(key: object) -> str | None:
    """A routing key as logged, or a refusal: it goes to the store with the prediction, and
    a key the log writer cannot encode (a lone surrogate) once cost a whole batch of rows."""
    if key is None or (
        type(key) is str and len(key) <= MAX_KEY_CHARS and _find_unsafe(key) is None
    ):
        return key  # the common case, first: the search adds ~0.1 µs on a short key
    if not isinstance(key, str):
        raise features.InvalidFeatures(f"key must be a string, got {type(key).__name__}")
    return text.check("key", str(key), limit=MAX_KEY_CHARS)  # a str subclass as a plain str


class Router:
    """Serve predictions for a workspace. Thread-safe for concurrent predict calls."""

    def __init__(
        self, served: Served, *, log: PredictionLog | None = None, refresh_s: float = 0.5
    ) -> None:
        # XGBoost is imported where a model is scored, never at import time (`beast status`
        # imports this module's callers within its 0.4 s cold-start budget).
        import xgboost

        self._xgboost_error: type[Exception] = xgboost.core.XGBoostError
        self.served = served
        self.workspace = served.workspace
        self.refresh_s = refresh_s
        self.log = log
        served.store.migrate()  # routes are read from the current schema
        # Its own connection: the change counter is per connection, and serving threads
        # never wait on the facade's.
        self._store: Store = open_store(served.workspace.db_path)
        self._routes: dict[str, Route] = {}
        self._broken: dict[str, str] = {}  # line -> why its deployment could not be loaded
        self._boosters: dict[int, tuple[Any, RowScorer]] = {}
        self._checked = -math.inf
        self._data_version: int | None = None
        self._refreshing = threading.Lock()
        self.nullable = frozenset(served.config.serving.nullable_features)
        self.compiled_trees = served.config.registry.compiled_trees
        # Shadow scores pair with logged predictions: without a log there is nothing to pair.
        self.shadows = (
            ShadowScorer(served.workspace.db_path, budget_ms=served.config.shadow.shadow_budget_ms)
            if log is not None
            else None
        )
        self.refresh(force=True)

    def close(self) -> None:
        if self.shadows is not None:
            self.shadows.close()
        with self._refreshing:
            self._store.close()

    # -- routes ----------------------------------------------------------------------------

    def routes(self) -> dict[str, Route]:
        return dict(self._routes)

    def problems(self) -> dict[str, str]:
        """Lines whose current deployment could not be loaded, and why."""
        return dict(self._broken)

    def refresh(self, *, force: bool = False) -> None:
        """Reload routes whose state revision changed (cheap when nothing changed)."""
        if not self._refreshing.acquire(blocking=force):
            return  # another thread is refreshing; serve from the current snapshot
        try:
            self._checked = time.monotonic()
            for _, row_scorer in list(self._boosters.values()):
                row_scorer.poll()  # a compiled form verified since: its single rows use it
            with self._store.read() as tx:
                version = tx.routes.change_counter()
            if not force and version == self._data_version and not self._broken:
                return
            self._routes, self._broken = self._load_routes()
            # Only now: a failed load is retried at the next refresh, commit or not.
            self._data_version = version
        finally:
            self._refreshing.release()

    def _load_routes(self) -> tuple[dict[str, Route], dict[str, str]]:
        routes: dict[str, Route] = {}
        broken: dict[str, str] = {}
        with self._store.read() as tx:
            for served in tx.routes.served_lines():
                line, revision = served.line, served.revision
                current = self._routes.get(line)
                if current is not None and current.revision == revision:
                    routes[line] = current
                    continue
                names = served.feature_names or tuple(f"f{i}" for i in range(served.n_features))
                try:
                    production = self._arm(tx, "production", served.production_id, len(names))
                    candidate = (
                        self._arm(tx, "candidate", served.candidate_id, len(names))
                        if served.candidate_id
                        else None
                    )
                except Unavailable as exc:
                    broken[line] = str(exc)
                    if current is not None:
                        routes[line] = current  # keep serving what loaded last
                    continue
                routes[line] = Route(
                    line,
                    features.Schema(names, self.nullable & set(names)),
                    production,
                    candidate,
                    served.candidate_bp,
                    served.experiment,
                    revision,
                    self._shadow_arm(tx, served, len(names)),
                )
        in_use = {
            arm.ref.artifact_id
            for route in routes.values()
            for arm in (route.production, route.candidate, route.shadow)
            if arm is not None
        }
        self._boosters = {k: v for k, v in self._boosters.items() if k in in_use}
        return routes, broken

    def _shadow_arm(self, tx: Tx, served: ServedLine, width: int) -> ShadowArm | None:
        """The line's shadow, loaded; None without one (or one that is production now, or
        without a log to pair with). A shadow that cannot load never stops production."""
        if (
            self.shadows is None
            or not served.shadow_id
            or served.shadow_version_id == served.production_id
        ):
            return None
        try:
            arm = self._arm(tx, "shadow", served.shadow_version_id, width)
        except Unavailable as exc:
            _log.warning("shadow of %s not scored: %s", served.line, exc)
            return None
        self.shadows.start()
        return ShadowArm(
            served.shadow_id, arm.ref, arm.score, served.shadow_bp, served.production_id
        )

    def _arm(self, tx: Tx, role: str, version_id: int, width: int) -> Arm:
        ref = tx.registry.version_by_id(version_id)
        loaded = self._boosters.get(ref.artifact_id)
        if loaded is None:
            relative = tx.registry.artifact_file(ref.artifact_id)
            try:  # registered on another replica: its kept bytes, copied here once
                path = fetch.local_copy(tx, self.workspace.models_dir, relative, ref.sha256)
            except OSError as exc:
                raise Unavailable(
                    f"cannot copy {relative} from the state store: {exc.strerror or exc}"
                ) from None
            booster = load_booster(path, ref.sha256)
            cache = compiled.cache_dir(self.workspace.models_dir)
            loaded = (
                booster,
                RowScorer(
                    scorer(booster, width),
                    booster,
                    width=width,
                    path=path,
                    sha256=ref.sha256,
                    cache=cache,
                    enabled=self.compiled_trees,
                ),
            )
            self._boosters[ref.artifact_id] = loaded
        return Arm(role, ref, *loaded)

    def route(self, model: str | None = None) -> Route:
        """What serves `model` (None: the only deployed line), or the error a prediction for
        it would get."""
        return self._route(model)

    def _route(self, model: str | None) -> Route:
        if time.monotonic() - self._checked >= self.refresh_s:
            with contextlib.suppress(StoreError):  # serve from memory while the store is down
                self.refresh()
        routes = self._routes
        if model is not None:
            found = routes.get(model)
            if found is not None:
                return found
            if model in self._broken:
                raise Unavailable(f"model line {model} cannot serve: {self._broken[model]}")
            # Only on a miss: a name that is served is safe (names are checked when created).
            text.check("model", model, limit=text.MAX_NAME_CHARS)
            raise NotFound(f"nothing deployed for model line {model}")
        if len(routes) == 1 and not self._broken:
            return next(iter(routes.values()))  # the common case, first
        lines = {*routes, *self._broken}
        if not lines:
            raise Unavailable("nothing is deployed: deploy a model first")
        if len(lines) == 1:
            line = lines.pop()
            if line in routes:
                return routes[line]
            raise Unavailable(f"model line {line} cannot serve: {self._broken[line]}")
        names = sorted(lines)
        raise BeastError(f"several model lines are deployed ({', '.join(names)}): name one")

    # -- predictions -----------------------------------------------------------------------

    def predict(
        self, values: FeatureInput, *, key: str | None = None, model: str | None = None
    ) -> Prediction:
        """One prediction: validated, routed, scored, logged."""
        start = time.perf_counter_ns()
        route = self._route(model)
        # This thread's preallocated row: scored and copied into the log record below, and
        # copied for the shadow, whose thread scores it later.
        x = features.row_buffer(route.schema, values)
        if key is not None:
            key = check_key(key)
        arm = route.pick(key)
        score: float | None
        error: str | None = None
        try:
            out = arm.score(x)
        except self._xgboost_error as exc:
            score, error = None, _model_error(exc)
        else:
            score = out.item(0) if out.size == 1 else None
            if score is None:
                error = f"model returned {out.size} values for one row, expected 1"
            elif not math.isfinite(score):
                score, error = None, "model returned a non-finite score"
        latency_us = (time.perf_counter_ns() - start) // 1000
        ms = time.time_ns() // 1_000_000
        pid = ids.new_id(ms)
        experiment = route.experiment
        ref = arm.ref
        if self.log is not None:
            self.log.submit(
                _new_record(
                    (
                        pid,
                        ms,
                        route.line,
                        ref.id,
                        arm.name,
                        experiment or "",
                        key,
                        x.tobytes(),
                        score,
                        latency_us,
                        error,
                    )
                )
            )
            shadow = route.shadow
            # After production's answer is made and logged: its row, for the shadow (a route
            # has a shadow only where the router has a scorer).
            if (
                shadow is not None
                and score is not None
                and arm is route.production
                and (shadow.bp >= BASIS_POINTS or random.randrange(BASIS_POINTS) < shadow.bp)
            ):
                self._shadow_scorer().submit(shadow, pid, x.copy(), score)
        return _new_prediction(
            (pid, score, ref.name, route.line, experiment, arm.name, latency_us / 1000, error)
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
        count = x.shape[0]
        if keys is not None:
            if isinstance(keys, str) or len(keys) != count:
                raise features.InvalidFeatures(
                    f"keys must be a list of one key (or null) per row: {count} rows"
                )
            keys = [check_key(k) for k in keys]
        production, candidate = route.production, route.candidate
        arms: list[tuple[Arm, np.ndarray | None]]
        if candidate is None:
            arms = [(production, None)]
            version_ids = np.full(count, production.ref.id, dtype=np.int64)
            arm_col: list[str] = [production.name] * count
            name_col: Any = repeat(production.ref.name)
        else:
            chosen = buckets(route.experiment or "", keys, count) < route.candidate_bp
            arms = [(production, np.flatnonzero(~chosen)), (candidate, np.flatnonzero(chosen))]
            version_ids = np.where(chosen, candidate.ref.id, production.ref.id)
            per_row = [candidate if c else production for c in chosen.tolist()]
            arm_col = [a.name for a in per_row]
            name_col = [a.ref.name for a in per_row]
        scores, score_list, errors = self._score_arms(x, arms)
        per_row_us = (time.perf_counter_ns() - start) // 1000 // count
        ms = time.time_ns() // 1_000_000
        experiment = route.experiment
        failed = errors.count(None) != count
        pids: list[str] = []
        for lo in range(0, count, LOG_CHUNK_ROWS):  # one logged batch per id prefix
            hi = min(count, lo + LOG_CHUNK_ROWS)
            chunk = Chunk(
                ids.batch_prefix(ms),
                ms,
                route.line,
                version_ids[lo:hi],
                arm_col[lo:hi],
                experiment or "",
                None if keys is None else list(keys[lo:hi]),
                np.ascontiguousarray(x[lo:hi]),
                scores[lo:hi],
                per_row_us,
                errors[lo:hi] if failed else None,
            )
            pids += chunk.pids()
            if self.log is not None:
                self.log.submit_chunk(chunk)
        if route.shadow is not None and self.log is not None:
            self._shadow_batch(route, x, version_ids, scores, pids)
        return list(
            map(
                _new_prediction,
                zip(
                    pids,
                    score_list,
                    name_col,
                    repeat(route.line),
                    repeat(experiment),
                    arm_col,
                    repeat(per_row_us / 1000),
                    errors,
                ),
            )
        )

    def _shadow_scorer(self) -> ShadowScorer:
        assert self.shadows is not None  # a route has a shadow only where there is a scorer
        return self.shadows

    def _shadow_batch(
        self,
        route: Route,
        x: np.ndarray,
        version_ids: np.ndarray,
        scores: np.ndarray,
        pids: list[str],
    ) -> None:
        """The batch's rows production answered (its share of them) to the shadow, at once."""
        shadow = route.shadow
        assert shadow is not None
        take = (version_ids == route.production.ref.id) & np.isfinite(scores)
        if shadow.bp < BASIS_POINTS:
            take &= buckets("", None, x.shape[0]) < shadow.bp
        rows = np.flatnonzero(take)
        if rows.size:
            self._shadow_scorer().submit_rows(
                shadow, [pids[i] for i in rows.tolist()], x[rows], scores[rows].tolist()
            )

    def _score_arms(
        self, x: np.ndarray, arms: list[tuple[Arm, np.ndarray | None]]
    ) -> tuple[np.ndarray, list[float | None], list[str | None]]:
        """Scores per row (NaN / None where the model failed) and each failed row's error."""
        count = x.shape[0]
        scores = np.full(count, np.nan)
        errors: list[str | None] = [None] * count
        for arm, idx in arms:
            n = count if idx is None else idx.size
            if n == 0:
                continue
            message = None
            try:
                out = arm.score(x if idx is None else x[idx])
            except self._xgboost_error as exc:
                message = _model_error(exc)
            else:
                if out.size != n:
                    message = f"model returned {out.size} values for {n} rows"
                elif idx is None:
                    scores[:] = out.ravel()
                else:
                    scores[idx] = out.ravel()
            if message is not None:
                for i in range(count) if idx is None else idx.tolist():
                    errors[i] = message
        score_list: list[float | None] = scores.tolist()
        bad = ~np.isfinite(scores)
        if bad.any():
            scores[bad] = np.nan  # ±inf from a model is a failed row too
            for i in np.flatnonzero(bad).tolist():
                score_list[i] = None
                errors[i] = errors[i] or "model returned a non-finite score"
        return scores, score_list, errors


# tuple.__new__ bound to the class: builds a row's named tuple without a Python-level call.
_new_record = functools.partial(tuple.__new__, Record)
_new_prediction = functools.partial(tuple.__new__, Prediction)


def _model_error(exc: Exception) -> str:
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return f"model error: {lines[0][:200]}"


def scorer(booster: Any, width: int) -> Callable[[np.ndarray], np.ndarray]:
    """The fastest way to score float32 rows with `booster` that gives its exact answers.

    `Booster.inplace_predict` spends most of a one-row call in Python (it builds a JSON
    array interface with `json.dumps`, a ctypes array type for the output, and checks the
    input against a dozen data-frame kinds). `_DirectScorer` calls the same C function,
    `XGBoosterPredictFromDense` (XGBoost's C API), with the same arguments and nothing
    else. It is used only when it matches `inplace_predict` bit for bit on probe rows
    (missing values included); otherwise, or on any other XGBoost, `inplace_predict` it is.
    """

    def standard(x: np.ndarray) -> np.ndarray:
        out: np.ndarray = booster.inplace_predict(x, validate_features=False)
        return out

    try:
        direct = _DirectScorer(booster)
        probe = np.random.default_rng(0).normal(0, 100, (64, width)).astype(np.float32)
        probe[::7, :] = np.nan
        for i in range(min(width, 64)):
            probe[i, i] = np.nan
        probe = np.ascontiguousarray(probe)
        if all(
            np.array_equal(direct(rows).ravel(), standard(rows).ravel(), equal_nan=True)
            for rows in (probe, probe[:1].copy())
        ):
            return direct
    except Exception:  # an XGBoost without this C function or helpers: the public path
        return standard
    return standard


# A few rows are scored without releasing the GIL. Releasing it for a ~0.1 ms call hands it to
# the prediction log's writer thread, and getting it back waits for that thread's next
# switch (up to `sys.getswitchinterval()`, 5 ms): on the HTTP server that wait was most of
# the one-client p99. Batches still release it, so SQLite and XGBoost overlap on two cores.
HELD_ROWS = 16
_HELD_PROTOTYPE = ctypes.PYFUNCTYPE(
    ctypes.c_int,  # XGBoosterPredictFromDense(handle, array interface, config, proxy,
    ctypes.c_void_p,  # out shape, out dims, out result)
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
    ctypes.c_void_p,
)


class _DirectScorer:
    """`XGBoosterPredictFromDense` on a C-contiguous float32 matrix (see `scorer`)."""

    def __init__(self, booster: Any) -> None:
        from xgboost import core  # as in Router.__init__: never at import time

        self._booster = booster  # keeps the handle alive
        self._handle = booster.handle
        self._predict = core._LIB.XGBoosterPredictFromDense
        # The same C function, called without releasing the GIL (see HELD_ROWS).
        address = ctypes.cast(self._predict, ctypes.c_void_p).value
        if not address:
            raise RuntimeError("XGBoosterPredictFromDense has no address")
        self._predict_held = _HELD_PROTOTYPE(address)
        self._check = core._check_call
        self._ulong = ctypes.c_uint64  # bst_ulong in XGBoost's C API
        # What inplace_predict sends for predict_type="value" and no iteration range.
        self._args = core.make_jcargs(
            type=0,
            training=False,
            iteration_begin=0,
            iteration_end=0,
            missing=math.nan,
            strict_shape=False,
            cache_id=0,
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if x.dtype != np.float32 or not x.flags.c_contiguous or x.ndim != 2:
            x = np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), -1)
        rows, cols = x.shape
        interface = (
            b'{"data": [%d, true], "shape": [%d, %d], "strides": null, '
            % (
                x.ctypes.data,
                rows,
                cols,
            )
            + b'"typestr": "<f4", "version": 3}'
        )
        shape = ctypes.POINTER(self._ulong)()
        dims = self._ulong()
        preds = ctypes.POINTER(ctypes.c_float)()
        self._check(
            (self._predict_held if rows <= HELD_ROWS else self._predict)(
                self._handle,
                interface,
                self._args,
                None,
                ctypes.byref(shape),
                ctypes.byref(dims),
                ctypes.byref(preds),
            )
        )
        size = 1
        for i in range(dims.value):
            size *= shape[i]
        # The output buffer belongs to XGBoost (per thread): copy it out at once.
        return np.frombuffer(ctypes.string_at(preds, 4 * size), dtype=np.float32)


def load_booster(path: Any, sha256: str) -> Any:
    """Load a registered artifact after checking its bytes still are the registered ones."""
    import xgboost  # as in Router.__init__: never at import time

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise Unavailable(f"cannot load {path}: {exc.strerror or exc}") from None
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise Unavailable(f"{path} no longer matches its registered sha256 {sha256[:12]}…")
    booster = xgboost.Booster(params={"nthread": 1})
    try:
        booster.load_model(bytearray(raw))
    except xgboost.core.XGBoostError as exc:
        raise Unavailable(f"cannot load {path}: {_model_error(exc)}") from None
    booster.set_param({"nthread": 1})  # serve on one thread (DESIGN.md §8)
    return booster


__all__ = ["Prediction", "Route", "Router", "Unavailable", "artifacts", "load_booster"]
