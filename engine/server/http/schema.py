"""The HTTP API's request bodies, declared once: each validates requests and writes its
part of the OpenAPI document, so the document cannot say less or more than the server does.

A body is a frozen `Body`: its fields (a `Spec` each: text, name, number, list…), which of
them are required, and the rules between fields. `Body.parse` checks a decoded JSON object
against it (422 naming the field); `Body.json_schema` is the same declaration as JSON Schema.
What depends on the workspace — the deployed lines' feature names, the label range, the row
cap, which routes need the token — comes in a `Context`, so /openapi.json describes the engine
as it is configured and deployed now (a test holds every route of the app to the document).

Decisions:
- Plain frozen dataclasses, not pydantic or msgspec: features are validated against the line's
  own schema by engine.serving.features (which no static model can describe), a one-row predict body
  is three fields, and parsing it costs ~0.9 µs (timeit; the door ~0.7 µs, duplicate-key
  detection ~3 µs for a 20-feature body) against ~350 µs of CPU per one-row request; no new
  dependency.
- `null` is the same as an absent optional field (clients serialise None), in both places.
- The one rule JSON Schema cannot state — a batch's `keys` has one entry per row — is checked
  by the handler and said in the field's description (schemathesis.toml's hook knows it).
- tests/test_http_schema.py holds `parse` to a JSON Schema validator over generated documents,
  and tests/test_http_contract.py runs schemathesis against a real engine.
- Strict JSON before any of this: duplicate keys, `NaN`/`Infinity` literals and deep nesting
  are refused by `parse_json`.
"""

from __future__ import annotations

import abc
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.core import text
from engine.core.naming import NAME_PATTERN
from engine.serving import features

# -- errors and strict JSON -------------------------------------------------------------------


