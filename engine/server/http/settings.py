"""How one HTTP server process behaves (`beast engine` hands these to its workers)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

SETTINGS_ENV = "BEAST_ENGINE_SETTINGS"


@dataclass(frozen=True)
class ApiSettings:
    """How one server process behaves. Plain values, so `beast engine` can hand them to workers."""

    max_body_bytes: int = 1 << 20
    max_rows: int = 10_000
    # A token for every request, not only mutations: [api] require_token ("always", or
    # "auto" when listening beyond loopback).
    token_everywhere: bool = False
    # Host names served beyond localhost, 127.0.0.1 and [::1] (engine.server.http.guard).
    allowed_hosts: tuple[str, ...] = ()
    log_interval_s: float = 0.05
    refresh_s: float = 0.5
    # Single-row predictions on the event loop (measured faster than the thread pool).
    predict_inline: bool = True

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls, raw: str) -> ApiSettings:
        values = json.loads(raw)
        values["allowed_hosts"] = tuple(values.get("allowed_hosts", ()))
        return cls(**values)
