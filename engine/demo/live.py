"""`beast console --demo`: the demo workspace, a running engine and demo traffic around a console.

For the console (one call, from the thread that lives as long as the console — the main
thread)::

    from engine.demo import live as demo_live

    with demo_live.running(workspace) as demo:   # demo: demo_live.LiveDemo
        app.run()                                # demo.url, demo.engine_pid, demo.logs …

`workspace_for(args.workspace)` is the demo's default workspace, `./demo/.beast-mode`, unless
`--workspace` or `$BEAST_HOME` names one. `running` builds the demo workspace if it has nothing
deployed (`beast init --demo`, in a child process: training never runs in the console's
process), then starts two children: `beast engine --port <free> --evaluate-every 5` and
`beast simulate --url <engine>`. When the
block ends — normally, by an exception, or by Ctrl-C — the simulator and then the engine get
SIGTERM (the engine flushes its prediction log and exits 0), then SIGKILL if they are still
there after a grace period; nothing is left behind.

No orphans even if the console is killed (`kill -9`, a dropped SSH session): each child is
started through this module's launcher, which sets `PR_SET_PDEATHSIG` to SIGTERM (Linux
`prctl`, through ctypes) and then execs the real command, so the kernel sends the child
SIGTERM the moment the thread that started it dies. Each child leads its own process group
(a new session: the terminal's signals do not reach it directly), and stopping signals the
whole group, so whatever a child started goes too. Elsewhere than Linux there is no
`prctl`: the launcher instead watches its parent and exits when it is gone.

Logs of both children go to `<workspace>/logs/demo-engine.log` and `demo-simulate.log`.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.core.errors import BeastError
from engine.core.workspace import ENV_VAR, Workspace
from engine.facade import Engine

DEFAULT_DEMO_DIR = "demo/.beast-mode"  # the Makefile's `demo` target uses it too
EVALUATE_EVERY_S = 5.0
SIMULATE_DURATION_S = 7 * 86400.0  # the console's session ends the traffic, not a timer
START_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
BUILD_TIMEOUT_S = 600.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass(frozen=True)
class LiveDemo:
    """What runs while the block runs: where the engine answers and which processes."""

    workspace: Path
    url: str
    engine_pid: int
    simulator_pid: int
    logs: Path


def workspace_for(explicit: str | os.PathLike[str] | None) -> Workspace:
    """The demo's workspace: `--workspace DIR`, else `$BEAST_HOME`, else `./demo/.beast-mode`.

    Not `./.beast-mode`: the demo must never build itself into the workspace a user works in.
    """
    if explicit or os.environ.get(ENV_VAR):
        return Workspace.locate(explicit)
    return Workspace(Path(DEFAULT_DEMO_DIR).absolute())


def beast_command(workspace: Workspace, *args: str) -> list[str]:
    """The `beast` command for this workspace, run by this interpreter."""
    return [sys.executable, "-m", "engine.cli.main", "--workspace", str(workspace.root), *args]


def needs_build(workspace: Workspace) -> bool:
    """True when the workspace has no database or nothing deployed yet."""
    if not workspace.db_path.is_file():
        return True
    engine = Engine(workspace)
    try:
        return not engine.status().deployments
    finally:
        engine.close()


def build(workspace: Workspace, say: Callable[[str], None]) -> None:
    """`beast init --demo` in a child process (it trains five XGBoost models)."""
    say(f"building the demo workspace in {workspace.root}: training 5 versions of 2 lines (~30 s)…")
    done = subprocess.run(
        beast_command(workspace, "init", "--demo"),
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0:
        raise BeastError(f"could not build the demo workspace: {_last_line(done.stderr)}")


def free_port() -> int:
    """A TCP port free on loopback now (the engine binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def running(
    workspace: Workspace,
    *,
    port: int | None = None,
    simulate_args: Sequence[str] = (),
    say: Callable[[str], None] | None = None,
) -> Iterator[LiveDemo]:
    """Build the demo if needed, run the engine and the simulator, stop both at the end."""
    tell = say or (lambda line: print(line, file=sys.stderr, flush=True))
    if needs_build(workspace):
        build(workspace, tell)
    else:
        from engine.demo import workspace as demo  # XGBoost: only once it is needed

        tell(demo.describe(workspace))
    logs = workspace.root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    chosen = port or free_port()
    url = f"http://127.0.0.1:{chosen}"
    children: list[subprocess.Popen[bytes]] = []
    try:
        engine = _spawn(
            beast_command(
                workspace,
                "engine",
                "--port",
                str(chosen),
                "--evaluate-every",
                f"{EVALUATE_EVERY_S:g}",
            ),
            logs / "demo-engine.log",
        )
        children.append(engine)
        wait_healthy(engine, chosen, logs / "demo-engine.log")
        simulator = _spawn(
            beast_command(
                workspace,
                "simulate",
                "--url",
                url,
                "--duration",
                f"{SIMULATE_DURATION_S:g}",
                *simulate_args,
            ),
            logs / "demo-simulate.log",
        )
        children.append(simulator)
        tell(f"demo: engine on {url} (pid {engine.pid}), demo traffic (pid {simulator.pid})")
        yield LiveDemo(workspace.root, url, engine.pid, simulator.pid, logs)
    finally:
        for child in reversed(children):  # the traffic first, then the engine it talks to
            stop(child)


def _spawn(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    launcher = [sys.executable, "-m", "engine.demo.live", str(os.getpid()), *command]
    with log.open("ab") as out:
        return subprocess.Popen(
            launcher,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,  # its own process group, out of the terminal's reach
        )


def wait_healthy(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Wait until the engine answers /healthz; a one-line refusal if it exits or hangs."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BeastError(f"the demo engine exited ({proc.returncode}): {_log_tail(log)}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    raise BeastError(f"the demo engine did not answer within {START_TIMEOUT_S:g} s (see {log})")


def stop(proc: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> int:
    """SIGTERM, then SIGKILL after `grace_s`, to the child (and its group if it leads one).

    Returns its exit code.
    """
    if proc.poll() is None:
        _signal(proc.pid, signal.SIGTERM)
        try:
            return proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    _signal(proc.pid, signal.SIGKILL)  # also anything it left in its group
    return proc.wait()


def _signal(pid: int, signum: int) -> None:
    """Signal `pid`'s whole process group when it leads one (ours do), else only `pid`."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)


def _log_tail(log: Path) -> str:
    try:
        return _last_line(log.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return f"see {log}"


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


# -- the launcher: runs in the child, between fork and the real command ----------------------


def _die_with_parent() -> bool:
    """Ask Linux for SIGTERM when the parent thread dies; False where prctl is missing."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    """Without prctl: a thread that ends the process when the parent is gone."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os.killpg(os.getpgid(0), signal.SIGTERM)  # the command too: it is in our group

    threading.Thread(target=watch, name="beast-parent-watch", daemon=True).start()


def _launch(argv: list[str]) -> int:
    """`python -m engine.demo.live PARENT_PID COMMAND…`: tie COMMAND's life to PARENT_PID."""
    parent, command = int(argv[0]), argv[1:]
    if _die_with_parent():
        if os.getppid() != parent:  # the parent died before prctl took effect
            return 1
        os.execv(command[0], command)  # the death signal setting survives exec
    _watch_parent(parent)
    return subprocess.call(command)


if __name__ == "__main__":
    raise SystemExit(_launch(sys.argv[1:]))