class ApiError(Exception):
    """A refusal with its HTTP status; the message is one line for the client."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.extra = extra or {}


class _JsonConstant(Exception):
    """`NaN`, `Infinity` or `-Infinity` in a body (json.loads accepts them by default)."""


class _DuplicateKey(Exception):
    """The same key twice in one JSON object (json.loads keeps the last one silently)."""


def _refuse_constant(name: str) -> Any:
    raise _JsonConstant(name)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return document


def parse_json(body: bytes) -> Any:
    """Strict JSON: no duplicate keys, no NaN/Infinity literals, bounded nesting; else a
    4xx ApiError."""
    if not body.strip():
        raise ApiError(400, "empty body: send a JSON object")
    try:
        return json.loads(body, parse_constant=_refuse_constant, object_pairs_hook=_object)
    except _JsonConstant as exc:
        raise ApiError(
            422, f"JSON literal {exc.args[0]} is not allowed: send finite numbers"
        ) from None
    except _DuplicateKey as exc:
        raise ApiError(
            422, f"duplicate key '{text.escape(exc.args[0])[:100]}' in a JSON object"
        ) from None
    except RecursionError:
        raise ApiError(400, "body is not acceptable JSON: nested too deeply") from None
    except UnicodeDecodeError:
        raise ApiError(400, "body is not UTF-8 encoded JSON") from None
    except ValueError as exc:  # JSONDecodeError, and ints past Python's digit limit
        raise ApiError(400, f"body is not valid JSON: {str(exc)[:300]}") from None


def kind(value: Any) -> str:
    """How a JSON value is named in a refusal."""
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        str: "a string",
        list: "a list",
        dict: "an object",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)


# -- what the document depends on ---------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    """What the server checks that depends on the workspace, as the document must say it."""

    lines: Mapping[str, features.Schema] = field(default_factory=dict)  # deployed lines
    label_range: tuple[float, float] = (0.0, 100.0)  # the widest over the deployed lines
    binary: bool = False  # a deployed line is binary: false/true are labels too
    max_rows: int = 10_000
    max_body_bytes: int = 1 << 20
    token_everywhere: bool = False


# Every character `engine.core.text` refuses, as a JSON Schema (ECMA-262) pattern. Lone surrogates
# cannot be written in a pattern over Unicode text; they are refused all the same (a test holds
# this class to `text.problem` over every other code point).
SAFE_TEXT = (
    "^[^\\u0000-\\u001f\\u007f-\\u009f\\u061c\\u200e\\u200f\\u2028-\\u202e\\u2066-\\u2069]*$"
)
_NAME = re.compile(NAME_PATTERN)
NAME_RULE = "1–100 letters, digits, '.', '_', '+' or '-', starting with a letter or digit"


def _nullable(schema: dict[str, Any], nullable: bool) -> dict[str, Any]:
    if nullable:
        return {**schema, "type": [schema["type"], "null"]}
    return schema


# -- field specs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec(abc.ABC):
    """One field: `check` a value that is not null, and say the same as JSON Schema."""

    description: str = ""

    @abc.abstractmethod
    def check(self, value: Any, where: str) -> Any:
        """The value as the handler uses it, or ApiError naming `where`."""

    @abc.abstractmethod
    def schema(self, ctx: Context) -> dict[str, Any]:
        """The same rule as JSON Schema, for the OpenAPI document."""

    def described(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {**schema, "description": self.description} if self.description else schema


@dataclass(frozen=True)
class Text(Spec):
    """Text checked by `engine.core.text` (no controls, bidi or lone surrogates; a length cap)."""

    limit: int = text.MAX_NAME_CHARS

    def check(self, value: Any, where: str) -> str:
        if type(value) is not str:
            raise ApiError(422, f"{where} must be a string, got {kind(value)}")
        why = text.problem(value, limit=self.limit)
        if why is not None:
            raise ApiError(422, f"{where}: {why}")
        return value

    def schema(self, ctx: Context) -> dict[str, Any]:
        return self.described({"type": "string", "maxLength": self.limit, "pattern": SAFE_TEXT})


@dataclass(frozen=True)
class Name(Spec):
    """A model line, version or test name (engine.core.naming's rule)."""

    def check(self, value: Any, where: str) -> str:
        if type(value) is not str:
            raise ApiError(422, f"{where} must be a string, got {kind(value)}")
        if _NAME.fullmatch(value) is None:
            shown = text.escape(value[:60])
            raise ApiError(422, f"{where} '{shown}' is not a name: use {NAME_RULE}")
        return value

    def schema(self, ctx: Context) -> dict[str, Any]:
        return self.described({"type": "string", "pattern": NAME_PATTERN})


@dataclass(frozen=True)
class Number(Spec):
    """A finite number within [minimum, maximum], with at most `decimals` decimals."""

    minimum: float | None = None
    maximum: float | None = None
    decimals: int | None = None

    def check(self, value: Any, where: str) -> float:
        if type(value) is bool or not isinstance(value, int | float):
            raise ApiError(422, f"{where} must be a number, got {kind(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ApiError(422, f"{where} must be finite")
        if (self.minimum is not None and number < self.minimum) or (
            self.maximum is not None and number > self.maximum
        ):
            raise ApiError(422, f"{where} must be from {self.minimum:g} to {self.maximum:g}")
        if self.decimals is not None:
            scaled = number * 10**self.decimals
            if abs(round(scaled) - scaled) > 1e-6:  # float noise, as deployments.traffic_bp
                raise ApiError(422, f"{where} has more than {self.decimals} decimals")
        return number

    def schema(self, ctx: Context) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "number"}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.decimals is not None:
            out["multipleOf"] = 10.0**-self.decimals
        return self.described(out)


@dataclass(frozen=True)
class Actual(Spec):
    """Feedback's actual value: a finite number, or false/true (a binary line's labels); its
    line's contract (a regression line's label range, a binary line's 0/1) is checked by
    engine.monitoring.feedback once the prediction's line is known. Alone, a value it refuses
    is refused (422), and the document gives the widest range; in a batch it is that item's
    answer."""

    bounded: bool = True

    def check(self, value: Any, where: str) -> float | bool:
        if isinstance(value, bool):
            return value
        return Number().check(value, where)

    def schema(self, ctx: Context) -> dict[str, Any]:
        kinds: Any = ["number", "boolean"] if ctx.binary else "number"
        if not self.bounded:
            return self.described({"type": kinds})
        lo, hi = ctx.label_range
        return self.described({"type": kinds, "minimum": _num(lo), "maximum": _num(hi)})


@dataclass(frozen=True)
class Integer(Spec):
    minimum: int | None = None

    def check(self, value: Any, where: str) -> int:
        if type(value) is float and value.is_integer():
            value = int(value)  # 7.0 is an integer to JSON Schema, as to JSON
        if type(value) is not int:
            raise ApiError(422, f"{where} must be an integer, got {kind(value)}")
        if self.minimum is not None and value < self.minimum:
            raise ApiError(422, f"{where} must be at least {self.minimum}")
        return value

    def schema(self, ctx: Context) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "integer"}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        return self.described(out)


