"""The wall: engine/ works without a terminal and never imports Textual or the console."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def test_importing_the_engine_and_cli_loads_no_textual() -> None:
    code = (
        "import sys, engine, engine.cli, engine.facade\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('textual', 'console', 'xgboost',"
        " 'pandas', 'sklearn')]\n"
        "print(','.join(sorted(bad)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.strip() == ""


def test_no_engine_module_imports_textual_or_console() -> None:
    offenders = []
    for path in sorted((REPO / "engine").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        # The one door: `beast console`'s handler imports the console inside a function.
        door = {
            id(inner)
            for fn in ast.walk(tree)
            if path.relative_to(REPO) == Path("engine/cli/console.py")
            and isinstance(fn, ast.FunctionDef)
            for inner in ast.walk(fn)
        }
        for node in ast.walk(tree):
            in_door = id(node) in door and isinstance(node, ast.ImportFrom)
            if in_door and str(node.module).split(".")[0] == "console":
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in ("textual", "console"):
                    offenders.append(f"{Path(path).relative_to(REPO)}:{node.lineno} {name}")
    assert offenders == []


def test_no_module_opens_connections_at_import() -> None:
    code = (
        "import os, engine, engine.cli\n"
        "fds = os.listdir('/proc/self/fd')\n"
        "paths = [os.readlink(f'/proc/self/fd/{f}') for f in fds\n"
        "         if os.path.exists(f'/proc/self/fd/{f}')]\n"
        "print([p for p in paths if p.endswith('.db')])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.strip() == "[]"
