"""What the config's fields admit, read from their `Field` metadata: the one source of the
bounds of the CLI's help and the dashboard's widgets, of the JSON types the API takes, and of
the words of a refused value ("alpha: Input should be greater than 0, got -1; allowed:
0 < alpha <= 10"). Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import annotated_types
from pydantic import BaseModel, TypeAdapter, ValidationError

from nfcore.spec.config import SPPConfig, TrainConfig


def _fmt(value: Any, limit: int = 60) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class Bounds:
    """A numeric field's bounds from its `Field` metadata; None where it has none."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low < value (Gt), else low <= value (Ge)
    high_open: bool = False  # value < high (Lt), else value <= high (Le)


def field_bounds(kind: type[BaseModel], name: str) -> Bounds:
    """The bounds of `kind`'s field `name`: the one source for widget limits and help texts."""
    bounds = Bounds()
    for bound in kind.model_fields[name].metadata:
        if isinstance(bound, annotated_types.Gt):
            bounds = replace(bounds, low=bound.gt, low_open=True)
        elif isinstance(bound, annotated_types.Ge):
            bounds = replace(bounds, low=bound.ge, low_open=False)
        elif isinstance(bound, annotated_types.Lt):
            bounds = replace(bounds, high=bound.lt, high_open=True)
        elif isinstance(bound, annotated_types.Le):
            bounds = replace(bounds, high=bound.le, high_open=False)
    return bounds


def allowed_range(field: str) -> str | None:
    """The numeric bounds of a config field as text, e.g. '0 < alpha <= 10'."""
    info = SPPConfig.model_fields.get(field) or TrainConfig.model_fields.get(field)
    if info is None:
        return None
    low = high = ""
    for bound in info.metadata:
        if isinstance(bound, annotated_types.Gt):
            low = f"{bound.gt} < "
        elif isinstance(bound, annotated_types.Ge):
            low = f"{bound.ge} <= "
        elif isinstance(bound, annotated_types.Lt):
            high = f" < {bound.lt}"
        elif isinstance(bound, annotated_types.Le):
            high = f" <= {bound.le}"
    return f"{low}{field}{high}" if low or high else None


def json_type_errors(kind: type[BaseModel], data: Any) -> list[dict[str, Any]]:
    """Pydantic-style error items for the fields of `data` (decoded JSON) whose JSON type is
    not one the config's schema documents, which validation would otherwise coerce:
    `"depth": "50"`, `"batch": true`, `"skipinit": 1`, `"alpha": "0.2"`. Values of the right
    type (right or wrong) are left to validation, as are unknown fields.

    The API takes the JSON types its schema documents; the CLI and the dashboard, which
    read text, keep pydantic's coercion.
    """
    if not isinstance(data, dict):
        return [{"type": "model_type", "loc": (), "msg": "Input should be a JSON object",
                 "input": data}]  # fmt: skip
    errors: list[dict[str, Any]] = []
    for name, value in data.items():
        schema = _field_schema(kind, name) if isinstance(name, str) else None
        if schema is not None and not _admits(schema, value):
            errors.append({"type": "json_type", "loc": (name,), "input": value,
                           "msg": f"Input should be {_json_type_words(schema)}"})  # fmt: skip
    return errors


@cache
def _field_schema(kind: type[BaseModel], name: str) -> dict[str, Any] | None:
    """The JSON schema of a field's type (None for a field the config does not have)."""
    field = kind.model_fields.get(name)
    return None if field is None else TypeAdapter(field.annotation).json_schema()


def _json_type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _admits(schema: dict[str, Any], value: Any, among: bool = False) -> bool:
    """Whether a JSON value has one of the JSON types `schema` allows (an integer is a number).

    A field of one literal type (norm: a string) admits any value of that type, and leaves a
    wrong one to validation's message; where literals are one option `among` others
    (gamma: "auto" or a number), a string must be one of them.
    """
    if "anyOf" in schema:
        options = schema["anyOf"]
        mixed = any(
            "const" not in o and "enum" not in o and o.get("type") != "null" for o in options
        )
        return any(_admits(option, value, among=mixed) for option in options)
    kind = _json_type_of(value)
    literals = schema.get("enum", [schema["const"]] if "const" in schema else None)
    if literals is not None and among:
        return any(value == v and kind == _json_type_of(v) for v in literals)
    if literals is not None:
        allowed = {_json_type_of(v) for v in literals}
    else:
        allowed = {schema["type"]} if "type" in schema else {kind}
    if "number" in allowed:
        allowed.add("integer")
    if kind not in allowed:
        return False
    if kind == "array" and "items" in schema:
        return all(_admits(schema["items"], item) for item in value)
    return True


_JSON_TYPE_WORDS = {"integer": "an integer", "number": "a number", "boolean": "a boolean",
                    "string": "a string", "null": "null", "array": "an array",
                    "object": "an object"}  # fmt: skip


def _json_type_words(schema: dict[str, Any]) -> str:
    """'an integer or null', "'auto', a number or null": what a field's JSON schema admits."""
    options = []
    for option in schema.get("anyOf", [schema]):
        if "const" in option:
            options.append(json.dumps(option["const"]))
        elif "enum" in option:
            options.append("one of " + ", ".join(json.dumps(value) for value in option["enum"]))
        elif option.get("type") == "array" and "items" in option:
            options.append(f"an array of {_json_type_words(option['items']).removeprefix('an ')}s")
        else:
            options.append(_JSON_TYPE_WORDS.get(option.get("type", ""), "a JSON value"))
    return options[0] if len(options) == 1 else ", ".join(options[:-1]) + " or " + options[-1]


_BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def describe_error_items(items: list[dict[str, Any]]) -> str:
    """One readable sentence per pydantic error item, naming the field (and its range)."""
    lines = []
    for item in items:
        loc = ".".join(str(part) for part in item["loc"] if not isinstance(part, int))
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "json_invalid":
            reason = (item.get("ctx") or {}).get("error", "")
            lines.append(f"the body is not valid JSON ({reason})" if reason else message)
            continue
        if item["type"] == "json_type":  # JSON's words for true, false and null
            value = item.get("input")
            shown = json.dumps(value) if value is None or isinstance(value, bool) else _fmt(value)
            lines.append(f"{loc}: {message} (got {shown})")
            continue
        if item["type"] in ("literal_error", "enum"):
            message = f"{message}, got {_fmt(item.get('input'))}"
        elif "input" in item and item["type"] not in ("value_error", "assertion_error", "missing"):
            message = f"{message} (got {_fmt(item['input'])})"
        bounds = allowed_range(loc) if item["type"] in _BOUND_ERRORS else None
        if bounds:
            message = f"{message}; allowed: {bounds}"
        lines.append(f"{loc}: {message}" if loc else message)
    return "; ".join(lines)


def describe_validation_error(error: ValidationError) -> str:
    """One readable line per problem, naming the field, e.g. 'depth: 51 has no layout ...'."""
    return describe_error_items(error.errors())
