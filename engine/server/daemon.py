"""`beast engine`: the headless daemon. Serves the HTTP API (engine.server.http.app) on uvicorn.

What it takes care of, in order:
- OpenMP: `OMP_NUM_THREADS=1` and `OMP_WAIT_POLICY=passive` before XGBoost is loaded in any
  server process (spinning OpenMP threads make one-row predictions 40× slower as soon as
  another process wants the core; DESIGN.md §8).
- The token: listening beyond loopback is refused unless a token is configured
  (`$BEAST_API_TOKEN` or `<workspace>/api-token`); on loopback the file is created (0600) on
  the first start. The token is never logged.
- One engine per workspace: an `flock` on `<workspace>/.engine.lock` (engine.core.engine_lock),
  released by the kernel when the process dies, so a `kill -9` never leaves a stale lock. A
  second engine exits 1 naming the first one's pid.
- The listening socket is bound here, with `IPPROTO_TCP` as its protocol. uvicorn's own bind
  (used for `--workers N`) creates `socket(AF_INET)` with protocol 0; asyncio only sets
  TCP_NODELAY on accepted sockets whose protocol is `IPPROTO_TCP`, so uvicorn's workers answer
  keep-alive requests with Nagle's algorithm on (≈40 ms stalls with delayed ACKs). Binding
  the socket ourselves fixes it for one worker and for many, and turns "address in use" into
  a one-line refusal.
- SIGTERM/SIGINT: uvicorn stops accepting, finishes in-flight requests, then runs the
  lifespan shutdown, which flushes the prediction log; the process exits 0. (uvicorn raises
  the signal again once it is done; the no-op handler installed here makes that harmless.)
- Replicas (engine.server.replica): several engines may share one PostgreSQL store; a
  heartbeat thread records this one in `replicas` and holds or tries the leadership. Only
  the leader runs the evaluator and the retraining scheduler below (on SQLite the one
  engine always leads).
- Every `evaluate_every_s` it runs `monitoring.evaluate` (alerts fire and resolve, the
  `artifact` alert among them; a candidate whose health turns critical is pulled to 0%), in
  this one process whatever the number of workers.
- The watcher (engine.server.watcher) registers what settles in models/, in a thread.
- Every `retrain_check_every_s` the scheduler reaps lost retraining jobs and starts one on a
  line whose trigger fires (`Engine.reap_jobs`, `Engine.retrain_if_due`); the training runs
  in its own worker process, never here.
- A round of either that meets a busy store (another process holding the write lock past the
  busy timeout) is skipped with one warning, however many rounds it lasts, and tried again
  next round; one info line says when a round succeeds again. The threads never die of it.
"""

from __future__ import annotations

import abc
import ipaddress
import logging
import logging.config
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import uvicorn
from uvicorn.supervisors import Multiprocess

from engine.core import text
from engine.core.background import BackgroundThread, Trouble
from engine.core.config import HOST_PATTERN, load_config
from engine.core.engine_lock import EngineLock
from engine.core.errors import BeastError
from engine.core.workspace import ENV_VAR, Workspace
from engine.facade import Engine
from engine.server.http import token as http_token
from engine.server.http.settings import ApiSettings
from engine.server.replica import REPLICA_ENV, ReplicaHeart
from engine.server.watcher import ModelWatcher, WatchOptions

log = logging.getLogger("beast.engine")

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
BACKLOG = 2048
STARTUP_FAILURE = 3  # uvicorn's exit code for a worker that could not start


