"""The HTTP edge of a real `beast engine` on loopback: what a client or a web page can send.

Issue 12 §1, §3 and §7 through real processes: lone surrogates and control characters in
every text field, Host / Origin / Content-Type, duplicate JSON keys, 405 with Allow, label
ranges, a client that hangs up mid-request, and /healthz when nothing can serve. Bodies are
sent as raw bytes, so the `\\ud800` escapes reach the server exactly as a hostile client
would write them.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from engine import Engine, Workspace
from tests.helpers import copy_workspace, model_path, set_config
from tests.serving_helpers import logged_count
from tests.test_engine_process import running_engine

pytestmark = pytest.mark.slow

JSON = {"Content-Type": "application/json"}
ROW = {"coverage": 0.8, "complexity": 0.3, "lint_density": 0.1, "duplication": 0.05, "churn": 0.4}
ROW_JSON = json.dumps(ROW)
ROUTES = {
    "/v1/predict": ("POST",),
    "/v1/feedback": ("POST",),
    "/v1/status": ("GET", "HEAD"),
    "/v1/monitor": ("GET", "HEAD"),
    "/healthz": ("GET", "HEAD"),
    "/metrics": ("GET", "HEAD"),
    "/openapi.json": ("GET", "HEAD"),
    "/v1/deploy": ("POST",),
    "/v1/rollback": ("POST",),
    "/v1/promote": ("POST",),
    "/v1/abort": ("POST",),
}


def append_config(ws: Workspace, text: str) -> None:
    with ws.config_path.open("a", encoding="utf-8") as handle:
        handle.write("\n" + text + "\n")


@pytest.fixture(scope="module")
def edge_ws(_template: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """v1.0 in production, v2.0 a 30% candidate of test ab-v2 (sticky keys are hashed)."""
    ws = copy_workspace(_template, tmp_path_factory.mktemp("edge") / ".beast-mode")
    engine = Engine(ws, actor="tester")
    try:
        engine.deploy(model_path(ws, "v1.0"))
        engine.deploy(model_path(ws, "v2.0"), traffic=30, ab_test="ab-v2")
    finally:
        engine.close()
    set_config(ws, allowed_hosts='["beast.internal"]')
    return ws


@dataclass(frozen=True)
class Edge:
    """One engine for the whole module: where it listens, its log, its token header."""

    base: str
    port: int
    log: Path
    auth: dict[str, str]


@pytest.fixture(scope="module")
def edge(edge_ws: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("edge-engine")
    with running_engine(edge_ws, tmp, "--allowed-host", "api.example.org:8443") as (
        _proc,
        port,
        log,
    ):
        token = (edge_ws.root / "api-token").read_text(encoding="utf-8").strip()
        yield Edge(f"http://127.0.0.1:{port}", port, log, {"Authorization": f"Bearer {token}"})


def assert_json_error(response: httpx.Response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    message = response.json()["error"]
    assert isinstance(message, str) and message and "\n" not in message
    for word in words:
        assert word.lower() in message.lower(), message
    return message


def settled_count(edge: Edge, ws: Workspace) -> int:
    """Predictions in the log once the engine's writer has nothing queued."""
    deadline = time.monotonic() + 10
    while httpx.get(edge.base + "/healthz").json()["log"]["queued"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.1)  # a batch the writer took but has not committed yet
    return logged_count(ws)


def post_raw(edge: Edge, path: str, body: bytes, **headers: str) -> httpx.Response:
    sent = {"Content-Type": "application/json", **edge.auth, **headers}
    return httpx.post(edge.base + path, content=body, headers=sent, timeout=10)


# -- §1: every text field is checked at the edge ---------------------------------------------

