"""A form from a model plugin's argument schema (the JSON schema its workers advertise).

`form_fields` reads the schema into one `FormField` per argument (pure, tested without
Streamlit); `render` draws each as the widget its type asks for: a select box for an enum, a
number input for an integer or a number (with the schema's bounds), a checkbox for a boolean,
a text input otherwise (JSON for lists and objects). `plugin_query` is the Your network page's
URL of a plugin job, which the page writes and the Jobs page links to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import streamlit as st


@dataclass(frozen=True)
class FormField:
    name: str
    title: str
    kind: str  # enum, integer, number, boolean, text, json
    default: Any = None
    options: tuple[Any, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    optional: bool = False  # null is allowed
    help: str | None = None


def plugin_query(config: dict[str, Any]) -> dict[str, str] | None:
    """The Your network page's query of a plugin job: `plugin`, `args` (JSON), `batch`, and
    `resolution` (image networks) and `gradients` when set. `config` is the page's request body
    or a job's `ForeignConfig` JSON; None when it names no plugin."""
    name, args = config.get("plugin"), config.get("model_args", {})
    if not isinstance(name, str) or not name or not isinstance(args, dict):
        return None
    query = {"plugin": name, "args": json.dumps(args, sort_keys=True),
             "batch": str(config.get("batch", 8))}  # fmt: skip
    if config.get("input_shape") is None and config.get("resolution") is not None:
        query["resolution"] = str(config["resolution"])
    if config.get("gradients"):
        query["gradients"] = "true"
    return query


def _branch(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A property's schema without its `null` alternative, and whether null is allowed."""
    choices = schema.get("anyOf")
    if not isinstance(choices, list):
        return schema, False
    others = [c for c in choices if c.get("type") != "null"]
    nullable = len(others) < len(choices)
    merged = {k: v for k, v in schema.items() if k != "anyOf"}
    return ({**others[0], **merged} if len(others) == 1 else merged), nullable


def form_fields(schema: dict[str, Any]) -> list[FormField]:
    """One field per property of the schema, in its order."""
    fields = []
    for name, raw in (schema.get("properties") or {}).items():
        prop, optional = _branch(raw)
        kind = prop.get("type")
        title = str(prop.get("title") or name.replace("_", " ").capitalize())
        common = {"default": raw.get("default", prop.get("default")), "optional": optional,
                  "help": prop.get("description")}  # fmt: skip
        if "enum" in prop:
            fields.append(FormField(name, title, "enum", options=tuple(prop["enum"]), **common))
        elif kind in ("integer", "number"):
            low = prop.get("minimum", prop.get("exclusiveMinimum"))
            high = prop.get("maximum", prop.get("exclusiveMaximum"))
            fields.append(FormField(name, title, kind, minimum=low, maximum=high, **common))
        elif kind == "boolean":
            fields.append(FormField(name, title, "boolean", **common))
        elif kind in ("array", "object"):
            fields.append(FormField(name, title, "json", **common))
        else:
            fields.append(FormField(name, title, "text", **common))
    return fields


def parse(field: FormField, text: str) -> Any:
    """A text or JSON field's value; ValueError naming the field when it is not valid JSON."""
    if field.kind != "json":
        return None if (field.optional and text == "") else text
    if field.optional and text.strip() == "":
        return None
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError(f"{field.title}: not valid JSON ({text!r})") from None


def _number(cast: type, shown: Any, minimum: Any) -> Any:
    """`shown` as the field's number; the minimum (or 0) where it is none (a link's typo)."""
    try:
        return cast(shown)
    except (TypeError, ValueError):
        return cast(minimum or 0)


def _within(value: Any, low: Any, high: Any) -> Any:
    """`value` inside the schema's bounds: a number input refuses a value outside them."""
    if low is not None and value < low:
        return low
    if high is not None and value > high:
        return high
    return value


def render(fields: list[FormField], values: dict[str, Any], key: str) -> dict[str, Any]:
    """The widgets of `fields` showing `values` (else the defaults); returns what they show."""
    out: dict[str, Any] = {}
    for field in fields:
        shown = values.get(field.name, field.default)
        widget_key = f"{key}:{field.name}"
        if field.kind == "enum":
            options = list(field.options)
            index = options.index(shown) if shown in options else 0
            out[field.name] = st.selectbox(field.title, options, index=index, key=widget_key,
                                           help=field.help)  # fmt: skip
        elif field.kind in ("integer", "number"):
            integer = field.kind == "integer"
            cast = int if integer else float
            low = cast(field.minimum) if field.minimum is not None else None
            high = cast(field.maximum) if field.maximum is not None else None
            out[field.name] = st.number_input(
                field.title,
                value=_within(_number(cast, shown, field.minimum), low, high),
                min_value=low,
                max_value=high,
                step=1 if integer else 0.01,
                format=None if integer else "%.4g",
                key=widget_key,
                help=field.help,
            )
        elif field.kind == "boolean":
            out[field.name] = st.checkbox(field.title, value=bool(shown), key=widget_key,
                                          help=field.help)  # fmt: skip
        else:
            text = (
                json.dumps(shown) if field.kind == "json" else ("" if shown is None else str(shown))
            )
            out[field.name] = parse(field, st.text_input(field.title, value=text, key=widget_key,
                                                         help=field.help))  # fmt: skip
    return out
