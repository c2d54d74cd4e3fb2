"""Names: model lines and versions, following the seed's convention.

`quality-predictor-v3-advanced.json` → line `quality-predictor`, version `v3-advanced`.
`--version` always wins; `--model` names the line.
"""

from __future__ import annotations

import re
from pathlib import Path

from engine.core import text
from engine.core.errors import BeastError

# Also the `pattern` of every name in the HTTP API's OpenAPI document (engine.server.http.schema).
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$"
_NAME = re.compile(NAME_PATTERN)
_SPLIT = re.compile(r"^(?P<line>.+?)[-_](?P<version>v\d[A-Za-z0-9._+-]*)$")
_BARE_VERSION = re.compile(r"^v\d[A-Za-z0-9._+-]*$")
ALIAS_PREFIX = "ab-winner-"


def check_name(kind: str, value: str) -> str:
    """A version, line or test name: 1–100 of letters, digits and `._+-`, starting alnum.

    `fullmatch`, not `match`: the pattern's `$` also matches before a final newline, which
    once let `--version $'v5\\n'` through.
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        shown = text.escape(str(value)[:120])
        raise BeastError(
            f"invalid {kind} name '{shown}': use 1–100 letters, digits, '.', '_', '+' or '-', "
            "starting with a letter or digit"
        )
    return value


def split_filename(path: Path) -> tuple[str | None, str | None]:
    """(line, version) derived from a model file's name; either may be None."""
    stem = path.name
    for suffix in (".json", ".ubj"):
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
    match = _SPLIT.match(stem)
    if match:
        return match["line"], match["version"]
    if _BARE_VERSION.match(stem):
        return None, stem
    return stem or None, None


def winner_alias(test: str) -> str:
    return f"{ALIAS_PREFIX}{test}"
