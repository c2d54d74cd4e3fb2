"""The HTTP API of the headless engine (DESIGN.md §4): Starlette, served by uvicorn.

Routes: `POST /v1/predict` (one row or a batch), `POST /v1/feedback` (one or a batch),
`GET /v1/status`, `GET /v1/monitor`, `GET /healthz`, `GET /metrics`, `GET /openapi.json`, and
the mutations `POST /v1/deploy|rollback|promote|abort`, which call the `Engine` facade with the
CLI's arguments and need `Authorization: Bearer <token>`.

Decisions:
- Starlette, not FastAPI: the request bodies are validated by our own code anyway (features
  by name against each line's schema, which no static pydantic model can describe), so
  FastAPI would add pydantic's per-request cost and nothing we use (measured on the same
  one-row endpoint: ~30% fewer requests/s, p50 +0.2 ms); the OpenAPI document is written
  out below instead of being generated.
- One Router and one PredictionLog per process, made in the lifespan; shutting the lifespan
  down flushes the log, so every acknowledged prediction is stored.
- A single-row prediction (~0.3 ms of CPU) runs on the event loop: handing it to a thread
  costs more than it takes (measured: ~25–40% fewer requests/s through run_in_threadpool,
  with 1 and with 8 clients). Everything that can wait on SQLite, a child process or a big
  body (batches, feedback, status, monitor, metrics, mutations) runs in the thread pool.
- Limits come before parsing: the body is read against a byte cap (413), JSON's `NaN` and
  `Infinity` literals are refused (422), batches are capped in rows (413).
- Every refusal is a JSON `{"error": "one line"}` with a 4xx (BeastError.http_status); a
  prediction the model fails is still logged, and answered 500 with its prediction_id.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from engine import labels, prom
from engine.errors import BeastError, Conflict, NotFound
from engine.facade import Engine
from engine.identity import current_actor
from engine.predlog import PredictionLog
from engine.records import Change, Expect
from engine.serving import Prediction, Router
from engine.store import Store
from engine.workspace import Workspace

log = logging.getLogger("beast.api")

T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]

TOKEN_ENV = "BEAST_API_TOKEN"
TOKEN_FILE = "api-token"
SETTINGS_ENV = "BEAST_ENGINE_SETTINGS"
MAX_KEY_CHARS = 1024
MAX_NAME_CHARS = 200
MAX_NOTE_CHARS = 2000
# Bodies above this are parsed (and small batches scored) in a worker thread, so that one
# big request does not stall the event loop for the other clients.
PARSE_INLINE_BYTES = 64 * 1024


@dataclass(frozen=True)
class ApiSettings:
    """How one server process behaves. Plain values, so `beast engine` can hand them to workers."""

    max_body_bytes: int = 1 << 20
    max_rows: int = 10_000
    # A token for every request, not only mutations: set when listening beyond loopback.
    token_everywhere: bool = False
    log_interval_s: float = 0.05
    refresh_s: float = 0.5
    # Single-row predictions on the event loop (measured faster than the thread pool).
    predict_inline: bool = True

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, text: str) -> ApiSettings:
        return cls(**json.loads(text))


# -- the token ------------------------------------------------------------------------------


def token_path(workspace: Workspace) -> Path:
    return workspace.root / TOKEN_FILE


def configured_token(workspace: Workspace) -> str | None:
    """`$BEAST_API_TOKEN`, else `<workspace>/api-token`, else None. Never logged."""
    from_env = os.environ.get(TOKEN_ENV)
    if from_env is not None:
        if not from_env.strip():
            raise BeastError(f"{TOKEN_ENV} is set but empty: unset it or give it a token")
        return from_env.strip()
    path = token_path(workspace)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BeastError(f"cannot read the API token {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, encoding="utf-8") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if mode & 0o077:
            raise BeastError(
                f"the API token {path} is readable by others (mode {mode & 0o777:o}): "
                f"run `chmod 600 {path}`"
            )
        text = handle.read().strip()
    if not text:
        raise BeastError(f"the API token {path} is empty: delete it and start the engine again")
    return text


def ensure_token(workspace: Workspace) -> tuple[str, bool]:
    """The configured token, or a new one written to `<workspace>/api-token` (mode 0600).

    Returns the token and whether it was created now. `O_EXCL` makes two engines starting
    at once agree on one token.
    """
    existing = configured_token(workspace)
    if existing is not None:
        return existing, False
    path = token_path(workspace)
    token = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        again = configured_token(workspace)
        if again is None:  # pragma: no cover - deleted between the two opens
            raise BeastError(f"{path} vanished while it was being created; retry") from None
        return again, False
    except OSError as exc:
        raise BeastError(f"cannot create the API token {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return token, True


# -- requests and answers ---------------------------------------------------------------------


class ApiError(Exception):
    """A refusal with its HTTP status; the message is one line for the client."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.extra = extra or {}


