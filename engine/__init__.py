"""beast-mode's engine: everything that works without a terminal.

The public surface is `__all__`, and it is small: `Engine` (the facade) and `Workspace`; the
records the facade returns (deployment state, history, lineage, jobs, the monitoring report)
and the `Config` it reads; the errors it raises; and the few helpers a front end needs to
behave as the engine does (`check_name`, the name rule; `escape`, the terminal-safe text
rule; `sig`, how a number reads to people; `BackgroundThread`, the engine's long-running
worker thread). The console imports nothing else (tests/test_wall.py holds it, as httpx
keeps its private modules behind one `__all__`); every other module is private and may move.
This package never imports Textual or the console.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from engine.core.config import Config
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
from engine.core.figures import sig
from engine.core.naming import check_name
from engine.core.records import (
    Change,
    Deployment,
    Expect,
    Experiment,
    HistoryEntry,
    Job,
    Lineage,
    Rollout,
    Status,
)
from engine.core.text import escape
from engine.core.workspace import Workspace
from engine.facade import Engine, ModelsReport

if TYPE_CHECKING:
    from engine.core.background import BackgroundThread
    from engine.monitoring.report import (
        ExperimentReport,
        IntervalPoint,
        MonitorReport,
        VersionReport,
    )
    from engine.monitoring.rollups import MinutePoint
    from engine.monitoring.srm import SrmCheck

__all__ = [
    "ArtifactRejected",
    "BackgroundThread",
    "BeastError",
    "Change",
    "Config",
    "ConfigError",
    "Conflict",
    "Deployment",
    "Engine",
    "Expect",
    "Experiment",
    "ExperimentReport",
    "HistoryEntry",
    "IntervalPoint",
    "Job",
    "Lineage",
    "MinutePoint",
    "ModelsReport",
    "MonitorReport",
    "NotFound",
    "Rollout",
    "SrmCheck",
    "StateBusy",
    "StateChanged",
    "Status",
    "StoreError",
    "VersionReport",
    "Workspace",
    "check_name",
    "escape",
    "sig",
]

# What `import engine` must not load (the cold start: `beast status` ≤ 0.4 s) is imported on
# first use (PEP 562): the monitoring report's records live beside numpy, and the thread helper
# brings `logging` (10–50 ms on a loaded machine), which `beast status` never needs.
_LAZY = {
    "BackgroundThread": "engine.core.background",
    "ExperimentReport": "engine.monitoring.report",
    "IntervalPoint": "engine.monitoring.report",
    "SrmCheck": "engine.monitoring.srm",
    "MonitorReport": "engine.monitoring.report",
    "VersionReport": "engine.monitoring.report",
    "MinutePoint": "engine.monitoring.rollups",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value
