"""engine.server.http.schema: each body's validation and its JSON Schema are one declaration.

The property: for any JSON document, `Body.parse` accepts it exactly when a JSON Schema
validator (jsonschema-rs, the one schemathesis uses) accepts it against the body's component of
/openapi.json — so the document can say neither more nor less than the server does. Features
are checked by engine.serving.features when a row is routed; the same property holds between
`features.row` and `features_schema`. The text pattern of the document is held to
`engine.core.text` over every code point.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from typing import Any

import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core import text
from engine.server.http.schema import (
    BODIES,
    DEPLOY,
    FEEDBACK,
    OPERATIONS,
    PREDICT,
    PREDICT_BATCH,
    SAFE_TEXT,
    ApiError,
    Body,
    Context,
    features_schema,
    openapi_document,
    parse_json,
)
from engine.serving import features

NAMES = ("coverage", "complexity", "lint_density", "duplication", "churn")
CTX = Context(lines={"quality-predictor": features.Schema(NAMES)}, max_rows=50)


def validator(body: Body, ctx: Context | None = None) -> Any:
    """A JSON Schema validator of `body`'s component in the document for `ctx`."""
    if ctx is None:
        return _seed_validator(body)
    document = openapi_document(ctx)
    schema = {"$ref": f"#/components/schemas/{body.name}", "components": document["components"]}
    return jsonschema_rs.validator_for(schema)


@functools.cache
def _seed_validator(body: Body) -> Any:
    return validator(body, CTX)


def parses(body: Body, document: Any) -> bool:
    try:
        body.parse(document)
    except ApiError as exc:
        assert exc.status == 422 and "\n" not in exc.message
        return False
    return True


# Values near every rule: names and not-names, unsafe text, long text, numbers at the bounds.
TEXTS = st.one_of(
    st.sampled_from(
        ["", "v1.0", "ab-v2", "a b", "-x", "x" * 100, "x" * 101, "ü", "a\nb", "\x1b[2J", "\u202e"]
        + ["k" * n for n in (64, 65, 200, 201, 1024, 1025, 2000, 2001)]
    ),
    st.text(max_size=30),
)
NUMBERS = st.one_of(
    st.sampled_from([0, 1, 0.5, 1.5, 5.25, 5.125, 99, 99.01, 100, 101, -1, 7.0, 1e30, 2**70]),
    st.integers(-5, 200),
    st.floats(allow_nan=False, allow_infinity=False),
)
SCALARS = st.one_of(st.none(), st.booleans(), TEXTS, NUMBERS)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)
    ),
    max_leaves=6,
)


VALID_ROWS = st.one_of(
    st.fixed_dictionaries(dict.fromkeys(NAMES, st.floats(-1e6, 1e6))),
    st.lists(st.integers(-100, 100), min_size=5, max_size=5),
)


def value_of(name: str) -> st.SearchStrategy[Any]:
    """Rows are checked by engine.serving.features when routed (their own test, below):
    here valid."""
    if name == "features":
        return st.one_of(VALID_ROWS, st.none())
    if name == "rows":
        return st.one_of(st.lists(VALID_ROWS, max_size=3), SCALARS)
    return VALUES


def documents(body: Body) -> st.SearchStrategy[dict[str, Any]]:
    """Objects of the body's fields (and a stranger), each a value near some rule or any."""
    names = [name for name, _ in body.fields] + ["unknown"]
    return st.lists(st.sampled_from(names), unique=True, max_size=len(names)).flatmap(
        lambda keys: st.fixed_dictionaries({k: value_of(k) for k in keys})
    )


@pytest.mark.parametrize("body", BODIES, ids=[b.name for b in BODIES])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_parse_accepts_exactly_what_the_document_says(body: Body, data: st.DataObject) -> None:
    document = data.draw(documents(body))
    assert parses(body, document) == validator(body).is_valid(document), document


def test_a_batch_of_feedback_agrees_item_by_item() -> None:
    batch = next(b for b in BODIES if b.name == "BatchFeedbackRequest")
    check = validator(batch)
    for items in (
        [],
        [{"prediction_id": "x", "actual": 5}],
        [{"prediction_id": "x", "actual": 1e30}],  # a batch answers out-of-range per item
        [{"prediction_id": "x", "actual": "5"}],
        [{"prediction_id": "x"}],
        ["x"],
        [{"prediction_id": "x", "actual": 5, "more": 1}],
    ):
        assert parses(batch, {"items": items}) == check.is_valid({"items": items}), items


ROWS = st.one_of(
    st.dictionaries(st.sampled_from([*NAMES, "typo"]), NUMBERS, min_size=4, max_size=6),
    st.fixed_dictionaries(dict.fromkeys(NAMES, NUMBERS)),
    st.lists(NUMBERS, min_size=4, max_size=6),
    st.lists(SCALARS, min_size=5, max_size=5),
    st.sampled_from(
        [
            [3.4028234663852886e38, 0, 0, 0, 0],  # float32's largest: fits
            [3.4028235677973366e38, 0, 0, 0, 0],  # rounds to infinity as float32
            [3.40282356e38, 0, 0, 0, 0],  # past float32's largest, still rounds to it
            [True, 0, 0, 0, 0],
            "1,2,3,4,5",
        ]
    ),
)


