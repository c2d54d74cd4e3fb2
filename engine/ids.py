"""Prediction ids: UUIDv7 (48-bit millisecond time + 74 random bits), as 32 hex characters.

Time-ordered, so the log's unique index grows at its end, and an id tells when it was issued:
feedback for an unknown id that is only seconds old may still be in a writer's buffer
("accepted, matched later"); an old unknown id is simply unknown (404).
"""

from __future__ import annotations

import os
import re
import time

_HEX32 = re.compile(r"^[0-9a-f]{32}$")


def new_id(now_ms: int | None = None) -> str:
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= ((rand >> 62) & 0xFFF) << 64  # rand_a: 12 more random bits
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)
    return f"{value:032x}"


def is_valid(text: str) -> bool:
    return bool(_HEX32.match(text)) and text[12] == "7"


def issued_ms(text: str) -> int:
    """The millisecond timestamp inside an id."""
    return int(text[:12], 16)
