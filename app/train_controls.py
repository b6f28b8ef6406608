"""The Train page's inputs: the runs table (one model per row) and the settings the runs share.

The table's rows and the shared settings are kept in Session State and every widget is made
from them, under a key carrying VERSION_KEY: a preset writes new rows and settings and bumps
the version, so the editor and the setting widgets are made afresh from the preset's values.
Bounds come from `TrainConfig`'s `Field` metadata (the Steps widget stops at the API's own
limit), help texts from its descriptions unless the page has more to say.
"""

from __future__ import annotations

from typing import Any, Final, get_args

import pandas as pd
import streamlit as st

from app.api_client import ApiProblem, cached_limits
from nfcore.spec.activation_names import BUILTIN_ACTIVATIONS
from nfcore.spec.config import TrainConfig, canonical_json
from nfcore.spec.fields import field_bounds
from nfcore.spec.train_presets import TRAIN_PRESETS, TrainPreset, get_train_preset, run_config

# Columns of the runs table: the model per run, and per-run overrides of batch and lr.
RUN_COLUMNS: Final[tuple[str, ...]] = (
    "label", "norm", "depth", "width", "activation", "skipinit", "batch", "lr",
)  # fmt: skip
# The shared settings the page has controls for, in TrainConfig's terms.
SETTING_FIELDS: Final[tuple[str, ...]] = (
    "dataset", "resolution", "batch", "steps", "lr", "warmup_steps", "weight_decay",
    "label_smoothing", "ema_decay", "clip_grad_norm", "eval_every", "eval_examples",
    "spp_every", "stochdepth_rate", "drop_rate", "seed",
)  # fmt: skip
DEPTHS = (14, 26, 50)
NORMS = ("bn", "nf")
DATASETS = {
    "digits": "digits (scikit-learn)",
    "gaussian": "Gaussian noise",
    "cifar10": "CIFAR-10",
}
RESOLUTIONS = (8, 16, 32, 64, 96, 128)
# Nullable column types, so a blank cell of a number column stays a number column.
COLUMN_TYPES = {"label": "string", "norm": "string", "depth": "Int64", "width": "Float64",
                "activation": "string", "skipinit": "boolean", "batch": "Int64", "lr": "Float64"}  # fmt: skip

# Session state: the rows the editor starts from, the shared settings, their version.
TABLE_KEY = "train_table"  # rows the editor starts from
EDITED_KEY = "train_table_edited"  # rows as last edited (the editor's state is lost off-page)
VERSION_KEY = "train_table_version"  # a new editor (key) whenever a preset replaces the rows
SETTINGS_KEY = "train_settings"  # the shared settings, kept when the widgets are not shown

# Help where the page says more than TrainConfig's field description (or has no field).
HELP = {
    "dataset": "digits: scikit-learn's 8x8 digits upsampled; gaussian: noise with random "
    "labels (fast, nothing to learn); cifar10: read from the worker's CIFAR10_DIR.",
    "resolution": "Image side in pixels; ResNets downsample by 32, so at least 32.",
    "batch": "Batch size of every run whose 'batch' cell is blank. BatchNorm needs at least 2.",
    "lr": "Peak learning rate (after warm-up, then cosine decay) of runs with a blank 'lr'.",
}
COLUMN_HELP = {
    "label": "Legend text; default: named after the model.",
    "norm": "bn: BatchNorm; nf: Normalizer-Free (Scaled WS, α = 0.2).",
    "depth": "ResNet depth.",
    "skipinit": "A residual gain initialized at 0 (the paper trains NF-ResNets with it).",
    "batch": "This run's batch size; default: the batch size below.",
    "lr": "This run's learning rate; default: the learning rate below.",
}
BLANK_CELL = "default"  # what a blank cell shows (its run takes the label or setting below)


# --- state ------------------------------------------------------------------------------------
def initialized() -> bool:
    return SETTINGS_KEY in st.session_state


def apply_preset(preset_id: str) -> None:
    """Fill the runs table and the shared settings from a preset (a button's callback)."""
    preset = get_train_preset(preset_id)
    st.session_state[TABLE_KEY] = preset_rows(preset)
    st.session_state.pop(EDITED_KEY, None)
    st.session_state[VERSION_KEY] = st.session_state.get(VERSION_KEY, 0) + 1
    # New widget keys (the version) make the setting widgets start from the preset's values.
    st.session_state[SETTINGS_KEY] = preset_settings(preset)


