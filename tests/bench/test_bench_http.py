"""HTTP `/v1/predict`, one row, on loopback, logging included (DESIGN.md §8).

Targets: one worker p99 ≤ 2 ms with one client and ≥ 1,500 req/s with 8 clients; two workers
≥ 3,000 req/s; ≥ 15× `mlflow models serve` on the same model.

`beast engine` runs as a real process on 127.0.0.1 over a workspace with two 200-tree, depth-6
models in an A/B test at 10%; every answered prediction goes through its PredictionLog. The
floor: a minimal Starlette app, written below into the benchmark's tmp_path, that parses the
same JSON, orders the features, calls `inplace_predict` on the same model (nthread=1) and
answers the score — served by the same uvicorn the same way (one process, its default loop
and HTTP parser). The peer: `mlflow models serve` (the optional `mlflow` extra; skipped with
the reason printed when it is not importable) on the same model saved by mlflow.xgboost,
sent the same rows as `dataframe_split` bodies.

The load comes from other processes, over keep-alive connections: `wrk` (C; a Lua script
rotates 256 bodies) when it is installed (`apt-get install -y wrk`), else — said in the
output — one Python process per connection, each a raw-socket loop over pre-built requests
(a client in one process with a thread per connection measured its own GIL: 393 req/s
against a server that does 2,000). Each run lasts RUN_S seconds; the floor and beast run
interleaved at each concurrency. Only loopback addresses are used.
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
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.store.sql.prediction_log import count_logged
from tests.bench import workload
from tests.bench.conftest import machine

HOST = "127.0.0.1"
RUN_S = 5
WARMUP_S = 1
BODIES = 256
P99_TARGET_MS = 2.0
ONE_WORKER_TARGET = 1500
TWO_WORKERS_TARGET = 3000
MLFLOW_TARGET = 15

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
) -> Iterator[None]:
    """Start a server, wait for its health route, stop it with SIGTERM; times both in PHASES."""
    with log.open("wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            wait_healthy(port, proc, health)
            PHASES[f"{name} ready"] = time.perf_counter() - start
            yield
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
    return scripts, beast, peer


def _logged(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        count = count_logged(conn)
    conn.close()
    return count


def _mlflow_model(tmp_path: Path) -> tuple[Path | None, str]:
    """The benchmark's model saved by mlflow.xgboost, or None and why it cannot be."""
    try:
        import mlflow.xgboost
    except ImportError as exc:
        return (
            None,
            f"mlflow is not importable ({exc}); install the extra: pip install -e '.[mlflow]'",
        )
    cli = Path(sys.executable).parent / "mlflow"
    if not cli.exists():
        return None, f"no mlflow command beside {sys.executable}"
    path = tmp_path / "mlflow-model"
    mlflow.xgboost.save_model(workload.booster(seed=1), str(path))
    return path, ""


def _mlflow_run(
    tmp_path: Path, scripts: Path, target: Target, env: dict[str, str]
) -> tuple[Load | None, str]:
    model, why = _mlflow_model(tmp_path)
    if model is None:
        return None, why
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        *("models", "serve", "-m", str(model), "--env-manager", "local"),
        *("-h", HOST, "-p", str(port), "-w", "1"),
    ]
    # It execs `uvicorn` through bash: the venv's bin must be on PATH.
    bin_dir = str(Path(sys.executable).parent)
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"}
    try:
        with server("mlflow", cmd, port, env, tmp_path / "mlflow.log", health="/ping"):
            run_load(port, 8, WARMUP_S, target, scripts)
            return run_load(port, 8, RUN_S, target, scripts), ""
    except (RuntimeError, subprocess.SubprocessError) as exc:
        tail = (tmp_path / "mlflow.log").read_text(errors="replace").strip().splitlines()[-1:]
        return None, f"mlflow models serve did not run: {exc} {' '.join(tail)[:300]}"


