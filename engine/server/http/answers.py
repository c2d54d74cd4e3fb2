"""The HTTP API's answers: JSON bodies that always encode, and `{"error": "one line"}`."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from engine.core import text


def one_line(text_: str, limit: int = 500) -> str:
    """`text_` on one line, cut to `limit` characters."""
    line = " ".join(text_.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def dumps(document: Any) -> bytes:
    """Compact JSON; a lone surrogate (client text) is escaped rather than failing."""
    try:
        return json.dumps(
            document, ensure_ascii=False, allow_nan=False, separators=(",", ":")
        ).encode()
    except UnicodeEncodeError:  # a lone surrogate somewhere: escaped as JSON allows
        return json.dumps(document, allow_nan=False, separators=(",", ":")).encode()


def json_response(
    document: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A JSON answer."""
    return Response(dumps(document), status, headers=headers, media_type="application/json")


def error_response(
    status: int,
    message: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """`{"error": "one line"}`: whatever client text the message quotes is escaped."""
    return json_response(
        {"error": one_line(text.escape(message)), **(extra or {})}, status, headers
    )
