"""HTTP `/v1/predict`, one row, on loopback, logging included (DESIGN.md §8, issue 18).

Targets: one worker p99 ≤ 2 ms with one client and ≥ 1,500 req/s with 8 clients; two workers
≥ 3,000 req/s (DESIGN.md §8). Issue 18: one worker with 8 clients ≥ 1.6× the bare Starlette
floor's req/s, ≥ 15× `mlflow models serve` on the model saved without a signature and ≥ 30×
with one; with one client, p99 ≤ 1.25× the floor's p99.

`beast engine` runs as a real process on 127.0.0.1 over a workspace with two 200-tree, depth-6
models in an A/B test at 10%; every answered prediction goes through its PredictionLog (the
two-worker engine over a second, identical workspace: one engine per workspace). The floor: a
minimal Starlette app, written below into the benchmark's tmp_path, that parses the same JSON,
orders the features, calls `inplace_predict` on the same model (nthread=1) and answers the
score — served by the same uvicorn the same way (one process, its default loop and HTTP
parser). The limit beside it: a bare ASGI handler scoring with the same model compiled by
tl2cgen (skipped with the reason printed when treelite/tl2cgen or a C compiler are missing).
The peer: `mlflow models serve` (the optional `mlflow` extra; skipped with the reason printed
when it is not importable), one worker, on the same model saved by mlflow.xgboost twice —
without a signature, and with one from `mlflow.models.infer_signature` (MLflow's documented
way; the server then checks and converts every request against it) — sent the same rows as
`dataframe_split` bodies.

Every server runs for the whole benchmark; ROUNDS rounds run each (server, concurrency) for
RUN_S seconds, in the same order forward then backward, so that load from other processes on
this 2-core machine falls on all alike; a ratio is taken within each round, and the median of
the rounds' ratios is the verdict. CPU per request: the server's process group's user + system
time (/proc) over the run, divided by the requests it answered.

The load comes from other processes, over keep-alive connections: `wrk` (C; a Lua script
rotates 256 bodies) when it is installed (`apt-get install -y wrk`), else — said in the
output — one Python process per connection, each a raw-socket loop over pre-built requests
(a client in one process with a thread per connection measured its own GIL: 393 req/s
against a server that does 2,000). Only loopback addresses are used.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.store.sql.prediction_log import count_logged
from tests.bench import workload
from tests.bench.conftest import machine, verdict
from tests.helpers import set_config

HOST = "127.0.0.1"
RUN_S = 10
ROUNDS = 3
WARMUP_S = 2
BODIES = 256
P99_TARGET_MS = 2.0
ONE_WORKER_TARGET = 1500
TWO_WORKERS_TARGET = 3000
RATE_RATIO = 1.6  # issue 18: beast's req/s over the Starlette floor's, 8 clients
P99_RATIO = 1.25  # issue 18: beast's p99 over the floor's, one client
MLFLOW_RATIOS = {"mlflow": 15, "mlflow-sig": 30}  # issue 18: beast's req/s over the peer's

FLOOR_APP = '''
"""The floor: the least an HTTP service can do to score one row with this model."""
import json
import os

import numpy as np
import xgboost
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

NAMES = json.loads(os.environ["FLOOR_FEATURES"])
booster = xgboost.Booster(params={"nthread": 1})
booster.load_model(os.environ["FLOOR_MODEL"])


async def predict(request: Request) -> Response:
    features = json.loads(await request.body())["features"]
    x = np.array([[features[name] for name in NAMES]], dtype=np.float32)
    score = float(booster.inplace_predict(x, validate_features=False)[0])
    return Response(json.dumps({"score": score}), media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response("{}", media_type="application/json")


app = Starlette(
    routes=[
        Route("/v1/predict", predict, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ]
)
'''

COMPILED_APP = '''
"""The limit: a bare ASGI handler scoring one row with tl2cgen-compiled trees."""
import ctypes
import json
import os

import numpy as np

NAMES = json.loads(os.environ["FLOOR_FEATURES"])
lib = ctypes.CDLL(os.environ["FLOOR_LIBRARY"])
lib.predict.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
lib.predict.restype = None
row = np.zeros(len(NAMES), dtype=np.float32)
out = np.zeros(1, dtype=np.float32)
ROW, OUT = row.ctypes.data, out.ctypes.data
HEADERS = [(b"content-type", b"application/json")]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b"{}"
    if scope["path"] == "/v1/predict":
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        features = json.loads(b"".join(chunks))["features"]
        for i, name in enumerate(NAMES):
            row[i] = features[name]
        out[0] = 0.0
        lib.predict(ROW, 0, OUT)
        body = json.dumps({"score": float(out[0])}).encode()
    headers = [*HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
'''

# The fallback load generator (when wrk is missing): one process per keep-alive connection,
# each a raw-socket loop over pre-built requests; they start together and run for `seconds`.
PY_LOADGEN = r"""
import json, multiprocessing as mp, socket, sys, time

