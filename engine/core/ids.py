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
from collections.abc import Callable

_HEX32 = re.compile(r"[0-9a-f]{32}")
_MS_MASK = (1 << 48) - 1
_TAILS = 512  # ids' random parts made per refill: one 5 KiB read of OS randomness
# The random part's first and third bytes with the version (7) and the RFC 9562 variant (0b10)
# set in their top bits, applied to a whole refill in one C call each (bytes.translate).
_WITH_VERSION = bytes(0x70 | (b & 0x0F) for b in range(256))
_WITH_VARIANT = bytes(0x80 | (b & 0x3F) for b in range(256))


class _Pool(threading.local):
    """Per-thread ready-made random parts of ids (version 7 | rand_a 12 bits | variant |
    rand_b 62 bits: 20 hex characters), `_TAILS` at a time from one `os.urandom` read."""

    def __init__(self) -> None:
        self.take: Callable[[], str] = iter(()).__next__
        self.generation = -1


_POOL = _Pool()
_FORKS = [0]  # bumped in a forked child: it must not replay its parent's buffered bytes


def _after_fork() -> None:
    _FORKS[0] += 1


os.register_at_fork(after_in_child=_after_fork)


def _refill(pool: _Pool) -> None:
    raw = bytearray(os.urandom(10 * _TAILS))
    raw[0::10] = raw[0::10].translate(_WITH_VERSION)
    raw[2::10] = raw[2::10].translate(_WITH_VARIANT)
    text = raw.hex()
    pool.take = iter([text[i : i + 20] for i in range(0, 20 * _TAILS, 20)]).__next__
    pool.generation = _FORKS[0]


def new_id(now_ms: int | None = None) -> str:
    """A new id issued at `now_ms` (default: now).

    ~1 µs: the random part comes ready-made (see `_Pool`), so an id is one format of the
    48-bit time and a string from the pool — a third of the cost of assembling 128 bits as
    an integer per id (timeit), on a path that runs once a served row.
    """
    ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    pool = _POOL
    if pool.generation != _FORKS[0]:
        _refill(pool)
    try:
        tail = pool.take()
    except StopIteration:
        _refill(pool)
        tail = pool.take()
    # time (48 bits) | version 7 | rand_a (12 bits) | variant | rand_b (62 bits)
    return f"{ms & _MS_MASK:012x}{tail}"


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
