"""How `beast simulate` reaches the engine: in-process through the facade, or over HTTP.

Both transports answer the same calls — one keyed prediction, a batch of them, a batch of
feedback, and a monitoring read (the load of a latency spike) — so the simulator's schedule
does not know which one it drives. The in-process one is the router with its batched
prediction log (as `beast predict` uses them); the HTTP one speaks `POST /v1/predict`,
`POST /v1/feedback` and `GET /v1/monitor` of a running `beast engine` over keep-alive
connections (stdlib `http.client`, one connection per thread), and needs no token: it never
mutates a deployment.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import urlsplit

from engine.core.errors import BeastError
from engine.facade import Engine
from engine.serving.prediction_log import PredictionLog
from engine.serving.router import Router

Row = dict[str, float]
REQUEST_TIMEOUT_S = 30.0


class Transport(Protocol):
    """What the simulator needs from an engine: predictions out, ground truth in."""

    def predict(self, row: Row, key: str, *, model: str | None = None) -> str | None:
        """One prediction (of model line `model`; None: the only one deployed); its id, or
        None when the engine refused or failed it."""
        ...

    def feedback(self, items: Sequence[tuple[str, float]]) -> Counter[str]:
        """Ground truth for earlier predictions; the count of each answer."""
        ...

    def predict_many(
        self, rows: Sequence[Row], keys: Sequence[str], *, model: str | None = None
    ) -> list[str | None]:
        """A batch in one call; each row's prediction id (None where it failed)."""
        ...

    def read_monitor(self) -> None:
        """Ask for the monitoring report once (what a dashboard's refresh does)."""
        ...

    def close(self) -> None: ...


class InProcess:
    """The router and prediction log of this process, on the workspace's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        tolerance = engine.config.thresholds.tolerance_points
        self.log = PredictionLog(engine.workspace.db_path, tolerance=tolerance).start()
        try:
            self.router = Router(engine, log=self.log)
        except BaseException:
            self.log.close()
            raise
        self._feedback_lock = threading.Lock()  # the facade's connection: one caller at a time

    def predict(self, row: Row, key: str, *, model: str | None = None) -> str | None:
        served = self.router.predict(row, key=key, model=model)
        return served.prediction_id if served.error is None else None

    def predict_many(
        self, rows: Sequence[Row], keys: Sequence[str], *, model: str | None = None
    ) -> list[str | None]:
        served = self.router.predict_batch(rows, keys=keys, model=model)
        return [p.prediction_id if p.error is None else None for p in served]

    def read_monitor(self) -> None:
        # A reader of its own, as another dashboard process would be: its own connection.
        reader = Engine(self.engine.workspace, actor=self.engine.actor)
        try:
            reader.report()
        finally:
            reader.close()

    def feedback(self, items: Sequence[tuple[str, float]]) -> Counter[str]:
        with self._feedback_lock:
            outcomes = self.engine.feedback_many(list(items))
        return Counter(o.status for o in outcomes)

    def close(self) -> None:
        """Close the router, then flush every queued prediction to the log."""
        self.router.close()
        self.log.close()


class Http:
    """A running `beast engine`, by its base URL (`http://127.0.0.1:8787`)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise BeastError(f"--url must look like http://HOST:PORT, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.base = parts.path.rstrip("/")
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=REQUEST_TIMEOUT_S)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def post(self, path: str, document: dict[str, Any]) -> tuple[int, Any]:
        """POST JSON; (status, parsed body)."""
        return self.request("POST", path, json.dumps(document).encode())

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        """(status, parsed JSON body); a dropped keep-alive connection is retried once."""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.request(method, self.base + path, body=body, headers=headers)
                response = conn.getresponse()
                raw = response.read()
            except (ConnectionError, http.client.HTTPException, TimeoutError) as exc:
                conn.close()
                if attempt == 2:
                    raise BeastError(
                        f"cannot reach the engine at http://{self.host}:{self.port}: {exc}"
                    ) from None
                continue
            try:
                return response.status, json.loads(raw) if raw else None
            except ValueError:
                return response.status, None
        raise AssertionError("unreachable")  # pragma: no cover

    def predict(self, row: Row, key: str, *, model: str | None = None) -> str | None:
        document: dict[str, Any] = {"features": row, "key": key}
        if model is not None:
            document["model"] = model
        status, doc = self.post("/v1/predict", document)
        if status == 200 and isinstance(doc, dict):
            return str(doc["prediction_id"])
        return None

    def predict_many(
        self, rows: Sequence[Row], keys: Sequence[str], *, model: str | None = None
    ) -> list[str | None]:
        document: dict[str, Any] = {"rows": list(rows), "keys": list(keys)}
        if model is not None:
            document["model"] = model
        status, doc = self.post("/v1/predict", document)
        if status not in (200, 500) or not isinstance(doc, dict):
            return [None] * len(rows)
        return [
            str(p["prediction_id"]) if p.get("error") is None else None
            for p in doc.get("predictions", ())
        ]

    def read_monitor(self) -> None:
        self.request("GET", "/v1/monitor")

    def feedback(self, items: Sequence[tuple[str, float]]) -> Counter[str]:
        document = {"items": [{"prediction_id": p, "actual": a} for p, a in items]}
        status, doc = self.post("/v1/feedback", document)
        if status != 200 or not isinstance(doc, dict):
            return Counter({f"http {status}": len(items)})
        return Counter({str(k): int(v) for k, v in doc.get("counts", {}).items()})

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
