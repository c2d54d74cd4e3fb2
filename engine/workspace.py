"""The workspace: where config, models, deployments, data and the database live."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from engine.config import DEFAULT_CONFIG_TOML
from engine.errors import BeastError

DEFAULT_DIRNAME = ".beast-mode"
ENV_VAR = "BEAST_HOME"


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