PID = "01a24dc326de773b988ef0322e12444a"
SURROGATE = "\\ud800"  # the six characters of the JSON escape: a lone UTF-16 surrogate
TEXT_FIELDS: list[tuple[str, str, str]] = [
    ("/v1/predict", f'{{"features": {ROW_JSON}, "key": "k{SURROGATE}"}}', "key"),
    ("/v1/predict", f'{{"features": {ROW_JSON}, "model": "{SURROGATE}"}}', "model"),
    ("/v1/predict", f'{{"rows": [{ROW_JSON}], "keys": ["{SURROGATE}"]}}', "keys[0]"),
    ("/v1/predict", f'{{"rows": [{ROW_JSON}], "model": "{SURROGATE}"}}', "model"),
    ("/v1/predict", f'{{"features": {ROW_JSON}, "{SURROGATE}": 1}}', "unknown field"),
    ("/v1/predict", f'{{"features": {{"{SURROGATE}": 1}}}}', "features"),
    ("/v1/feedback", f'{{"prediction_id": "{SURROGATE}", "actual": 50}}', "prediction_id"),
    (
        "/v1/feedback",
        f'{{"items": [{{"prediction_id": "{PID}", "actual": 5}}, '
        f'{{"prediction_id": "{SURROGATE}", "actual": 50}}]}}',
        "items[1]",
    ),
    ("/v1/deploy", f'{{"version": "v3.0", "note": "{SURROGATE}"}}', "note"),
    ("/v1/deploy", f'{{"version": "v3.0", "actor": "{SURROGATE}"}}', "actor"),
    ("/v1/deploy", f'{{"version": "{SURROGATE}"}}', "version"),
    ("/v1/deploy", f'{{"path": "{SURROGATE}.json"}}', "path"),
    ("/v1/deploy", f'{{"version": "v3.0", "model": "{SURROGATE}"}}', "model"),
    ("/v1/deploy", f'{{"version": "v3.0", "traffic": 5, "ab_test": "{SURROGATE}"}}', "ab_test"),
    ("/v1/rollback", f'{{"note": "{SURROGATE}"}}', "note"),
    ("/v1/rollback", f'{{"version": "v1.0", "expect": "{SURROGATE}"}}', "expect"),
    ("/v1/promote", f'{{"name": "{SURROGATE}"}}', "name"),
    ("/v1/promote", f'{{"name": "ab-v2", "actor": "{SURROGATE}"}}', "actor"),
    ("/v1/abort", f'{{"name": "ab-v2", "note": "{SURROGATE}"}}', "note"),
    ("/v1/abort", '{"name": "ab-v2", "note": "a\\nforged log line"}', "note"),
    ("/v1/abort", '{"name": "ab-v2", "actor": "\\u001b[2J"}', "actor"),
    ("/v1/predict", f'{{"features": {ROW_JSON}, "key": "\\u202egnp.exe"}}', "key"),
    ("/v1/predict", f'{{"features": {ROW_JSON}, "key": "{"k" * 1025}"}}', "1024"),
]


@pytest.mark.parametrize(
    ("path", "body", "word"), TEXT_FIELDS, ids=[f"{p} {w}" for p, _, w in TEXT_FIELDS]
)
def test_unsafe_text_in_any_field_is_a_422_json_error(
    edge: Edge, edge_ws: Workspace, path: str, body: str, word: str
) -> None:
    base, log = edge.base, edge.log
    before = settled_count(edge, edge_ws)
    response = post_raw(edge, path, body.encode())
    message = assert_json_error(response, 422, word)
    assert message.isprintable(), message  # quoted client text comes back escaped
    assert "Traceback" not in log.read_text()
    # Nothing was served, logged or changed for the refused request.
    status = httpx.get(f"{base}/v1/status").json()
    assert [e["status"] for e in status["experiments"]] == ["running"]
    assert settled_count(edge, edge_ws) == before


def test_a_prediction_with_a_clean_key_still_serves(edge: Edge) -> None:
    body = json.dumps({"features": ROW, "key": "user-ü-42"}).encode()
    response = post_raw(edge, "/v1/predict", body)
    assert response.status_code == 200, response.text


# -- §3: the loopback API is not a door for web pages ------------------------------------------


