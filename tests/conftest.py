"""Fixtures: fresh workspaces, a template workspace with registered real models (validation
runs in a child process that imports XGBoost, so it is done once per session and copied), and
an invariant check after every test that used a workspace.

The store's backend is SQLite unless a test module asks for both: `pytestmark = BOTH_BACKENDS`
runs each of its tests once on SQLite and once on a real PostgreSQL server (tests/pg.py), the
workspace fixtures pointing the engine at a database of the test's own (`BEAST_STORE_URL`).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from engine import Engine, Workspace
from engine.core.config import COMPILED_TREES_ENV
from engine.demo import workspace as demo
from tests.helpers import (
    assert_invariants,
    built_once,
    copy_workspace,
    model_path,
    settle_compiled,
    train_model,
)
from tests.pg import STORE_URL_ENV, PgServer, database, start_server

# Compiled trees off for the whole run, subprocesses included, unless the caller set it: the
# suite's registrations and routers built them in the background (3,776 compiler runs in one
# make test, a core busy with them for minutes); tests/test_compiled_trees.py turns them on for
# itself, tests/bench measures the product's default (on), and
# `BEAST_COMPILED_TREES=true make test` runs every test on them.
COMPILED_TREES_CHOSEN = COMPILED_TREES_ENV in os.environ  # the caller's, kept (tests/bench too)
os.environ.setdefault(COMPILED_TREES_ENV, "false")

VERSIONS = ("v1.0", "v2.0", "v3.0", "v4.0")
BACKENDS = ("sqlite", "postgresql")
# A module's `pytestmark = BOTH_BACKENDS`: its tests run on each backend (the `store_backend`
# fixture, parametrized).
BOTH_BACKENDS = pytest.mark.parametrize("store_backend", BACKENDS, indirect=True)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BEAST_HOME", raising=False)
    monkeypatch.delenv("SSH_CLIENT", raising=False)
    monkeypatch.delenv("SSH_CONNECTION", raising=False)
    monkeypatch.delenv(STORE_URL_ENV, raising=False)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """This test process's PostgreSQL server (started on first use, stopped at exit)."""
    server = start_server()
    yield server
    server.stop()


@pytest.fixture
def store_backend(request: pytest.FixtureRequest) -> str:
    """ "sqlite", or "postgresql" where a module runs on both (BOTH_BACKENDS)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def store_url(
    store_backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str | None]:
    """The test's PostgreSQL database (set as BEAST_STORE_URL), or None on SQLite."""
    if store_backend == "sqlite":
        yield None
        return
    server: PgServer = request.getfixturevalue("postgres")
    with database(server) as url:
        monkeypatch.setenv(STORE_URL_ENV, url)
        yield url


@contextmanager
def _env(name: str, value: str | None) -> Iterator[None]:
    before = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@pytest.fixture
def workspace(tmp_path: Path, store_url: str | None) -> Iterator[Workspace]:
    """A fresh, initialised workspace; its invariants are checked after the test."""
    ws = Workspace(tmp_path / ".beast-mode")
    engine, _ = Engine.init(ws)
    engine.close()
    yield ws
    assert_invariants(ws)


def _registered(ws: Workspace) -> Workspace:
    """`ws` initialised, with v1.0–v4.0 trained and registered."""
    engine, _ = Engine.init(ws)
    for seed, version in enumerate(VERSIONS, start=1):
        path = train_model(model_path(ws, version), seed=seed, rounds=3 + seed)
        engine.register(path)
    engine.close()
    return ws