@dataclass(frozen=True)
class Flag(Spec):
    def check(self, value: Any, where: str) -> bool:
        if type(value) is not bool:
            raise ApiError(422, f"{where} must be true or false, got {kind(value)}")
        return value

    def schema(self, ctx: Context) -> dict[str, Any]:
        return self.described({"type": "boolean"})


@dataclass(frozen=True)
class Features(Spec):
    """One row: checked by engine.serving.features against the line's schema when it is routed (the
    line is known only then); the document gives each deployed line's names and bounds."""

    def check(self, value: Any, where: str) -> Any:
        return value

    def schema(self, ctx: Context) -> dict[str, Any]:
        rows = [features_schema(s) for s in ctx.lines.values()]
        if len(rows) == 1:
            return self.described(rows[0])
        return self.described({"oneOf": rows} if rows else _ANY_ROW)


@dataclass(frozen=True)
class ListOf(Spec):
    """A list of `item`s, `min_items` to the context's row cap (a longer one is a 422)."""

    item: Spec = field(default_factory=Features)
    min_items: int = 0
    nullable_items: bool = False

    def check(self, value: Any, where: str) -> list[Any]:
        if type(value) is not list:
            raise ApiError(422, f"{where} must be a list, got {kind(value)}")
        if len(value) < self.min_items:
            raise ApiError(422, f"{where} is empty: send at least {self.min_items}")
        item, name = self.item, where.rpartition(": ")[2]
        if type(item) is Features:  # rows are checked by engine.serving.features when routed
            return value
        return [
            None if element is None and self.nullable_items else item.check(element, f"{name}[{i}]")
            for i, element in enumerate(value)
        ]

    def schema(self, ctx: Context) -> dict[str, Any]:
        items = (
            _nullable(self.item.schema(ctx), self.nullable_items)
            if self.nullable_items
            else (self.item.schema(ctx))
        )
        out: dict[str, Any] = {"type": "array", "items": items, "maxItems": ctx.max_rows}
        if self.min_items:
            out["minItems"] = self.min_items
        return self.described(out)


@dataclass(frozen=True)
class Nested(Spec):
    """An object declared by another Body (a batch's feedback item)."""

    body: Body | None = None

    def check(self, value: Any, where: str) -> tuple[Any, ...]:
        assert self.body is not None
        return self.body.parse(value, where)

    def schema(self, ctx: Context) -> dict[str, Any]:
        assert self.body is not None
        return ref(self.body.name)


_ANY_ROW: dict[str, Any] = {
    "oneOf": [
        {"type": "object", "additionalProperties": {"type": "number"}},
        {"type": "array", "items": {"type": "number"}},
    ]
}


def _num(value: float) -> float | int:
    return int(value) if value.is_integer() else value


def features_schema(schema: features.Schema) -> dict[str, Any]:
    """One row of a line, as engine.serving.features checks it: by name (every one, nothing else) or
    as a list in the model's order; numbers that stay finite as 32-bit floats."""
    value = {
        "type": "number",
        "exclusiveMinimum": -features.FLOAT32_EDGE,
        "exclusiveMaximum": features.FLOAT32_EDGE,
    }
    return {
        "oneOf": [
            {
                "type": "object",
                "properties": dict.fromkeys(schema.names, value),
                "required": list(schema.names),
                "additionalProperties": False,
            },
            {
                "type": "array",
                "items": value,
                "minItems": schema.width,
                "maxItems": schema.width,
            },
        ]
    }


# -- rules between fields ----------------------------------------------------------------------


@dataclass(frozen=True)
class Requires:
    """When `field` is given (not null), `needs` must be given too."""

    given: str
    needs: str

    def check(self, values: dict[str, Any], what: str) -> None:
        if values[self.given] is not None and values[self.needs] is None:
            raise ApiError(422, f"{what}: {self.given} needs {self.needs}")

    def schema(self, body: Body, ctx: Context) -> dict[str, Any]:
        return {
            "if": _present(body, self.given, ctx),
            "then": _present(body, self.needs, ctx),
        }


