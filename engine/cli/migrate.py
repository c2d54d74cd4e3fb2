"""`beast migrate --to postgresql://…`: a SQLite workspace's state into an empty PostgreSQL
database, verified before its one commit (engine/store/postgres/transfer.py).

Kept apart from engine/cli/main.py like the other command groups. The workspace is left on
beast.db: the output names the next step (set the store URL), so switching is the user's.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from typing import TYPE_CHECKING, Any

from engine.core import text
from engine.facade import Engine

if TYPE_CHECKING:
    from engine.store.postgres.transfer import Migrated


def cmd_migrate(engine: Engine, args: argparse.Namespace) -> int:
    done = engine.migrate_to(args.to)
    running = engine.engine_pid()
    if args.json:
        sys.stdout.write(
            text.dumps(dict(done.to_json(), engine_pid=running, next=_next(done))) + "\n"
        )
        return 0
    for line in _lines(done, running):
        print(text.escape(line))
    return 0


def _next(done: Migrated) -> str:
    return (
        f'stop beast engine, set [store] url = "{done.target}" in config.toml (or '
        "BEAST_STORE_URL) on every host, start the engines"
    )


def _lines(done: Migrated, running: int | None) -> list[str]:
    size = (
        f"{done.file_bytes / 1e6:.1f} MB" if done.file_bytes >= 100_000 else f"{done.file_bytes} B"
    )
    counts = ", ".join(f"{table} {n}" for table, n in done.tables)
    out = [
        f"copied {done.source} into {done.target} in one transaction "
        f"({done.rows()} rows, {done.seconds:.1f} s; workspace {done.workspace_id[:12]})",
        *textwrap.wrap(counts, width=96, initial_indent="  ", subsequent_indent="  "),
        f"  {done.files} model files ({size}) into artifact_bytes, each checked against its sha256",
    ]
    out += [
        f"  not carried: {what}: that version serves only where its file is"
        for what in done.not_carried
    ]
    out.append(f"verified before the commit: {', '.join(done.verified)}")
    if running is not None:
        out.append(
            f"note: beast engine (pid {running}) serves this workspace: what it wrote after "
            "the copy's snapshot is only in beast.db"
        )
    out.append(f"next: {_next(done)}")
    return out


def add_parsers(add: Any) -> None:
    p = add(
        "migrate",
        cmd_migrate,
        "copy the workspace's SQLite state into an empty PostgreSQL database, and verify it",
    )
    p.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="postgresql://user@host:5432/db: an empty database (one with beast-mode's tables "
        "is refused)",
    )
    p.add_argument("--json", action="store_true")
