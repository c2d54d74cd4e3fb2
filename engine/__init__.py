"""beast-mode's engine: everything that works without a terminal.

The public surface is small: `Engine` (the facade), the records it returns, and the errors it
raises. This package never imports Textual or the console (a test holds the wall).
"""

from engine.core.errors import (
    ArtifactRejected,
    BeastError,
    ConfigError,
    Conflict,
    NotFound,
    StateBusy,
    StateChanged,
    StoreError,
)
from engine.core.records import Change, Expect, Status
from engine.core.workspace import Workspace
from engine.facade import Engine

__all__ = [
    "ArtifactRejected",
    "BeastError",
    "Change",
    "ConfigError",
    "Conflict",
    "Engine",
    "Expect",
    "NotFound",
    "StateBusy",
    "StateChanged",
    "Status",
    "StoreError",
    "Workspace",
]
