"""`beast mlflow`: the MLflow UI over the workspace's tracking store (the seed's `mlflow:start`).

Kept apart from engine/cli/main.py like the other command groups. The UI runs as
`python -m mlflow ui`, which replaces this process; mlflow is imported here only to create a
missing store first (see mlflow_tracking.prepare_store).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from engine.core.errors import BeastError
from engine.facade import Engine

_MAX_PORT = 65535


def cmd_mlflow(engine: Engine, args: argparse.Namespace) -> int:
    """Exec the MLflow UI; it runs until interrupted, like `mlflow ui` itself."""
    if not 1 <= args.port <= _MAX_PORT:
        raise BeastError(f"--port {args.port} is not a TCP port (1–{_MAX_PORT})")
    # Not at the top: the parser is built by every command, `beast status` included.
    from engine.retrain import mlflow_tracking

    command = mlflow_tracking.ui_command(engine.workspace, engine.config, args.host, args.port)
    mlflow_tracking.prepare_store(engine.workspace, engine.config)
    store = mlflow_tracking.tracking_uri(engine.workspace, engine.config.mlflow)
    print(f"MLflow UI on http://{args.host}:{args.port} (store {store}); Ctrl-C stops it")
    sys.stdout.flush()
    engine.close()  # exec does not return: nothing of this process's state survives it
    try:
        os.execv(command[0], command)
    except OSError as exc:
        raise BeastError(f"cannot start the MLflow UI ({command[0]}): {exc}") from None


def add_parsers(add: Any) -> None:
    """Register `beast mlflow` on the main parser's `add` helper."""
    p = add(
        "mlflow",
        cmd_mlflow,
        "the MLflow UI over the workspace's tracking store (needs the mlflow extra)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=5000, help="TCP port (default 5000)")