@settings(max_examples=500, deadline=None)
@given(row=ROWS)
def test_a_row_is_accepted_exactly_as_the_document_says(row: Any) -> None:
    schema = features.Schema(NAMES)
    check = jsonschema_rs.validator_for(features_schema(schema))
    try:
        features.row(schema, row)
        accepted = True
    except features.InvalidFeatures:
        accepted = False
    assert accepted == check.is_valid(row), row


def test_the_text_pattern_is_engine_text_over_every_code_point() -> None:
    pattern = re.compile(SAFE_TEXT)
    check = jsonschema_rs.validator_for({"type": "string", "pattern": SAFE_TEXT})
    for code in range(sys.maxunicode + 1):
        if 0xD800 <= code <= 0xDFFF:
            continue  # lone surrogates: not text a pattern can see; refused by text.problem
        char = chr(code)
        safe = text.problem(char, limit=1) is None
        assert (pattern.fullmatch(char) is not None) == safe, hex(code)
        if code < 0x3000 or code % 97 == 0:  # the validator's own regex engine, sampled
            assert check.is_valid(char) == safe, hex(code)


def test_lone_surrogates_are_refused_where_the_pattern_cannot_say_it() -> None:
    with pytest.raises(ApiError, match="surrogate"):
        PREDICT.parse({"features": [0] * 5, "key": "\ud800"})
    with pytest.raises(ApiError, match="surrogate"):
        FEEDBACK.parse({"prediction_id": "\udfff", "actual": 5})


def test_duplicate_keys_are_refused_at_any_depth() -> None:
    for raw in (b'{"a": 1, "a": 2}', b'{"x": [{"b": 1, "b": 1}]}', b'{"f": {"c": 1, "c": 2}}'):
        with pytest.raises(ApiError, match="duplicate") as caught:
            parse_json(raw)
        assert caught.value.status == 422
    assert parse_json(b'{"a": {"a": 1}}') == {"a": {"a": 1}}  # the same key at two levels


def test_deploy_rules_between_fields_are_in_the_document() -> None:
    check = validator(DEPLOY)
    for body, ok in (
        ({"version": "v2.0"}, True),
        ({"path": "quality-predictor-v2.0.json"}, True),
        ({}, False),
        ({"version": None, "path": None}, False),
        ({"version": "v2.0", "ab_test": "t", "traffic": 10.25}, True),
        ({"version": "v2.0", "ab_test": "t"}, False),
        ({"version": "v2.0", "traffic": 10}, False),
        ({"version": "v2.0", "ab_test": "t", "traffic": 10.125}, False),
        ({"version": "v2.0", "ab_test": "t", "traffic": 100}, False),
        ({"version": "v2.0", "expect_revision": 3.0}, True),
        ({"version": "v2.0", "expect_revision": -1}, False),
    ):
        assert parses(DEPLOY, body) is ok, body
        assert check.is_valid(body) is ok, body


def test_the_document_follows_the_workspace() -> None:
    ctx = Context(
        lines={"q": features.Schema(("a", "b"))},
        label_range=(-5.0, 1000.0),
        token_everywhere=True,
    )
    doc = openapi_document(ctx)
    row = doc["components"]["schemas"]["PredictRequest"]["properties"]["features"]["oneOf"][0]
    assert row["required"] == ["a", "b"] and row["additionalProperties"] is False
    actual = doc["components"]["schemas"]["FeedbackRequest"]["properties"]["actual"]
    assert (actual["minimum"], actual["maximum"]) == (-5, 1000)
    for op in OPERATIONS:
        operation = doc["paths"][op.path][op.method.lower()]
        assert operation["security"] == [{"bearer": []}]
        assert {"401", "403", "421"} <= set(operation["responses"])
        if op.method == "POST":
            assert {"413", "415", "422"} <= set(operation["responses"])
    loopback = openapi_document(CTX)
    assert loopback["paths"]["/v1/predict"]["post"]["security"] == []
    assert loopback["paths"]["/v1/abort"]["post"]["security"] == [{"bearer": []}]
    json.dumps(doc, allow_nan=False)  # a plain JSON document


def test_with_several_lines_the_model_names_the_rows_schema() -> None:
    ctx = Context(
        lines={"quality-predictor": features.Schema(NAMES), "churn": features.Schema(("a", "b"))}
    )
    predict, batch = validator(PREDICT, ctx), validator(PREDICT_BATCH, ctx)
    row = dict.fromkeys(NAMES, 0.5)
    assert predict.is_valid({"features": row, "model": "quality-predictor"})
    assert predict.is_valid({"features": [1, 2], "model": "churn"})
    assert not predict.is_valid({"features": row})  # which line? the server says 422 too
    assert not predict.is_valid({"features": row, "model": "churn"})
    assert batch.is_valid({"rows": [[1, 2], {"a": 1, "b": 2}], "model": "churn"})
    assert not batch.is_valid({"rows": [[1, 2], row], "model": "churn"})
    one = validator(PREDICT)  # one line: model may be left out
    assert one.is_valid({"features": row}) and one.is_valid({"features": row, "model": "x"})
