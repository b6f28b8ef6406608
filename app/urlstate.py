"""The explorer's state as a URL query string, so that opening a link reproduces the view.

Pure functions, no Streamlit: a config is written as the fewest `SPPConfig` fields from which
`decode_config` rebuilds exactly the same canonical config (checked while encoding, so the
round trip is exact by construction). The view adds four keys that are not config fields:
`preset` (a paper figure shown with all its runs), `pins` (runs overlaid for comparison),
`log` (semilog panels) and `panels` (the statistics drawn, when not the default ones).

Links outlive the API's cache (results expire after RESULT_TTL): a pin carries its run's
config, not only its job id, as a token (`encode_pin`): the fields that differ from the
config's defaults as JSON, deflated when that is shorter, base64url-encoded. The Train page's
`runs=` carries its runs' configs the same way (`encode_train_runs`). A run whose result
expired is computed again from its config (same config, same job id, same seeds, same
numbers). Old links naming only job ids (`pins=<id>`, `/train?jobs=<id>`) still open while
the API has their results.

A link is read field by field: a bad field is left out, with a sentence saying why, and the
link's other fields are kept (`read_link`).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

import nfcore
from nfcore.spec.config import SPPConfig, TrainConfig, config_hash
from nfcore.spec.fields import describe_error_items, describe_validation_error
from nfcore.spec.statistics import default_panels, measured, panel_keys, switches_for
from nfcore.spec.variants import RESNET_LAYOUTS

# What the explorer shows on first load: an NF-ResNetV2-50, small enough for a CPU in a second.
APP_DEFAULTS: dict[str, Any] = {"norm": "nf", "width": 0.25, "resolution": 64, "batch": 8}
VIEW_KEYS = ("preset", "pins", "log", "panels")
NULL = "null"  # a field explicitly unset (`none` is a valid norm, so it cannot mean None)
JOB_ID = re.compile(r"[0-9a-f]{32}")  # a job id (an old link's pin): the hash of a config
MAX_PINS = 12  # pins a link may carry; each is a run to draw (and maybe to compute)
MAX_LINK_RUNS = 16  # training runs a Train link may carry
MAX_TOKEN_CHARS = 4096  # one token of a link (a pin, or a Train page's runs)
MAX_PACKED_BYTES = 32_768  # what a token may inflate to: no zip bomb
MAX_LABEL_CHARS = 100  # a run's label carried by a Train link
SHOWN_CHARS = 40  # of a refused value, quoted back in a message
PLAIN, DEFLATED = "j", "z"  # a token's first letter: how the rest is encoded
_BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


class BadQuery(ValueError):
    """The query string does not describe a valid config; the message says which field."""


def default_config() -> SPPConfig:
    return SPPConfig(**APP_DEFAULTS)


def decode_config(query: Mapping[str, str]) -> SPPConfig:
    """The config a query string describes: the dashboard defaults with its fields applied,
    less any field that is not valid (`read_link` says which, and why)."""
    return read_link(query)[0]


def read_link(query: Mapping[str, str]) -> tuple[SPPConfig, list[str]]:
    """The config of a link's fields, and a sentence per field that was left out because it
    is not valid (alone, or with the fields kept); the link's other fields are kept."""
    given = {
        key: _parse(key, value) for key, value in query.items() if key in SPPConfig.model_fields
    }
    notes: list[str] = []
    while True:  # each pass drops at least one field, so this ends
        try:
            return SPPConfig(**{**APP_DEFAULTS, **given}), notes
        except ValidationError as error:
            bad = _bad_fields(error, given)
            if not bad:  # no field of the link is named: the defaults are valid, so this is rare
                notes.append(f"The link's configuration is not valid "
                             f"({describe_validation_error(error)}); it was left out.")  # fmt: skip
                given = {}
                continue
            for key, items in bad.items():
                notes.append(_left_out(key, query[key], items))
                given.pop(key)


def _bad_fields(error: ValidationError, given: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The link's fields the error items name (by location, or by a model check's words
    'depth: ...'), each with its items; when none is named, the first field whose absence
    makes the config valid."""
    bad: dict[str, list[Any]] = {}
    for item in error.errors():
        loc = item["loc"]
        if loc:
            name = str(loc[0])
        else:
            name = str(item["msg"]).removeprefix("Value error, ").split(":", 1)[0].strip()
        if name in given:
            bad.setdefault(name, []).append(item)
    if bad:
        return bad
    for key in given:
        try:
            SPPConfig(**{**APP_DEFAULTS, **{k: v for k, v in given.items() if k != key}})
        except ValidationError:
            continue
        return {key: list(error.errors())}
    return {}


def _left_out(key: str, text: str, items: list[Any]) -> str:
    """'The link's depth=99999 was left out: ...': one sentence for a refused field."""
    reasons = []
    for item in items:
        words = describe_error_items([item])
        reasons.append(words.removeprefix(f"{key}: "))
    reason = "; ".join(reasons)
    value = shown(text)
    if key == "depth" and any(item["type"] in _BOUND_ERRORS for item in items):
        # The field's bounds (2 <= depth <= 2402) admit custom layouts; a depth alone must be
        # one with a named block layout, as the config itself says of one without.
        known = ", ".join(str(depth) for depth in RESNET_LAYOUTS)
        reason = (f"{value} has no block layout (known depths: {known}); give a custom "
                  "per-stage layout instead")  # fmt: skip
    return f"The link's {key}={value} was left out: {reason}."