@dataclass(frozen=True)
class EngineOptions:
    """`beast engine`'s command-line options."""

    host: str = "127.0.0.1"
    port: int = 8787
    workers: int = 1
    access_log: bool = False
    log_level: str = "info"
    evaluate_every_s: float = 30.0
    graceful_timeout_s: float = 30.0
    watch: bool = True
    rescan_every_s: float = 30.0
    retrain_check_every_s: float = 300.0
    # Host names served beyond the loopback names and --host (`--allowed-host`, repeatable).
    allowed_hosts: tuple[str, ...] = ()


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`; any other name or address counts as exposed."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def configure_process() -> None:
    """OpenMP settings for a serving process; must run before XGBoost is first imported."""
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["OMP_WAIT_POLICY"] = "passive"


class EscapingFormatter(logging.Formatter):
    """Every record on one line whatever it quotes: a file name, a key, a request path.

    The message is escaped whole (`engine.core.text.escape`): a newline in a model file's name
    once forged a second log line, `ESC[2J` cleared the operator's terminal. A traceback
    keeps its lines, each escaped, so it stays readable but cannot drive the terminal.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        return text.escape(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return _escape_lines(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _escape_lines(super().formatStack(stack_info))


def _escape_lines(block: str) -> str:
    return "\n".join(text.escape(line) for line in block.split("\n"))


def log_config(level: str) -> dict[str, Any]:
    """One conventional line per record (time level logger message) for uvicorn and beast."""
    upper = level.upper()
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "plain",
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"()": EscapingFormatter, "fmt": LOG_FORMAT}},
        "handlers": {"stderr": handler},
        "loggers": {
            "uvicorn": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "uvicorn.error": {"level": upper},
            "uvicorn.access": {"handlers": ["stderr"], "level": upper, "propagate": False},
            "beast": {"handlers": ["stderr"], "level": upper, "propagate": False},
        },
    }


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket whose protocol is IPPROTO_TCP (see the module's note on NODELAY)."""
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(
            host.strip("[]"),
            port,
            type=socket.SOCK_STREAM,
            proto=socket.IPPROTO_TCP,
            flags=socket.AI_PASSIVE,
        )
    except socket.gaierror as exc:
        raise BeastError(f"cannot listen on {where}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        raise BeastError(f"cannot listen on {where}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


class _Periodic(BackgroundThread):
    """Calls `tick` every `every_s` seconds in a thread with its own engine connection.

    Only on the replica that leads (engine.server.replica): on the others a round is skipped.
    A round that fails with a refusal (a store kept busy by a long writer past its busy
    timeout, a full disk) is skipped and tried again next round, logged once while it repeats
    (`Trouble`); anything else is logged with its traceback. The thread never dies of a round.
    `every_s` 0 means never: `start` then launches no thread.
    """

    thread_name = "beast-periodic"
    actor = "beast-engine"
    what = "periodic work"  # as the log names a round

    def __init__(
        self, workspace: Workspace, every_s: float, leading: Callable[[], bool] = lambda: True
    ) -> None:
        super().__init__()
        self.workspace = workspace
        self.every_s = every_s
        self.leading = leading  # a round runs only while this replica leads

    def start(self) -> Self:
        if self.every_s > 0:
            super().start()
        return self

    def _run(self) -> None:
        engine = Engine(self.workspace, actor=self.actor)
        trouble = Trouble(log, self.what)
        try:
            while not self._stop.wait(self.every_s):
                if not self.leading():
                    continue  # another replica does it
                try:
                    self.tick(engine)
                except BeastError as exc:
                    trouble.failed(str(exc))
                except Exception:  # the next round may well succeed; never stop
                    log.exception("%s failed", self.what)
                else:
                    trouble.done()
        finally:
            engine.close()

    @abc.abstractmethod
    def tick(self, engine: Engine) -> None:
        """One round; a log line per action it took. A refusal it raises skips the round."""


class Evaluator(_Periodic):
    """Runs `Engine.evaluate` (monitoring, then rollouts) on a timer in a thread with its own
    engine connection."""

    thread_name = "beast-monitor"
    actor = "beast-engine (monitor)"
    what = "monitoring evaluation"

    def tick(self, engine: Engine) -> None:
        """One evaluation: a log line per action it took. The rollouts are judged after the
        auto-pull, on the report it left (a pulled candidate's test is over)."""
        for action in engine.evaluate().actions:
            log.warning("evaluation: %s", action)


class Scheduler(_Periodic):
    """Checks the retraining triggers every `every_s` seconds: reap lost jobs, start due ones.

    The training itself runs in a worker process (engine.retrain.workers); this thread only decides.
    """

    thread_name = "beast-retrain"
    actor = "beast-engine (scheduler)"
    what = "retraining check"

    def tick(self, engine: Engine) -> None:
        """One check: a log line per job reaped and per job started."""
        for job in engine.reap_jobs():
            log.warning("retraining job #%d on %s failed: %s", job.id, job.line, job.error)
        if not engine.lines():
            return  # nothing registered yet, so nothing to retrain
        started = engine.retrain_if_due()
        if started is not None:
            log.info(
                "retraining job #%d started on %s (trigger %s)",
                started.id,
                started.line,
                started.trigger,
            )


class Background:
    """The daemon's threads beside the HTTP server: evaluation, watcher, retrain scheduler."""

    def __init__(self, workspace: Workspace, options: EngineOptions) -> None:
        self.replica = ReplicaHeart(workspace, address=None)
        leading = self.replica.is_leader
        self.evaluator = Evaluator(workspace, options.evaluate_every_s, leading)
        self.scheduler = Scheduler(workspace, options.retrain_check_every_s, leading)
        self.watcher = (
            ModelWatcher(workspace, WatchOptions(rescan_every_s=options.rescan_every_s))
            if options.watch
            else None
        )
        self._started = False

    def start(self) -> None:
        self._started = True
        self.replica.start()
        if self.watcher is not None:
            self.watcher.start()
        self.evaluator.start()
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()
        self.evaluator.stop()
        if self.watcher is not None and self._started:
            self.watcher.stop()
        self.replica.stop()  # last: the leadership is given up once its work has stopped


def _preflight(workspace: Workspace) -> None:
    """Refuse a missing workspace, a bad config or an unusable database in one line, now.

    Before anything is bound or locked: a used workspace whose database is missing, empty,
    older than its history export or another workspace's (engine.core.workspace) would otherwise
    serve 503s while /healthz said ok, and its watcher would register old files as new.
    """
    engine = Engine(workspace)
    try:
        workspace.require()
        engine.config  # noqa: B018 - refuse a bad config.toml before binding anything
        engine.store  # noqa: B018 - opens, migrates and checks it is the workspace's own
    finally:
        engine.close()


class _StopSignals:
    """SIGTERM/SIGINT outside uvicorn's own handling: remember them, never die of them.

    Before the server runs (models loading) a signal means "do not start serving"; after it
    ran, uvicorn raises the signal that stopped it once more, when everything is flushed.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        self.received = signum


def _check(options: EngineOptions) -> None:
    if not 0 <= options.port <= 65535:
        raise BeastError(f"--port {options.port} is not a TCP port (0–65535)")
    if options.workers < 1:
        raise BeastError(f"--workers {options.workers} must be at least 1")
    if options.log_level not in LOG_LEVELS:
        raise BeastError(f"--log-level {options.log_level} is not one of {', '.join(LOG_LEVELS)}")
    if not options.rescan_every_s > 0:
        raise BeastError(f"--rescan-every {options.rescan_every_s:g} must be above 0 seconds")
    if not options.retrain_check_every_s >= 0:
        raise BeastError(
            f"--retrain-check-every {options.retrain_check_every_s:g} must be 0 (never) or more"
        )
    from engine.server.http.guard import split_host  # numpy, through the HTTP schema: only here

    for name in options.allowed_hosts:
        if HOST_PATTERN.fullmatch(name) is None or (name != "*" and split_host(name) is None):
            raise BeastError(
                f"--allowed-host {name!r} is not a host name or address (with an optional "
                ':port), or "*"'
            )


def _token(workspace: Workspace, exposed: bool, host: str) -> tuple[str, bool]:
    """The API token and whether it was created now; refused beyond loopback without one."""
    if not exposed:
        return http_token.ensure_token(workspace)
    token = http_token.configured_token(workspace)
    if token is None:
        raise BeastError(
            f"refusing to listen on {host}, beyond loopback, without an API token: "
            f"set {http_token.TOKEN_ENV} or create {http_token.token_path(workspace)} (mode "
            "0600), or listen on 127.0.0.1"
        )
    return token, False


def api_settings(workspace: Workspace, options: EngineOptions) -> ApiSettings:
    """The HTTP API's settings from config.toml's [api] and the command line.

    `require_token = "auto"` asks for the token on every route beyond loopback, and only for
    mutations on it. The address the engine listens on is a Host it serves, as are the
    loopback names (engine.server.http.guard) and `[api] allowed_hosts` / `--allowed-host`.
    """
    api = load_config(workspace.config_path).api
    exposed = not is_loopback(options.host)
    everywhere = api.require_token == "always" or (api.require_token == "auto" and exposed)
    if exposed and not everywhere:
        log.warning(
            "listening on %s with [api] require_token = %r: predictions and feedback need no "
            "token from anyone who can reach this address",
            options.host,
            api.require_token,
        )
    bound = f"[{options.host}]" if ":" in options.host else options.host
    hosts = tuple(dict.fromkeys((bound, *api.allowed_hosts, *options.allowed_hosts)))
    return ApiSettings(token_everywhere=everywhere, allowed_hosts=hosts)


def serve(workspace: Workspace, options: EngineOptions) -> int:
    """Run the engine until SIGTERM/SIGINT; 0 after a clean shutdown, 1 if it never started."""
    _check(options)
    configure_process()
    _preflight(workspace)
    exposed = not is_loopback(options.host)
    token, created = _token(workspace, exposed, options.host)
    logging.config.dictConfig(log_config(options.log_level))
    settings = api_settings(workspace, options)
    lock = EngineLock(workspace).acquire()
    sock: socket.socket | None = None
    background = Background(workspace, options)
    try:
        sock = bind(options.host, options.port)
        background.replica.address = f"{options.host}:{sock.getsockname()[1]}"
        if created:
            log.info("created the API token file %s (mode 0600)", http_token.token_path(workspace))
        from_env = os.environ.get(http_token.TOKEN_ENV)
        log.info(
            "beast engine on http://%s:%d (pid %d, %d worker%s) for %s; bearer token for %s "
            "from %s",
            options.host,
            sock.getsockname()[1],
            os.getpid(),
            options.workers,
            "" if options.workers == 1 else "s",
            workspace.root,
            "every request" if settings.token_everywhere else "mutations",
            f"${http_token.TOKEN_ENV}" if from_env else http_token.token_path(workspace),
        )
        if options.workers == 1:
            _run_one(
                workspace,
                options,
                settings=settings,
                token=token,
                sock=sock,
                background=background,
            )
        else:
            _run_workers(workspace, options, settings=settings, sock=sock, background=background)
        log.info("beast engine stopped")
        return 0
    finally:
        background.stop()
        if sock is not None:
            sock.close()
        lock.release()


def _uvicorn_options(options: EngineOptions) -> dict[str, Any]:
    return {
        "lifespan": "on",
        "log_config": log_config(options.log_level),
        "access_log": options.access_log,
        "timeout_graceful_shutdown": options.graceful_timeout_s,
        "server_header": False,
    }


def _run_one(
    workspace: Workspace,
    options: EngineOptions,
    *,
    settings: ApiSettings,
    token: str,
    sock: socket.socket,
    background: Background,
) -> None:
    """One process: the app object is built here, so a refusal at startup is one line."""
    # prometheus_client picks its value class when imported, from PROMETHEUS_MULTIPROC_DIR:
    # the app (which imports it) is loaded once that is settled, here and in _run_workers.
    from engine.server.http import app as http_api

    with _StopSignals() as signals:
        api = http_api.Api(workspace, settings, token)
        api.leader = background.replica.is_leader
        api.start()  # loads the deployed models; the lifespan's start is then a no-op
        if signals.received is not None:
            api.stop()
            return
        server = uvicorn.Server(
            uvicorn.Config(http_api.create_app(workspace, api=api), **_uvicorn_options(options))
        )
        background.start()
        try:
            server.run(sockets=[sock])
        except SystemExit as exc:
            api.stop()
            raise BeastError(
                f"the HTTP server stopped at startup (exit {exc.code}); see the log above"
            ) from None
        if not server.started:
            api.stop()  # the lifespan never ran, so neither did its shutdown
            raise BeastError("the HTTP server did not start; see the log above")


def _run_workers(
    workspace: Workspace,
    options: EngineOptions,
    *,
    settings: ApiSettings,
    sock: socket.socket,
    background: Background,
) -> None:
    """N processes sharing the socket (uvicorn's supervisor); Prometheus in multiprocess mode."""
    # After PROMETHEUS_MULTIPROC_DIR is known (see _run_one): prometheus_client reads it once.
    from engine.server import prometheus as prom
    from engine.server.http import app as http_api

    metrics_dir = tempfile.mkdtemp(prefix="beast-prometheus-")
    os.environ[ENV_VAR] = str(workspace.root)
    os.environ[http_api.SETTINGS_ENV] = settings.to_env()
    os.environ[prom.MULTIPROC_ENV] = metrics_dir
    os.environ[REPLICA_ENV] = background.replica.id
    try:
        config = uvicorn.Config(
            "engine.server.http.app:app_from_env",
            factory=True,
            workers=options.workers,
            **_uvicorn_options(options),
        )
        with _StopSignals():
            supervisor = Multiprocess(config, sockets=[sock])  # installs its own handlers
            background.start()
            supervisor.run()
        failed = [p.pid for p in supervisor.processes if p.exitcode == STARTUP_FAILURE]
        if failed:
            raise BeastError(f"worker(s) {failed} could not start; see the log above")
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
