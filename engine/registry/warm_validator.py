"""A warm validator: new artifacts judged in tens of milliseconds, still each in its own child.

A cold validator child spends about two seconds starting Python and importing XGBoost before
it reads a byte; the watcher promises a new artifact visible within half a second. So one
fork server (`python -m engine.registry.validator_child --serve`) is started ahead of time with the
imports done, and it forks a fresh child per file: a model that crashes XGBoost kills only
that child, and no model is ever parsed in the server itself. The verdicts and the timeout
are those of `artifacts.validate_in_child`; a timeout kills the server's whole process group
(the hung child with it) and the next request starts a new server.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
import time
from pathlib import Path

from engine.registry import artifacts


class WarmValidator:
    """An `artifacts.Validator` backed by a fork server that is started and kept warm."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._server: subprocess.Popen[bytes] | None = None

    def start(self) -> WarmValidator:
        """Start the server now, so it warms up while nothing needs it."""
        with self._lock:
            self._running()
        return self

    def __call__(
        self,
        path: Path,
        fmt: str,
        timeout_s: float,
        *,
        expected_sha256: str | None = None,
        compile_into: Path | None = None,
    ) -> artifacts.Validation:
        into = str(compile_into) if compile_into is not None else ""
        request = f"{path}\0{fmt}\0{into}\n".encode("utf-8", "surrogateescape")
        with self._lock:  # one request at a time: answers come back in order
            server = self._running()
            try:
                assert server.stdin is not None
                server.stdin.write(request)
                server.stdin.flush()
                line = _read_line(server, timeout_s)
            except TimeoutError:
                self._stop_server()  # its whole group: the hung child too
                return artifacts.Validation(False, f"validation timed out after {timeout_s:g}s")
            except OSError:
                line = b""  # the server died under us (a broken pipe)
            if not line.endswith(b"\n"):
                self._stop_server()
                return artifacts.Validation(False, "validator failed: its fork server stopped")
        try:
            result = json.loads(line)
        except ValueError:
            result = None
        return artifacts.verdict(result, expected_sha256)

    def close(self) -> None:
        """Stop the server (end of input would do; a kill of its group makes sure)."""
        with self._lock:
            self._stop_server()

    def _running(self) -> subprocess.Popen[bytes]:
        if self._server is None or self._server.poll() is not None:
            self._stop_server()
            self._server = artifacts.start_child(
                "--serve", stdin=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        return self._server

    def _stop_server(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            artifacts.kill_group(server)


def _read_line(server: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    """One answer line (shorter if the server's output ended); TimeoutError past `timeout_s`."""
    assert server.stdout is not None
    fd = server.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break  # end of output: the server died
        data += chunk
    return data