def strict_config(query: Mapping[str, str]) -> SPPConfig:
    """The config of a query string's fields, all of them: BadQuery, with a readable line per
    problem, when one is not valid (`read_link` keeps the valid ones instead)."""
    given = {
        key: _parse(key, value) for key, value in query.items() if key in SPPConfig.model_fields
    }
    try:
        return SPPConfig(**{**APP_DEFAULTS, **given})
    except ValidationError as error:
        raise BadQuery(describe_validation_error(error)) from None


def shown(text: str) -> str:
    """A value from a link, quoted back at most SHOWN_CHARS long."""
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def encode_config(config: SPPConfig) -> dict[str, str]:
    """The fewest fields, as strings, that `decode_config` turns back into `config`."""
    fields = {key: _format(value) for key, value in config.model_dump(mode="json").items()}
    # The layout first, so that a named depth (`depth=600`) is kept rather than its layout.
    for key in sorted(fields, key=lambda name: name != "layout"):
        trial = {k: v for k, v in fields.items() if k != key}
        given = {k: _parse(k, v) for k, v in trial.items()}
        try:
            if SPPConfig(**{**APP_DEFAULTS, **given}) == config:
                fields = trial
        except ValidationError:
            continue
    return fields


def link_notices(query: Mapping[str, str], config: SPPConfig) -> list[str]:
    """What of the link the view does not show, each a sentence: a preset that is not one of
    the paper's figures, a field that does not apply to the network the link describes (the
    BN order of an NF net), and a key that is no setting at all."""
    from nfcore.spec.presets import PRESETS  # the link's words are checked against the figures

    _, notices = read_link(query)
    left_out = {note.split("=", 1)[0].removeprefix("The link's ") for note in notices}
    preset = query.get("preset")
    if preset and preset not in {p.id for p in PRESETS}:
        known = ", ".join(p.id for p in PRESETS)
        notices.append(f"The link's preset {preset!r} is not one of the paper's figures "
                       f"({known}); it was ignored.")  # fmt: skip
    canonical = config.model_dump(mode="json")
    for key, value in query.items():
        if key in left_out:
            continue
        if key in SPPConfig.model_fields:
            if value != NULL and canonical.get(key) is None:
                notices.append(f"The link's {key}={value} does not apply to {config.label}; "
                               "it was left out.")  # fmt: skip
        elif key not in VIEW_KEYS:
            notices.append(f"The link's {key!r} is not a setting of the Explorer; it was ignored.")
    return notices


class Pin(str):
    """A pinned run: its job id (the string itself, so a list of pins is a list of job ids),
    the config it is the run of (None: an old link that named only the job id), or why the
    link's pin could not be read (`problem`; its string is then the link's text)."""

    config: SPPConfig | None
    problem: str | None

    def __new__(
        cls, job_id: str, config: SPPConfig | None = None, problem: str | None = None
    ) -> Pin:
        pin = super().__new__(cls, job_id)
        pin.config = config
        pin.problem = problem
        return pin

    @classmethod
    def of(cls, config: SPPConfig, job_id: str | None = None) -> Pin:
        """The pin of `config`'s run (its job id: the hash the API names it by)."""
        return cls(job_id or config_hash(config, nfcore.__version__), config)

    @property
    def token(self) -> str:
        """What the URL holds: the config's token, or the job id of an old link's pin."""
        return encode_pin(self.config) if self.config is not None else str(self)


def decode_pins(query: Mapping[str, str]) -> list[str]:
    """The link's pins, each a `Pin`: a config token (`encode_pin`) or an old link's job id.
    A token that cannot be read is a Pin with its `problem`, a sentence; pins beyond
    MAX_PINS are one such problem."""
    parts = list(dict.fromkeys(pin.strip() for pin in query.get("pins", "").split(",")))
    parts = [part for part in parts if part]
    pins: list[str] = []
    for number, part in enumerate(parts[:MAX_PINS], start=1):
        if JOB_ID.fullmatch(part):
            pins.append(Pin(part))
            continue
        try:
            pins.append(Pin.of(decode_pin(part)))
        except BadQuery as problem:
            pins.append(Pin(part, problem=f"The link's pin {number} {problem}; it was unpinned."))
    if len(parts) > MAX_PINS:
        pins.append(Pin("", problem=f"The link pins {len(parts)} runs; the Explorer draws at "
                        f"most {MAX_PINS}, so the last {len(parts) - MAX_PINS} were unpinned."))  # fmt: skip
    return pins


