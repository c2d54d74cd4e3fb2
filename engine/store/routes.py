"""The routes repository: what the router reads to serve each deployed line."""

from __future__ import annotations

from typing import Protocol

from engine.core.records import ServedLine


class RouteRepo(Protocol):
    """The served lines of one transaction, and a cheap sign that they may have changed."""

    def change_counter(self) -> int:
        """A number that changes whenever another connection commits a change to the store
        (whatever it changed): the router reloads its routes only when it moved."""
        ...

    def served_lines(self) -> list[ServedLine]:
        """Every line with a deployment: its versions, the A/B share and test, its features."""
        ...
