"""Text from outside: checked where it enters the engine, escaped where it leaves for a terminal.

Anything a client or a user names — prediction keys and ids, model lines, versions, test
names, notes, actors, file names — ends up in the store, in the engine's log and on an
operator's screen. Three kinds of character must never get that far:
- lone UTF-16 surrogates (U+D800–U+DFFF): legal in JSON (`"\\ud800"`), impossible to encode
  as UTF-8, so the store's writer fails on the row — one such key once cost a whole batch of
  other clients' acknowledged predictions;
- control characters (C0, DEL, C1) and the line and paragraph separators: a newline forges a
  second log line, `ESC[2J` clears the operator's terminal;
- bidirectional controls (U+202A–U+202E, U+2066–U+2069, LRM, RLM, ALM): text that reads
  differently from what it is ("Trojan Source", CVE-2021-42574).

`check` refuses them (and over-long text) at the edge with one line naming the field;
`escape` shows them as `\\x1b`, `\\u202e`… wherever text that was not checked — a file name
on disk, a row written before this check existed — is printed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from engine.core.errors import BeastError

# Lengths, in characters, of what people and clients choose.
MAX_KEY_CHARS = 1024  # a sticky routing key (a repository URL, a user id)
MAX_NAME_CHARS = 200  # a line, version, test or actor name as sent (names have their own rule)
MAX_NOTE_CHARS = 2000  # a history note
MAX_ID_CHARS = 64  # a prediction id as sent (valid ones are 32 hex digits)
MAX_PATH_CHARS = 4096

# One class: a single `search` is the whole check (~0.2 µs on a short key, so it costs the
# one-row predict path nothing measurable).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]"
)


# The bare search, for a hot path that cannot afford a call: None when the text is safe.
find_unsafe = _UNSAFE.search
# What may still be raw in `json.dumps(ensure_ascii=False)` output: it escapes only C0.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


class TextRefused(BeastError):
    """A text field holds characters or a length the engine does not accept (HTTP 422)."""

    http_status = 422


def problem(value: str, *, limit: int) -> str | None:
    """Why `value` cannot be accepted as a name, key or note; None when it can."""
    found = _UNSAFE.search(value)
    if found is not None:
        char = found.group()
        return f"{_describe(char)} at position {found.start()} is not allowed"
    if len(value) > limit:
        return f"is longer than {limit} characters"
    return None


def check(what: str, value: str, *, limit: int) -> str:
    """`value` itself, or TextRefused naming `what` and the first problem (one line)."""
    if not isinstance(value, str):  # a JSON number or list where text belongs
        raise TextRefused(f"{what}: must be text, not {type(value).__name__}")
    why = problem(value, limit=limit)
    if why is not None:
        raise TextRefused(f"{what}: {why}")
    return value


def check_optional(what: str, value: str | None, *, limit: int) -> str | None:
    """`check` for a field that may be absent."""
    return None if value is None else check(what, value, limit=limit)


def escape(text: str) -> str:
    """`text` with every unsafe character shown as an escape (`\\n`, `\\x1b`, `\\u202e`).

    Safe to print on one line of a terminal or a log; printable text comes back unchanged
    (the common case costs one regex search).
    """
    if _UNSAFE.search(text) is None:
        return text
    return _UNSAFE.sub(lambda m: _escape_char(m.group()), text)


def dumps(document: Any) -> str:
    """`document` as indented JSON that is safe on a terminal and still the same JSON.

    `ensure_ascii=False` keeps names readable but leaves bidi controls, C1 controls, line
    separators and lone surrogates raw; each is written as its `\\u` escape (4 hex digits),
    which a JSON reader turns back into the same character (nothing is lost).
    """
    raw = json.dumps(document, indent=2, ensure_ascii=False)
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", raw)


def _escape_char(char: str) -> str:
    code = ord(char)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    if named is not None:
        return named
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _describe(char: str) -> str:
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        kind = "a lone UTF-16 surrogate"
    elif code in (0x061C, 0x200E, 0x200F) or 0x202A <= code <= 0x202E or 0x2066 <= code <= 0x2069:
        kind = "a bidirectional control"
    elif code in (0x2028, 0x2029):
        kind = "a line separator"
    else:
        kind = "a control character"
    return f"{kind} (U+{code:04X})"
