"""The HTTP API of the headless engine (DESIGN.md §4): Starlette, served by uvicorn.

Routes: `POST /v1/predict` (one row or a batch), `POST /v1/feedback` (one or a batch),
`GET /v1/status`, `GET /v1/monitor`, `GET /healthz`, `GET /metrics`, `GET /openapi.json`, and
the mutations `POST /v1/deploy|rollback|promote|abort`, which call the `Engine` facade with the
CLI's arguments and need `Authorization: Bearer <token>`.

This module is the application and its handlers; engine.server.http.guard is the door (Host, Origin,
token, Content-Type), engine.server.http.schema the request bodies (validation and the OpenAPI
document, from one declaration), engine.server.http.token the token file.

Decisions:
- Starlette, not FastAPI: the request bodies are validated by our own code anyway (features
  by name against each line's schema, which no static pydantic model can describe), so
  FastAPI would add pydantic's per-request cost and nothing we use (measured on the same
  one-row endpoint: ~30% fewer requests/s, p50 +0.2 ms); the OpenAPI document is generated
  from the bodies' declarations instead.
- One Router and one PredictionLog per process, made in the lifespan; shutting the lifespan
  down flushes the log, so every acknowledged prediction is stored.
- A single-row prediction (~0.3 ms of CPU) runs on the event loop: handing it to a thread
  costs more than it takes (measured: ~25–40% fewer requests/s through run_in_threadpool,
  with 1 and with 8 clients). Everything that can wait on SQLite, a child process or a big
  body (batches, feedback, status, monitor, metrics, mutations) runs in the thread pool.
- Limits come before parsing: the door first, then the body read against a byte cap (413);
  JSON's `NaN`/`Infinity` literals and duplicate keys are refused (422), and so are batches
  over the row cap (422, like every other violation of the document's schema).
- Every refusal is a JSON `{"error": "one line"}` with a 4xx (BeastError.http_status); client
  text quoted in it is escaped, and no answer can fail to encode. A prediction the model fails
  is still logged, and answered 500 with its prediction_id. A mutation the engine refuses
  after its body passed the schema is refused by the state: 404 or 409.
- A client that hangs up before its body arrived is one INFO line, never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from engine.core import text
from engine.core.errors import BeastError, Conflict, NotFound
from engine.core.identity import current_actor
from engine.core.records import Change, Expect
from engine.core.workspace import Workspace
from engine.facade import Engine
from engine.monitoring import feedback as labels
from engine.server import prometheus as prom
from engine.server.http import schema
from engine.server.http.guard import Door
from engine.server.http.schema import ApiError, kind, parse_json
from engine.server.http.token import configured_token, token_path
from engine.serving.prediction_log import PredictionLog
from engine.serving.router import Prediction, Router
from engine.store.sqlite.connection import SqliteStore

log = logging.getLogger("beast.api")

T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]

SETTINGS_ENV = "BEAST_ENGINE_SETTINGS"
CLIENT_GONE = 499  # counted in metrics for a client that hung up (nginx's convention)
# Bodies above this are parsed (and small batches scored) in a worker thread, so that one
# big request does not stall the event loop for the other clients.
PARSE_INLINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class ApiSettings:
    """How one server process behaves. Plain values, so `beast engine` can hand them to workers."""

    max_body_bytes: int = 1 << 20
    max_rows: int = 10_000
    # A token for every request, not only mutations: [api] require_token ("always", or
    # "auto" when listening beyond loopback).
    token_everywhere: bool = False
    # Host names served beyond localhost, 127.0.0.1 and [::1] (engine.server.http.guard).
    allowed_hosts: tuple[str, ...] = ()
    log_interval_s: float = 0.05
    refresh_s: float = 0.5
    # Single-row predictions on the event loop (measured faster than the thread pool).
    predict_inline: bool = True

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, raw: str) -> ApiSettings:
        values = json.loads(raw)
        values["allowed_hosts"] = tuple(values.get("allowed_hosts", ()))
        return cls(**values)


# -- answers ---------------------------------------------------------------------------------


def _one_line(text_: str, limit: int = 500) -> str:
    line = " ".join(text_.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _dumps(document: Any) -> bytes:
    try:
        return json.dumps(
            document, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode()
    except UnicodeEncodeError:  # a lone surrogate somewhere: escaped as JSON allows
        return json.dumps(document, allow_nan=False, separators=(",", ":")).encode()


def json_response(
    document: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(_dumps(document), status, headers=headers, media_type="application/json")


def error_response(
    status: int,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """`{"error": "one line"}`: whatever client text the message quotes is escaped."""
    return json_response(
        {"error": _one_line(text.escape(message)), **(extra or {})}, status, headers
    )


# -- the application ---------------------------------------------------------------------------


class Api:
    """One server process's state: the router, the prediction log, the engine facade."""

    def __init__(
        self, workspace: Workspace, settings: ApiSettings, token: str | None = None
    ) -> None:
        self.workspace = workspace
        self.settings = settings
        self.token = token
        self.door = Door(
            allowed_hosts=settings.allowed_hosts,
            token=token,
            token_everywhere=settings.token_everywhere,
            token_file=str(token_path(workspace)),
        )
        self.metrics = prom.ApiMetrics()
        self.engine: Engine | None = None
        self.router: Router | None = None
        self.log: PredictionLog | None = None
        self.tolerance = 0.0
        self.ranges = labels.LabelRanges()
        self.started_at = time.time()
        self._store_problem: str | None = None  # the last route refresh's store error
        # The facade holds one SQLite connection: one caller at a time (mutations are rare).
        self._engine_lock = threading.Lock()
        # Feedback writes use their own connection, so a slow status never delays them.
        self._feedback_lock = threading.Lock()
        self._feedback_store: SqliteStore | None = None
        self._stop = threading.Event()
        self._drop_alert_open = False
        self._background: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Open the engine, the prediction log and the router (loads the deployed models)."""
        if self.router is not None:
            return
        engine = Engine(self.workspace, actor=f"{current_actor()} (api)")
        try:
            self.workspace.require()
            config = engine.config
            self.tolerance = config.thresholds.tolerance_points
            self.ranges = labels.LabelRanges.of_config(config)
            plog = PredictionLog(
                self.workspace.db_path,
                tolerance=self.tolerance,
                interval=self.settings.log_interval_s,
            ).start()
        except BaseException:
            engine.close()
            raise
        try:
            router = Router(engine, log=plog, refresh_s=self.settings.refresh_s)
        except BaseException:
            plog.close()
            engine.close()
            raise
        self.engine, self.log, self.router = engine, plog, router
        self._feedback_store = SqliteStore(self.workspace.db_path)
        self._stop.clear()
        self._background = threading.Thread(
            target=self._background_loop, name="beast-api-refresh", daemon=True
        )
        self._background.start()
        routes = ", ".join(
            f"{r.line}: {r.production.ref.name}"
            + (f" + {r.candidate.ref.name} ({r.candidate_bp / 100:g}%)" if r.candidate else "")
            for r in router.routes().values()
        )
        log.info("serving %s (%s)", self.workspace.root, routes or "nothing deployed yet")

    def stop(self) -> None:
        """Flush the prediction log and close everything (the lifespan's shutdown)."""
        self._stop.set()
        if self._background is not None:
            self._background.join()
            self._background = None
        if self.log is not None:
            self.log.close()  # writes everything still queued
            stats = self.log.stats()
            self.metrics.sync_log(stats)
            log.info("prediction log flushed: %d written, %d dropped", stats.written, stats.dropped)
        if self.router is not None:
            self.router.close()
        if self._feedback_store is not None:
            self._feedback_store.close()
        if self.engine is not None:
            self.engine.close()
        self.router = self.log = self.engine = self._feedback_store = None
        self.metrics.process_exit()

    def _background_loop(self) -> None:
        """Refresh the routes off the request path, and carry log counters to Prometheus.

        The router re-reads the deployment state when a predict call finds its snapshot
        older than `refresh_s`; refreshing here at twice that rate means no request pays
        for a SQLite query or a model load.
        """
        warned: str | None = None
        problems: dict[str, str] = {}
        reported_drops = 0
        while not self._stop.wait(self.settings.refresh_s / 2):
            router, plog = self.router, self.log
            if router is None or plog is None:
                return
            try:
                router.refresh()
                warned = self._store_problem = None
            except BeastError as exc:
                self._store_problem = str(exc)
                if str(exc) != warned:  # once per distinct problem, not twice a second
                    log.warning("cannot refresh the deployed models: %s", exc)
                    warned = str(exc)
            except Exception:  # keep refreshing whatever happened once
                log.exception("route refresh failed")
            now = router.problems()
            for line, why in now.items():
                if problems.get(line) != why:
                    log.warning("model line %s keeps its last routes: %s", line, why)
            for line in problems.keys() - now.keys():
                log.info("model line %s serves its current deployment again", line)
            problems = now
            stats = plog.stats()
            self.metrics.sync_log(stats)
            reported_drops = self._alert_drops(stats.dropped, reported_drops)

    def _alert_drops(self, dropped: int, reported: int) -> int:
        """Turn rows this process's writer dropped into an alert (and resolve it after).

        Returns the drop count now reported. A failure to record the alert (the disk that
        is full for the log is full for alerts too) is retried on the next round.
        """
        if dropped == reported and not self._drop_alert_open:
            return reported
        from engine.monitoring import report as monitoring

        try:
            self._call_engine(
                lambda engine: monitoring.note_log_drops(engine, dropped - reported, dropped)
            )
        except BeastError as exc:
            log.warning("cannot record the dropped-rows alert: %s", exc)
            return reported
        self._drop_alert_open = dropped > reported
        return dropped

    def _router(self) -> Router:
        if self.router is None:
            raise ApiError(503, "the engine is starting or stopping")
        return self.router

    def _call_engine(self, fn: Callable[[Engine], T], actor: str | None = None) -> T:
        if self.engine is None:
            raise ApiError(503, "the engine is starting or stopping")
        with self._engine_lock:
            engine = self.engine
            before = engine.actor
            if actor is not None:
                engine.actor = actor
            try:
                return fn(engine)
            finally:
                engine.actor = before

    # -- plumbing ---------------------------------------------------------------------------

    def wrap(self, op: schema.Operation, handler: Handler) -> Handler:
        """The door, error mapping and request metrics around one handler."""
        metrics, door, route = self.metrics, self.door, op.name
        post, mutation = op.method == "POST", op.mutation

        async def endpoint(request: Request) -> Response:
            start = time.perf_counter()
            try:
                door.admit(request.scope["headers"], post=post, mutation=mutation)
                response = await handler(request)
            except ApiError as exc:
                response = error_response(
                    exc.status, exc.message, headers=exc.headers, extra=exc.extra
                )
            except BeastError as exc:
                response = error_response(exc.http_status, str(exc))
            except ClientDisconnect:
                # Nobody is left to answer; one line, no traceback (it is not our fault).
                log.info("client disconnected during %s %s", request.method, request.url.path)
                response = Response(status_code=CLIENT_GONE)
            except Exception:
                # Never a traceback to the client; the log keeps it (no body, no token).
                log.exception("internal error in %s %s", request.method, route)
                response = error_response(500, "internal error (see the engine's log)")
            metrics.request(
                route, request.method, response.status_code, time.perf_counter() - start
            )
            return response

        return endpoint

    async def body(self, request: Request) -> bytes:
        """The body, read against the size cap before anything parses it (413 past it)."""
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise ApiError(400, "Content-Length is not a number") from None
            if size > limit:
                raise ApiError(413, f"body of {size} bytes is over the limit of {limit} bytes")
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ApiError(413, f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def json_object(self, request: Request) -> dict[str, Any]:
        raw = await self.body(request)
        if len(raw) > PARSE_INLINE_BYTES:
            document = await run_in_threadpool(parse_json, raw)
        else:
            document = parse_json(raw)
        if type(document) is not dict:
            raise ApiError(422, f"the body must be a JSON object, got {kind(document)}")
        return document

    def context(self) -> schema.Context:
        """What /openapi.json says that depends on this engine: lines, label range, limits."""
        routes = self.router.routes() if self.router is not None else {}
        return schema.Context(
            lines={line: route.schema for line, route in sorted(routes.items())},
            label_range=self.ranges.widest(routes),
            max_rows=self.settings.max_rows,
            max_body_bytes=self.settings.max_body_bytes,
            token_everywhere=self.settings.token_everywhere,
        )

    # -- predictions ------------------------------------------------------------------------

    async def predict(self, request: Request) -> Response:
        """POST /v1/predict: one row (`features`) or a batch (`rows`)."""
        document = await self.json_object(request)
        router = self._router()
        if "rows" in document:
            return await self._predict_batch(document, router)
        features, key, model = schema.PREDICT.parse(document)
        try:
            if self.settings.predict_inline:
                prediction = router.predict(features, key=key, model=model)
            else:
                prediction = await run_in_threadpool(router.predict, features, key=key, model=model)
        except BeastError as exc:
            raise _routing_refusal(exc) from None
        self.metrics.served((prediction,))
        document = prediction.to_json()
        if prediction.error is not None:
            # Logged like any prediction; 500 tells the client there is no score, and the
            # prediction_id lets it correlate with the log and the alerts.
            return json_response(document, 500)
        return json_response(document)

    async def _predict_batch(self, document: dict[str, Any], router: Router) -> Response:
        rows, keys, model = schema.PREDICT_BATCH.parse(document)
        if len(rows) > self.settings.max_rows:
            raise ApiError(
                422, f"{len(rows)} rows is over the limit of {self.settings.max_rows} per request"
            )
        if keys is not None and len(keys) != len(rows):
            raise ApiError(422, f"predict: {len(keys)} keys for {len(rows)} rows (one per row)")

        def work() -> tuple[list[Prediction], bytes, int]:
            predictions = router.predict_batch(rows, keys=keys, model=model)
            failed = [p for p in predictions if p.error is not None]
            out: dict[str, Any] = {}
            if failed:
                out["error"] = _one_line(
                    f"{len(failed)} of {len(predictions)} rows failed: {failed[0].error}"
                )
            out["predictions"] = [p.to_json() for p in predictions]
            return predictions, _dumps(out), len(failed)

        try:
            predictions, body, failed = await run_in_threadpool(work)
        except BeastError as exc:
            raise _routing_refusal(exc) from None
        self.metrics.served(predictions)
        return Response(body, 500 if failed else 200, media_type="application/json")

    # -- feedback ---------------------------------------------------------------------------

    async def feedback(self, request: Request) -> Response:
        """POST /v1/feedback: the actual value for a prediction, or a batch of them."""
        document = await self.json_object(request)
        if "items" in document:
            return await self._feedback_batch(document)
        pid, actual = schema.FEEDBACK.parse(document)
        try:
            status = await run_in_threadpool(self._label_one, pid, actual)
        except NotFound as exc:
            self.metrics.feedback_outcome("not found")
            raise ApiError(
                404, str(exc), extra={"prediction_id": pid, "status": "not found"}
            ) from None
        except Conflict as exc:
            self.metrics.feedback_outcome("conflict")
            raise ApiError(
                409, str(exc), extra={"prediction_id": pid, "status": "conflict"}
            ) from None
        except labels.OutOfRange as exc:
            self.metrics.feedback_outcome("invalid")
            raise ApiError(
                422, str(exc), extra={"prediction_id": pid, "status": "invalid"}
            ) from None
        self.metrics.feedback_outcome(status)
        return json_response(
            {"prediction_id": pid, "status": status}, 202 if status == "pending" else 200
        )

    def _feedback(self) -> SqliteStore:
        if self._feedback_store is None:
            raise ApiError(503, "the engine is starting or stopping")
        return self._feedback_store

    def _label_one(self, pid: str, actual: float) -> str:
        store = self._feedback()
        with self._feedback_lock:
            return labels.record(store, pid, actual, self.tolerance, ranges=self.ranges)

    def _label_many(self, items: list[tuple[str, object]]) -> list[labels.Outcome]:
        store = self._feedback()
        with self._feedback_lock:
            return labels.record_many(store, items, self.tolerance, ranges=self.ranges)

    async def _feedback_batch(self, document: dict[str, Any]) -> Response:
        """All items in one transaction; every item gets its own answer (200 overall).

        A malformed item (not {prediction_id, actual}, wrong types) refuses the whole body
        (422) like any schema violation; what depends on the state — unknown id, conflict,
        outside the line's label range — is answered per item.
        """
        (items,) = schema.FEEDBACK_BATCH.parse(document)
        if len(items) > self.settings.max_rows:
            raise ApiError(422, f"{len(items)} items is over the limit of {self.settings.max_rows}")
        outcomes = await run_in_threadpool(self._label_many, items) if items else []
        results: list[dict[str, Any]] = []
        counts: dict[str, int] = {}
        for outcome in outcomes:
            answer: dict[str, Any] = {
                "prediction_id": outcome.prediction_id,
                "status": outcome.status,
                "code": outcome.http_status,
            }
            if outcome.message is not None:
                answer["error"] = _one_line(text.escape(outcome.message))
            results.append(answer)
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        for status, n in counts.items():
            self.metrics.feedback_outcome(status, n)
        return json_response({"results": results, "counts": counts})

    # -- reading ----------------------------------------------------------------------------

    async def status(self, request: Request) -> Response:
        """GET /v1/status: the `beast status --json` document."""
        document = await run_in_threadpool(self._call_engine, lambda e: e.status().to_json())
        return json_response(document)

    async def monitor(self, request: Request) -> Response:
        """GET /v1/monitor?window=1h&model=LINE: the `beast monitor --json` document."""
        from engine.monitoring import rollups as rollup_metrics

        window = request.query_params.get("window", "1h")
        if window not in rollup_metrics.WINDOWS:
            raise ApiError(
                422,
                f"unknown window '{text.escape(window[:20])}' "
                f"(use {', '.join(rollup_metrics.WINDOWS)})",
            )
        model = request.query_params.get("model")
        if model is not None:  # given, even empty: a name, as the document says
            model = schema.MODEL.check(model, "model")
        document = await run_in_threadpool(self._monitor_document, window, model)
        return json_response(document)

    def _monitor_document(self, window: str = "1h", model: str | None = None) -> dict[str, Any]:
        def report(engine: Engine) -> dict[str, Any]:
            return engine.report(window=window, model=model).to_json()

        return self._call_engine(report)

    def readiness(self) -> tuple[str, str | None]:
        """("ok" | "degraded" | "unready", why): can this process serve predictions?

        unready (503): the store is unusable, or nothing can serve (nothing deployed, or no
        deployed line could load); degraded (200): serving, but a line keeps its last routes
        or the log writer failed. Cheap (a stat and what the router already knows), so a load
        balancer may ask often.
        """
        router, plog = self.router, self.log
        if router is None or plog is None:
            return "unready", "the engine is starting or stopping"
        problem = self._store_unusable()
        if problem is not None:
            return "unready", problem
        routes, problems = router.routes(), router.problems()
        if not routes:
            if problems:
                line, why = sorted(problems.items())[0]
                return "unready", f"no model line can serve: {line}: {why}"
            return "unready", "nothing is deployed: deploy a model first"
        if problems:
            line, why = sorted(problems.items())[0]
            return "degraded", f"model line {line} keeps its last routes: {why}"
        last_error = plog.stats().last_error
        if last_error is not None:
            return "degraded", f"the prediction log writer failed: {last_error}"
        return "ok", None

    def _store_unusable(self) -> str | None:
        # The log writer keeps its connection open for the process's life: its store knows
        # whether the file on disk is still the database it writes (deleted, emptied or
        # replaced under a running engine, the open connections go on with the old one).
        plog = self.log
        problem = plog.store.file_problem() if plog is not None else None
        return problem or self._store_problem

    async def healthz(self, request: Request) -> Response:
        """GET /healthz: readiness (200 ok or degraded; 503 unready or starting), and how the
        prediction log writer is doing."""
        router, plog = self.router, self.log
        if router is None or plog is None:
            return json_response({"status": "starting", "pid": os.getpid()}, 503)
        status, reason = self.readiness()
        stats = plog.stats()
        return json_response(
            {
                "status": status,
                "reason": reason,
                "problems": router.problems(),
                "pid": os.getpid(),
                "uptime_s": round(time.time() - self.started_at, 3),
                "log": {
                    "queued": stats.queued,
                    "written": stats.written,
                    "dropped": stats.dropped,
                    "last_error": stats.last_error,
                },
                "serving": {
                    r.line: {
                        "production": r.production.ref.name,
                        "candidate": r.candidate.ref.name if r.candidate else None,
                        "candidate_traffic": r.candidate_bp / 100,
                        "experiment": r.experiment,
                        "revision": r.revision,
                    }
                    for r in router.routes().values()
                },
            },
            503 if status == "unready" else 200,
        )

    async def prometheus(self, request: Request) -> Response:
        """GET /metrics: Prometheus text exposition."""
        body = await run_in_threadpool(self._render_metrics)
        return Response(body, media_type=prom.CONTENT_TYPE)

    def _render_metrics(self) -> bytes:
        if self.log is not None:
            self.metrics.sync_log(self.log.stats())
        monitor: dict[str, Any] | None = None
        problem: str | None = None
        try:
            monitor = self._monitor_document()
        except (BeastError, ApiError) as exc:
            problem = str(exc)
            log.warning("monitoring gauges left out of /metrics: %s", problem)
        except Exception:  # the serving series are still worth a scrape
            problem = "internal error"
            log.exception("monitoring gauges left out of /metrics")
        return self.metrics.render(monitor, problem)

    async def openapi(self, request: Request) -> Response:
        """GET /openapi.json: the OpenAPI 3.1 document, from the bodies that validate requests."""
        return json_response(schema.openapi_document(self.context()))

    # -- mutations --------------------------------------------------------------------------

    def _actor(self, request: Request, named: str | None) -> str:
        client = request.client.host if request.client else "unknown"
        return f"{named} (api from {client})" if named else f"api client {client}"

    async def _mutate(self, fn: Callable[[Engine], Change], actor: str) -> Response:
        try:
            change = await run_in_threadpool(self._call_engine, fn, actor)
        except BeastError as exc:
            # The body passed the schema: what the engine still refuses, it refuses by the
            # state (nothing to roll back to, a verdict, a model file): 409, unless it is a
            # thing that does not exist (404) or a store that cannot answer (503).
            if exc.http_status in (400, 422):
                raise ApiError(409, str(exc)) from None
            raise
        return json_response(change.to_json())

    async def deploy(self, request: Request) -> Response:
        """POST /v1/deploy: as `beast deploy` (production at 100%, or an A/B candidate)."""
        body = schema.DEPLOY.parse(await self.json_object(request))
        path, version, model, traffic, ab_test, expect, revision, note, actor = body
        return await self._mutate(
            lambda e: e.deploy(
                path,
                version=version,
                model=model,
                traffic=traffic,
                ab_test=ab_test,
                note=note,
                expect=_expect(expect, revision),
            ),
            self._actor(request, actor),
        )

    async def rollback(self, request: Request) -> Response:
        """POST /v1/rollback: as `beast rollback [V]`."""
        body = schema.ROLLBACK.parse(await self.json_object(request))
        version, model, expect, revision, note, actor = body
        return await self._mutate(
            lambda e: e.rollback(version, model=model, note=note, expect=_expect(expect, revision)),
            self._actor(request, actor),
        )

    async def promote(self, request: Request) -> Response:
        """POST /v1/promote: as `beast promote NAME [--force]`."""
        body = schema.PROMOTE.parse(await self.json_object(request))
        name, force, expect, revision, note, actor = body
        return await self._mutate(
            lambda e: e.promote(
                name, force=bool(force), note=note, expect=_expect(expect, revision)
            ),
            self._actor(request, actor),
        )

    async def abort(self, request: Request) -> Response:
        """POST /v1/abort: as `beast abort NAME`."""
        name, expect, revision, note, actor = schema.ABORT.parse(await self.json_object(request))
        return await self._mutate(
            lambda e: e.abort(name, note=note, expect=_expect(expect, revision)),
            self._actor(request, actor),
        )


def _expect(production: str | None, revision: int | None) -> Expect | None:
    if production is None and revision is None:
        return None
    return Expect(production=production, revision=revision)


def _routing_refusal(exc: BeastError) -> BeastError | ApiError:
    """The router's plain refusal ("several model lines are deployed: name one") is the
    request's fault once the body passed the schema: a 422; others keep their status."""
    if type(exc) is BeastError:
        return ApiError(422, f"predict: model is required: {exc}")
    return exc


def create_app(
    workspace: Workspace,
    settings: ApiSettings | None = None,
    *,
    token: str | None = None,
    api: Api | None = None,
) -> Starlette:
    """The ASGI application for one workspace. Nothing is opened until the lifespan starts."""
    api = api or Api(workspace, settings or ApiSettings(), token)
    handlers: dict[str, Handler] = {
        "predict": api.predict,
        "feedback": api.feedback,
        "status": api.status,
        "monitor": api.monitor,
        "healthz": api.healthz,
        "metrics": api.prometheus,
        "openapi": api.openapi,
        "deploy": api.deploy,
        "rollback": api.rollback,
        "promote": api.promote,
        "abort": api.abort,
    }
    routes = [
        Route(op.path, api.wrap(op, handlers[op.name]), methods=[op.method])
        for op in schema.OPERATIONS
    ]

    async def unmatched(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
        if "Allow" in headers:  # Starlette joins a set: the same order on every answer
            headers["Allow"] = ", ".join(sorted(m.strip() for m in headers["Allow"].split(",")))
        try:
            api.door.admit_host(request.scope["headers"])
        except ApiError as refused:
            status, detail, headers = refused.status, refused.message, {}
        else:
            detail = f"{detail}: {request.method} {request.url.path[:200]}"
            if status == 404:
                detail += " (see /openapi.json for the routes)"
        api.metrics.request("unmatched", request.method, status, 0.0)
        return error_response(status, detail, headers=headers)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        api.start()
        try:
            yield
        finally:
            api.stop()

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: unmatched})
    app.state.api = api
    return app


def app_from_env() -> Starlette:
    """The uvicorn factory for worker processes (`beast engine --workers N`).

    The workspace comes from `$BEAST_HOME` and the settings from `$BEAST_ENGINE_SETTINGS`
    (set by `beast engine`); the token is read here, so it never travels in the environment
    unless the operator put it there.
    """
    workspace = Workspace.locate()
    raw = os.environ.get(SETTINGS_ENV)
    settings = ApiSettings.from_env(raw) if raw else ApiSettings()
    return create_app(workspace, settings, token=configured_token(workspace))
