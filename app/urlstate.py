"""The explorer's state as a URL query string, so that opening a link reproduces the view.

Pure functions, no Streamlit: a config is written as the fewest `SPPConfig` fields from which
`decode_config` rebuilds exactly the same canonical config (checked while encoding, so the
round trip is exact by construction). The view adds four keys that are not config fields:
`preset` (a paper figure shown with all its runs), `pins` (job ids overlaid for comparison),
`log` (semilog panels) and `panels` (the statistics drawn, when not the default ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from nfcore.spec.config import SPPConfig
from nfcore.spec.fields import describe_validation_error
from nfcore.spec.statistics import default_panels, measured, panel_keys, switches_for

# What the explorer shows on first load: an NF-ResNetV2-50, small enough for a CPU in a second.
APP_DEFAULTS: dict[str, Any] = {"norm": "nf", "width": 0.25, "resolution": 64, "batch": 8}
VIEW_KEYS = ("preset", "pins", "log", "panels")
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


def link_notices(query: Mapping[str, str], config: SPPConfig) -> list[str]:
    """What of the link the view does not show, each a sentence: a preset that is not one of
    the paper's figures, a field that does not apply to the network the link describes (the
    BN order of an NF net), and a key that is no setting at all."""
    from nfcore.spec.presets import PRESETS  # the link's words are checked against the figures

    notices = []
    preset = query.get("preset")
    if preset and preset not in {p.id for p in PRESETS}:
        known = ", ".join(p.id for p in PRESETS)
        notices.append(f"The link's preset {preset!r} is not one of the paper's figures "
                       f"({known}); it was ignored.")  # fmt: skip
    canonical = config.model_dump(mode="json")
    for key, value in query.items():
        if key in SPPConfig.model_fields:
            if value != NULL and canonical.get(key) is None:
                notices.append(f"The link's {key}={value} does not apply to {config.label}; "
                               "it was left out.")  # fmt: skip
        elif key not in VIEW_KEYS:
            notices.append(f"The link's {key!r} is not a setting of the Explorer; it was ignored.")
    return notices


def decode_pins(query: Mapping[str, str]) -> list[str]:
    return [pin for pin in query.get("pins", "").split(",") if pin]


def decode_panels(query: Mapping[str, str]) -> tuple[str, ...] | None:
    """The statistics a link asks to draw (None: the default panels); BadQuery names an
    unknown key and the known ones."""
    parts = [part.strip() for part in query.get("panels", "").split(",") if part.strip()]
    if not parts:
        return None
    try:
        return panel_keys(parts)
    except ValueError as error:
        raise BadQuery(f"the link's panels are invalid: {error}") from None


def measuring(config: SPPConfig, panels: Sequence[str] | None) -> SPPConfig:
    """`config`, also measuring what `panels` draw (Appendix G, gradients), as the CLI's
    --panels switches those measurements on."""
    switches = {k: v for k, v in switches_for(panels or ()).items() if not getattr(config, k)}
    return config.edited(switches) if switches else config


def panels_for(
    config: SPPConfig, panels: Sequence[str] | None, before: SPPConfig | None = None
) -> tuple[str, ...] | None:
    """The chosen panels as the view keeps them for `config`: what it does not measure is
    dropped, and after an edit from `before` that measures more (gradients switched on) its
    default panels are added, as they are to the default view. None: the default panels."""
    if panels is None:
        return None
    keys = panel_keys(panels)
    available = {row.key for row in measured(config.extra_stats, config.gradients)}
    if before is not None:
        earlier = {row.key for row in measured(before.extra_stats, before.gradients)}
        keys += tuple(key for key in default_panels(config.extra_stats, config.gradients)
                      if key not in earlier)  # fmt: skip
    kept = panel_keys(key for key in keys if key in available)
    if not kept or kept == default_panels(config.extra_stats, config.gradients):
        return None
    return kept


def encode_view(
    config: SPPConfig,
    *,
    preset: str | None,
    pins: list[str],
    log_y: bool,
    panels: Sequence[str] | None = None,
) -> dict[str, str]:
    """The whole query string of the explorer: config fields and view keys."""
    query = encode_config(config)
    if preset:
        query["preset"] = preset
    if pins:
        query["pins"] = ",".join(pins)
    if log_y:
        query["log"] = "1"
    if panels:
        query["panels"] = ",".join(panels)
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
