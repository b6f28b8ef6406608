"""A form from a model plugin's argument schema (the JSON schema its workers advertise).

`form_fields` reads the schema into one `FormField` per argument (pure, tested without
Streamlit); `render` draws each as the widget its type asks for: a select box for an enum, a
number input for an integer or a number (with the schema's bounds), a checkbox for a boolean,
a text input otherwise (JSON for lists and objects).
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
            out[field.name] = st.number_input(
                field.title,
                value=cast(shown) if shown is not None else cast(field.minimum or 0),
                min_value=cast(field.minimum) if field.minimum is not None else None,
                max_value=cast(field.maximum) if field.maximum is not None else None,
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