@dataclass(frozen=True)
class AnyOf:
    """At least one of `fields` is given."""

    fields: tuple[str, ...]

    def check(self, values: dict[str, Any], what: str) -> None:
        if all(values[f] is None for f in self.fields):
            raise ApiError(422, f"{what}: {' or '.join(self.fields)} is required")

    def schema(self, body: Body, ctx: Context) -> dict[str, Any]:
        return {"anyOf": [_present(body, f, ctx) for f in self.fields]}


@dataclass(frozen=True)
class ByLine:
    """With several lines deployed, `model` is required and names the line whose feature
    schema `field` follows (one row, or a list of rows). The router checks it when it routes
    the row; the document states it as one alternative per line."""

    field: str
    rows: bool = False

    def check(self, values: dict[str, Any], what: str) -> None:
        return None  # engine.serving.features, against the named line's schema, once routed

    def schema(self, body: Body, ctx: Context) -> dict[str, Any]:
        if len(ctx.lines) < 2:  # one line: `model` may be left out
            return {}
        alternatives = []
        for line, line_schema in ctx.lines.items():
            row = features_schema(line_schema)
            value = {"type": "array", "items": row, "minItems": 1} if self.rows else row
            alternatives.append(
                {
                    "required": ["model", self.field],
                    "properties": {"model": {"const": line}, self.field: value},
                }
            )
        return {"oneOf": alternatives}


def _present(body: Body, name: str, ctx: Context) -> dict[str, Any]:
    return {"required": [name], "properties": {name: body.spec(name).schema(ctx)}}


Rule = Requires | AnyOf | ByLine


# -- bodies -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Body:
    """A JSON object body: its fields in order, the required ones, the rules between them."""

    name: str  # the component's name in the document
    what: str  # how refusals name the body
    fields: tuple[tuple[str, Spec], ...]
    required: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    description: str = ""
    hints: tuple[tuple[str, str], ...] = ()  # a required field's hint when it is missing
    _specs: dict[str, Spec] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_specs", dict(self.fields))

    def spec(self, name: str) -> Spec:
        return self._specs[name]

    def parse(self, document: Any, what: str | None = None) -> tuple[Any, ...]:
        """The fields' values in declared order (None where absent or null); ApiError 422
        naming the first field at fault."""
        where = what or self.what
        if type(document) is not dict:
            raise ApiError(422, f"{where} must be a JSON object, got {kind(document)}")
        specs = self._specs
        values = dict.fromkeys(specs)
        for key, value in document.items():
            spec = specs.get(key)
            if spec is None:
                shown = text.escape(key[:40])
                raise ApiError(422, f"{where}: unknown field '{shown}' (known: {', '.join(specs)})")
            if value is not None:
                values[key] = spec.check(value, f"{where}: {key}")
        for name in self.required:
            if values[name] is None:
                hint = dict(self.hints).get(name, "")
                raise ApiError(422, f"{where}: {name} is required{hint}")
        for rule in self.rules:
            rule.check(values, where)
        return tuple(values.values())

    def json_schema(self, ctx: Context) -> dict[str, Any]:
        properties = {
            name: spec.schema(ctx) if name in self.required else _nullable_spec(spec, ctx)
            for name, spec in self.fields
        }
        out: dict[str, Any] = {
            "type": "object",
            "properties": properties,
            "additionalProperties": False,
        }
        if self.required:
            out["required"] = list(self.required)
        rules = [schema for rule in self.rules if (schema := rule.schema(self, ctx))]
        if rules:
            out["allOf"] = rules
        if self.description:
            out["description"] = self.description
        return out


def _nullable_spec(spec: Spec, ctx: Context) -> dict[str, Any]:
    schema = spec.schema(ctx)
    if "type" in schema:
        return _nullable(schema, True)
    return {"anyOf": [schema, {"type": "null"}]}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


