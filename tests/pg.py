"""A real PostgreSQL server for the tests: a throwaway cluster in a temp directory.

Debian's `postgresql-15` package installs the server without running it, and PostgreSQL
refuses to run as root: as root, the cluster is made and started as the `postgres` user;
otherwise as whoever runs the tests. Each pytest process (xdist worker) starts its own on a
free port, without fsync (a test's data need not survive the machine), and stops it at exit.
`BEAST_TEST_POSTGRES_URL` (a role that may CREATE DATABASE) uses a server of yours instead.

Every test gets a database of its own (`PgServer.create_database`), from a template when it
starts from a prepared workspace. Without a server the PostgreSQL tests are skipped with what
to install — except under CI (`CI=true`), where a missing service fails the run.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

TEST_URL_ENV = "BEAST_TEST_POSTGRES_URL"
STORE_URL_ENV = "BEAST_STORE_URL"
INSTALL = (
    "the PostgreSQL tests need a server: install Debian's postgresql-15 "
    "(apt-get install postgresql-15; it need not run) or set BEAST_TEST_POSTGRES_URL to a "
    "postgresql:// URL of a role that may CREATE DATABASE"
)


def _pg_bin() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _as_server_user(argv: list[str]) -> list[str]:
    if os.getuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


class PgServer:
    """A server the tests may create databases on (`admin_url`: its `postgres` database)."""

    def __init__(
        self,
        admin_url: str,
        stop: list[str] | None = None,
        home: Path | None = None,
        start: list[str] | None = None,
    ):
        self.admin_url = admin_url
        self._stop = stop
        self._start = start
        self._home = home
        self._names = itertools.count()

    def url(self, database: str) -> str:
        return urlunsplit(urlsplit(self.admin_url)._replace(path="/" + database))

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, template: str | None = None) -> str:
        """A new empty database (or a copy of `template`'s); its URL."""
        name = f"beast_{os.getpid()}_{next(self._names)}_{uuid.uuid4().hex[:6]}"
        clause = f" TEMPLATE {template}" if template else ""
        self.admin(f"CREATE DATABASE {name}{clause}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        from engine.store.postgres.connection import close_pools

        close_pools(url)
        name = urlsplit(url).path.lstrip("/")
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    @contextmanager
    def outage(self) -> Iterator[None]:
        """The server down for the length of the block (shut down, started again after):
        the throwaway cluster's; a server of yours only has its sessions ended (a dropped
        connection, not a down server)."""
        if self._stop is None or self._start is None:
            self.admin(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
            yield
            return
        # fast, not immediate: the cluster runs without fsync and synchronous_commit, so only
        # a clean shutdown keeps the last commits (a real server keeps them either way)
        fast = [arg if arg != "immediate" else "fast" for arg in self._stop]
        subprocess.run(fast, capture_output=True, check=True, timeout=60)
        try:
            yield
        finally:
            subprocess.run(self._start, capture_output=True, check=True, timeout=120)

    def stop(self) -> None:
        if self._stop is not None:
            subprocess.run(self._stop, capture_output=True, check=False, timeout=60)
        if self._home is not None:
            shutil.rmtree(self._home, ignore_errors=True)


def _start_cluster(pg_bin: Path) -> PgServer:
    home = Path(tempfile.mkdtemp(prefix="beast-pg-"))
    data, sockets = home / "data", home / "run"
    sockets.mkdir()
    if os.getuid() == 0:
        shutil.chown(home, "postgres")
        shutil.chown(sockets, "postgres")
    subprocess.run(
        _as_server_user(
            [str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8"]
        ),
        capture_output=True,
        check=True,
        timeout=120,
    )
    port = _free_port()
    options = (
        f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
    )
    pg_ctl = [str(pg_bin / "pg_ctl"), "-D", str(data)]
    start = _as_server_user([*pg_ctl, "-o", options, "-l", str(home / "log"), "-w", "start"])
    subprocess.run(start, capture_output=True, check=True, timeout=120)
    stop = _as_server_user([*pg_ctl, "-m", "immediate", "-w", "stop"])
    return PgServer(f"postgresql://postgres@127.0.0.1:{port}/postgres", stop, home, start)


def start_server() -> PgServer:
    """A server for this process: BEAST_TEST_POSTGRES_URL's, else a throwaway cluster."""
    given = os.environ.get(TEST_URL_ENV, "").strip()
    if given:
        return PgServer(given)
    pg_bin = _pg_bin()
    if pg_bin is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and PostgreSQL is missing: {INSTALL}", pytrace=False)
        # The one skip, and the issue's own rule: a machine with neither a PostgreSQL server
        # package nor BEAST_TEST_POSTGRES_URL cannot run these tests, so they say what to
        # install; under CI (above) the same absence fails the run instead.
        pytest.skip(INSTALL)
    return _start_cluster(pg_bin)


@contextmanager
def database(server: PgServer, template: str | None = None) -> Iterator[str]:
    """A database for the length of the block, dropped after (connections and all)."""
    url = server.create_database(template)
    try:
        yield url
    finally:
        server.drop_database(url)