def apply_configs(configs: list[TrainConfig]) -> bool:
    """Fill the runs table and the settings so that they plan `configs` again (the runs of a
    link): a preset's own when they are its runs, else the first run's settings with each
    run's batch and learning rate. False, changing nothing, when the table cannot say them
    (runs that differ in a shared setting, or in a field the page has no control for)."""
    wanted = [canonical_json(config) for config in configs]
    for preset in TRAIN_PRESETS:
        if wanted == [canonical_json(config) for config in preset.configs()]:
            apply_preset(preset.id)
            return True
    settings = _settings_of(configs[0])
    rows = []
    for config in configs:
        row = {column: getattr(config, column, None) for column in RUN_COLUMNS}
        row["label"] = None
        for name in ("batch", "lr"):
            if row[name] == settings[name]:
                row[name] = None
        rows.append(row)
    try:
        again = [canonical_json(run_config(settings, row)) for row in rows]
    except ValueError:
        return False
    if again != wanted:
        return False
    st.session_state[TABLE_KEY] = rows
    st.session_state.pop(EDITED_KEY, None)
    st.session_state[VERSION_KEY] = st.session_state.get(VERSION_KEY, 0) + 1
    st.session_state[SETTINGS_KEY] = settings
    return True


def _settings_of(config: TrainConfig) -> dict[str, Any]:
    """The shared settings of a config; a warm-up the config chose itself stays 'auto'."""
    settings = {name: getattr(config, name) for name in SETTING_FIELDS}
    auto = TrainConfig.model_validate({**config.model_dump(), "warmup_steps": None}).warmup_steps
    if settings["warmup_steps"] == auto:
        settings["warmup_steps"] = None
    return settings


def preset_rows(preset: TrainPreset) -> list[dict[str, Any]]:
    """The runs table of a preset: every column present, blank (None) where it leaves one."""
    return [{column: run.get(column) for column in RUN_COLUMNS} for run in preset.runs]


def preset_settings(preset: TrainPreset) -> dict[str, Any]:
    """Every shared setting the page shows for a preset: its own, else TrainConfig's default."""
    defaults = {name: TrainConfig.model_fields[name].default for name in SETTING_FIELDS}
    return defaults | preset.all_settings()


def setting_key(name: str) -> str:
    """The widget key of a shared setting: `t_<name>_<version>`, new with every preset."""
    return f"t_{name}_{st.session_state[VERSION_KEY]}"


# --- bounds and help from the config ----------------------------------------------------------
def limits(name: str, *, inside: float = 0) -> dict[str, Any]:
    """`min_value` and `max_value` of a widget for TrainConfig's field `name`, in the field's
    number type; an open bound (the config refuses the bound itself) moves `inside` inward."""
    bounds = field_bounds(TrainConfig, name)
    annotation = TrainConfig.model_fields[name].annotation
    kind = float if float in (annotation, *get_args(annotation)) else int
    found: dict[str, Any] = {}
    if bounds.low is not None:
        found["min_value"] = kind(bounds.low + inside if bounds.low_open else bounds.low)
    if bounds.high is not None:
        found["max_value"] = kind(bounds.high - inside if bounds.high_open else bounds.high)
    return found


def max_train_steps() -> int:
    """The most steps the API trains (GET /v1/limits); the config's bound when it cannot say."""
    bound: int = limits("steps")["max_value"]
    try:
        return min(int(cached_limits().get("max_train_steps", bound)), bound)
    except ApiProblem:
        return bound  # the API is down: Start says so


def help_text(name: str) -> str | None:
    return HELP.get(name) or TrainConfig.model_fields[name].description


# --- the runs table ---------------------------------------------------------------------------
def runs_table() -> list[dict[str, Any]]:
    """The runs to train, one row each, as edited by the user."""
    st.subheader("Runs")
    key = f"t_runs_{st.session_state[VERSION_KEY]}"
    if key not in st.session_state and EDITED_KEY in st.session_state:
        st.session_state[TABLE_KEY] = st.session_state[EDITED_KEY]  # back from another page
    table = pd.DataFrame(st.session_state[TABLE_KEY], columns=list(RUN_COLUMNS)).astype(
        COLUMN_TYPES
    )
    edited = st.data_editor(
        table,
        key=key,
        num_rows="dynamic",
        hide_index=True,
        placeholder=BLANK_CELL,
        width="stretch",
        column_config={
            "label": st.column_config.TextColumn("label", help=COLUMN_HELP["label"]),
            "norm": st.column_config.SelectboxColumn(
                "norm", options=NORMS, default="nf", required=True, help=COLUMN_HELP["norm"]
            ),
            "depth": st.column_config.SelectboxColumn(
                "depth", options=DEPTHS, default=26, required=True, help=COLUMN_HELP["depth"]
            ),
            "width": st.column_config.NumberColumn(
                "width", **limits("width", inside=0.0625), step=0.0625, default=0.25,
                format="%.4g", help=help_text("width"),
            ),
            "activation": st.column_config.SelectboxColumn(
                "activation", options=BUILTIN_ACTIVATIONS, default="relu", required=True,
                help=help_text("activation"),
            ),
            "skipinit": st.column_config.CheckboxColumn(
                "SkipInit", default=True, help=COLUMN_HELP["skipinit"]
            ),
            "batch": st.column_config.NumberColumn(
                "batch", **limits("batch"), step=1, help=COLUMN_HELP["batch"]
            ),
            "lr": st.column_config.NumberColumn(
                "lr", **limits("lr", inside=1e-4), format="%.4g", help=COLUMN_HELP["lr"]
            ),
        },
    )  # fmt: skip
    rows = [_clean_row(record) for record in edited.to_dict("records")]
    st.session_state[EDITED_KEY] = rows
    return rows