host, port, clients, seconds, bodies_path, path = (
    sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6])
bodies = json.load(open(bodies_path))
requests = [
    (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
     f"Content-Length: {len(b.encode())}\r\n\r\n").encode() + b.encode()
    for b in bodies
]

def client(offset, start_at, out):
    sock = socket.create_connection((host, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    recv, send, clock = sock.recv, sock.sendall, time.perf_counter
    latencies, bad, i = [], 0, offset
    while clock() < start_at:
        time.sleep(0.001)
    deadline = start_at + seconds
    while True:
        t0 = clock()
        if t0 >= deadline:
            break
        send(requests[i % len(requests)])
        i += 1
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            body += recv(65536)
        latencies.append(clock() - t0)
        bad += not head.startswith(b"HTTP/1.1 2")
    sock.close()
    out.put((latencies, bad))

if __name__ == "__main__":
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    start_at = time.perf_counter() + 0.3  # every process connected and waiting by then
    procs = [ctx.Process(target=client, args=(k * 31, start_at, out)) for k in range(clients)]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    latencies = sorted(x for lat, _ in results for x in lat)
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    print(json.dumps({"requests": len(latencies), "rps": len(latencies) / seconds,
                      "p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99),
                      "errors": sum(b for _, b in results)}))
"""


@dataclass(frozen=True)
class Load:
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int
    tool: str

    def describe(self) -> str:
        return (
            f"{self.rps:,.0f} req/s, p50 {self.p50_ms:.2f} ms, p90 {self.p90_ms:.2f} ms, "
            f"p99 {self.p99_ms:.2f} ms, {self.requests:,} requests"
            + (f", {self.errors} errors" if self.errors else "")
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def wait_healthy(
    port: int, proc: subprocess.Popen[bytes], path: str = "/healthz", timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=1) as answer,
        ):
            if answer.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing answered on {HOST}:{port} within {timeout:g} s")


PHASES: dict[str, float] = {}


@contextlib.contextmanager
def server(
    name: str,
    cmd: list[str],
    port: int,
    env: dict[str, str],
    log: Path,
    *,
    health: str = "/healthz",
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server, wait for its health route, stop it with SIGTERM; times both in PHASES."""
    with log.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_healthy(port, proc, health)
            PHASES[f"{name} ready"] = time.perf_counter() - start
            yield proc
        finally:
            start = time.perf_counter()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the group this benchmark started
                proc.wait()
            PHASES[f"{name} stopped"] = time.perf_counter() - start


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _wrk_ms(text: str, label: str) -> float:
    found = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"no {label} in wrk's output:\n{text}")
    return float(found.group(1)) * _UNITS[found.group(2)]


@dataclass(frozen=True)
class Target:
    """What to load: the route and the bodies (a JSON list, and the same as a wrk script)."""

    path: str
    bodies: Path
    lua: Path


def load_tool() -> str:
    return "wrk" if shutil.which("wrk") else "python raw sockets, one process per connection"


def run_load(port: int, clients: int, seconds: float, target: Target, scripts: Path) -> Load:
    if shutil.which("wrk"):
        return _wrk(port, clients, seconds, target)
    done = subprocess.run(
        [
            sys.executable,
            str(scripts / "loadgen.py"),
            HOST,
            str(port),
            str(clients),
            str(seconds),
            str(target.bodies),
            target.path,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return Load(
        got["requests"],
        got["rps"],
        got["p50"],
        got["p90"],
        got["p99"],
        got["errors"],
        load_tool(),
    )


def _wrk(port: int, clients: int, seconds: float, target: Target) -> Load:
    done = subprocess.run(
        [
            "wrk",
            f"-t{min(clients, 2)}",
            f"-c{clients}",
            f"-d{seconds:g}s",
            "--latency",
            "-s",
            str(target.lua),
            f"http://{HOST}:{port}{target.path}",
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    text = done.stdout
    requests = re.search(r"(\d+) requests in", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    socket_errors = re.search(r"Socket errors:(.*)", text)
    if requests is None or rps is None:
        raise RuntimeError(f"unexpected wrk output:\n{text}")
    return Load(
        int(requests.group(1)),
        float(rps.group(1)),
        _wrk_ms(text, "50%"),
        _wrk_ms(text, "90%"),
        _wrk_ms(text, "99%"),
        (int(non_2xx.group(1)) if non_2xx else 0)
        + (sum(map(int, re.findall(r"\d+", socket_errors.group(1)))) if socket_errors else 0),
        "wrk",
    )


def _target(scripts: Path, name: str, path: str, bodies: list[str]) -> Target:
    (scripts / f"{name}.json").write_text(json.dumps(bodies), encoding="utf-8")
    # Level-1 long brackets: a body may contain "]]" (a nested JSON list ends so).
    lua = ",\n".join(f"  [=[{b}]=]" for b in bodies)
    (scripts / f"{name}.lua").write_text(
        "local bodies = {\n" + lua + "\n}\n"
        "local i = 0\n"
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        "request = function()\n"
        "  i = i % #bodies + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[i])\n"
        "end\n",
        encoding="utf-8",
    )
    return Target(path, scripts / f"{name}.json", scripts / f"{name}.lua")


def _scripts(tmp_path: Path) -> tuple[Path, Target, Target]:
    """The load scripts, and the beast/floor and mlflow targets over the same rows."""
    scripts = tmp_path / "load"
    scripts.mkdir()
    rows = workload.generate(BODIES, seed=31).x
    beast = _target(
        scripts,
        "bodies",
        "/v1/predict",
        [
            json.dumps({"features": dict(zip(workload.FEATURES, map(float, row), strict=True))})
            for row in rows
        ],
    )
    mlflow_bodies = [
        json.dumps(
            {
                "dataframe_split": {
                    "columns": list(workload.FEATURES),
                    "data": [[float(v) for v in row]],
                }
            }
        )
        for row in rows
    ]
    peer = _target(scripts, "mlflow", "/invocations", mlflow_bodies)
    (scripts / "loadgen.py").write_text(PY_LOADGEN, encoding="utf-8")
    (scripts / "floor_app.py").write_text(FLOOR_APP, encoding="utf-8")
    (scripts / "compiled_app.py").write_text(COMPILED_APP, encoding="utf-8")
    return scripts, beast, peer


def _logged(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        count = count_logged(conn)
    conn.close()
    return count


def _mlflow_models(tmp_path: Path) -> tuple[dict[str, Path], str]:
    """The benchmark's model saved by mlflow.xgboost both ways — without a signature, and with
    one inferred by `mlflow.models.infer_signature` from training rows and their predictions,
    as MLflow documents — or nothing and why it cannot be."""
    try:
        import mlflow.xgboost
        import pandas as pd
        import xgboost as xgb
        from mlflow.models import infer_signature
    except ImportError as exc:
        return (
            {},
            f"mlflow is not importable ({exc}); install the extra: pip install -e '.[mlflow]'",
        )
    if not (Path(sys.executable).parent / "mlflow").exists():
        return {}, f"no mlflow command beside {sys.executable}"
    booster = workload.booster(seed=1)
    frame = pd.DataFrame(workload.generate(1000, seed=1).x, columns=list(workload.FEATURES))
    signature = infer_signature(frame, booster.predict(xgb.DMatrix(frame)))
    models = {"mlflow": tmp_path / "mlflow-model", "mlflow-sig": tmp_path / "mlflow-signature"}
    mlflow.xgboost.save_model(booster, str(models["mlflow"]))
    mlflow.xgboost.save_model(booster, str(models["mlflow-sig"]), signature=signature)
    return models, ""


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes of a process group, from /proc."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # gone since the listing
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        if int(fields[2]) == pgid:  # pgrp; utime and stime follow at 11 and 12
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Served:
    """A running server under test: its port, what to send it, and its process group."""

    label: str
    port: int
    target: Target
    pgid: int


@dataclass(frozen=True)
class Run:
    load: Load
    cpu_ms: float  # the server's CPU (its whole process group) per answered request

    @property
    def rps(self) -> float:
        return self.load.rps


def _runs(
    served: dict[str, Served], plan: list[tuple[str, int]], scripts: Path
) -> tuple[dict[tuple[str, int], list[Run]], dict[str, str]]:
    """ROUNDS rounds of every (server, clients) in `plan`, RUN_S s each; the order alternates
    (forward, backward, …) so that a trend in the machine's load falls on every server alike.
    A peer that fails under load leaves the plan (its runs with it) and says why; the rest go
    on."""
    runs: dict[tuple[str, int], list[Run]] = {step: [] for step in plan}
    lost: dict[str, str] = {}
    for name in dict.fromkeys(name for name, _ in plan):
        _load_unless_lost(name, served[name], 8, WARMUP_S, scripts, lost=lost)
    for r in range(ROUNDS):
        for name, clients in plan if r % 2 == 0 else plan[::-1]:
            s = served[name]
            cpu = group_cpu_s(s.pgid)
            load = _load_unless_lost(name, s, clients, RUN_S, scripts, lost=lost)
            if load is not None:
                cpu = group_cpu_s(s.pgid) - cpu
                runs[name, clients].append(Run(load, cpu * 1e3 / max(load.requests, 1)))
    return {step: each for step, each in runs.items() if step[0] not in lost}, lost


def _load_unless_lost(
    name: str, s: Served, clients: int, seconds: float, scripts: Path, *, lost: dict[str, str]
) -> Load | None:
    """One run; None (and why, in `lost`) when a peer has failed, now or before."""
    if name in lost:
        return None
    try:
        return run_load(s.port, clients, seconds, s.target, scripts)
    except (subprocess.SubprocessError, ValueError) as exc:  # the load generator's exit, JSON
        if not name.startswith("mlflow"):
            raise
        lost[name] = f"{s.label} failed under load: {str(exc)[:300]}"
        return None


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _describe(runs: list[Run]) -> str:
    rps = [run.rps for run in runs]
    return (
        f"{_median(rps):,.0f} req/s (rounds {', '.join(f'{x:,.0f}' for x in rps)}), "
        f"p50 {_median([r.load.p50_ms for r in runs]):.2f} ms, "
        f"p99 {_median([r.load.p99_ms for r in runs]):.2f} ms, "
        f"CPU {_median([r.cpu_ms for r in runs]):.2f} ms/request, "
        f"{sum(r.load.requests for r in runs):,} requests"
        + (
            f", {sum(r.load.errors for r in runs)} errors"
            if any(r.load.errors for r in runs)
            else ""
        )
    )


def _ratios(
    over: list[Run], under: list[Run], value: Callable[[Run], float] = lambda r: r.rps
) -> tuple[float, str]:
    """The median of the rounds' ratios (each within one round), and the rounds' ratios."""
    each = [value(a) / value(b) for a, b in zip(over, under, strict=True)]
    return _median(each), ", ".join(f"{x:.2f}×" for x in each)


LABELS = {
    "floor": "floor: Starlette + inplace_predict",
    "compiled": "floor: bare ASGI + tl2cgen-compiled trees",
    "beast": "beast engine, 1 worker",
    "beast2": "beast engine, 2 workers",
    "beastp": "beast engine, 1 worker, writer process",
    "mlflow": "peer: mlflow models serve, no signature",
    "mlflow-sig": "peer: mlflow models serve, with a signature",
}


def test_http_predict_one_row_loopback(tmp_path: Path) -> None:
    started = time.perf_counter()
    engine = workload.workspace(tmp_path / "one", candidate_traffic=10)
    ws = engine.workspace
    engine.close()
    engine = workload.workspace(tmp_path / "two", candidate_traffic=10)  # one engine per workspace
    ws2 = engine.workspace
    engine.close()
    # The same engine with `[log] writer = "process"`: the numbers that choose the default.
    engine = workload.workspace(tmp_path / "proc", candidate_traffic=10)
    wsp = engine.workspace
    engine.close()
    set_config(wsp, writer='"process"')
    PHASES["workspaces built"] = time.perf_counter() - started
    scripts, target, peer = _scripts(tmp_path)
    env = dict(os.environ)
    env.pop("BEAST_HOME", None)
    env["OMP_WAIT_POLICY"] = "passive"
    floor_env = {
        **env,
        "FLOOR_MODEL": str(ws.models_dir / f"{workload.LINE}-v1.0.json"),
        "FLOOR_FEATURES": json.dumps(list(workload.FEATURES)),
    }
    started = time.perf_counter()
    library, compiled_why = workload.compiled_library(seed=1)
    PHASES["tl2cgen library (cached by sha256)"] = time.perf_counter() - started
    mlflow_models, mlflow_why = _mlflow_models(tmp_path)
    not_run = dict.fromkeys(("mlflow", "mlflow-sig"), mlflow_why)  # a peer → why it did not
    beast = str(Path(sys.executable).parent / "beast")

    def uvicorn(app: str, port: int) -> list[str]:
        return [
            *(sys.executable, "-m", "uvicorn", app, "--app-dir", str(scripts)),
            *("--host", HOST, "--port", str(port), "--log-level", "warning", "--no-access-log"),
        ]

    def engine_cmd(root: Path, port: int, workers: int) -> list[str]:
        return [
            *(beast, "--workspace", str(root), "engine"),
            *("--host", HOST, "--port", str(port), "--workers", str(workers)),
        ]

    def mlflow_cmd(model: Path, port: int) -> list[str]:
        return [
            str(Path(sys.executable).parent / "mlflow"),
            *("models", "serve", "-m", str(model), "--env-manager", "local"),
            *("-h", HOST, "-p", str(port), "-w", "1"),
        ]

    # name → (command, environment, health route, target); the port is the command's own.
    ports = {name: free_port() for name in LABELS}
    starts: dict[str, tuple[list[str], dict[str, str], str, Target]] = {
        "floor": (uvicorn("floor_app:app", ports["floor"]), floor_env, "/healthz", target),
        "beast": (engine_cmd(ws.root, ports["beast"], 1), env, "/healthz", target),
        "beast2": (engine_cmd(ws2.root, ports["beast2"], 2), env, "/healthz", target),
        "beastp": (engine_cmd(wsp.root, ports["beastp"], 1), env, "/healthz", target),
    }
    if library is not None:
        compiled_env = {**floor_env, "FLOOR_LIBRARY": str(library)}
        starts["compiled"] = (
            uvicorn("compiled_app:app", ports["compiled"]),
            compiled_env,
            "/healthz",
            target,
        )
    # mlflow execs `uvicorn` through bash: the venv's bin must be on PATH.
    mlflow_env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}
    for name, model in mlflow_models.items():
        starts[name] = (mlflow_cmd(model, ports[name]), mlflow_env, "/ping", peer)

    served: dict[str, Served] = {}
    with contextlib.ExitStack() as stack:
        for name, (cmd, server_env, health, load_target) in starts.items():
            try:
                proc = stack.enter_context(
                    server(
                        name, cmd, ports[name], server_env, tmp_path / f"{name}.log", health=health
                    )
                )
            except RuntimeError as exc:
                if not name.startswith("mlflow"):
                    raise
                tail = (tmp_path / f"{name}.log").read_text(errors="replace").strip()
                not_run[name] = f"{LABELS[name]} did not run: {exc} {tail[-300:]}"
                continue
            served[name] = Served(LABELS[name], ports[name], load_target, proc.pid)
        plan = [(name, 1) for name in ("floor", "beast", "beastp")] + [
            (name, 8) for name in LABELS if name in served
        ]
        runs, lost = _runs(served, plan, scripts)
    logged = {root: _logged(root.db_path) for root in (ws, ws2, wsp)}
    _report(
        runs,
        served,
        logged=sum(logged.values()),
        compiled_why=compiled_why,
        peers_why={**not_run, **lost},
    )

    for (name, _), each in runs.items():
        if not name.startswith("mlflow"):
            assert all(run.load.errors == 0 for run in each), name
    for name, root in (("beast", ws), ("beast2", ws2), ("beastp", wsp)):
        answered = sum(
            run.load.requests for (n, _), each in runs.items() if n == name for run in each
        )
        assert logged[root] >= answered  # every answered prediction was logged (clean shutdown)


def _report(
    runs: dict[tuple[str, int], list[Run]],
    served: dict[str, Served],
    *,
    logged: int,
    compiled_why: str,
    peers_why: dict[str, str],
) -> None:
    print(f"\n[bench http] {machine()} · {workload.load_average()}")
    print(
        f"  POST one row by name ({len(workload.FEATURES)} features): {ROUNDS} rounds of "
        f"{RUN_S} s per server and concurrency, interleaved in each round (order alternating); "
        f"load from {load_tool()} in other processes over keep-alive connections; servers and "
        "load share the 2 cores. Medians over the rounds; CPU: the server's process group"
    )
    if not shutil.which("wrk"):
        print("  (wrk is not installed — `apt-get install -y wrk` — so the Python generator ran)")
    for (name, clients), each in runs.items():
        print(f"  {served[name].label}, {clients} client(s): {_describe(each)}")
    if "compiled" not in served:
        print(f"  floor: bare ASGI + tl2cgen-compiled trees: not run — {compiled_why}")
    print("  phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in PHASES.items()))
    print(f"  logged {logged:,} predictions in the three engines' beast.db, warm-ups included")

    one, floor_one = runs["beast", 1], runs["floor", 1]
    eight, floor_eight = runs["beast", 8], runs["floor", 8]
    rate, rate_rounds = _ratios(eight, floor_eight)
    p99, p99_rounds = _ratios(one, floor_one, lambda r: r.load.p99_ms)
    floor_p99 = _median([r.load.p99_ms for r in floor_one])
    floors = f"Starlette {_median([r.rps for r in floor_eight]):,.0f} req/s"
    if "compiled" in served:
        compiled, compiled_rounds = _ratios(eight, runs["compiled", 8])
        floors += (
            f", tl2cgen bare ASGI {_median([r.rps for r in runs['compiled', 8]]):,.0f} req/s "
            f"(beast {compiled:.2f}× it; rounds {compiled_rounds})"
        )
    print(verdict("http-8", f"{rate:.2f}× (rounds {rate_rounds})", floors, rate >= RATE_RATIO))
    print(
        verdict(
            "http-1-p99",
            f"p99 {_median([r.load.p99_ms for r in one]):.2f} ms, {p99:.2f}× (rounds {p99_rounds})",
            f"Starlette p99 {floor_p99:.2f} ms",
            p99 <= P99_RATIO,
        )
    )
    for name, key in (("mlflow", "mlflow-plain"), ("mlflow-sig", "mlflow-signature")):
        need = MLFLOW_RATIOS[name]
        peer = runs.get((name, 8))
        if peer is None or any(r.load.errors for r in peer):
            why = f"{LABELS[name]} answered errors: {_describe(peer)}" if peer else peers_why[name]
            print(verdict(key, f"not measured — {why}", "", None))
            continue
        ratio, rounds = _ratios(eight, peer)
        floor_ratio, _ = _ratios(floor_eight, peer)
        two_ratio, _ = _ratios(runs["beast2", 8], peer)
        print(
            verdict(
                key,
                f"beast (1 worker) {ratio:.1f}× its req/s (rounds {rounds}); "
                f"2 workers {two_ratio:.1f}×",
                f"the Starlette floor {floor_ratio:.1f}×",
                ratio >= need,
            )
        )
    two = runs["beast2", 8]
    design = [
        (
            f"one worker p99 ≤ {P99_TARGET_MS:g} ms with one client",
            _median([r.load.p99_ms for r in one]) <= P99_TARGET_MS,
        ),
        (
            f"one worker ≥ {ONE_WORKER_TARGET:,} req/s with 8 clients",
            _median([r.rps for r in eight]) >= ONE_WORKER_TARGET,
        ),
        (
            f"two workers ≥ {TWO_WORKERS_TARGET:,} req/s with 8 clients",
            _median([r.rps for r in two]) >= TWO_WORKERS_TARGET,
        ),
    ]
    for label, ok in design:
        print(f"  DESIGN.md §8 target {label}: {'met' if ok else 'MISSED'}")
    _writers(runs)


def _writers(runs: dict[tuple[str, int], list[Run]]) -> None:
    """`[log] writer`: the process writer against the thread, in the same rounds (the numbers
    that choose the default)."""
    p99, p99_rounds = _ratios(runs["beastp", 1], runs["beast", 1], lambda r: r.load.p99_ms)
    rate, rate_rounds = _ratios(runs["beastp", 8], runs["beast", 8])
    print(
        f'  [log] writer = "process" against "thread": one client p99 '
        f"{_median([r.load.p99_ms for r in runs['beastp', 1]]):.2f} ms, {p99:.2f}× "
        f"(rounds {p99_rounds}); 8 clients {_median([r.rps for r in runs['beastp', 8]]):,.0f} "
        f"req/s, {rate:.2f}× (rounds {rate_rounds})"
    )
