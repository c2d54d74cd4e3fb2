"""Schemathesis hooks for the engine's OpenAPI document (loaded by schemathesis.toml).

One rule of POST /v1/predict cannot be written in JSON Schema: a batch's `keys` holds one
entry per row (the document says so in words, the server refuses a mismatch with 422). So a
generated batch gets as many keys as rows: the shorter list is padded (keys with null, rows
with their last row), never cut, so a deliberately invalid element is never dropped and a
negative case stays negative.
"""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook.apply_to(method="POST", path="/v1/predict")
def map_case(context: Any, case: Any) -> Any:
    """Every phase (the coverage phase applies case hooks, not body hooks)."""
    case.body = one_key_per_row(case.body)
    return case


def one_key_per_row(body: Any) -> Any:
    if not isinstance(body, dict):
        return body
    rows, keys = body.get("rows"), body.get("keys")
    if not isinstance(rows, list) or not isinstance(keys, list) or not rows:
        return body
    if len(keys) < len(rows):
        return {**body, "keys": keys + [None] * (len(rows) - len(keys))}
    if len(rows) < len(keys):
        return {**body, "rows": rows + [rows[-1]] * (len(keys) - len(rows))}
    return body
