"""The door of the HTTP API: who may knock, before any handler reads a byte of the body.

The engine listens on loopback by default, where the operator's browser can reach it: a page
on any site could POST to it (a "simple" cross-site request needs no CORS preflight when the
body is text/plain or a form) or, by DNS rebinding, read from it under its own name. So, in
this order:
- `Host` must name the engine: localhost, 127.0.0.1, [::1], the address it listens on, or a
  name from `[api] allowed_hosts` / `beast engine --allowed-host` ("*" for any) — 421 else.
  A name without a port allows any port (a rebinding page's Host is its own name, whatever the
  port); a name with one allows only that port.
- A cross-site request is refused (403): an `Origin` whose host is not one the engine serves
  (`Origin: null` included), or `Sec-Fetch-Site: cross-site`. No CORS header is ever sent, so
  a page of another origin cannot read an answer either.
- The bearer token, for mutations, and for every route when required (401; 403 when mutations
  are off for want of a configured token).
- A POST body must be `application/json` (a charset, if given, utf-8) — 415 else.

One pass over the raw headers and a dict lookup for a Host already seen keep this to a few
µs on the one-row predict path.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from engine.core import text
from engine.server.http.schema import ApiError
from engine.server.http.token import TOKEN_ENV

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
ANY_HOST = "*"
_WANTED = frozenset((b"host", b"origin", b"sec-fetch-site", b"authorization", b"content-type"))
_DEFAULT_PORTS = {"http": 80, "https": 443}
_SEEN_HOSTS_MAX = 64  # Host values already admitted, remembered (refused ones never are)


def split_host(value: str) -> tuple[str, int | None] | None:
    """(host, port) of a `Host` value or an allowed-host entry, normalised (lower case, no
    trailing dot, IPv6 in brackets); None when it is not one."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        host, rest = value[: end + 1], value[end + 1 :]
    else:
        host, sep, rest = value.partition(":")
        rest = sep + rest
        host = host[:-1] if host.endswith(".") else host
    if not host:
        return None
    if not rest:
        return host, None
    if not rest.startswith(":") or not rest[1:].isdigit() or not 0 < int(rest[1:]) <= 65535:
        return None
    return host, int(rest[1:])


@dataclass(frozen=True)
class Door:
    """The checks every request passes before its handler (see the module's note)."""

    allowed_hosts: tuple[str, ...] = ()  # beyond the loopback names
    token: str | None = None
    token_everywhere: bool = False
    token_file: str = "<workspace>/api-token"
    _any_port: frozenset[str] = field(init=False, repr=False, compare=False)
    _with_port: frozenset[tuple[str, int]] = field(init=False, repr=False, compare=False)
    _any_host: bool = field(init=False, repr=False, compare=False)
    _seen: dict[bytes, bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        any_port: set[str] = set()
        with_port: set[tuple[str, int]] = set()
        for entry in (*LOOPBACK_HOSTS, *self.allowed_hosts):
            if entry == ANY_HOST:
                continue
            parsed = split_host(entry)
            if parsed is None:
                raise ValueError(f"not a host name: {entry!r}")
            host, port = parsed
            if port is None:
                any_port.add(host)
            else:
                with_port.add((host, port))
        object.__setattr__(self, "_any_port", frozenset(any_port))
        object.__setattr__(self, "_with_port", frozenset(with_port))
        object.__setattr__(self, "_any_host", ANY_HOST in self.allowed_hosts)
        object.__setattr__(self, "_seen", {})

    def serves(self, host: str, port: int | None) -> bool:
        """Whether `host` (with `port`, if one was given) is a name the engine answers to."""
        return host in self._any_port or (port is not None and (host, port) in self._with_port)

    def admit(
        self, raw_headers: Iterable[tuple[bytes, bytes]], *, post: bool, mutation: bool
    ) -> None:
        """Refuse the request (ApiError) unless it passes every check, in the module's order."""
        found: dict[bytes, bytes] = {}
        for name, value in raw_headers:
            if name in _WANTED:
                found[name] = value
        self._host(found.get(b"host"))
        self._same_site(found)
        if mutation or self.token_everywhere:
            self._authorized(found.get(b"authorization"), mutation=mutation)
        if post:
            _json_body(found.get(b"content-type"))

    def admit_host(self, raw_headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Host and Origin only: for answers that run no handler (404, 405)."""
        found = {name: value for name, value in raw_headers if name in _WANTED}
        self._host(found.get(b"host"))
        self._same_site(found)

    def _host(self, raw: bytes | None) -> None:
        # No Host at all (HTTP/1.0) is no browser's request: browsers always send one.
        if raw is None or self._any_host or raw in self._seen:
            return
        value = raw.decode("latin-1")
        parsed = split_host(value)
        if parsed is None or not self.serves(*parsed):
            shown = text.escape(value[:100])
            raise ApiError(
                421,
                f"this engine does not serve Host '{shown}': add it with `beast engine "
                "--allowed-host NAME` or [api] allowed_hosts in config.toml",
            )
        if len(self._seen) < _SEEN_HOSTS_MAX:
            self._seen[raw] = True

    def _same_site(self, found: dict[bytes, bytes]) -> None:
        if found.get(b"sec-fetch-site") == b"cross-site":
            raise ApiError(403, "cross-site request refused (Sec-Fetch-Site: cross-site)")
        raw = found.get(b"origin")
        if raw is None:
            return
        origin = raw.decode("latin-1")
        if not self._origin_served(origin, found.get(b"host")):
            shown = text.escape(origin[:100])
            raise ApiError(403, f"cross-site request refused: Origin '{shown}' is not this engine")

    def _origin_served(self, origin: str, host: bytes | None) -> bool:
        try:
            parts = urlsplit(origin.strip())
            port = parts.port
        except ValueError:
            return False
        if parts.scheme not in _DEFAULT_PORTS or not parts.netloc:
            return False  # "null" (sandboxes, file://), or not an origin at all
        if self._any_host:  # anything goes for Host: the origin must be the Host itself
            return host is not None and parts.netloc.lower() == host.decode("latin-1").lower()
        name = parts.netloc.rpartition("@")[2].lower()
        parsed = split_host(name if port is None else name.rsplit(":", 1)[0])
        if parsed is None:
            return False
        return self.serves(parsed[0], port if port is not None else _DEFAULT_PORTS[parts.scheme])

    def _authorized(self, raw: bytes | None, *, mutation: bool) -> None:
        challenge = {"WWW-Authenticate": 'Bearer realm="beast-mode"'}
        if self.token is None:
            raise ApiError(
                403,
                "mutations over HTTP are disabled: no API token is configured (set "
                f"{TOKEN_ENV}, or start the engine with `beast engine`, which creates "
                f"{self.token_file})",
            )
        header = raw.decode("latin-1") if raw is not None else ""
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(
                401, "missing bearer token: send Authorization: Bearer <token>", headers=challenge
            )
        # Constant time: the comparison must not tell how much of a guess was right.
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            raise ApiError(401, "wrong bearer token", headers=challenge)


def _json_body(raw: bytes | None) -> None:
    """Refuse (415) a POST whose Content-Type is not application/json with utf-8, if any."""
    if raw == b"application/json":
        return  # the common case, first
    media, *params = (raw or b"").decode("latin-1").split(";")
    ok = media.strip().lower() == "application/json"
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            ok = False
    if not ok:
        shown = text.escape((raw or b"none").decode("latin-1")[:80])
        raise ApiError(415, f"POST bodies must be Content-Type: application/json (got {shown})")
