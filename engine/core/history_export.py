"""deployments/history.json, the history's export: written atomically, never shrinking.

The rows themselves are the store's (engine.store.history); this module keeps the seed's file.
It sits below the store because every open of the store reads it (the workspace checks that
its database is not behind the export, engine.core.workspace) and a restore rewrites it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.core.clock import utc_now
from engine.core.errors import BeastError

_TAIL_BYTES = 16384  # enough for the last row of any export (notes are capped)


def exported_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of an export ([] when there is no file); ValueError when it is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc}") from None
    rows = json.loads(text)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError("not a JSON array of history rows")
    return rows


def exported_last_id(path: Path) -> int | None:
    """The id of the export's last row (None without rows), read from the file's tail.

    Every open of the store asks (engine.core.workspace), so the whole file is parsed only when
    its tail is not what `export_text` writes (one row per line, then `]`).
    """
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _TAIL_BYTES))
            lines = handle.read().rstrip().split(b"\n")
    except FileNotFoundError:
        return None
    if lines == [b"[]"]:
        return None
    whole = size <= _TAIL_BYTES or len(lines) >= 3  # the row before `]` began in the tail
    if whole and len(lines) >= 2 and lines[-1] == b"]":
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return int(json.loads(lines[-2])["id"])
    ids = [row.get("id") for row in exported_rows(path)]
    return max((i for i in ids if isinstance(i, int)), default=None)


class ExportRefused(BeastError):
    """The export would lose rows that history.json holds (it never shrinks)."""

    http_status = 409


def write_export(path: Path, read_text: Callable[[], str]) -> None:
    """Rewrite the export atomically (temp, fsync, rename) under a lock file; never shrink it.

    `read_text` is called while the lock is held, so the last writer always writes a
    snapshot at least as new as any earlier one: racing processes cannot leave it stale.
    The export only grows: text whose rows do not start with the file's rows (fewer, or
    different ones: a lost or swapped database) is refused with both counts, and the file is
    left as it is — it may be the only record left. A file that is not an export at all is
    kept beside it (`history.json.unreadable-TIME`) before it is replaced.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.parent / ".history.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            text = read_text()
            _refuse_shrinking(path, text)
            atomic_write(path, text)
            # Under the lock no other writer is mid-write: any temp file left is from a
            # process that died while exporting.
            for stale in path.parent.glob(f".{path.name}.*.tmp"):
                stale.unlink(missing_ok=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def export_or_warn(export: Callable[[], None], path: Path) -> str:
    """Run `export` after a commit: the change is in already, so a failure only warns.

    Returns the warning to append to the change's message, or "".
    """
    try:
        export()
    except OSError as exc:
        return (
            f" (warning: {path} was not rewritten: "
            f"{exc.strerror or exc}; run `beast doctor --repair`)"
        )
    except ExportRefused as exc:
        return f" (warning: {exc})"
    return ""


def _refuse_shrinking(path: Path, text: str) -> None:
    try:
        old: str | None = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return
    except UnicodeDecodeError:
        old = None
    # The common case, free: the old export is a prefix of the new one, line for line.
    if old is not None and (old == "[]\n" or text.startswith(old.removesuffix("\n]\n"))):
        return
    try:
        held = exported_rows(path)
    except ValueError:
        set_aside(path, "unreadable")
        return
    rows = json.loads(text)
    if rows[: len(held)] == held:
        return  # the same rows, written differently (by hand, or by another SQLite)
    differ = next((i for i, (a, b) in enumerate(zip(held, rows, strict=False)) if a != b), None)
    what = "" if differ is None else f", and its row {differ + 1} differs from the database's"
    raise ExportRefused(
        f"refusing to rewrite {path} with {len(rows)} rows: it holds {len(held)}{what}; "
        "history.json never shrinks or changes (the database is not the one that wrote it: "
        "`beast doctor`, `beast restore BACKUP`)"
    )


def set_aside(path: Path, why: str) -> Path:
    """Keep `path` beside itself as `NAME.WHY-TIME`, never overwriting; return the new name."""
    aside = path.with_name(f"{path.name}.{why}-{stamp()}")
    os.link(path, aside)  # refuses an existing name, where a rename would replace it
    os.unlink(path)
    return aside


def stamp() -> str:
    """The time (UTC) in names of files kept aside: 20250102T030405.678Z."""
    return utc_now().replace(":", "").replace("-", "")


def atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
