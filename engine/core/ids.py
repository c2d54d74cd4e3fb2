"""Prediction ids: UUIDv7 (48-bit millisecond time + 74 random bits), as 32 hex characters.

A served batch's ids share one random 27-character prefix and count its rows in the last
five hex digits (20 bits: RFC 9562's "counter" use of the random bits), so the log keeps the
batch as one record (engine.serving.prediction_log) and still finds any of its rows by id:
the prefix names the batch, the suffix the row.

The log keys a single prediction by its id as two integers (`key`): the first 64 bits (the
48-bit millisecond time, the version and 12 random bits) and the last 64 less the fixed variant
bit (62 random bits). Two 8-byte integers instead of 32 characters of text and a second index
on them: the table is the index (engine.store.sqlite.schema, 0008).

Time-ordered, so the log's key grows at its end, and an id tells when it was issued:
feedback for an unknown id that is only seconds old may still be in a writer's buffer
("accepted, matched later"); an old unknown id is simply unknown (404). The random bits come
from the OS (`os.urandom`, buffered per thread and renewed after a fork): an id is hard to
guess, so feedback cannot be aimed at another client's prediction by counting.
"""

from __future__ import annotations

import os
import re
import threading
import time

_HEX32 = re.compile(r"[0-9a-f]{32}")
_MS_MASK = (1 << 48) - 1
_LOW62 = (1 << 62) - 1
_VERSION = 0x7 << 76
_VARIANT = 0b10 << 62  # RFC 9562 variant, on top of the low 64 bits
_POOL_BYTES = 4096


class _Pool(threading.local):
    """Per-thread OS randomness, read 4 KiB at a time (one syscall per ~400 ids)."""

    def __init__(self) -> None:
        self.buf = b""
        self.pos = 0
        self.generation = -1


_POOL = _Pool()
_FORKS = [0]  # bumped in a forked child: it must not replay its parent's buffered bytes


def _after_fork() -> None:
    _FORKS[0] += 1


os.register_at_fork(after_in_child=_after_fork)


def _random80() -> int:
    pool = _POOL
    pos = pool.pos
    if pos + 10 > len(pool.buf) or pool.generation != _FORKS[0]:
        pool.buf, pos, pool.generation = os.urandom(_POOL_BYTES), 0, _FORKS[0]
    pool.pos = pos + 10
    return int.from_bytes(pool.buf[pos : pos + 10], "big")


def new_id(now_ms: int | None = None) -> str:
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    rand = _random80()  # 74 of its 80 bits are used
    # time (48 bits) | version 7 | rand_a (12 bits) | variant | rand_b (62 bits)
    value = (ms & _MS_MASK) << 80 | _VERSION | (rand >> 68) << 64 | _VARIANT | (rand & _LOW62)
    return value.to_bytes(16, "big").hex()


PREFIX_CHARS = 27  # a batch's shared part; the remaining 5 hex digits number its rows
MAX_BATCH_ROWS = 1 << 20


def batch_prefix(now_ms: int | None = None) -> str:
    """A new batch's id prefix: time, version 7, variant and 54 random bits."""
    return new_id(now_ms)[:PREFIX_CHARS]


def batch_ids(prefix: str, count: int) -> list[str]:
    """The ids of a batch's `count` rows (at most `MAX_BATCH_ROWS`), in row order."""
    if not 0 < count <= MAX_BATCH_ROWS:
        raise ValueError(f"a batch holds 1 to {MAX_BATCH_ROWS} rows, not {count}")
    if count <= len(_SUFFIXES):  # the common size: concatenation only, no formatting
        return [prefix + suffix for suffix in _SUFFIXES[:count]]
    return [f"{prefix}{i:05x}" for i in range(count)]


_SUFFIXES = tuple(f"{i:05x}" for i in range(4096))


def batch_row(pid: str) -> tuple[str, int]:
    """(the batch prefix, the row number) a valid id would have if it named a batch row."""
    return pid[:PREFIX_CHARS], int(pid[PREFIX_CHARS:], 16)


_LO_OFFSET = 1 << 63  # the variant's leading 1 bit, dropped so the low half fits an INTEGER


def key(pid: str) -> tuple[int, int]:
    """The log's key of an id: (its first 64 bits, its last 64 less the variant's top bit).

    Both fit SQLite's signed 64-bit INTEGER: the first half's top bit is the millisecond
    time's (zero until the year 6429), the second is below 2**62 for every valid id.
    """
    return int(pid[:16], 16), int(pid[16:], 16) - _LO_OFFSET


def from_key(hi: int, lo: int) -> str:
    """The id whose `key` is (hi, lo)."""
    return f"{hi:016x}{lo + _LO_OFFSET:016x}"


def key_floor(ms: int) -> int:
    """The smallest first half of a key among ids issued at or after millisecond `ms`."""
    return max(0, ms) << 16


def is_valid(text: object) -> bool:
    return (
        isinstance(text, str)
        and len(text) == 32
        and _HEX32.fullmatch(text) is not None
        and text[12] == "7"
        and text[16] in "89ab"
    )


def issued_ms(text: str) -> int:
    """The millisecond timestamp inside an id."""
    return int(text[:12], 16)
