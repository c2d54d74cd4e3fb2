"""beast-mode's engine: everything that works without a terminal.

The public surface is small: `Engine` (the facade), the records it returns, and the errors it
raises. This package never imports Textual or the console (a test holds the wall).
"""

from engine.errors import (
    ArtifactRejected,
    BeastError,
    ConfigError,
    Conflict,
    NotFound,
    StateBusy,
    StateChanged,
    StoreError,
)
from engine.facade import Engine
from engine.records import Change, Expect, Status
from engine.workspace import Workspace

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
