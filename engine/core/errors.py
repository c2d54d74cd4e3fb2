"""The refusals the engine can give. Each carries one line a user can act on."""

from __future__ import annotations


class BeastError(Exception):
    """A refusal or failure to report as one line (CLI: exit 1; HTTP: 4xx)."""

    http_status = 400


class NotFound(BeastError):
    """A named thing (version, test, prediction) does not exist."""

    http_status = 404


class Conflict(BeastError):
    """The request contradicts the current state (a second running test, a duplicate name)."""

    http_status = 409


class StateChanged(Conflict):
    """The state moved on since the caller looked; nothing was done."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"state changed since you looked, retry ({detail})")


class StateBusy(BeastError):
    """Another process held the database lock past the busy timeout."""

    http_status = 503


class StoreUnreachable(StateBusy):
    """The store's server could not be reached (PostgreSQL down, restarting, the network).

    A kind of busy: nothing was changed, and what waits for the store (the prediction log's
    rows, a job's progress, a file the watcher saw) is kept and retried, not dropped.
    """


class ConfigError(BeastError):
    """config.toml holds a value the engine cannot use."""


class ArtifactRejected(BeastError):
    """A model file failed the checks; the reason is the message."""

    http_status = 422


class StoreError(BeastError):
    """The state database cannot be used (corrupt, read-only, disk full)."""

    http_status = 503