@pytest.mark.parametrize("host", ["evil.example.com", "evil.example.com:80", "127.0.0.2", "x"])
def test_a_host_the_engine_does_not_serve_is_421_on_every_route(edge: Edge, host: str) -> None:
    base = edge.base
    for path, methods in ROUTES.items():
        body = b'{"features": {}}' if methods[0] == "POST" else None
        response = httpx.request(
            methods[0], base + path, content=body, headers={**JSON, **edge.auth, "Host": host}
        )
        assert_json_error(response, 421, host.split(":", maxsplit=1)[0])
    unknown = httpx.get(base + "/nope", headers={"Host": host})
    assert unknown.status_code == 421


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST.",
        "127.0.0.1",
        "[::1]",
        "beast.internal",  # [api] allowed_hosts
        "api.example.org:8443",  # --allowed-host, with its port
    ],
)
def test_the_hosts_the_engine_serves(edge: Edge, host: str) -> None:
    base, port = edge.base, edge.port
    for shown in (host, f"{host}:{port}") if ":" not in host.strip("[]") else (host,):
        response = httpx.get(base + "/v1/status", headers={"Host": shown})
        assert response.status_code == 200, (shown, response.text)


def test_an_allowed_host_with_another_port_is_refused(edge: Edge) -> None:
    base = edge.base
    response = httpx.get(base + "/v1/status", headers={"Host": "api.example.org:9999"})
    assert_json_error(response, 421, "api.example.org")


@pytest.mark.parametrize(
    "origin", ["https://evil.example.com", "http://evil.example.com:8787", "null", "file://"]
)
def test_a_cross_site_origin_is_403(edge: Edge, origin: str) -> None:
    base = edge.base
    body = json.dumps({"features": ROW}).encode()
    predict = post_raw(edge, "/v1/predict", body, Origin=origin)
    assert_json_error(predict, 403, "origin")
    status = httpx.get(base + "/v1/status", headers={"Origin": origin})
    assert_json_error(status, 403, "origin")
    for response in (predict, status):
        assert not any(h.startswith("access-control-") for h in response.headers)


def test_a_same_host_origin_is_served(edge: Edge) -> None:
    port = edge.port
    body = json.dumps({"features": ROW}).encode()
    for origin in (f"http://127.0.0.1:{port}", "http://localhost:3000", "http://[::1]"):
        response = post_raw(edge, "/v1/predict", body, Origin=origin)
        assert response.status_code == 200, (origin, response.text)
        assert not any(h.startswith("access-control-") for h in response.headers)


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "application/jsonp",
        "",
    ],
)
def test_a_post_body_that_is_not_json_is_415(
    edge: Edge, edge_ws: Workspace, content_type: str
) -> None:
    base = edge.base
    before = settled_count(edge, edge_ws)
    body = json.dumps({"features": ROW}).encode()
    headers = {**edge.auth, "Content-Type": content_type}
    response = httpx.post(base + "/v1/predict", content=body, headers=headers)
    assert_json_error(response, 415, "application/json")
    feedback = httpx.post(
        base + "/v1/feedback", content=b'{"prediction_id": "x", "actual": 1}', headers=headers
    )
    assert_json_error(feedback, 415)
    assert settled_count(edge, edge_ws) == before


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
def test_json_content_types_are_accepted(edge: Edge, content_type: str) -> None:
    base = edge.base
    body = json.dumps({"features": ROW}).encode()
    response = httpx.post(
        base + "/v1/predict", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text


def test_a_preflight_gets_no_cors_headers(edge: Edge) -> None:
    base, port = edge.base, edge.port
    response = httpx.options(
        base + "/v1/predict",
        headers={
            "Origin": f"http://localhost:{port}",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert response.status_code == 405
    assert not any(h.startswith("access-control-") for h in response.headers)


# -- §7: the HTTP surface says exactly what it does ---------------------------------------------


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "TRACE", "OPTIONS"])
def test_405_answers_carry_allow(edge: Edge, method: str) -> None:
    base = edge.base
    for path, methods in ROUTES.items():
        response = httpx.request(method, base + path)
        assert_json_error(response, 405, method)
        allowed = {m.strip() for m in response.headers["allow"].split(",")}
        assert allowed == set(methods), (path, response.headers["allow"])
    for path in ("/v1/status", "/healthz"):  # a route's own method is not refused
        assert httpx.request("POST", base + path).headers["allow"] == "GET, HEAD"


DUPLICATES = [
    ("/v1/predict", f'{{"features": {ROW_JSON}, "key": "a", "key": "b"}}', "key"),
    ("/v1/predict", '{"features": {"coverage": 1, "coverage": 2}}', "coverage"),
    ("/v1/predict", f'{{"features": {ROW_JSON}, "features": [1, 2, 3, 4, 5]}}', "features"),
    ("/v1/feedback", f'{{"prediction_id": "{PID}", "actual": 1, "actual": 99}}', "actual"),
    ("/v1/abort", '{"name": "nope", "name": "ab-v2"}', "name"),
]


@pytest.mark.parametrize(("path", "body", "word"), DUPLICATES)
def test_duplicate_json_keys_are_422(edge: Edge, path: str, body: str, word: str) -> None:
    response = post_raw(edge, path, body.encode())
    assert_json_error(response, 422, "duplicate", word)


def test_too_many_rows_is_422_like_any_schema_violation(edge: Edge) -> None:
    body = json.dumps({"rows": [[0, 0, 0, 0, 0]] * 10_001}).encode()
    assert_json_error(post_raw(edge, "/v1/predict", body), 422, "10000")


def raw_request(port: int, head: bytes, body: bytes, *, close_after: bool) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head + body)
        if not close_after:
            sock.recv(65536)


