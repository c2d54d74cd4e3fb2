"""Leadership on SQLite: one engine per workspace (engine.core.engine_lock refuses a second),
so it always leads."""

from __future__ import annotations


class SoleLeadership:
    """engine.store.replicas.Leadership for the one engine of a SQLite workspace."""

    def try_lead(self) -> bool:
        return True

    def release(self) -> None:
        """Nothing is held beyond the workspace's engine lock."""
