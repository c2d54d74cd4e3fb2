"""A small UBJSON reader, enough to read an XGBoost `.ubj` model's header fields.

XGBoost does not sanitize model files, so we read `version` and `num_feature` ourselves
before handing the bytes to it (in the validator's child process). Typed arrays (`[$d#…`)
are decoded with the struct module in one call, so a multi-megabyte model reads quickly.
"""

from __future__ import annotations

import struct
from typing import Any

_SCALARS: dict[bytes, tuple[str, int]] = {
    b"i": (">b", 1),
    b"U": (">B", 1),
    b"I": (">h", 2),
    b"l": (">i", 4),
    b"L": (">q", 8),
    b"d": (">f", 4),
    b"D": (">d", 8),
}
_MAX_DEPTH = 64
_EMPTY_KINDS = (b"T", b"F", b"Z")  # typed-container element types with no payload


class UBJError(ValueError):
    """The bytes are not the UBJSON subset XGBoost writes."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.empty_budget = len(data)  # typed T/F/Z elements left to allow, see bound()

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise UBJError(f"truncated at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def marker(self) -> bytes:
        while True:
            m = self.take(1)
            if m != b"N":  # no-op padding
                return m

    def scalar(self, m: bytes) -> Any:
        fmt, size = _SCALARS[m]
        return struct.unpack(fmt, self.take(size))[0]

    def length(self) -> int:
        m = self.marker()
        if m not in _SCALARS or m in (b"d", b"D"):
            raise UBJError(f"bad length marker {m!r} at byte {self.pos}")
        n = int(self.scalar(m))
        if n < 0:
            raise UBJError(f"negative length at byte {self.pos}")
        return n

    def value(self, m: bytes, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            raise UBJError("nesting too deep")
        if m in _SCALARS:
            return self.scalar(m)
        if m in {b"S", b"H"}:
            return self.take(self.length()).decode("utf-8")
        if m == b"C":
            return self.take(1).decode("latin-1")
        if m == b"T":
            return True
        if m == b"F":
            return False
        if m == b"Z":
            return None
        if m == b"[":
            return self.array(depth)
        if m == b"{":
            return self.obj(depth)
        raise UBJError(f"unknown marker {m!r} at byte {self.pos - 1}")

    def container_header(self) -> tuple[bytes | None, int | None]:
        kind: bytes | None = None
        count: int | None = None
        if self.data[self.pos : self.pos + 1] == b"$":
            self.pos += 1
            kind = self.take(1)
        if self.data[self.pos : self.pos + 1] == b"#":
            self.pos += 1
            count = self.length()
        if kind is not None and count is None:
            raise UBJError("typed container without a count")
        return kind, count

    def bound(self, kind: bytes | None, count: int) -> None:
        """Refuse a count the remaining bytes cannot hold, before looping over it.

        Elements of type T, F or Z take no bytes at all, so `[$Z#L<2**62>` would otherwise
        make a 13-byte input loop (and allocate) for ever; all such elements of a document
        together are held to the input's size, which no XGBoost model comes near.
        """
        remaining = len(self.data) - self.pos
        if kind in _EMPTY_KINDS:
            self.empty_budget -= count
            if self.empty_budget < 0:
                raise UBJError(f"more empty elements than the input's {len(self.data)} bytes")
        elif count > remaining:
            raise UBJError(f"count {count} is more than the {remaining} bytes left")

    def array(self, depth: int) -> list[Any]:
        kind, count = self.container_header()
        if kind in _SCALARS and count is not None:
            fmt, size = _SCALARS[kind]
            raw = self.take(size * count)
            return list(struct.unpack(f">{count}{fmt[1]}", raw))
        items: list[Any] = []
        if count is not None:
            self.bound(kind, count)
            for _ in range(count):
                items.append(self.value(kind or self.marker(), depth + 1))
            return items
        while True:
            m = self.marker()
            if m == b"]":
                return items
            items.append(self.value(m, depth + 1))

    def obj(self, depth: int) -> dict[str, Any]:
        kind, count = self.container_header()
        out: dict[str, Any] = {}
        if count is not None:
            self.bound(None, count)  # every key takes at least two bytes
            for _ in range(count):
                key = self.take(self.length()).decode("utf-8")
                out[key] = self.value(kind or self.marker(), depth + 1)
            return out
        while True:
            if self.data[self.pos : self.pos + 1] == b"}":
                self.pos += 1
                return out
            key = self.take(self.length()).decode("utf-8")
            out[key] = self.value(self.marker(), depth + 1)


def loads(data: bytes) -> Any:
    """Decode one UBJSON document; raise UBJError on anything malformed or trailing."""
    reader = _Reader(data)
    try:
        result = reader.value(reader.marker(), 0)
    except (struct.error, UnicodeDecodeError) as exc:
        raise UBJError(str(exc)) from None
    if reader.pos != len(data):
        raise UBJError(f"{len(data) - reader.pos} trailing bytes")
    return result
