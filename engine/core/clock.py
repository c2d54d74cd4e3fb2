"""Stored times are UTC ISO-8601 with milliseconds; order comes from ids, never from these."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def ms_of(iso: str) -> int:
    """A stored time (`utc_now`'s form) in milliseconds since the epoch."""
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