def encode_pin(config: SPPConfig) -> str:
    """A pin's token: the config's fields that differ from its defaults, packed (`pack`)."""
    return pack(compact_fields(config))


def decode_pin(token: str) -> SPPConfig:
    """The config of a pin's token; BadQuery says, in words after 'pin N', what is wrong."""
    fields = unpack(token)
    if not isinstance(fields, dict):
        raise BadQuery("is not a configuration this dashboard wrote")
    try:
        return SPPConfig.model_validate(fields)
    except ValidationError as error:
        raise BadQuery(
            f"is not a valid configuration ({describe_validation_error(error)})"
        ) from None


def encode_train_runs(configs: Sequence[TrainConfig], labels: Sequence[str | None]) -> str:
    """The Train page's `runs=`: each run's config fields that differ from the defaults, with
    its label where it is not the one the page would give it (None), packed in one token."""
    runs = []
    for config, label in zip(configs, labels, strict=True):
        fields = compact_fields(config)
        runs.append({**fields, "label": label[:MAX_LABEL_CHARS]} if label else fields)
    return pack(runs)


def decode_train_runs(token: str) -> list[tuple[TrainConfig | None, str | None, str | None]]:
    """Per run of a Train link's `runs=`: its config, its label (None: the page's own), and
    None; or (None, None, the sentence saying what is wrong). BadQuery when the token itself
    cannot be read, or carries more than MAX_LINK_RUNS runs."""
    runs = unpack(token)
    if not isinstance(runs, list) or not all(isinstance(run, dict) for run in runs):
        raise BadQuery("The link's runs are not runs this dashboard wrote")
    if not runs or len(runs) > MAX_LINK_RUNS:
        raise BadQuery(f"The link carries {len(runs)} runs; the Train page takes 1 to "
                       f"{MAX_LINK_RUNS}")  # fmt: skip
    decoded: list[tuple[TrainConfig | None, str | None, str | None]] = []
    for number, fields in enumerate(runs, start=1):
        fields = dict(fields)
        label = _plain(fields.pop("label", None))
        try:
            decoded.append((TrainConfig.model_validate(fields), label, None))
        except ValidationError as error:
            words = describe_validation_error(error)
            decoded.append((None, None, f"The link's run {number} is not a valid training run "
                            f"({words}); it was left out."))  # fmt: skip
    return decoded


def _plain(label: Any) -> str | None:
    """A label from a link as plain text: at most MAX_LABEL_CHARS, without control characters
    or the Markdown that would make it a link, an image or HTML on the page; None if empty."""
    if not isinstance(label, str):
        return None
    text = "".join(c for c in label if c.isprintable() and c not in "[]<>`*\\!")
    return text.strip()[:MAX_LABEL_CHARS] or None


def compact_fields(config: BaseModel) -> dict[str, Any]:
    """The fewest of the config's JSON fields from which its class rebuilds exactly `config`
    (the others follow from the defaults); checked field by field, so the round trip is exact
    by construction. The layout is tried first, so a named depth is kept rather than it."""
    kind = type(config)
    fields = config.model_dump(mode="json")
    for key in sorted(fields, key=lambda name: name != "layout"):
        trial = {k: v for k, v in fields.items() if k != key}
        try:
            if kind.model_validate(trial) == config:
                fields = trial
        except ValidationError:
            continue
    return fields


def pack(data: Any) -> str:
    """JSON as a URL-safe token: its compact text, deflated when that is shorter, in
    base64url without padding, after a letter saying which (PLAIN or DEFLATED)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    squeezed = deflater.compress(text) + deflater.flush()
    kind, raw = (DEFLATED, squeezed) if len(squeezed) < len(text) else (PLAIN, text)
    return kind + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unpack(token: str) -> Any:
    """The JSON a `pack` token holds; BadQuery (words to follow 'pin N' or stand alone) when
    it is not one: too long, not base64url, not inflating within MAX_PACKED_BYTES, not JSON."""
    if len(token) > MAX_TOKEN_CHARS:
        raise BadQuery(f"is {len(token)} characters long (at most {MAX_TOKEN_CHARS})")
    kind, body = token[:1], token[1:]
    if kind not in (PLAIN, DEFLATED) or not re.fullmatch(r"[A-Za-z0-9_-]*", body):
        raise BadQuery("is not one this dashboard wrote (it may have been cut short)")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        if kind == DEFLATED:
            inflater = zlib.decompressobj(-15)
            raw = inflater.decompress(raw, MAX_PACKED_BYTES)
            if inflater.unconsumed_tail or not inflater.eof:
                raise BadQuery("is too large or cut short")
        return json.loads(raw)
    except (binascii.Error, zlib.error, ValueError) as error:
        if isinstance(error, BadQuery):
            raise
        raise BadQuery("is not one this dashboard wrote (it may have been cut short)") from None


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
        query["pins"] = ",".join(pin.token if isinstance(pin, Pin) else pin for pin in pins)
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
