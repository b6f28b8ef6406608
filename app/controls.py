"""Sidebar widgets for one `SPPConfig`, kept in step with the URL query string.

The validated config in `st.session_state["config"]` is the truth; the widgets are made from
it on every run. A widget's callback applies its one change with `nfcore.spec.edits.with_changes`
(so e.g. a new norm also resets the conv, alpha and gamma derived from the old one) and
validates it; when other widgets must then show other values, the widgets are made afresh
under new keys (see VERSION_KEY). An invalid change is undone the same way and explained.
The query string is rewritten from the config on every run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import streamlit as st
from pydantic import ValidationError

from app import layout, urlstate
from app.api_client import ApiProblem, cached_models
from nfcore.spec.activation_names import BUILTIN_ACTIVATIONS
from nfcore.spec.catalog import GAMMA_TABLE
from nfcore.spec.config import MAX_GAMMA, SPPConfig
from nfcore.spec.families import FAMILIES, family
from nfcore.spec.fields import describe_validation_error, field_bounds
from nfcore.spec.norms import NORMS, norm
from nfcore.spec.statistics import default_panels, measured, statistic
from nfcore.spec.variants import RESNET_LAYOUTS

CUSTOM = "custom"
DEPTHS = (14, 26, 50, 101, 152, 200, 288, 600, CUSTOM)
WIDTHS = (0.0625, 0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
RESOLUTIONS = (8, 16, 32, 64, 96, 128, 160, 224, 256, 384, 512)
GAMMA_BY_ACTIVATION = {row["name"]: row["quadrature"] for row in GAMMA_TABLE}
ERROR_KEY = "control_error"  # why a widget's change was refused: shown under that widget
ERROR_FIELD_KEY = "control_error_field"  # the widget it belongs to
LINK_KEY = "link_notices"  # what of the link is not shown: at the top of the page
PLUGIN_PREFIX = "plugin:"  # a family menu entry that opens the "Your network" page
GOTO_PLUGIN_KEY = "goto_plugin"  # session key: the plugin chosen in the family menu

HELP = {
    "family": "Pre-activation ResNetV2 (Figs. 1, 2, 6-10), post-activation ResNetV1 (Fig. 11, "
    "and the reference FixUp network of Fig. 10), "
    "or the NF-RegNets of Section 5 / Appendix D.2 (with Normalization = BatchNorm: the same "
    "network batch-normalized, the baseline NF-RegNets are compared with).",
    "depth": "Residual blocks per stage follow He et al.; the paper's SPPs use 600 layers.",
    "layout": "Blocks per stage, comma-separated (1 to 4 stages), e.g. 50,50,50,50.",
    "variant": "NF-RegNet-B0 to B5 (Appendix D.2, Table 7).",
    "norm": "BatchNorm, Normalizer-Free (Section 4: x_{l+1} = x_l + α f(x_l / β_l)), "
    "no normalization, or FixUp (Fig. 10): in ResNetV2 FixUp's rules on this project's "
    "pre-activation block (ours), in ResNetV1 the reference's post-activation FixUp network "
    "(nfnets/fixup_resnet.py), which Fig. 10 most likely shows.",
    "order": "Fig. 1: BN-ReLU-Conv adds a channel mean in every branch; ReLU-BN-Conv does not.",
    "conv": "Scaled Weight Standardization (Section 4.2, eq. 2) or Gaussian He init (Fig. 2).",
    "activation": "The nonlinearity g; Scaled WS scales it by γ = 1/√Var g(x) (Section 4.2).",
    "alpha": "α: each NF block grows the variance by α² (Section 4); the paper uses 0.2.",
    "gamma": "Auto: γ = 1/√Var g(x) for x ~ N(0,1). Fig. 8 shows He's √2 is too small for ReLU.",
    "se_gain": "Squeeze-Excite output gain: 0 = no S+E, 1 = unmodified (attenuates, Fig. 9), "
    "2 = corrected (Section 4.4).",
    "skipinit": "A learnable residual gain initialized at 0 (De & Smith, 2020): branches start "
    "silent.",
    "maxpool": "3x3 max-pool in the stem; Fig. 7 removes it for a linear network.",
    "padding": "A 3x3 conv pads its input with a border of zeros. In a small image the border "
    "is a large share of what the late stages read: at 64 px the last stage is 2x2 pixels, so "
    "more than half of its 3x3 convs' inputs are zeros, and an NF-ResNet's residual variance "
    "sags stage by stage (NF-ResNetV2-50: about 1.0 in stage 0, 0.55 in the last) where the "
    "paper's 512 px keep it near 1. On: the image wraps round (circular padding), so every "
    "position sees real values and the same statistics; the weights and FLOPs are the same. "
    "Off: zeros, the paper's setting.",
    "width": "Channel multiplier; narrower runs faster with the same signal propagation trend.",
    "resolution": "Input side in pixels; the paper uses 512.",
    "batch": "Input batch size N; the statistics average over N, H and W.",
    "seed": "Seeds the weights and the input batch.",
    "input": "N(0,1) noise as in the paper's SPPs, or real images (scikit-learn digits).",
    "gradients": "Also measure dLoss/dx on the backward pass (a second row of panels).",
    "extra_stats": "Also measure Appendix G's statistics: the activation mean and the average "
    "pixel norm (G.2). Choose them under Panels to draw them; the CSV has them either way.",
    "panels": "The statistics drawn, one panel each: by default the paper's three (and the "
    "gradient row when gradients are measured). The toggles above add what can be chosen. "
    "The CSV download holds every measured statistic, drawn or not.",
    "log": "Semilog y axis, for signals that explode (Fig. 6).",
}


# --- state ------------------------------------------------------------------------------------
# Session keys. The config (and the view's log scale) is the one source of truth; every widget
# is created from it, under a key carrying VERSION. A change that alters what other widgets must
# show (a new norm brings its conv and alpha, a preset, a refused value to undo) bumps VERSION,
# so every widget is created afresh from the config; a widget's own plain change does not, so a
# slider keeps its focus while the keyboard moves it. Nothing writes a widget's state.
CONFIG_KEY = "config"
VERSION_KEY = "controls_version"
LOG_KEY = "log_y"
CUSTOM_KEY = "custom_layout"  # the user chose "custom layout" for a depth that has a name
PANELS_KEY = "panels"  # the statistics drawn; None: the default ones (urlstate.panels_for)


def init_state() -> None:
    """Once per session: the config, preset, pins and log scale from the URL."""
    if CONFIG_KEY in st.session_state:
        return
    query = st.query_params.to_dict()
    problems = []
    try:
        config = urlstate.decode_config(query)
    except urlstate.BadQuery as problem:
        problems.append(f"{problem}; showing the defaults instead")
        config = urlstate.default_config()
    try:
        panels = urlstate.decode_panels(query)
    except urlstate.BadQuery as problem:
        problems.append(f"{problem}; showing the default panels instead")
        panels = None
    if not problems:
        problems = urlstate.link_notices(query, config)
    st.session_state[LINK_KEY] = problems
    config = urlstate.measuring(config, panels)  # a panel of Appendix G switches it on
    st.session_state[PANELS_KEY] = urlstate.panels_for(config, panels)
    st.session_state[CONFIG_KEY] = config
    st.session_state[VERSION_KEY] = 0
    st.session_state["preset"] = query.get("preset") or None
    st.session_state["pins"] = urlstate.decode_pins(query)
    st.session_state[LOG_KEY] = query.get("log") == "1"


def current_config() -> SPPConfig:
    return st.session_state[CONFIG_KEY]


def log_y() -> bool:
    return bool(st.session_state.get(LOG_KEY))


def panels() -> tuple[str, ...] | None:
    """The statistics chosen to draw; None: the default panels of what is measured."""
    return st.session_state.get(PANELS_KEY)


def set_config(config: SPPConfig, *, preset: str | None = None, log_y: bool | None = None) -> None:
    """Show another config (a preset button's callback): every widget is made afresh from it."""
    st.session_state[PANELS_KEY] = urlstate.panels_for(config, panels())
    st.session_state[CONFIG_KEY] = config
    st.session_state["preset"] = preset
    st.session_state[CUSTOM_KEY] = False
    if log_y is not None:
        st.session_state[LOG_KEY] = log_y
    _bump()


def _bump() -> None:
    st.session_state[VERSION_KEY] = st.session_state.get(VERSION_KEY, 0) + 1


def widget_key(name: str) -> str:
    """The key of a config widget in this version of the controls: `w_<name>@<version>`."""
    return f"w_{name}@{st.session_state.get(VERSION_KEY, 0)}"


def sync_query() -> None:
    """Rewrite the URL query string when the view changed, so the URL reproduces it."""
    wanted = urlstate.encode_view(
        current_config(),
        preset=st.session_state.get("preset"),
        pins=st.session_state.get("pins", []),
        log_y=log_y(),
        panels=panels(),
    )
    if st.query_params.to_dict() != wanted:
        st.query_params.from_dict(wanted)


# --- widgets <-> config -----------------------------------------------------------------------
def widget_values(config: SPPConfig) -> dict[str, Any]:
    """What each widget shows for this config; None: the widget is not shown. Keys that are
    no widget's value (`*_options`, `*_label`) are what else a widget is drawn with."""
    standard = RESNET_LAYOUTS.get(config.depth or 0) == tuple(config.layout or ())
    gamma = config.gamma
    row = family(config.family)
    return {
        "family": config.family,
        "depth": (config.depth if standard else CUSTOM) if row.sized_by == "depth" else None,
        "layout": ",".join(map(str, config.layout or ())),
        "variant": config.variant,
        "norm": config.norm,
        "norm_options": row.norms,
        "variant_options": tuple(row.variants),
        "order": config.order,
        "conv": config.conv if len(norm(str(config.norm)).convs) > 1 else None,
        "activation": config.activation,
        "alpha": config.alpha,
        "alpha_options": max(1.0, config.alpha or 0.0),
        "gamma_mode": None if gamma is None else ("auto" if gamma == "auto" else "manual"),
        "gamma_label": GAMMA_BY_ACTIVATION.get(str(config.activation)),
        "gamma": None if gamma in (None, "auto") else float(gamma),
        "se_gain": config.se_gain,
        "se_gain_options": max(2.0, config.se_gain or 0.0),
        "skipinit": config.skipinit if norm(str(config.norm)).skipinit else None,
        "maxpool": config.maxpool,
        "padding": config.padding == "circular",
        "width": config.width,
        "resolution": config.resolution,
        "batch": config.batch,
        "seed": config.seed,
        "input": config.input,
        "gradients": config.gradients,
        "extra_stats": config.extra_stats,
        **{name: control.value(config) for name, control in CONTROLS.items()},
    }


def _change_for(name: str, value: Any, config: SPPConfig) -> dict[str, Any] | None:
    """The config fields one widget's new value changes (None: no config change)."""
    if name == "depth":
        # "custom layout": the same network, its blocks per stage now editable.
        st.session_state[CUSTOM_KEY] = value == CUSTOM
        return None if value == CUSTOM else {"depth": int(value)}
    if name == "layout":
        return {"layout": [part.strip() for part in str(value).split(",") if part.strip()]}
    if name == "padding":  # the toggle "Remove the border effect"
        return {"padding": "circular" if value else "zeros"}
    if name == "gamma_mode":
        gamma = GAMMA_BY_ACTIVATION.get(str(config.activation), 1.0)
        return {"gamma": "auto" if value == "auto" else round(float(gamma), 6)}
    if isinstance(value, float):
        value = round(value, 6)  # slider steps are binary fractions: 0.30000000000000004
    return {name: value}


def _on_change(name: str) -> None:
    config = current_config()
    value = st.session_state[widget_key(name)]
    if name == "family" and str(value).startswith(PLUGIN_PREFIX):
        # A model plugin has a page of its own (its form comes from its argument schema).
        st.session_state[GOTO_PLUGIN_KEY] = str(value).removeprefix(PLUGIN_PREFIX)
        _bump()  # the menu shows the config's family again when the user comes back
        return
    changes = _change_for(name, value, config)
    if changes is None:
        return
    try:
        new = config.edited(changes)
    except ValidationError as error:
        _refuse(name, describe_validation_error(error))
        return
    clear_messages()
    before, after = widget_values(config), widget_values(new)
    st.session_state[CONFIG_KEY] = new
    st.session_state[PANELS_KEY] = urlstate.panels_for(new, panels(), before=config)
    measures_else = (config.extra_stats, config.gradients) != (new.extra_stats, new.gradients)
    if measures_else or any(before[key] != after[key] for key in after if key != name):
        _bump()  # other widgets show other values (or the panels other options) now


def _on_panels_change() -> None:
    chosen = st.session_state[widget_key("panels")]
    if not chosen:
        _refuse("panels", "Panels: choose at least one statistic to draw")  # the last come back
        return
    clear_messages()
    st.session_state[PANELS_KEY] = urlstate.panels_for(current_config(), chosen)


def _on_log_change() -> None:
    st.session_state[LOG_KEY] = bool(st.session_state[widget_key("log")])


# Widgets whose value is given as an index into their options, not as the value itself.
_BY_INDEX = (st.selectbox, st.radio)


def _refuse(name: str, message: str) -> None:
    """Undo a widget's change: every widget is made afresh from the config that stays, and
    the reason is shown under the widget that was changed."""
    st.session_state[ERROR_KEY] = message
    st.session_state[ERROR_FIELD_KEY] = name
    st.session_state[LINK_KEY] = []  # the user has moved on from the link
    _bump()


def clear_messages() -> None:
    """A change went through: the refusal before it, and the link's notices, are done with."""
    st.session_state.pop(ERROR_KEY, None)
    st.session_state.pop(ERROR_FIELD_KEY, None)
    st.session_state[LINK_KEY] = []


def _error_under(name: str) -> None:
    """The reason a change of widget `name` was refused, right under it."""
    if st.session_state.get(ERROR_FIELD_KEY) == name and (
        message := st.session_state.get(ERROR_KEY)
    ):
        st.error(message)


def page_messages() -> None:
    """At the top of the page: what of the link the page does not show, and why."""
    for message in st.session_state.get(LINK_KEY) or []:
        st.warning(message)


def _widget(kind: Any, label: str, name: str, shown: Any = None, **kwargs: Any) -> Any:
    """One config widget, created from the config: its value (or `shown`), the shared
    callback, its help."""
    value = widget_values(current_config())[name] if shown is None else shown
    if kind in _BY_INDEX:
        kwargs["index"] = list(kwargs["options"]).index(value)
    else:
        kwargs["value"] = value
    widget = kind(label, key=widget_key(name), on_change=_on_change, args=(name,),
                  help=HELP.get(name), **kwargs)  # fmt: skip
    _error_under(name)
    return widget


def norm_titles(family_name: str) -> dict[str, str]:
    """The Normalization menu's names in a family (FixUp: ours or the reference network)."""
    return {**{name: row.title for name, row in NORMS.items()}, **family(family_name).norm_titles}


def _with(options: tuple, value: Any) -> tuple:
    """Options that include the current value (a URL may ask for one not in the list)."""
    return options if value in options else tuple(sorted((*options, value)))


# --- the sidebar ------------------------------------------------------------------------------
def plugin_options() -> tuple[str, ...]:
    """The family menu's entries for the model plugins a live worker has ('plugin:<name>'),
    none while the API cannot say."""
    try:
        rows = cached_models()
    except ApiProblem:
        return ()
    return tuple(f"{PLUGIN_PREFIX}{row['plugin']}" for row in rows if row.get("family") == "plugin")


def _family_title(name: str) -> str:
    if name.startswith(PLUGIN_PREFIX):
        return f"Your network: {name.removeprefix(PLUGIN_PREFIX)} (plugin)"
    return FAMILIES[name].title


def sidebar_controls() -> None:
    """Every control of the config, showing only those that apply to the chosen model."""
    if plugin := st.session_state.pop(GOTO_PLUGIN_KEY, None):
        st.switch_page("views/plugins.py", query_params={"plugin": plugin})
    config = current_config()
    shown = widget_values(config)
    with layout.controls():
        st.header("Model")
        _widget(st.selectbox, "Family", "family", options=(*FAMILIES, *plugin_options()),
                format_func=_family_title)  # fmt: skip
        if shown["depth"] is None:
            _widget(st.selectbox, "Variant", "variant", options=shown["variant_options"])
        else:
            custom = shown["depth"] == CUSTOM or bool(st.session_state.get(CUSTOM_KEY))
            _widget(st.selectbox, "Depth", "depth", options=DEPTHS, shown=CUSTOM if custom else None,
                    format_func=lambda d: "custom layout" if d == CUSTOM else str(d))  # fmt: skip
            if custom:
                _widget(st.text_input, "Blocks per stage", "layout")
        _widget(st.selectbox, "Normalization", "norm", options=shown["norm_options"],
                format_func=norm_titles(config.family).__getitem__)  # fmt: skip
        if shown["order"] is not None:
            _widget(st.radio, "BN order", "order", options=("bn-relu-conv", "relu-bn-conv"),
                    horizontal=True)  # fmt: skip
        if shown["conv"] is not None:
            _widget(st.radio, "Convolution", "conv", options=("ws", "he"), horizontal=True,
                    format_func={"ws": "Scaled WS", "he": "He init"}.__getitem__)  # fmt: skip
        _widget(st.selectbox, "Activation", "activation",
                options=_with(BUILTIN_ACTIVATIONS, config.activation))  # fmt: skip
        _signal_controls(shown)
        _registered_controls("model", shown)
        st.header("Input and measurement")
        _input_controls(config)
        _registered_controls("input", shown)


# --- controls of one's own ---------------------------------------------------------------------
@dataclass(frozen=True)
class Control:
    """A sidebar control of one config field, drawn after the built-in ones of its section
    (`register_control`). Its value goes through the same callback, edit rule, validation
    and URL as every other widget's; a refused value is explained under it."""

    name: str  # the config field, and the widget's key
    label: str
    kind: Callable[..., Any]  # st.number_input, st.selectbox, st.toggle, ...
    section: Literal["model", "input"] = "model"
    options: Mapping[str, Any] = field(default_factory=dict)  # the widget's other arguments
    shown: Callable[[SPPConfig], Any] | None = None  # its value, None to hide; default the field's

    def value(self, config: SPPConfig) -> Any:
        return self.shown(config) if self.shown is not None else getattr(config, self.name)


CONTROLS: dict[str, Control] = {}


def register_control(control: Control) -> Control:
    """Add a control of a config field that has none; its help is HELP's entry, or else the
    field's description."""
    if control.name not in SPPConfig.model_fields:
        raise ValueError(f"{control.name!r} is not a config field")
    if control.name in CONTROLS or control.name in widget_values(SPPConfig()):
        raise ValueError(f"the field {control.name!r} has a control already")
    HELP.setdefault(control.name, SPPConfig.model_fields[control.name].description or "")
    CONTROLS[control.name] = control
    return control


def _registered_controls(section: str, shown: dict[str, Any]) -> None:
    for control in CONTROLS.values():
        if control.section == section and shown[control.name] is not None:
            _widget(control.kind, control.label, control.name, **dict(control.options))


def _signal_controls(shown: dict[str, Any]) -> None:
    if shown["alpha"] is not None:
        _widget(st.slider, "α (alpha)", "alpha", min_value=0.05,
                max_value=shown["alpha_options"], step=0.05)  # fmt: skip
    if shown["gamma_mode"] is not None:
        auto = shown["gamma_label"]
        _widget(st.radio, "γ (gamma)", "gamma_mode", options=("auto", "manual"), horizontal=True,
                format_func=lambda m: f"auto ({auto:.4f})" if m == "auto" and auto else m)  # fmt: skip
        if shown["gamma"] is not None:
            _widget(st.number_input, "γ value", "gamma", min_value=0.01, max_value=MAX_GAMMA,
                    step=0.01, format="%.4f")  # fmt: skip
    _widget(st.slider, "S+E gain", "se_gain", min_value=0.0,
            max_value=shown["se_gain_options"], step=0.25)  # fmt: skip
    if shown["skipinit"] is not None:
        _widget(st.checkbox, "SkipInit", "skipinit")
    if shown["maxpool"] is not None:
        _widget(st.checkbox, "Stem max-pool", "maxpool")


def _limits(name: str) -> dict[str, Any]:
    """A number input's min_value and max_value: the config field's own (inclusive) bounds."""
    bounds = field_bounds(SPPConfig, name)
    return {"min_value": bounds.low, "max_value": bounds.high}


def _input_controls(config: SPPConfig) -> None:
    _widget(st.select_slider, "Width multiplier", "width", options=_with(WIDTHS, config.width))
    _widget(st.select_slider, "Resolution (px)", "resolution",
            options=_with(RESOLUTIONS, config.resolution))  # fmt: skip
    _widget(st.toggle, "Remove the border effect (circular padding)", "padding")
    _widget(st.number_input, "Batch", "batch", step=1, **_limits("batch"))
    _widget(st.number_input, "Seed", "seed", step=1, **_limits("seed"))
    _widget(st.radio, "Input", "input", options=("gaussian", "digits"), horizontal=True,
            format_func={"gaussian": "N(0,1) noise", "digits": "digits images"}.__getitem__)  # fmt: skip
    _widget(st.toggle, "Gradients (backward pass)", "gradients")
    _widget(st.toggle, "Appendix G statistics", "extra_stats")
    _panels_control(config)
    st.toggle("Log-scale y axis", value=log_y(), key=widget_key("log"), on_change=_on_log_change,
              help=HELP["log"])  # fmt: skip


def _panels_control(config: SPPConfig) -> None:
    """The statistics to draw, among those the config measures, by their panel titles."""
    rows = measured(config.extra_stats, config.gradients)
    chosen = panels() or default_panels(config.extra_stats, config.gradients)
    st.multiselect("Panels", options=[row.key for row in rows], default=list(chosen),
                   format_func=lambda key: statistic(key).title, key=widget_key("panels"),
                   on_change=_on_panels_change, help=HELP["panels"])  # fmt: skip
    _error_under("panels")
