"""The workspace: where config, models, deployments, data and the database live.

A workspace remembers that it exists. The database records a random id (migration 0007)
and the workspace keeps it in `workspace-id`, written once the database has it. A database
that is missing or empty (0 bytes) in a workspace that shows it was used — that file,
`deployments/history.json` with rows, an `api-token`, a `beast.db-wal` left behind — is a
loss, not a new workspace: SQLite would create a fresh one without a word, the engine would
serve nothing and `doctor --repair` would empty the export. So it is refused (by the Store,
the one door every command, the engine and the console go through), naming what shows use
and the way back. A database holding another id, or less history than its own export, was
swapped for another or an older copy, and is refused as well.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from engine.core.config import DEFAULT_CONFIG_TOML
from engine.core.errors import BeastError, StoreError
from engine.core.history_export import exported_last_id, exported_rows

DEFAULT_DIRNAME = ".beast-mode"
ENV_VAR = "BEAST_HOME"
MARKER = "workspace-id"
WAY_BACK = (
    "restore a backup with `beast restore BACKUP` (a file `beast backup` wrote), or move the "
    "workspace aside and `beast init` a new one"
)


class WorkspaceLost(StoreError):
    """The database is not the one this workspace had (missing, empty, older, another's)."""


@dataclass(frozen=True)
class Workspace:
    """Paths of one workspace. Creating the object touches nothing on disk."""

    root: Path

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def deployments_dir(self) -> Path:
        return self.root / "deployments"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def db_path(self) -> Path:
        return self.root / "beast.db"

    @property
    def history_export_path(self) -> Path:
        return self.deployments_dir / "history.json"

    @property
    def marker_path(self) -> Path:
        return self.root / MARKER

    @classmethod
    def locate(cls, explicit: str | os.PathLike[str] | None = None) -> Workspace:
        """`--workspace DIR`, else `$BEAST_HOME`, else `./.beast-mode`."""
        chosen = explicit or os.environ.get(ENV_VAR) or DEFAULT_DIRNAME
        return cls(Path(chosen).expanduser().absolute())

    def exists(self) -> bool:
        return self.root.is_dir() and (self.config_path.is_file() or self.db_path.is_file())

    def require(self) -> None:
        """Refuse, with the way out, when the workspace was never initialised."""
        if not self.exists():
            raise BeastError(
                f"no beast-mode workspace at {self.root} (run `beast init`, "
                f"or pass --workspace DIR / set {ENV_VAR})"
            )

    def create(self) -> list[Path]:
        """Create missing directories and a default config; return what was created."""
        created: list[Path] = []
        for directory in (self.root, self.models_dir, self.deployments_dir, self.data_dir):
            if not directory.is_dir():
                directory.mkdir(parents=True, exist_ok=True)
                created.append(directory)
        if not self.config_path.exists():
            self.config_path.write_text(DEFAULT_CONFIG_TOML, encoding="utf-8")
            created.append(self.config_path)
        return created

    # -- identity -------------------------------------------------------------------------

    def marker(self) -> str | None:
        """The database id this workspace recorded (`workspace-id`), or None before one."""
        try:
            text = self.marker_path.read_text(encoding="ascii", errors="replace").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {self.marker_path}: {exc.strerror or exc}") from None
        return text or None

    def write_marker(self, workspace_id: str) -> bool:
        """Record the database's id (atomically); False when the workspace is not writable.

        A read-only workspace still serves readers: the id is written by the next writer.
        """
        try:
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{MARKER}.", suffix=".tmp")
        except OSError:
            return False
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(workspace_id + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.marker_path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            return False
        return True

    def evidence_of_use(self) -> list[str]:
        """What shows this workspace held state (models/ alone does not: files come first)."""
        found: list[str] = []
        marker = self.marker()
        if marker is not None:
            found.append(f"{MARKER} {marker[:12]}")
        try:
            rows = exported_rows(self.history_export_path)
        except ValueError:
            found.append(f"{self.history_export_path} (unreadable)")
        else:
            if rows:
                found.append(f"deployments/history.json with {len(rows)} changes")
        if (self.root / "api-token").exists():
            found.append("api-token")
        wal = self.db_path.with_name(f"{self.db_path.name}-wal")
        with contextlib.suppress(OSError):
            if wal.stat().st_size > 0:
                found.append(f"{wal.name} ({wal.stat().st_size} bytes)")
        return found

    def refuse_if_used(self, what: str) -> None:
        """Before a database is created here: refuse when the workspace shows it had one.

        `what` says what became of it ("is missing", "is empty (0 bytes)").
        """
        evidence = self.evidence_of_use()
        if evidence:
            raise WorkspaceLost(
                f"{self.db_path} {what}, but this workspace was in use ({', '.join(evidence)}):"
                f" refusing to start a new database over it; {WAY_BACK}"
            )

    def check_database(self, db_id: str | None, db_last_change: int) -> None:
        """After opening: the database must be this workspace's, and not behind its export.

        `db_id` is the id the database records (None before migration 0007) and
        `db_last_change` its newest history id (0 without any). A workspace without a
        `workspace-id` yet (made before this check existed) adopts the database's.
        """
        marker = self.marker()
        if db_id is not None and marker is not None and marker != db_id:
            raise WorkspaceLost(
                f"{self.db_path} is another workspace's database (id {db_id[:12]}), not this "
                f"one's ({MARKER} {marker[:12]}): a different database was put in place; put "
                "this workspace's own back, or move that one aside and adopt it with "
                "`beast restore FILE --force`"
            )
        self._check_not_behind_export(db_last_change)
        if db_id is not None and marker is None:
            self.write_marker(db_id)

    def _check_not_behind_export(self, db_last_change: int) -> None:
        try:
            exported = exported_last_id(self.history_export_path)
        except (OSError, ValueError):
            return  # an unreadable export is `beast doctor`'s warning, not a lost database
        if exported is not None and exported > db_last_change:
            held = f"only up to #{db_last_change}" if db_last_change else "no changes"
            raise WorkspaceLost(
                f"{self.db_path} holds {held}, but {self.history_export_path} records changes "
                f"up to #{exported}: the database lost changes it had (emptied, replaced by an "
                f"older copy, or damaged: `beast doctor` checks); {WAY_BACK}"
            )