class _Templates:
    """The registered template per backend, built on first use (PostgreSQL's: a database
    that each test's is created from)."""

    def __init__(self, factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
        self.factory = factory
        self.request = request
        self.built: dict[str, tuple[Workspace, str | None]] = {}

    def get(self, backend: str) -> tuple[Workspace, str | None]:
        if backend not in self.built:
            self.built[backend] = self._build(backend)
        return self.built[backend]

    def _build(self, backend: str) -> tuple[Workspace, str | None]:
        if backend == "postgresql":
            return self._copied_to_postgresql(self.get("sqlite")[0])
        return built_once(self.factory, "template", _registered), None

    def _copied_to_postgresql(self, source: Workspace) -> tuple[Workspace, str]:
        """SQLite's template moved by `beast migrate --to`'s copy (each worker registering the
        four models again on PostgreSQL cost it ~12 s of validation; the copy, ~1 s)."""
        from engine.store.postgres.connection import close_pools
        from engine.store.postgres.transfer import migrate

        server: PgServer = self.request.getfixturevalue("postgres")
        url = server.create_database()
        root = self.factory.mktemp("template-postgresql") / ".beast-mode"
        shutil.copytree(source.root, root, ignore=shutil.ignore_patterns("beast.db*", ".*.lock"))
        migrate(source.db_path, source.models_dir, url)
        close_pools(url)  # a template database must have no session open
        return Workspace(root), url


@pytest.fixture(scope="session")
def _templates(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> _Templates:
    return _Templates(tmp_path_factory, request)


@pytest.fixture(scope="session")
def _template(_templates: _Templates) -> Workspace:
    """The SQLite template, for module-scoped fixtures that copy it once."""
    return _templates.get("sqlite")[0]


@pytest.fixture
def registered(
    _templates: _Templates,
    store_backend: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Workspace]:
    """A workspace with four real models registered (v1.0–v4.0 of quality-predictor)."""
    template, template_url = _templates.get(store_backend)
    ws = copy_workspace(template, tmp_path / "ws" / ".beast-mode")
    if template_url is None:
        yield ws
        assert_invariants(ws)
        return
    server: PgServer = request.getfixturevalue("postgres")
    with database(server, template=template_url.rsplit("/", 1)[-1]) as url:
        monkeypatch.setenv(STORE_URL_ENV, url)
        yield ws
        assert_invariants(ws)


@pytest.fixture
def engine(registered: Workspace) -> Iterator[Engine]:
    eng = Engine(registered, actor="tester")
    yield eng
    eng.close()


def _demo_built(ws: Workspace) -> None:
    """`beast init --demo`'s workspace, with what `build` returned beside it (the workers that
    did not build it read it there)."""
    result = demo.build(ws)
    with closing(Engine(ws)) as engine:
        settle_compiled(engine)  # copies carry the compiled trees, not five builds each
    fields = {
        "workspace": str(result.workspace),
        "data": str(result.data),
        "models": [str(p) for p in result.models],
        "revert_data": None if result.revert_data is None else str(result.revert_data),
    }
    (ws.root.parent / "demo-result.json").write_text(json.dumps(fields), encoding="utf-8")


@pytest.fixture(scope="session")
def demo_built(tmp_path_factory: pytest.TempPathFactory) -> demo.DemoResult:
    """The demo workspace `demo.build` made once per run (its data, five trained and validated
    versions of two lines, both A/B tests: ~20 s a build) and what it returned. Copy it
    (`demo_ws`) to change it."""
    ws = built_once(tmp_path_factory, "demo", _demo_built)
    fields = json.loads((ws.root.parent / "demo-result.json").read_text(encoding="utf-8"))
    revert = fields["revert_data"]
    return demo.DemoResult(
        Path(fields["workspace"]),
        Path(fields["data"]),
        tuple(Path(p) for p in fields["models"]),
        None if revert is None else Path(revert),
    )


@pytest.fixture
def demo_ws(demo_built: demo.DemoResult, tmp_path: Path) -> Iterator[Workspace]:
    """A copy of the built demo workspace; its invariants are checked after the test."""
    ws = copy_workspace(Workspace(demo_built.workspace), tmp_path / "demo" / ".beast-mode")
    yield ws
    assert_invariants(ws)


@pytest.fixture(scope="session")
def retrain_template(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """tests/retrain_helpers.build_template's workspace, built once per run (test_retrain,
    test_retrain_data and test_busy each built their own in each worker). Copy it to use it."""
    from tests.retrain_helpers import build_template

    return built_once(tmp_path_factory, "retrain", lambda ws: build_template(ws.root))
