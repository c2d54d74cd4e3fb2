"""The wall: the rules of ARCHITECTURE.md that the import graph can check.

- The engine never imports Textual or the console (`beast console`'s door excepted, lazily).
- Nothing below the facade imports it: only the doors and `engine/__init__.py` may.
- No import cycle among engine modules, function-level imports counted.
- The console imports only `engine`, the names of its `__all__`.
- All SQL lives in the store's backends: engine/store/sqlite/, engine/store/postgres/ and the
  SQL both speak, engine/store/sql/; only engine/store/postgres/ imports psycopg.
- Importing the engine (and the `beast` command) loads no heavy dependency and opens no file.

The graph is read with `ast` from every `import` and `from … import` anywhere in a file
(inside functions too); an import under `if TYPE_CHECKING:` counts for every rule but the
cycles (it never runs, so it cannot close one).
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers import REPO

ENGINE = REPO / "engine"
DOORS = ("engine/cli/", "engine/server/", "engine/demo/")
CONSOLE_DOOR = "engine/cli/console.py"  # `beast console`: imports the console in a function
SQL_HOMES = ("engine/store/sqlite/", "engine/store/postgres/", "engine/store/sql/")
# Where each driver may be imported. `beast migrate --to` (postgres/transfer.py) is the one
# module that holds both: it reads a SQLite workspace's snapshot into PostgreSQL.
DRIVERS = {
    "sqlite3": ("engine/store/sqlite/", "engine/store/postgres/transfer.py"),
    "psycopg": ("engine/store/postgres/",),
}
SQL_CALLS = {"execute", "executemany", "executescript", "read_sql", "write_sql"}
HEAVY = (
    "textual",
    "console",
    "numpy",
    "scipy",
    "pandas",
    "sklearn",
    "xgboost",
    "sqlite_utils",
    "psycopg",
    "dask",
    "distributed",
)


@dataclass(frozen=True)
class Import:
    """One `import` or `from … import` statement, resolved to absolute module names."""

    where: str  # path:line, relative to the repository
    module: str  # `import a.b` → a.b; `from a.b import c` → a.b (relative ones resolved)
    names: tuple[str, ...]  # `from a.b import c, d` → (c, d); `import a.b` → ()
    in_function: bool
    type_only: bool  # under `if TYPE_CHECKING:`

    @property
    def root(self) -> str:
        return self.module.split(".")[0]

    def targets(self) -> list[str]:
        """What it may load: the module, and `module.name` for each name (it may be a module)."""
        return [self.module, *(f"{self.module}.{name}" for name in self.names)]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _in_functions(tree: ast.AST) -> set[int]:
    """The ids of the nodes inside a function (or a lambda)."""
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
    return {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, kinds)
        for inner in ast.walk(node)
        if inner is not node
    }


def _type_only(tree: ast.AST) -> set[int]:
    """The ids of the nodes under an `if TYPE_CHECKING:`."""
    return {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for part in node.body
        for inner in ast.walk(part)
    }


def imports(path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    in_function, type_only = _in_functions(tree), _type_only(tree)
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    nodes = (n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom))
    for node in sorted(nodes, key=lambda n: n.lineno):
        if isinstance(node, ast.Import):
            modules = [(alias.name, ()) for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            modules = [(base, tuple(alias.name for alias in node.names))]
        where = f"{path.relative_to(REPO).as_posix()}:{node.lineno}"
        flags = (id(node) in in_function, id(node) in type_only)
        found += [Import(where, module, names, *flags) for module, names in modules]
    return found


def engine_files() -> Iterator[tuple[str, Path]]:
    for path in sorted(ENGINE.rglob("*.py")):
        yield path.relative_to(REPO).as_posix(), path


def public_names() -> set[str]:
    """`engine/__init__.py`'s `__all__`, read without importing it."""
    tree = ast.parse((ENGINE / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return set(ast.literal_eval(node.value))
    raise AssertionError("engine/__init__.py has no __all__")


def _listing(offenders: list[str]) -> str:
    return "\n  " + "\n  ".join(offenders)


# -- the rules, read from the source ------------------------------------------------------------


def test_the_engine_never_imports_textual_or_the_console() -> None:
    offenders = []
    for rel, path in engine_files():
        for imp in imports(path):
            if imp.root not in ("textual", "console"):
                continue
            if rel == CONSOLE_DOOR and imp.root == "console" and imp.in_function:
                continue  # the one door, and lazily: `beast status` must not pay for Textual
            offenders.append(f"{imp.where} imports {imp.module}")
    assert not offenders, "the engine imports Textual or the console:" + _listing(offenders)


def test_nothing_below_the_facade_imports_it() -> None:
    offenders = []
    for rel, path in engine_files():
        if rel.startswith(DOORS) or rel in ("engine/__init__.py", "engine/facade.py"):
            continue
        for imp in imports(path):
            facade = any(
                t == "engine.facade" or t.startswith("engine.facade.") for t in imp.targets()
            )
            if facade or imp.module == "engine":  # `from engine import …`: the facade's front
                names = f" ({', '.join(imp.names)})" if imp.names else ""
                offenders.append(f"{imp.where} imports {imp.module}{names}")
    assert not offenders, (
        "below the facade, a module imports it (a service takes a Store, a Config, a clock — "
        "not the Engine):" + _listing(offenders)
    )


# What each layer may import of the engine (ARCHITECTURE.md): core nothing but core; the store
# core and itself; a domain core, the store and the other domains — never the facade or a door.
LAYERS = {
    "engine.core": ("engine.core",),
    "engine.store": ("engine.core", "engine.store"),
}
DOMAINS = ("registry", "deploy", "serving", "monitoring", "retrain")
for _domain in DOMAINS:
    LAYERS[f"engine.{_domain}"] = (
        "engine.core",
        "engine.store",
        *(f"engine.{other}" for other in DOMAINS),
    )


def test_the_layers_import_only_downwards() -> None:
    offenders = []
    for _rel, path in engine_files():
        name = module_name(path)
        layer = next((k for k in LAYERS if name == k or name.startswith(k + ".")), None)
        if layer is None:
            continue
        for imp in imports(path):
            if imp.root != "engine":
                continue
            if not imp.module.startswith(LAYERS[layer]):
                offenders.append(f"{imp.where} ({layer}) imports {imp.module}")
    assert not offenders, "an import points up or into a door:" + _listing(offenders)


def _graph() -> dict[str, dict[str, str]]:
    """module → {module it imports: where}, among engine modules, function-level included.

    An import of a module's own package (or of `engine`, whose __init__ fronts the facade) is
    no edge: Python runs a package's __init__ before any of its modules anyway.
    """
    modules = {module_name(path): path for _, path in engine_files()}

    def resolve(target: str) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    graph: dict[str, dict[str, str]] = {name: {} for name in modules}
    for name, path in modules.items():
        for imp in imports(path):
            if imp.type_only:
                continue
            for target in imp.targets():
                to = resolve(target)
                if to and to not in (name, "engine") and not name.startswith(to + "."):
                    graph[name].setdefault(to, imp.where)
    return graph


def _components(graph: dict[str, dict[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _a_cycle(graph: dict[str, dict[str, str]], component: list[str]) -> str:
    """The shortest cycle through the component's first module, each step with its import."""
    start, members = component[0], set(component)
    came_from: dict[str, str] = {}
    queue = deque([start])
    while start not in came_from:
        v = queue.popleft()
        for w in sorted(set(graph[v]) & members):
            if w not in came_from:
                came_from[w] = v
                queue.append(w)
    steps = [start]
    while len(steps) == 1 or steps[-1] != start:
        steps.append(came_from[steps[-1]])
    steps.reverse()
    return " → ".join(f"{a} ({graph[a][b]})" for a, b in itertools.pairwise(steps)) + f" → {start}"


def test_no_import_cycles_among_engine_modules() -> None:
    graph = _graph()
    cycles = [f"{', '.join(c)}\n    e.g. {_a_cycle(graph, c)}" for c in _components(graph)]
    assert not cycles, "import cycles (function-level imports counted):" + _listing(cycles)


def test_the_console_imports_only_the_engines_public_surface() -> None:
    public = public_names()
    offenders = []
    for path in sorted((REPO / "console").rglob("*.py")):
        for imp in imports(path):
            if imp.root != "engine":
                continue
            private = set(imp.names) - public
            if imp.module != "engine" or not imp.names:
                offenders.append(f"{imp.where} imports {imp.module} (not `from engine import …`)")
            elif private:
                offenders.append(
                    f"{imp.where} imports {', '.join(sorted(private))}: not in __all__"
                )
    assert not offenders, "the console reaches past `engine`'s __all__:" + _listing(offenders)


def test_all_sql_lives_in_the_store_backends() -> None:
    offenders = []
    for rel, path in engine_files():
        found = [
            f"import {imp.root} (line {imp.where.rpartition(':')[2]})"
            for imp in imports(path)
            if imp.root in DRIVERS and not rel.startswith(DRIVERS[imp.root])
        ]
        if not rel.startswith(SQL_HOMES):
            calls = sorted(
                (node.lineno, node.attr)
                for node in ast.walk(ast.parse(path.read_text(), filename=str(path)))
                if isinstance(node, ast.Attribute) and node.attr in SQL_CALLS
            )
            for attr in sorted({attr for _, attr in calls}):
                lines = [str(line) for line, a in calls if a == attr]
                found.append(f".{attr} ×{len(lines)} (lines {', '.join(lines)})")
        if found:
            offenders.append(f"{rel}: {'; '.join(found)}")
    assert not offenders, f"SQL outside {', '.join(SQL_HOMES)}:" + _listing(offenders)


# -- the rules, read from a fresh interpreter ---------------------------------------------------


def _fresh(code: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    return out.stdout.strip()


def test_importing_the_engine_and_the_cli_loads_nothing_heavy() -> None:
    # What `beast status` pays at every cold start (≤ 0.4 s): these load where they are used.
    loaded = _fresh(
        "import sys, engine, engine.cli.main\n"
        "engine.cli.main.build_parser()  # every sub-command, as `beast status` builds them\n"
        f"heavy = {HEAVY!r}\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    assert loaded == ""


def test_every_public_name_resolves() -> None:
    # The lazy ones (the monitoring report's records) included: `from engine import *` loads all.
    missing = _fresh(
        "import engine\n"
        "print(','.join(n for n in engine.__all__ if getattr(engine, n, None) is None))\n"
        "from engine import *\n"
    )
    assert missing == ""
    assert public_names() == set(_fresh("import engine; print(' '.join(engine.__all__))").split())


def test_no_module_opens_connections_at_import() -> None:
    open_dbs = _fresh(
        "import os, engine, engine.cli.main\n"
        "fds = os.listdir('/proc/self/fd')\n"
        "paths = [os.readlink(f'/proc/self/fd/{f}') for f in fds\n"
        "         if os.path.exists(f'/proc/self/fd/{f}')]\n"
        "print([p for p in paths if p.endswith('.db')])\n"
    )
    assert open_dbs == "[]"
