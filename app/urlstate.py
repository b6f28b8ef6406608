"""The explorer's state as a URL query string, so that opening a link reproduces the view.

Pure functions, no Streamlit: a config is written as the fewest `SPPConfig` fields from which
`decode_config` rebuilds exactly the same canonical config (checked while encoding, so the
round trip is exact by construction). The view adds three keys that are not config fields:
`preset` (a paper figure shown with all its runs), `pins` (job ids overlaid for comparison)
and `log` (semilog panels).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from nfcore.config import SPPConfig
from nfcore.fields import describe_validation_error

# What the explorer shows on first load: an NF-ResNetV2-50, small enough for a CPU in a second.
APP_DEFAULTS: dict[str, Any] = {"norm": "nf", "width": 0.25, "resolution": 64, "batch": 8}
VIEW_KEYS = ("preset", "pins", "log")
NULL = "null"  # a field explicitly unset (`none` is a valid norm, so it cannot mean None)


class BadQuery(ValueError):
    """The query string does not describe a valid config; the message says which field."""


def default_config() -> SPPConfig:
    return SPPConfig(**APP_DEFAULTS)


def decode_config(query: Mapping[str, str]) -> SPPConfig:
    """The config a query string describes: the dashboard defaults with its fields applied."""
    given = {
        key: _parse(key, value) for key, value in query.items() if key in SPPConfig.model_fields
    }
    try:
        return SPPConfig(**{**APP_DEFAULTS, **given})
    except ValidationError as error:
        message = describe_validation_error(error)
        raise BadQuery(f"the link's configuration is invalid: {message}") from None


def encode_config(config: SPPConfig) -> dict[str, str]:
    """The fewest fields, as strings, that `decode_config` turns back into `config`."""
    fields = {key: _format(value) for key, value in config.model_dump(mode="json").items()}
    # The layout first, so that a named depth (`depth=600`) is kept rather than its layout.
    for key in sorted(fields, key=lambda name: name != "layout"):
        trial = {k: v for k, v in fields.items() if k != key}
        try:
            if decode_config(trial) == config:
                fields = trial
        except BadQuery:
            continue
    return fields


def decode_pins(query: Mapping[str, str]) -> list[str]:
    return [pin for pin in query.get("pins", "").split(",") if pin]


def encode_view(
    config: SPPConfig, *, preset: str | None, pins: list[str], log_y: bool
) -> dict[str, str]:
    """The whole query string of the explorer: config fields and view keys."""
    query = encode_config(config)
    if preset:
        query["preset"] = preset
    if pins:
        query["pins"] = ",".join(pins)
    if log_y:
        query["log"] = "1"
    return query


def _parse(key: str, text: str) -> Any:
    """A query value as config input; pydantic coerces numbers and booleans from text."""
    if text == NULL:
        return None
    if key == "layout":
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _format(value: Any) -> str:
    if value is None:
        return NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(part) for part in value)
    return str(value)  # str(float) is its shortest exact repr, so floats round-trip
