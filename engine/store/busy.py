"""How long a transaction waits for another writer before `StateBusy`, on either backend."""

from __future__ import annotations

import os

DEFAULT_BUSY_TIMEOUT_S = 5.0
BUSY_ENV = "BEAST_BUSY_TIMEOUT_S"


def busy_timeout() -> float:
    """`BEAST_BUSY_TIMEOUT_S` when it is a number ≥ 0, else 5 s."""
    raw = os.environ.get(BUSY_ENV)
    if raw is None:
        return DEFAULT_BUSY_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_BUSY_TIMEOUT_S
    return value if value >= 0 else DEFAULT_BUSY_TIMEOUT_S