def test_http_predict_one_row_loopback(tmp_path: Path) -> None:
    started = time.perf_counter()
    engine = workload.workspace(tmp_path, candidate_traffic=10)
    PHASES["workspace built"] = time.perf_counter() - started
    ws = engine.workspace
    engine.close()
    scripts, target, peer = _scripts(tmp_path)
    env = dict(os.environ)
    env.pop("BEAST_HOME", None)
    env["OMP_WAIT_POLICY"] = "passive"
    floor_env = {
        **env,
        "FLOOR_MODEL": str(ws.models_dir / f"{workload.LINE}-v1.0.json"),
        "FLOOR_FEATURES": json.dumps(list(workload.FEATURES)),
    }
    beast = str(Path(sys.executable).parent / "beast")

    def engine_cmd(port: int, workers: int) -> list[str]:
        return [
            *(beast, "--workspace", str(ws.root), "engine"),
            *("--host", HOST, "--port", str(port), "--workers", str(workers)),
        ]

    floor_port, beast_port, two_port = free_port(), free_port(), free_port()
    floor_cmd = [
        *(sys.executable, "-m", "uvicorn", "floor_app:app", "--app-dir", str(scripts)),
        *("--host", HOST, "--port", str(floor_port), "--log-level", "warning"),
        "--no-access-log",
    ]
    results: dict[str, Load] = {}
    with (
        server("floor", floor_cmd, floor_port, floor_env, tmp_path / "floor.log"),
        server("engine", engine_cmd(beast_port, 1), beast_port, env, tmp_path / "engine.log"),
    ):
        for port in (floor_port, beast_port):
            run_load(port, 8, WARMUP_S, target, scripts)
        for clients in (1, 8):  # interleaved: the floor, then beast, at each concurrency
            results[f"floor, {clients} client(s)"] = run_load(
                floor_port, clients, RUN_S, target, scripts
            )
            results[f"beast engine, 1 worker, {clients} client(s)"] = run_load(
                beast_port, clients, RUN_S, target, scripts
            )
    logged_one = _logged(ws.db_path)
    with server("engine ×2", engine_cmd(two_port, 2), two_port, env, tmp_path / "engine2.log"):
        run_load(two_port, 8, WARMUP_S, target, scripts)
        results["beast engine, 2 workers, 8 client(s)"] = run_load(
            two_port, 8, RUN_S, target, scripts
        )
    logged_all = _logged(ws.db_path)
    peer_load, peer_why = _mlflow_run(tmp_path, scripts, peer, env)

    print(f"\n[bench http] {machine()} · {workload.load_average()}")
    print(
        f"  POST /v1/predict, one row by name ({len(workload.FEATURES)} features), {RUN_S} s "
        f"per run, load from {load_tool()} in other processes over keep-alive connections; "
        "server and load share the 2 cores"
    )
    if not shutil.which("wrk"):
        print("  (wrk is not installed — `apt-get install -y wrk` — so the Python generator ran)")
    for name, load in results.items():
        line = f"  {name}: {load.describe()}"
        if name.startswith("beast") and "1 worker" in name:
            floor = results[f"floor, {name.rsplit(', ', 1)[1]}"]
            line += (
                f"  → {load.rps / floor.rps:.2f}× the floor's req/s, "
                f"p99 {load.p99_ms / floor.p99_ms:.2f}× the floor's"
            )
        print(line)
    print("  phases: " + ", ".join(f"{k} {v:.1f} s" for k, v in PHASES.items()))
    one_client = results["beast engine, 1 worker, 1 client(s)"]
    eight = results["beast engine, 1 worker, 8 client(s)"]
    two = results["beast engine, 2 workers, 8 client(s)"]
    print(
        f"  logged {logged_one:,} predictions (1 worker) and {logged_all - logged_one:,} "
        "(2 workers) in beast.db, warm-ups included"
    )
    verdicts = [
        (
            f"one worker p99 ≤ {P99_TARGET_MS:g} ms with one client",
            one_client.p99_ms <= P99_TARGET_MS,
        ),
        (
            f"one worker ≥ {ONE_WORKER_TARGET:,} req/s with 8 clients",
            eight.rps >= ONE_WORKER_TARGET,
        ),
        (
            f"two workers ≥ {TWO_WORKERS_TARGET:,} req/s with 8 clients",
            two.rps >= TWO_WORKERS_TARGET,
        ),
    ]
    if peer_load is not None and peer_load.errors:
        peer_why = (
            f"mlflow models serve answered {peer_load.errors:,} errors: {peer_load.describe()}"
        )
        peer_load = None
    if peer_load is not None:
        ratio = eight.rps / peer_load.rps
        floor_ratio = results["floor, 8 client(s)"].rps / peer_load.rps
        print(
            f"  peer: mlflow models serve (1 worker, /invocations dataframe_split), 8 clients: "
            f"{peer_load.describe()}  → beast (1 worker) does {ratio:.1f}× its req/s, "
            f"2 workers {two.rps / peer_load.rps:.1f}×; the bare floor does {floor_ratio:.1f}×"
        )
        verdicts.append((f"≥ {MLFLOW_TARGET}× mlflow models serve", ratio >= MLFLOW_TARGET))
    for label, ok in verdicts:
        print(f"  target {label}: {'met' if ok else 'MISSED'}")
    if peer_load is None:
        print(f"  target ≥ {MLFLOW_TARGET}× mlflow models serve: not measured — {peer_why}")
    assert all(load.errors == 0 for load in results.values())
    answered = sum(v.requests for k, v in results.items() if k.startswith("beast engine, 1"))
    assert logged_one >= answered  # every answered prediction was logged (clean shutdown)