KEY = Text("Sticky id: the same key lands on the same arm of a test.", limit=text.MAX_KEY_CHARS)
MODEL = Name("Model line (required when several are deployed).")
NOTE = Text("Why (kept in history).", limit=text.MAX_NOTE_CHARS)
ACTOR = Text("Who, for the history row.", limit=100)
EXPECT: tuple[tuple[str, Spec], ...] = (
    ("expect", Name("Refuse (409) unless production is still this version.")),
    ("expect_revision", Integer("Refuse (409) unless the line's revision is still this.", 0)),
    ("note", NOTE),
    ("actor", ACTOR),
)

PREDICT = Body(
    "PredictRequest",
    "predict",
    (
        ("features", Features("By name (any order) or a list in the model's order.")),
        ("key", KEY),
        ("model", MODEL),
    ),
    required=("features",),
    rules=(ByLine("features"),),
    hints=(
        (
            "features",
            " (an object of name → number, or a list of numbers in the model's order; or rows "
            "for a batch)",
        ),
    ),
)
PREDICT_BATCH = Body(
    "BatchPredictRequest",
    "predict",
    (
        ("rows", ListOf("Rows, each as `features`.", min_items=1)),
        (
            "keys",
            ListOf(
                "One key (or null) per row, in the rows' order: as many keys as rows.",
                item=KEY,
                nullable_items=True,
            ),
        ),
        ("model", MODEL),
    ),
    required=("rows",),
    rules=(ByLine("rows", rows=True),),
)
FEEDBACK = Body(
    "FeedbackRequest",
    "feedback",
    (
        ("prediction_id", Text("The id a prediction answered.", limit=text.MAX_ID_CHARS)),
        (
            "actual",
            Actual(
                "The true value: within the line's label_range; a binary line's 0 or 1 "
                "(false/true)."
            ),
        ),
    ),
    required=("prediction_id", "actual"),
)
FEEDBACK_ITEM = Body(
    "FeedbackItem",
    "feedback",
    (
        FEEDBACK.fields[0],
        (
            "actual",
            Actual(
                "The true value; outside the line's label_range the item is answered invalid.",
                bounded=False,
            ),
        ),
    ),
    required=("prediction_id", "actual"),
)
FEEDBACK_BATCH = Body(
    "BatchFeedbackRequest",
    "feedback",
    (("items", ListOf("One feedback each, answered each.", item=Nested(body=FEEDBACK_ITEM))),),
    required=("items",),
)
DEPLOY = Body(
    "DeployRequest",
    "deploy",
    (
        ("path", Text("A model file in the workspace's models/.", limit=text.MAX_PATH_CHARS)),
        ("version", Name("A registered version (or the name for the file at path).")),
        ("model", MODEL),
        ("traffic", Number("The candidate's share in percent (with ab_test).", 1, 99, 2)),
        ("ab_test", Name("Start this A/B test with the version as candidate.")),
        *EXPECT,
    ),
    rules=(
        AnyOf(("path", "version")),
        Requires("ab_test", "traffic"),
        Requires("traffic", "ab_test"),
    ),
)
ROLLBACK = Body(
    "RollbackRequest",
    "rollback",
    (
        ("version", Name("Roll back to this version (default: the previous production).")),
        ("model", MODEL),
        *EXPECT,
    ),
)
PROMOTE = Body(
    "PromoteRequest",
    "promote",
    (
        ("name", Name("The running A/B test.")),
        ("force", Flag("Promote whatever the verdict (recorded as forced).")),
        *EXPECT,
    ),
    required=("name",),
)
ABORT = Body(
    "AbortRequest", "abort", (("name", Name("The running A/B test.")), *EXPECT), required=("name",)
)
ACK = Body(
    "AckRequest",
    "alert acknowledgment",
    (("note", Text("Why (kept with the alert).", limit=text.MAX_NOTE_CHARS)), ("actor", ACTOR)),
)
ROLLOUT = Body(
    "RolloutRequest",
    "rollout",
    (("name", Name("The A/B test of a progressive rollout.")), ("note", NOTE), ("actor", ACTOR)),
    required=("name",),
)
BODIES = (
    PREDICT,
    PREDICT_BATCH,
    FEEDBACK,
    FEEDBACK_ITEM,
    FEEDBACK_BATCH,
    DEPLOY,
    ROLLBACK,
    PROMOTE,
    ABORT,
    ACK,
    ROLLOUT,
)