def _clean_row(record: dict[str, Any]) -> dict[str, Any]:
    """A table row as config input: blanks (NaN, '') as None, numbers as Python numbers."""
    row: dict[str, Any] = {}
    for column in RUN_COLUMNS:
        value = record.get(column)
        if value is None or value == "" or bool(pd.isna(value)):
            row[column] = None
        elif column in ("depth", "batch"):
            row[column] = int(value)
        elif column in ("width", "lr"):
            row[column] = float(value)
        elif column == "skipinit":
            row[column] = bool(value)
        else:
            row[column] = str(value)
    return row


# --- the shared settings ----------------------------------------------------------------------
def settings_controls() -> dict[str, Any]:
    """What every run shares; returned as TrainConfig fields (None: the config's default)."""
    settings: dict[str, Any] = st.session_state[SETTINGS_KEY]
    st.subheader("Data and recipe")
    data, batch, steps, lr = st.columns([2, 1, 1, 1])
    _setting(data.radio, "Data set", "dataset", options=tuple(DATASETS),
             format_func=DATASETS.__getitem__, horizontal=True)  # fmt: skip
    _setting(batch.number_input, "Batch size", "batch", **limits("batch"), step=1)
    most = max_train_steps()
    _setting(steps.number_input, "Steps", "steps", min_value=limits("steps")["min_value"],
             max_value=most, step=10,
             help=f"{help_text('steps')} The API trains at most {most:,}.")  # fmt: skip
    _setting(lr.number_input, "Learning rate", "lr", **limits("lr", inside=1e-4), step=0.005,
             format="%.4g")  # fmt: skip
    if settings.get("dataset") == "cifar10":
        st.caption(
            "CIFAR-10 is read by the worker from the folder in its CIFAR10_DIR environment "
            "variable (the python version of the data set); without it the runs fail."
        )
    with st.expander("More settings"):
        left, middle, right = st.columns(3)
        _setting(left.select_slider, "Resolution (px)", "resolution", options=RESOLUTIONS)
        _setting(left.number_input, "Warm-up steps", "warmup_steps", **limits("warmup_steps"),
                 step=1, placeholder="auto (5% of the steps)")  # fmt: skip
        _setting(left.number_input, "Weight decay", "weight_decay", **limits("weight_decay"),
                 step=1e-5, format="%.1e")  # fmt: skip
        _setting(left.number_input, "Label smoothing", "label_smoothing",
                 **limits("label_smoothing", inside=0.01), step=0.05)  # fmt: skip
        _setting(middle.number_input, "EMA decay", "ema_decay", **limits("ema_decay", inside=1e-6),
                 step=0.001, format="%.6g", placeholder="off")  # fmt: skip
        _setting(middle.number_input, "Clip gradient norm", "clip_grad_norm",
                 **limits("clip_grad_norm", inside=0.001), step=0.1, format="%.4g",
                 placeholder="off")  # fmt: skip
        _setting(middle.number_input, "Evaluate every (steps)", "eval_every",
                 **limits("eval_every"), step=5)  # fmt: skip
        _setting(middle.number_input, "Held-out examples", "eval_examples",
                 **limits("eval_examples"), step=100)  # fmt: skip
        _setting(middle.number_input, "SPP every (steps)", "spp_every", **limits("spp_every"),
                 step=5, placeholder="at the start and end only",
                 help="Measure the Signal Propagation Plot every this many steps (and at the "
                 "start and end): the frames of 'Signal propagation during training'.")  # fmt: skip
        _setting(right.slider, "Stochastic depth rate", "stochdepth_rate",
                 **limits("stochdepth_rate", inside=0.05), step=0.05)  # fmt: skip
        _setting(right.slider, "Dropout", "drop_rate", **limits("drop_rate", inside=0.05),
                 step=0.05)  # fmt: skip
        _setting(right.number_input, "Seed", "seed", **limits("seed"), step=1)
    return dict(settings)


def _setting(widget: Any, label: str, name: str, **kwargs: Any) -> None:
    """One shared setting: its widget starts from the value kept in the settings (never from
    Session State written before it exists: a click racing the page's first run would then
    rebuild it from its bare default), and writes what the user sets back there."""
    current = st.session_state[SETTINGS_KEY].get(name)
    if "options" in kwargs and widget.__name__ == "radio":
        kwargs["index"] = list(kwargs["options"]).index(current)
    else:
        if current is not None and "max_value" in kwargs:
            current = min(current, kwargs["max_value"])  # e.g. a lower limit of the API's
        kwargs["value"] = current
    kwargs.setdefault("help", help_text(name))
    value = widget(label, key=setting_key(name), **kwargs)
    if isinstance(value, float):
        value = round(value, 10)  # slider steps are binary fractions: 0.30000000000000004
    st.session_state[SETTINGS_KEY][name] = value