class _JsonConstant(Exception):
    """`NaN`, `Infinity` or `-Infinity` in a body (json.loads accepts them by default)."""


def _refuse_constant(name: str) -> Any:
    raise _JsonConstant(name)


def parse_json(body: bytes) -> Any:
    """Strict JSON: no NaN/Infinity literals, bounded nesting; a 4xx ApiError otherwise."""
    if not body.strip():
        raise ApiError(400, "empty body: send a JSON object")
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except _JsonConstant as exc:
        raise ApiError(
            422, f"JSON literal {exc.args[0]} is not allowed: send finite numbers"
        ) from None
    except RecursionError:
        raise ApiError(400, "body is not acceptable JSON: nested too deeply") from None
    except UnicodeDecodeError:
        raise ApiError(400, "body is not UTF-8 encoded JSON") from None
    except ValueError as exc:  # JSONDecodeError, and ints past Python's digit limit
        raise ApiError(400, f"body is not valid JSON: {_one_line(str(exc))}") from None


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _dumps(document: Any) -> bytes:
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


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
    return json_response({"error": _one_line(message), **(extra or {})}, status, headers)


class Fields:
    """Typed access to a JSON object's fields; unknown fields are refused, naming them."""

    def __init__(self, document: dict[str, Any], what: str) -> None:
        self.doc = document
        self.what = what
        self.used: set[str] = set()

    def raw(self, name: str) -> Any:
        """The field's value as sent (checked by the caller); the field counts as known."""
        self.used.add(name)
        return self.doc.get(name)

    def text(self, name: str, *, limit: int = MAX_NAME_CHARS, required: bool = False) -> str | None:
        value = self.raw(name)
        if value is None:
            if required:
                raise ApiError(422, f"{self.what}: {name} is required")
            return None
        if not isinstance(value, str):
            raise ApiError(422, f"{self.what}: {name} must be a string, got {_kind(value)}")
        if len(value) > limit:
            raise ApiError(422, f"{self.what}: {name} is longer than {limit} characters")
        return value

    def number(self, name: str) -> float | None:
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ApiError(422, f"{self.what}: {name} must be a number, got {_kind(value)}")
        if not math.isfinite(float(value)):
            raise ApiError(422, f"{self.what}: {name} must be finite")
        return float(value)

    def integer(self, name: str) -> int | None:
        value = self.raw(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ApiError(422, f"{self.what}: {name} must be an integer, got {_kind(value)}")
        return value

    def flag(self, name: str) -> bool:
        value = self.raw(name)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise ApiError(422, f"{self.what}: {name} must be true or false, got {_kind(value)}")
        return value

    def expect(self) -> Expect | None:
        production = self.text("expect")
        revision = self.integer("expect_revision")
        if production is None and revision is None:
            return None
        return Expect(production=production, revision=revision)

    def done(self) -> None:
        unknown = sorted(set(self.doc) - self.used)
        if unknown:
            known = ", ".join(sorted(self.used))
            raise ApiError(
                422, f"{self.what}: unknown field {', '.join(unknown[:5])} (known: {known})"
            )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        str: "a string",
        list: "a list",
        dict: "an object",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


# -- the application ---------------------------------------------------------------------------


class Api:
    """One server process's state: the router, the prediction log, the engine facade."""

    def __init__(
        self, workspace: Workspace, settings: ApiSettings, token: str | None = None
    ) -> None:
        self.workspace = workspace
        self.settings = settings
        self.token = token
        self.metrics = prom.ApiMetrics()
        self.engine: Engine | None = None
        self.router: Router | None = None
        self.log: PredictionLog | None = None
        self.tolerance = 0.0
        self.started_at = time.time()
        # The facade holds one SQLite connection: one caller at a time (mutations are rare).
        self._engine_lock = threading.Lock()
        # Feedback writes use their own connection, so a slow status never delays them.
        self._feedback_lock = threading.Lock()
        self._feedback_store: Store | None = None
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
        self._feedback_store = Store(self.workspace.db_path)
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
                warned = None
            except BeastError as exc:
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
        from engine import monitoring

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

    def wrap(self, route: str, handler: Handler, *, mutation: bool = False) -> Handler:
        """Authorization, error mapping and request metrics around one handler."""
        metrics = self.metrics

        async def endpoint(request: Request) -> Response:
            start = time.perf_counter()
            try:
                self.authorize(request, mutation=mutation)
                response = await handler(request)
            except ApiError as exc:
                response = error_response(
                    exc.status, exc.message, headers=exc.headers, extra=exc.extra
                )
            except BeastError as exc:
                response = error_response(exc.http_status, str(exc))
            except Exception:
                # Never a traceback to the client; the log keeps it (no body, no token).
                log.exception("internal error in %s %s", request.method, route)
                response = error_response(500, "internal error (see the engine's log)")
            metrics.request(
                route, request.method, response.status_code, time.perf_counter() - start
            )
            return response

        return endpoint

    def authorize(self, request: Request, *, mutation: bool) -> None:
        """Bearer token for mutations, and for everything when listening beyond loopback."""
        if not mutation and not self.settings.token_everywhere:
            return
        challenge = {"WWW-Authenticate": 'Bearer realm="beast-mode"'}
        if self.token is None:
            raise ApiError(
                403,
                "mutations over HTTP are disabled: no API token is configured (set "
                f"{TOKEN_ENV}, or start the engine with `beast engine`, which creates "
                f"{token_path(self.workspace)})",
            )
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(
                401, "missing bearer token: send Authorization: Bearer <token>", headers=challenge
            )
        # Constant time: the comparison must not tell how much of a guess was right.
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise ApiError(401, "wrong bearer token", headers=challenge)

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
        if not isinstance(document, dict):
            raise ApiError(422, f"the body must be a JSON object, got {_kind(document)}")
        return document

    # -- predictions ------------------------------------------------------------------------

    async def predict(self, request: Request) -> Response:
        """POST /v1/predict: one row (`features`) or a batch (`rows`)."""
        document = await self.json_object(request)
        router = self._router()
        if "rows" in document:
            return await self._predict_batch(document, router)
        fields = Fields(document, "predict")
        if "features" not in document:
            raise ApiError(
                422,
                "predict: features is required (an object of name → number, or a list of "
                "numbers in the model's order; or rows for a batch)",
            )
        features = fields.raw("features")
        key = fields.text("key", limit=MAX_KEY_CHARS)
        model = fields.text("model")
        fields.done()
        if self.settings.predict_inline:
            prediction = router.predict(features, key=key, model=model)
        else:
            prediction = await run_in_threadpool(router.predict, features, key=key, model=model)
        self.metrics.served((prediction,))
        document = prediction.to_json()
        if prediction.error is not None:
            # Logged like any prediction; 500 tells the client there is no score, and the
            # prediction_id lets it correlate with the log and the alerts.
            return json_response(document, 500)
        return json_response(document)

    async def _predict_batch(self, document: dict[str, Any], router: Router) -> Response:
        fields = Fields(document, "predict")
        rows = fields.raw("rows")
        keys = fields.raw("keys")
        model = fields.text("model")
        fields.done()
        if not isinstance(rows, list):
            raise ApiError(422, f"predict: rows must be a list of rows, got {_kind(rows)}")
        if len(rows) > self.settings.max_rows:
            raise ApiError(
                413, f"{len(rows)} rows is over the limit of {self.settings.max_rows} per request"
            )
        if keys is not None:
            if not isinstance(keys, list):
                raise ApiError(422, f"predict: keys must be a list, got {_kind(keys)}")
            if len(keys) != len(rows):
                raise ApiError(422, f"predict: {len(keys)} keys for {len(rows)} rows")
            for i, key in enumerate(keys):
                if key is not None and not isinstance(key, str):
                    raise ApiError(422, f"predict: keys[{i}] must be a string or null")
                if isinstance(key, str) and len(key) > MAX_KEY_CHARS:
                    raise ApiError(422, f"predict: keys[{i}] is over {MAX_KEY_CHARS} characters")

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

        predictions, body, failed = await run_in_threadpool(work)
        self.metrics.served(predictions)
        return Response(body, 500 if failed else 200, media_type="application/json")

    # -- feedback ---------------------------------------------------------------------------

    async def feedback(self, request: Request) -> Response:
        """POST /v1/feedback: the actual value for a prediction, or a batch of them."""
        document = await self.json_object(request)
        if "items" in document:
            return await self._feedback_batch(document)
        fields = Fields(document, "feedback")
        pid = fields.text("prediction_id", limit=64, required=True)
        actual_raw = fields.raw("actual")
        fields.done()
        assert pid is not None
        actual = _actual(actual_raw, "feedback")
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
        self.metrics.feedback_outcome(status)
        return json_response(
            {"prediction_id": pid, "status": status}, 202 if status == "pending" else 200
        )

    def _feedback(self) -> Store:
        if self._feedback_store is None:
            raise ApiError(503, "the engine is starting or stopping")
        return self._feedback_store

    def _label_one(self, pid: str, actual: float) -> str:
        store = self._feedback()
        with self._feedback_lock:
            return labels.record(store, pid, actual, self.tolerance)

    def _label_many(self, items: list[tuple[str, object]]) -> list[labels.Outcome]:
        store = self._feedback()
        with self._feedback_lock:
            return labels.record_many(store, items, self.tolerance)

    async def _feedback_batch(self, document: dict[str, Any]) -> Response:
        """All valid items in one transaction; every item gets its own answer (200 overall)."""
        fields = Fields(document, "feedback")
        items = fields.raw("items")
        fields.done()
        if not isinstance(items, list):
            raise ApiError(422, f"feedback: items must be a list, got {_kind(items)}")
        if len(items) > self.settings.max_rows:
            raise ApiError(413, f"{len(items)} items is over the limit of {self.settings.max_rows}")
        results: list[dict[str, Any] | None] = []
        valid: list[tuple[str, object]] = []
        slots: list[int] = []
        for i, item in enumerate(items):
            what = f"items[{i}]"
            try:
                if not isinstance(item, dict):
                    raise ApiError(422, f"{what} must be an object, got {_kind(item)}")
                item_fields = Fields(item, what)
                pid = item_fields.text("prediction_id", limit=64, required=True)
                actual = _actual(item_fields.raw("actual"), what)
                item_fields.done()
            except ApiError as exc:
                pid_raw = item.get("prediction_id") if isinstance(item, dict) else None
                results.append(
                    {
                        "prediction_id": pid_raw if isinstance(pid_raw, str) else None,
                        "status": "invalid",
                        "code": exc.status,
                        "error": exc.message,
                    }
                )
                continue
            assert pid is not None
            slots.append(len(results))
            results.append(None)
            valid.append((pid, actual))
        outcomes = await run_in_threadpool(self._label_many, valid) if valid else []
        for slot, outcome in zip(slots, outcomes, strict=True):
            answer: dict[str, Any] = {
                "prediction_id": outcome.prediction_id,
                "status": outcome.status,
                "code": outcome.http_status,
            }
            if outcome.message is not None:
                answer["error"] = _one_line(outcome.message)
            results[slot] = answer
        counts: dict[str, int] = {}
        for result in results:
            assert result is not None
            counts[result["status"]] = counts.get(result["status"], 0) + 1
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
        from engine import metrics as rollup_metrics

        window = request.query_params.get("window", "1h")
        if window not in rollup_metrics.WINDOWS:
            raise ApiError(
                422, f"unknown window {window[:20]!r} (use {', '.join(rollup_metrics.WINDOWS)})"
            )
        model = request.query_params.get("model") or None
        document = await run_in_threadpool(self._monitor_document, window, model)
        return json_response(document)

    def _monitor_document(self, window: str = "1h", model: str | None = None) -> dict[str, Any]:
        from engine import monitoring

        def report(engine: Engine) -> dict[str, Any]:
            return monitoring.report(engine, window=window, model=model).to_json()

        return self._call_engine(report)

    async def healthz(self, request: Request) -> Response:
        """GET /healthz: alive, and how the prediction log writer is doing."""
        router, plog = self.router, self.log
        if router is None or plog is None:
            return json_response({"status": "starting", "pid": os.getpid()}, 503)
        stats = plog.stats()
        problems = router.problems()
        healthy = stats.last_error is None and not problems
        return json_response(
            {
                "status": "ok" if healthy else "degraded",
                "problems": problems,
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
            }
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
        """GET /openapi.json: the OpenAPI 3 document of every route."""
        return json_response(openapi_document())

    # -- mutations --------------------------------------------------------------------------

    def _actor(self, request: Request, fields: Fields) -> str:
        named = fields.text("actor", limit=100)
        client = request.client.host if request.client else "unknown"
        return f"{named} (api from {client})" if named else f"api client {client}"

    async def _mutate(self, fn: Callable[[Engine], Change], actor: str) -> Response:
        change = await run_in_threadpool(self._call_engine, fn, actor)
        return json_response(change.to_json())

    async def deploy(self, request: Request) -> Response:
        """POST /v1/deploy: as `beast deploy` (production at 100%, or an A/B candidate)."""
        f = Fields(await self.json_object(request), "deploy")
        path, version, model = f.text("path", limit=4096), f.text("version"), f.text("model")
        traffic, ab_test = f.number("traffic"), f.text("ab_test")
        note, expect, actor = (
            f.text("note", limit=MAX_NOTE_CHARS),
            f.expect(),
            self._actor(request, f),
        )
        f.done()
        if path is None and version is None:
            raise ApiError(422, "deploy: path (a model file in models/) or version is required")
        return await self._mutate(
            lambda e: e.deploy(
                path,
                version=version,
                model=model,
                traffic=traffic,
                ab_test=ab_test,
                note=note,
                expect=expect,
            ),
            actor,
        )

    async def rollback(self, request: Request) -> Response:
        """POST /v1/rollback: as `beast rollback [V]`."""
        f = Fields(await self.json_object(request), "rollback")
        version, model = f.text("version"), f.text("model")
        note, expect, actor = (
            f.text("note", limit=MAX_NOTE_CHARS),
            f.expect(),
            self._actor(request, f),
        )
        f.done()
        return await self._mutate(
            lambda e: e.rollback(version, model=model, note=note, expect=expect), actor
        )

    async def promote(self, request: Request) -> Response:
        """POST /v1/promote: as `beast promote NAME [--force]`."""
        f = Fields(await self.json_object(request), "promote")
        name, force = f.text("name", required=True), f.flag("force")
        note, expect, actor = (
            f.text("note", limit=MAX_NOTE_CHARS),
            f.expect(),
            self._actor(request, f),
        )
        f.done()
        assert name is not None
        return await self._mutate(
            lambda e: e.promote(name, force=force, note=note, expect=expect), actor
        )

    async def abort(self, request: Request) -> Response:
        """POST /v1/abort: as `beast abort NAME`."""
        f = Fields(await self.json_object(request), "abort")
        name = f.text("name", required=True)
        note, expect, actor = (
            f.text("note", limit=MAX_NOTE_CHARS),
            f.expect(),
            self._actor(request, f),
        )
        f.done()
        assert name is not None
        return await self._mutate(lambda e: e.abort(name, note=note, expect=expect), actor)


def _actual(raw: Any, what: str) -> float:
    try:
        return labels.check_actual(raw)
    except BeastError as exc:
        raise ApiError(422, f"{what}: {exc}") from None


def create_app(
    workspace: Workspace,
    settings: ApiSettings | None = None,
    *,
    token: str | None = None,
    api: Api | None = None,
) -> Starlette:
    """The ASGI application for one workspace. Nothing is opened until the lifespan starts."""
    api = api or Api(workspace, settings or ApiSettings(), token)
    routes = [
        Route("/v1/predict", api.wrap("predict", api.predict), methods=["POST"]),
        Route("/v1/feedback", api.wrap("feedback", api.feedback), methods=["POST"]),
        Route("/v1/status", api.wrap("status", api.status), methods=["GET"]),
        Route("/v1/monitor", api.wrap("monitor", api.monitor), methods=["GET"]),
        Route("/healthz", api.wrap("healthz", api.healthz), methods=["GET"]),
        Route("/metrics", api.wrap("metrics", api.prometheus), methods=["GET"]),
        Route("/openapi.json", api.wrap("openapi", api.openapi), methods=["GET"]),
        Route("/v1/deploy", api.wrap("deploy", api.deploy, mutation=True), methods=["POST"]),
        Route("/v1/rollback", api.wrap("rollback", api.rollback, mutation=True), methods=["POST"]),
        Route("/v1/promote", api.wrap("promote", api.promote, mutation=True), methods=["POST"]),
        Route("/v1/abort", api.wrap("abort", api.abort, mutation=True), methods=["POST"]),
    ]

    async def unmatched(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
        api.metrics.request("unmatched", request.method, status, 0.0)
        message = f"{detail}: {request.method} {request.url.path[:200]}"
        if status == 404:
            message += " (see /openapi.json for the routes)"
        return error_response(status, message)

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


# -- the OpenAPI document ------------------------------------------------------------------------


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json_body(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _json_request(*schemas: str) -> dict[str, Any]:
    """A required JSON request body: one schema, or any of several (one row or a batch)."""
    schema = _ref(schemas[0]) if len(schemas) == 1 else {"oneOf": [_ref(n) for n in schemas]}
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    meaning = {
        400: "Malformed request (not JSON, empty body, bad Content-Length).",
        401: "Missing or wrong bearer token.",
        403: "No API token is configured, so mutations are disabled.",
        404: "Unknown thing (prediction id, model line, test, version).",
        409: "Conflicts with the current state (conflicting feedback, state changed since you "
        "looked, a second running test).",
        413: "Body over the byte limit (1 MiB by default), or too many rows/items (10,000).",
        422: "Invalid content: features that do not fit the schema, strings/booleans/nulls, "
        "NaN/Infinity literals, unknown fields.",
        503: "Nothing deployed, the engine is starting/stopping, or the state is busy.",
    }
    return {str(c): _json_body(_ref("Error"), meaning[c]) for c in codes}


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 description of every route (a test holds it to the app's routes)."""
    number = {"type": "number"}
    text = {"type": "string"}
    optional_text = {"type": ["string", "null"]}
    features = {
        "description": "By name (any order; mapped to the model's order) or a list in the "
        "model's order. Finite numbers only: strings, booleans, nulls, nested lists, NaN "
        "(unless declared nullable) and values outside float32 are refused.",
        "oneOf": [
            {"type": "object", "additionalProperties": number},
            {"type": "array", "items": number},
        ],
    }
    expect = {
        "expect": {**optional_text, "description": "Refuse unless production is still this."},
        "expect_revision": {
            "type": ["integer", "null"],
            "description": "Refuse unless the line's state revision is still this.",
        },
        "note": {**optional_text, "description": "Why (kept in history)."},
        "actor": {**optional_text, "description": "Who, for the history row."},
    }
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {**text, "description": "One line a person can act on."}},
        },
        "Features": features,
        "PredictRequest": {
            "type": "object",
            "required": ["features"],
            "additionalProperties": False,
            "properties": {
                "features": _ref("Features"),
                "key": {**optional_text, "description": "Sticky id: same key, same arm."},
                "model": {**optional_text, "description": "Model line (when several)."},
            },
        },
        "BatchPredictRequest": {
            "type": "object",
            "required": ["rows"],
            "additionalProperties": False,
            "properties": {
                "rows": {"type": "array", "items": _ref("Features"), "maxItems": 10000},
                "keys": {"type": "array", "items": optional_text},
                "model": optional_text,
            },
        },
        "Prediction": {
            "type": "object",
            "properties": {
                "prediction_id": text,
                "score": {"type": ["number", "null"]},
                "version": text,
                "line": text,
                "experiment": optional_text,
                "arm": {"enum": ["production", "candidate"]},
                "latency_ms": number,
                "error": {
                    **optional_text,
                    "description": "Set when the model failed; score is then null.",
                },
            },
        },
        "BatchPredictResponse": {
            "type": "object",
            "properties": {
                "predictions": {"type": "array", "items": _ref("Prediction")},
                "error": {**text, "description": "Present (with status 500) if rows failed."},
            },
        },
        "FeedbackRequest": {
            "type": "object",
            "required": ["prediction_id", "actual"],
            "additionalProperties": False,
            "properties": {"prediction_id": text, "actual": number},
        },
        "BatchFeedbackRequest": {
            "type": "object",
            "required": ["items"],
            "properties": {
                "items": {"type": "array", "items": _ref("FeedbackRequest"), "maxItems": 10000}
            },
        },
        "FeedbackResult": {
            "type": "object",
            "properties": {
                "prediction_id": optional_text,
                "status": {
                    "enum": ["recorded", "duplicate", "pending", "not found", "conflict", "invalid"]
                },
                "code": {"type": "integer", "description": "The HTTP status it would have alone."},
                "error": text,
            },
        },
        "BatchFeedbackResponse": {
            "type": "object",
            "properties": {
                "results": {"type": "array", "items": _ref("FeedbackResult")},
                "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        },
        "Status": {
            "type": "object",
            "description": "The `beast status --json` document.",
            "properties": {
                "deployments": {"type": "array", "items": {"type": "object"}},
                "experiments": {"type": "array", "items": {"type": "object"}},
                "lines": {"type": "array", "items": text},
                "revisions": {"type": "object"},
                "health": {"enum": ["healthy", "warning", "critical", "no data"]},
            },
        },
        "Monitor": {
            "type": "object",
            "description": "The `beast monitor --json` document (DESIGN.md §3).",
            "properties": {
                "window": text,
                "health": text,
                "versions": {"type": "array", "items": {"type": "object"}},
                "alerts": {"type": "array", "items": {"type": "object"}},
                "experiments": {"type": "array", "items": {"type": "object"}},
            },
        },
        "Health": {
            "type": "object",
            "properties": {
                "status": {"enum": ["ok", "degraded", "starting"]},
                "problems": {
                    "type": "object",
                    "description": "Model lines whose deployment could not be loaded, and why.",
                },
                "pid": {"type": "integer"},
                "uptime_s": number,
                "log": {
                    "type": "object",
                    "properties": {
                        "queued": {"type": "integer"},
                        "written": {"type": "integer"},
                        "dropped": {"type": "integer"},
                        "last_error": optional_text,
                    },
                },
                "serving": {"type": "object"},
            },
        },
        "Change": {
            "type": "object",
            "properties": {
                "changed": {"type": "boolean"},
                "message": text,
                "history": {"type": ["object", "null"]},
            },
        },
        "DeployRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "path": {
                    **optional_text,
                    "description": "A model file in the workspace's models/.",
                },
                "version": optional_text,
                "model": optional_text,
                "traffic": {"type": ["number", "null"], "description": "Candidate share, 1–99."},
                "ab_test": {**optional_text, "description": "Start this A/B test."},
                **expect,
            },
        },
        "RollbackRequest": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"version": optional_text, "model": optional_text, **expect},
        },
        "PromoteRequest": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {"name": text, "force": {"type": "boolean"}, **expect},
        },
        "AbortRequest": {
            "type": "object",
            "required": ["name"],
            "additionalProperties": False,
            "properties": {"name": text, **expect},
        },
    }

    def mutation(summary: str, request: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "security": [{"bearer": []}],
                "requestBody": _json_request(request),
                "responses": {
                    "200": _json_body(_ref("Change"), "Done (or nothing to do: changed=false)."),
                    **_errors(400, 401, 403, 404, 409, 413, 422, 503),
                },
            }
        }

    paths: dict[str, Any] = {
        "/v1/predict": {
            "post": {
                "summary": "Score one row (features) or a batch (rows), routed by the A/B split.",
                "requestBody": _json_request("PredictRequest", "BatchPredictRequest"),
                "responses": {
                    "200": _json_body(
                        {"oneOf": [_ref("Prediction"), _ref("BatchPredictResponse")]},
                        "Scored and logged.",
                    ),
                    "500": _json_body(
                        {"oneOf": [_ref("Prediction"), _ref("BatchPredictResponse")]},
                        "The model failed: the prediction is logged with its error and "
                        "prediction_id (score null); a batch lists every row.",
                    ),
                    **_errors(400, 404, 413, 422, 503),
                },
            }
        },
        "/v1/feedback": {
            "post": {
                "summary": "The actual value for a prediction (or a batch of them: items).",
                "description": "Answers: recorded (200); duplicate, the same value again (200, "
                "idempotent); pending, the prediction is seconds old and not yet in the log: "
                "kept and matched when it is written (202); unknown id (404); a different "
                "value for a labelled prediction (409, not replaced). A batch is one "
                "transaction and answers 200 with a status per item.",
                "requestBody": _json_request("FeedbackRequest", "BatchFeedbackRequest"),
                "responses": {
                    "200": _json_body(
                        {"oneOf": [_ref("FeedbackResult"), _ref("BatchFeedbackResponse")]},
                        "Recorded or duplicate; per item for a batch.",
                    ),
                    "202": _json_body(_ref("FeedbackResult"), "Pending: matched on flush."),
                    **_errors(400, 404, 409, 413, 422, 503),
                },
            }
        },
        "/v1/status": {
            "get": {
                "summary": "What serves (the `beast status --json` document).",
                "responses": {"200": _json_body(_ref("Status"), "Status."), **_errors(503)},
            }
        },
        "/v1/monitor": {
            "get": {
                "summary": "Health, metrics, drift, alerts, verdicts (`beast monitor --json`).",
                "parameters": [
                    {
                        "name": "window",
                        "in": "query",
                        "schema": {"enum": ["1h", "24h", "deploy"], "default": "1h"},
                    },
                    {"name": "model", "in": "query", "schema": text},
                ],
                "responses": {"200": _json_body(_ref("Monitor"), "Report."), **_errors(422, 503)},
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness, and the prediction log writer's counters.",
                "responses": {
                    "200": _json_body(_ref("Health"), "Serving (status ok or degraded)."),
                    "503": _json_body(_ref("Health"), "Starting or stopping."),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text exposition.",
                "responses": {
                    "200": {
                        "description": "Metrics.",
                        "content": {"text/plain": {"schema": text}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document.",
                "responses": {"200": _json_body({"type": "object"}, "OpenAPI 3.1.")},
            }
        },
        "/v1/deploy": mutation("Deploy: production at 100%, or an A/B candidate.", "DeployRequest"),
        "/v1/rollback": mutation(
            "Roll back to the previous production or a version.", "RollbackRequest"
        ),
        "/v1/promote": mutation("Promote a test's candidate to production.", "PromoteRequest"),
        "/v1/abort": mutation("End a test: candidate to 0%.", "AbortRequest"),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "beast-mode engine",
            "version": "1",
            "description": "Serve, A/B test and monitor XGBoost score models. Every error is "
            'JSON {"error": "one line"}. Mutations need Authorization: Bearer <token> (the '
            "workspace's api-token or BEAST_API_TOKEN); listening beyond loopback, every "
            "route does.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