# -- the OpenAPI document ------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """One route: what it is called in metrics, its bodies and its answers."""

    path: str
    method: str
    name: str
    summary: str
    bodies: tuple[Body, ...] = ()
    ok: tuple[tuple[str, dict[str, Any], str], ...] = ()  # (status, schema, description)
    errors: tuple[int, ...] = ()
    mutation: bool = False
    description: str = ""
    parameters: tuple[dict[str, Any], ...] = ()
    media: str = "application/json"


def _one_of(*names: str) -> dict[str, Any]:
    return ref(names[0]) if len(names) == 1 else {"oneOf": [ref(n) for n in names]}


_CHANGE = ref("Change")
OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "/v1/predict",
        "POST",
        "predict",
        "Score one row (features) or a batch (rows), routed by the A/B split.",
        (PREDICT, PREDICT_BATCH),
        (
            ("200", _one_of("Prediction", "BatchPredictResponse"), "Scored and logged."),
            (
                "500",
                _one_of("Prediction", "BatchPredictResponse"),
                "The model failed: the prediction is logged with its error and prediction_id "
                "(score null); a batch lists every row.",
            ),
        ),
        (400, 404, 413, 415, 422, 503),
    ),
    Operation(
        "/v1/feedback",
        "POST",
        "feedback",
        "The actual value for a prediction (or a batch of them: items).",
        (FEEDBACK, FEEDBACK_BATCH),
        (
            (
                "200",
                _one_of("FeedbackResult", "BatchFeedbackResponse"),
                "Recorded or duplicate; a batch answers each item.",
            ),
            (
                "202",
                ref("FeedbackResult"),
                "Pending: the prediction is seconds old; matched when its row is written.",
            ),
        ),
        (400, 404, 409, 413, 415, 422, 503),
        description="Answers: recorded (200); duplicate, the same value again (200, "
        "idempotent); pending (202); unknown id (404); a different value for a labelled "
        "prediction (409, not replaced); outside the line's label_range (422). A batch is one "
        "transaction and answers 200 with a status per item.",
    ),
    Operation(
        "/v1/status",
        "GET",
        "status",
        "What serves (the `beast status --json` document).",
        ok=(("200", ref("Status"), "Status."),),
        errors=(503,),
    ),
    Operation(
        "/v1/monitor",
        "GET",
        "monitor",
        "Health, metrics, drift, alerts, verdicts (`beast monitor --json`).",
        ok=(("200", ref("Monitor"), "Report."),),
        errors=(404, 422, 503),
        parameters=(
            {
                "name": "window",
                "in": "query",
                "schema": {"type": "string", "enum": ["1h", "24h", "deploy"], "default": "1h"},
            },
            {"name": "model", "in": "query", "schema": {"type": "string", "pattern": NAME_PATTERN}},
        ),
    ),
    Operation(
        "/healthz",
        "GET",
        "healthz",
        "Readiness, and the prediction log writer's counters.",
        ok=(
            ("200", ref("Health"), "Serving: ok, or degraded (serving, with a problem)."),
            (
                "503",
                ref("Health"),
                "Not serving: starting, or unready (nothing deployed, the "
                "state store unusable), with the reason.",
            ),
        ),
    ),
    Operation(
        "/metrics",
        "GET",
        "metrics",
        "Prometheus text exposition.",
        ok=(("200", {"type": "string"}, "Metrics."),),
        media="text/plain",
    ),
    Operation(
        "/openapi.json",
        "GET",
        "openapi",
        "This document.",
        ok=(("200", {"type": "object"}, "OpenAPI 3.1."),),
    ),
    Operation(
        "/v1/deploy",
        "POST",
        "deploy",
        "Deploy: production at 100%, or an A/B candidate.",
        (DEPLOY,),
        mutation=True,
    ),
    Operation(
        "/v1/rollback",
        "POST",
        "rollback",
        "Roll back to the previous production or a version.",
        (ROLLBACK,),
        mutation=True,
    ),
    Operation(
        "/v1/promote",
        "POST",
        "promote",
        "Promote a test's candidate to production.",
        (PROMOTE,),
        mutation=True,
    ),
    Operation(
        "/v1/abort", "POST", "abort", "End a test: candidate to 0%.", (ABORT,), mutation=True
    ),
    Operation(
        "/v1/alerts/{id}/ack",
        "POST",
        "ack",
        "Acknowledge an alert (an acknowledged srm alert no longer blocks promotion).",
        (ACK,),
        ok=(("200", ref("Alert"), "The alert as stored, with who acknowledged it and when."),),
        mutation=True,
        parameters=(
            {
                "name": "id",
                "in": "path",
                "required": True,
                "schema": {"type": "integer", "minimum": 1},
            },
        ),
    ),
    *(
        Operation(
            f"/v1/rollout/{action}",
            "POST",
            f"rollout_{action}",
            what,
            (ROLLOUT,),
            mutation=True,
        )
        for action, what in (
            ("pause", "Hold a progressive rollout at its share."),
            ("resume", "Resume a paused rollout: its step begins again."),
            ("abort", "End a rollout and its test: candidate to 0%."),
        )
    ),
)
_MUTATION_OK = (("200", _CHANGE, "Done (or nothing to do: changed=false)."),)
_MUTATION_ERRORS = (400, 404, 409, 413, 415, 422, 503)

