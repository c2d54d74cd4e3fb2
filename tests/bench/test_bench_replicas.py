"""Two replicas on one PostgreSQL (issue 16): HTTP one-row predict against two workers on
SQLite, and how fast a deployment change reaches the other replica.

Throughput: the same workspace contents as tests/bench/test_bench_http.py (two 200-tree,
depth-6 models in an A/B test at 10%, every prediction logged), once as one SQLite workspace
served by `beast engine --workers 2`, once as two `beast engine` processes (two workspace
directories, one worker each) on one PostgreSQL database (a throwaway server: tests/pg.py).
The same 8 keep-alive clients load both: all 8 on the SQLite engine's port, 4 on each
replica's port (as a load balancer would spread them). Target: the replicas ≥ 0.9× the
SQLite workers' req/s. The PostgreSQL server shares the 2 cores with the engines and the load.

Propagation: 20 production deploys, alternating two versions, made through the first
replica's workspace (what `beast deploy` does); each is timed from the deploy's return (its
commit) to the second replica's /healthz serving it, polled every 2 ms.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path

from engine import Engine, Workspace
from engine.store.opening import STORE_URL_ENV
from engine.store.postgres.connection import close_pools
from tests.bench import workload
from tests.bench.conftest import machine
from tests.bench.test_bench_http import (
    HOST,
    RUN_S,
    WARMUP_S,
    Load,
    _scripts,
    free_port,
    load_tool,
    run_load,
    server,
)
from tests.pg import PgServer, database

CLIENTS = 8
RATIO_TARGET = 0.9
CHANGES = 20
PROPAGATION_TARGET_S = 1.0


@contextmanager
def _store_url(url: str | None) -> Iterator[None]:
    before = os.environ.pop(STORE_URL_ENV, None)
    if url is not None:
        os.environ[STORE_URL_ENV] = url
    try:
        yield
    finally:
        os.environ.pop(STORE_URL_ENV, None)
        if before is not None:
            os.environ[STORE_URL_ENV] = before


def _env(url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("BEAST_HOME", None)
    env.pop(STORE_URL_ENV, None)
    env["OMP_WAIT_POLICY"] = "passive"
    if url is not None:
        env[STORE_URL_ENV] = url
    return env


def _engine_cmd(ws: Workspace, port: int, workers: int) -> list[str]:
    beast = str(Path(sys.executable).parent / "beast")
    return [
        *(beast, "--workspace", str(ws.root), "engine"),
        *("--host", HOST, "--port", str(port), "--workers", str(workers)),
    ]


def _together(ports: list[int], target: object, scripts: Path) -> Load:
    """CLIENTS spread evenly over `ports`, all loaded at once; their requests summed."""
    loads: list[Load] = []
    share = CLIENTS // len(ports)

    def one(port: int) -> None:
        loads.append(run_load(port, share, RUN_S, target, scripts))  # type: ignore[arg-type]

    threads = [threading.Thread(target=one, args=(port,)) for port in ports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    total = sum(load.requests for load in loads)
    return Load(
        total,
        sum(load.rps for load in loads),
        max(load.p50_ms for load in loads),
        max(load.p90_ms for load in loads),
        max(load.p99_ms for load in loads),
        sum(load.errors for load in loads),
        loads[0].tool,
    )


def _production(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/healthz", timeout=1) as answer:
            doc = json.loads(answer.read())
    except OSError:
        return None
    serving = doc.get("serving", {}).get(workload.LINE)
    return serving["production"] if serving else None


def _propagation(first: Workspace, other_port: int) -> list[float]:
    """Seconds from each deploy's commit to the other replica serving it."""
    samples: list[float] = []
    with closing(Engine(first, actor="bench")) as engine:
        engine.abort("bench")
        for i in range(CHANGES):
            version = "v2.0" if i % 2 == 0 else "v1.0"
            engine.deploy(version=version, model=workload.LINE)
            committed = time.perf_counter()
            deadline = committed + 10
            while _production(other_port) != version:
                if time.perf_counter() > deadline:
                    raise AssertionError(f"change {i} not served by the other replica in 10 s")
                time.sleep(0.002)
            samples.append(time.perf_counter() - committed)
            time.sleep(0.1)  # the next change comes to a settled replica
    return samples


def test_two_replicas_on_postgresql_against_two_sqlite_workers(
    tmp_path: Path, postgres: PgServer
) -> None:
    lite = workload.workspace(tmp_path / "sqlite", candidate_traffic=10)
    lite_ws = lite.workspace
    lite.close()
    scripts, target, _peer = _scripts(tmp_path)
    results: dict[str, Load] = {}
    port = free_port()
    with server("sqlite ×2", _engine_cmd(lite_ws, port, 2), port, _env(None), tmp_path / "s.log"):
        run_load(port, CLIENTS, WARMUP_S, target, scripts)
        results["SQLite, one engine, 2 workers"] = run_load(port, CLIENTS, RUN_S, target, scripts)

    with database(postgres) as url, _store_url(url):
        first_engine = workload.workspace(tmp_path / "pg-a", candidate_traffic=10)
        first = first_engine.workspace
        first_engine.close()
        second = Workspace(tmp_path / "pg-b" / ".beast-mode")
        Engine.init(second)[0].close()
        close_pools(url)
        ports = [free_port(), free_port()]
        with ExitStack() as stack:
            for i, (ws, p) in enumerate(zip((first, second), ports, strict=True)):
                cmd = _engine_cmd(ws, p, 1)
                stack.enter_context(
                    server(f"replica {i}", cmd, p, _env(url), tmp_path / f"{i}.log")
                )
            for p in ports:
                run_load(p, CLIENTS // 2, WARMUP_S, target, scripts)
            results["PostgreSQL, two replicas, 1 worker each"] = _together(ports, target, scripts)
            samples = _propagation(first, ports[1])
        close_pools(url)

    lite_load = results["SQLite, one engine, 2 workers"]
    pg_load = results["PostgreSQL, two replicas, 1 worker each"]
    ratio = pg_load.rps / lite_load.rps
    print(f"\n[bench replicas] {machine()} · {workload.load_average()}")
    print(
        f"  POST /v1/predict, one row by name, {CLIENTS} keep-alive clients ({load_tool()}), "
        f"{RUN_S} s; engines, PostgreSQL and the load share the 2 cores"
    )
    for name, load in results.items():
        print(f"  {name}: {load.describe()}")
    print(f"  → two replicas do {ratio:.2f}× the req/s of two SQLite workers")
    print(
        f"  change propagation, deploy → served by the other replica ({CHANGES} changes): "
        f"median {statistics.median(samples) * 1000:.1f} ms, max {max(samples) * 1000:.1f} ms"
    )
    for label, ok in (
        (f"replicas ≥ {RATIO_TARGET:g}× SQLite's req/s", ratio >= RATIO_TARGET),
        (f"every change served within {PROPAGATION_TARGET_S:g} s", max(samples) < 1.0),
    ):
        print(f"  target {label}: {'met' if ok else 'MISSED'}")
    assert all(load.errors == 0 for load in results.values())