def test_a_client_that_hangs_up_is_one_info_line(edge: Edge) -> None:
    base, port, log = edge.base, edge.port, edge.log
    body = json.dumps({"rows": [ROW] * 2000}).encode()
    head = (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    mark = len(log.read_text())
    # Mid-body: half the promised bytes, then the connection is closed.
    raw_request(port, head, body[: len(body) // 2], close_after=True)
    # Mid-response: the whole body, closed before the answer is read.
    raw_request(port, head, body, close_after=True)
    time.sleep(1.0)
    assert httpx.get(base + "/healthz").status_code == 200
    new = log.read_text()[mark:]
    assert "Traceback" not in new and " ERROR " not in new, new
    assert "client disconnected" in new, new


# -- §2 and §3: health and feedback ranges -------------------------------------------------------


def test_feedback_outside_the_label_range_is_422(edge: Edge, edge_ws: Workspace) -> None:
    served = post_raw(edge, "/v1/predict", json.dumps({"features": ROW}).encode()).json()
    pid = served["prediction_id"]
    time.sleep(0.3)  # flushed: the answer is by the line's range, not "pending"
    for actual in (-1e6, 1e30, 100.5, -0.001):
        body = json.dumps({"prediction_id": pid, "actual": actual}).encode()
        assert_json_error(post_raw(edge, "/v1/feedback", body), 422, "0", "100")
    items = [{"prediction_id": pid, "actual": 1e30}, {"prediction_id": pid, "actual": 70}]
    batch = post_raw(edge, "/v1/feedback", json.dumps({"items": items}).encode())
    assert batch.status_code == 200, batch.text
    results = batch.json()["results"]
    assert [r["status"] for r in results] == ["invalid", "recorded"]
    assert "100" in results[0]["error"]


@pytest.fixture
def ws_copy(_template: Workspace, tmp_path: Path) -> Workspace:
    return copy_workspace(_template, tmp_path / "ws" / ".beast-mode")


def test_a_line_declares_its_label_range(ws_copy: Workspace, tmp_path: Path) -> None:
    engine = Engine(ws_copy, actor="tester")
    try:
        engine.deploy(model_path(ws_copy, "v1.0"))
    finally:
        engine.close()
    append_config(ws_copy, "[lines.quality-predictor]\nlabel_range = [-5, 1000]")
    with running_engine(ws_copy, tmp_path) as (_proc, port, _log):
        base = f"http://127.0.0.1:{port}"
        pid = httpx.post(f"{base}/v1/predict", json={"features": ROW}).json()["prediction_id"]
        time.sleep(0.3)
        ok = httpx.post(f"{base}/v1/feedback", json={"prediction_id": pid, "actual": 900})
        assert ok.status_code == 200 and ok.json()["status"] == "recorded", ok.text
        spec = httpx.get(f"{base}/openapi.json").json()
        actual = spec["components"]["schemas"]["FeedbackRequest"]["properties"]["actual"]
        assert (actual["minimum"], actual["maximum"]) == (-5, 1000)
        other = httpx.post(f"{base}/v1/predict", json={"features": ROW}).json()["prediction_id"]
        time.sleep(0.3)
        refused = httpx.post(f"{base}/v1/feedback", json={"prediction_id": other, "actual": 1001})
        assert_json_error(refused, 422, "-5", "1000")


def test_healthz_is_unready_when_nothing_is_deployed(ws_copy: Workspace, tmp_path: Path) -> None:
    with running_engine(ws_copy, tmp_path) as (_proc, port, _log):
        response = httpx.get(f"http://127.0.0.1:{port}/healthz")
        assert response.status_code == 503
        doc = response.json()
        assert doc["status"] == "unready" and "nothing is deployed" in doc["reason"]


def test_healthz_is_unready_when_the_store_is_gone(ws_copy: Workspace, tmp_path: Path) -> None:
    engine = Engine(ws_copy, actor="tester")
    try:
        engine.deploy(model_path(ws_copy, "v1.0"))
    finally:
        engine.close()
    with running_engine(ws_copy, tmp_path) as (_proc, port, _log):
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
        ws_copy.db_path.unlink()
        ws_copy.db_path.write_bytes(b"")  # a 0-byte file where the database was
        response = httpx.get(f"{base}/healthz")
        assert response.status_code == 503
        doc = response.json()
        assert doc["status"] == "unready" and "beast.db" in doc["reason"], doc


def test_predict_and_feedback_can_require_the_token(ws_copy: Workspace, tmp_path: Path) -> None:
    engine = Engine(ws_copy, actor="tester")
    try:
        engine.deploy(model_path(ws_copy, "v1.0"))
    finally:
        engine.close()
    set_config(ws_copy, require_token='"always"')
    with running_engine(ws_copy, tmp_path) as (_proc, port, _log):
        base = f"http://127.0.0.1:{port}"
        token = (ws_copy.root / "api-token").read_text().strip()
        refused = httpx.post(f"{base}/v1/predict", json={"features": ROW})
        assert_json_error(refused, 401, "bearer")
        feedback = httpx.post(f"{base}/v1/feedback", json={"prediction_id": PID, "actual": 1})
        assert_json_error(feedback, 401)
        auth = {"Authorization": f"Bearer {token}"}
        ok = httpx.post(f"{base}/v1/predict", json={"features": ROW}, headers=auth)
        assert ok.status_code == 200, ok.text
        spec = httpx.get(f"{base}/openapi.json", headers=auth).json()
        assert spec["paths"]["/v1/predict"]["post"]["security"] == [{"bearer": []}]


def test_allowed_host_is_validated(ws_copy: Workspace, tmp_path: Path) -> None:
    from tests.test_engine_process import run_engine_once

    result = run_engine_once(ws_copy, "--allowed-host", "bad host/x", "--port", "0")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "--allowed-host" in result.stderr, result.stderr
    set_config(ws_copy, allowed_hosts='["ok.example", 7]')
    result = run_engine_once(ws_copy, "--port", "0")
    assert result.returncode == 1 and "api.allowed_hosts" in result.stderr, result.stderr