ERROR_MEANINGS = {
    400: "Malformed request: not JSON, an empty body, a bad Content-Length.",
    401: "Missing or wrong bearer token.",
    403: "A cross-site Origin (or Sec-Fetch-Site), or, for a mutation, no API token is "
    "configured so mutations are off.",
    404: "Unknown thing: prediction id, model line, test, version.",
    409: "Refused by the current state: conflicting feedback, the state changed since you "
    "looked, nothing to roll back to, a verdict that does not allow a promotion, a model file "
    "missing or rejected.",
    413: "Body over the byte limit.",
    415: "A POST body that is not Content-Type: application/json (charset utf-8 if given).",
    421: "A Host the engine does not serve (localhost names, the address it listens on, "
    "[api] allowed_hosts, --allowed-host).",
    422: "Not what the schema says: a field of the wrong type, length or characters, an "
    "unknown or duplicate key, NaN/Infinity literals, features that do not fit the line, "
    "feedback outside the line's label_range, too many rows or items.",
    503: "Nothing deployed, the engine starting or stopping, or the state busy or unusable.",
}


def _json_body(schema: dict[str, Any], description: str, media: str) -> dict[str, Any]:
    return {"description": description, "content": {media: {"schema": schema}}}


def _operation(op: Operation, ctx: Context) -> dict[str, Any]:
    secured = op.mutation or ctx.token_everywhere
    errors = set(op.errors) | {403, 421}
    if op.mutation:
        errors |= set(_MUTATION_ERRORS)
    if secured:
        errors.add(401)
    responses: dict[str, Any] = {
        status: _json_body(schema, description, op.media)
        for status, schema, description in (op.ok or _MUTATION_OK)
    }
    for code in sorted(errors):
        responses[str(code)] = _json_body(ref("Error"), ERROR_MEANINGS[code], "application/json")
    out: dict[str, Any] = {"summary": op.summary, "operationId": op.name, "responses": responses}
    if op.description:
        out["description"] = op.description
    if op.parameters:
        out["parameters"] = list(op.parameters)
    if op.bodies:
        out["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": _one_of(*(b.name for b in op.bodies))}},
        }
    out["security"] = [{"bearer": []}] if secured else []
    return out


_ALERT_TEXT = ("line", "version", "metric", "severity", "message", "first_seen", "last_seen")
_ALERT_OPTIONAL = ("resolved_at", "acknowledged_at", "acknowledged_by", "acknowledged_note")


def _response_schemas() -> dict[str, Any]:
    string = {"type": "string"}
    optional = {"type": ["string", "null"]}
    statuses = ["recorded", "duplicate", "pending", "not found", "conflict", "invalid"]
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {**string, "description": "One line a person can act on."}},
        },
        "Prediction": {
            "type": "object",
            "required": ["prediction_id", "score", "version", "line", "arm", "latency_ms"],
            "additionalProperties": False,
            "properties": {
                "prediction_id": string,
                "score": {"type": ["number", "null"]},
                "version": string,
                "line": string,
                "experiment": optional,
                "arm": {"enum": ["production", "candidate"]},
                "latency_ms": {"type": "number"},
                "error": {**optional, "description": "Set when the model failed; score null."},
            },
        },
        "BatchPredictResponse": {
            "type": "object",
            "required": ["predictions"],
            "additionalProperties": False,
            "properties": {
                "predictions": {"type": "array", "items": ref("Prediction")},
                "error": {**string, "description": "Present (with status 500) if rows failed."},
            },
        },
        "FeedbackResult": {
            "type": "object",
            "required": ["prediction_id", "status"],
            "additionalProperties": False,
            "properties": {
                "prediction_id": optional,
                "status": {"enum": statuses},
                "code": {"type": "integer", "description": "The HTTP status it would have alone."},
                "error": string,
            },
        },
        "BatchFeedbackResponse": {
            "type": "object",
            "required": ["results", "counts"],
            "additionalProperties": False,
            "properties": {
                "results": {"type": "array", "items": ref("FeedbackResult")},
                "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
            },
        },
        "Status": {
            "type": "object",
            "description": "The `beast status --json` document.",
            "properties": {
                "deployments": {"type": "array", "items": {"type": "object"}},
                "experiments": {"type": "array", "items": {"type": "object"}},
                "lines": {"type": "array", "items": string},
                "revisions": {"type": "object"},
                "health": {"enum": ["healthy", "warning", "critical", "no data"]},
                "shadows": {"type": "array", "items": {"type": "object"}},
            },
        },
        "Monitor": {
            "type": "object",
            "description": "The `beast monitor --json` document (DESIGN.md §3).",
            "properties": {
                "window": string,
                "health": string,
                "versions": {"type": "array", "items": {"type": "object"}},
                "alerts": {"type": "array", "items": {"type": "object"}},
                "experiments": {"type": "array", "items": {"type": "object"}},
                "shadows": {"type": "array", "items": {"type": "object"}},
            },
        },
        "Health": {
            "type": "object",
            "required": ["status", "pid"],
            "properties": {
                "status": {"enum": ["ok", "degraded", "unready", "starting"]},
                "reason": {**optional, "description": "Why it is not ok."},
                "problems": {
                    "type": "object",
                    "description": "Model lines whose deployment could not be loaded, and why.",
                },
                "pid": {"type": "integer"},
                "leader": {
                    "type": "boolean",
                    "description": "Whether this replica leads: runs alerts, auto-pull and "
                    "retraining (one replica at a time; on SQLite, the engine).",
                },
                "uptime_s": {"type": "number"},
                "log": {
                    "type": "object",
                    "properties": {
                        "queued": {"type": "integer"},
                        "written": {"type": "integer"},
                        "dropped": {"type": "integer"},
                        "last_error": optional,
                        "log_writer_restarts": {
                            "type": "integer",
                            "description": "Prediction log writer processes that died and "
                            'were restarted (`[log] writer = "process"`; 0 with a thread).',
                        },
                    },
                },
                "serving": {"type": "object"},
            },
        },
        "Alert": {
            "type": "object",
            "required": [*_ALERT_TEXT, *_ALERT_OPTIONAL, "id", "value", "threshold", "status"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "integer"},
                **dict.fromkeys(_ALERT_TEXT, string),
                **dict.fromkeys(_ALERT_OPTIONAL, optional),
                "value": {"type": ["number", "null"]},
                "threshold": {"type": ["number", "null"]},
                "status": {"type": "string", "enum": ["firing", "resolved"]},
            },
        },
        "Change": {
            "type": "object",
            "properties": {
                "changed": {"type": "boolean"},
                "message": string,
                "history": {"type": ["object", "null"]},
            },
        },
    }


def openapi_document(ctx: Context) -> dict[str, Any]:
    """OpenAPI 3.1 of every route, from the same bodies that validate the requests."""
    schemas = _response_schemas()
    for body in BODIES:
        schemas[body.name] = body.json_schema(ctx)
    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, ctx)
    limit = ctx.max_body_bytes
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "beast-mode engine",
            "version": "1",
            "description": "Serve, A/B test and monitor XGBoost score models. Every error is "
            'JSON {"error": "one line"}. POST bodies are application/json (415 otherwise), at '
            f"most {limit:,} bytes (413). A Host the engine does not serve is 421, a cross-site "
            "Origin 403. Mutations need Authorization: Bearer <token> (the workspace's api-token "
            'or BEAST_API_TOKEN); with [api] require_token = "always" (the default beyond '
            "loopback) every route does. The features schema is the deployed lines' own.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
