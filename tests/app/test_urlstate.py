"""The explorer's URL: a config written as a query string is read back as exactly that config.

A shared link must reproduce the view, so the round trip is checked on the config's canonical
JSON and its job id (the cache key), through a real query string (`urlencode` and back), for
the dashboard's defaults, every run of every paper preset and a few hand-made configs.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import pytest

import nfcore
from app import urlstate
from nfcore.spec.config import SPPConfig, canonical_json, config_hash
from nfcore.spec.presets import PRESETS

PRESET_RUNS = [
    pytest.param(run.config, id=f"{preset.id}-{number}")
    for preset in PRESETS
    for number, run in enumerate(preset.runs)
]
CUSTOM_CONFIGS = [
    pytest.param(SPPConfig(family="nf_regnet", variant="B2", width=0.5), id="nf-regnet-b2"),
    pytest.param(SPPConfig(norm="nf", layout=(2, 3, 1), width=0.125, resolution=32), id="layout"),
    pytest.param(SPPConfig(norm="nf", gamma=1.7139, alpha=0.35, activation="gelu"), id="gamma"),
    pytest.param(SPPConfig(norm="bn", order="relu-bn-conv", gradients=True), id="gradients"),
    pytest.param(SPPConfig(norm="none", input="digits", seed=7, maxpool=False), id="digits"),
    pytest.param(SPPConfig(family="resnetv1", norm="bn", depth=14, batch=1), id="resnetv1"),
    pytest.param(SPPConfig(norm="fixup", se_gain=1.0, width=1.5, resolution=512), id="fixup"),
]


def through_url(query: dict[str, str]) -> dict[str, str]:
    """What the browser gives back: the query string encoded into a URL and parsed again."""
    return dict(parse_qsl(urlencode(query), keep_blank_values=True))


def assert_round_trip(config: SPPConfig) -> dict[str, str]:
    query = urlstate.encode_config(config)
    decoded = urlstate.decode_config(through_url(query))
    assert decoded == config
    assert canonical_json(decoded) == canonical_json(config)
    assert config_hash(decoded, nfcore.__version__) == config_hash(config, nfcore.__version__)
    return query


def test_defaults_are_an_empty_query_string() -> None:
    """The first page a user opens has a clean URL, and a clean URL shows the defaults."""
    assert urlstate.encode_config(urlstate.default_config()) == {}
    assert urlstate.decode_config({}) == urlstate.default_config()
    assert_round_trip(urlstate.default_config())


@pytest.mark.parametrize("config", PRESET_RUNS)
def test_every_preset_run_round_trips(config: SPPConfig) -> None:
    query = assert_round_trip(config)
    assert query["depth"] == "600"  # the paper's depth by name, not its 4-stage layout
    assert "layout" not in query


@pytest.mark.parametrize("config", CUSTOM_CONFIGS)
def test_custom_configs_round_trip(config: SPPConfig) -> None:
    assert_round_trip(config)


def test_query_string_holds_only_what_differs_from_the_defaults() -> None:
    config = SPPConfig(**{**urlstate.APP_DEFAULTS, "alpha": 0.5, "activation": "silu"})
    assert urlstate.encode_config(config) == {"alpha": "0.5", "activation": "silu"}


def test_view_keys_round_trip() -> None:
    """Preset, pins and the log scale travel next to the config fields."""
    config = PRESETS[1].runs[0].config
    pins = ["a" * 32, "b" * 32]
    query = through_url(urlstate.encode_view(config, preset="fig2", pins=pins, log_y=True))
    assert query["preset"] == "fig2"
    assert query["log"] == "1"
    assert urlstate.decode_pins(query) == pins
    assert urlstate.decode_config(query) == config
    assert urlstate.decode_pins({}) == []


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ({"depth": "51"}, "depth=51 was left out: 51 has no block layout (known depths: 14, "),
        ({"alpha": "abc"}, "alpha=abc was left out: Input should be a valid number"),
        ({"resolution": "8"}, "resolution=8 was left out: 8 is too small"),
        ({"norm": "nope"}, "norm=nope was left out: Input should be 'bn', 'nf', 'none' or "
                           "'fixup', got 'nope'"),
        ({"layout": "1,x"}, "layout=1,x was left out: Input should be a valid integer"),
        ({"gamma": "-1"}, "gamma=-1 was left out: must be 'auto' or a number"),
        ({"family": "nf_regnet", "norm": "fixup"},
         "norm=fixup was left out: 'fixup' is not available for nf_regnet"),
    ],
)  # fmt: skip
def test_a_bad_field_is_left_out_with_a_readable_sentence(query: dict[str, str], says: str) -> None:
    """One sentence per bad field, in the link's words, without pydantic's; the link's other
    fields are kept (`width=0.5` here)."""
    config, notes = urlstate.read_link({**query, "width": "0.5"})
    [note] = notes
    assert note.startswith(f"The link's {says}") and note.endswith(".")
    assert "Traceback" not in note and "pydantic" not in note and "invalid:" not in note
    assert config.width == 0.5
    assert urlstate.decode_config({**query, "width": "0.5"}) == config
    shown = urlstate.link_notices(query, urlstate.decode_config(query))
    assert shown == urlstate.read_link(query)[1]  # the page says it, once


def test_unknown_keys_are_ignored() -> None:
    """Keys that are not config fields (view keys, Streamlit's `embed`, a tracker's) are left
    alone rather than refused, so such a link still opens."""
    query = {"alpha": "0.4", "embed": "true", "utm_source": "mail", "preset": "fig1"}
    assert urlstate.decode_config(query) == SPPConfig(**{**urlstate.APP_DEFAULTS, "alpha": 0.4})


# --- the panels drawn ---------------------------------------------------------------------------
def test_chosen_panels_round_trip_with_the_config() -> None:
    config = SPPConfig(**{**urlstate.APP_DEFAULTS, "extra_stats": True})
    panels = ("avg_channel_var", "activation_mean")
    query = through_url(urlstate.encode_view(config, preset=None, pins=[], log_y=False,
                                             panels=panels))  # fmt: skip
    assert query["panels"] == "avg_channel_var,activation_mean"
    assert urlstate.decode_panels(query) == panels
    assert urlstate.decode_config(query) == config
    # The default panels are no key at all.
    assert "panels" not in urlstate.encode_view(config, preset=None, pins=[], log_y=False)
    assert urlstate.decode_panels({}) is None and urlstate.decode_panels({"panels": ""}) is None


def test_a_bad_panel_in_a_link_is_a_readable_error() -> None:
    with pytest.raises(urlstate.BadQuery) as caught:
        urlstate.decode_panels({"panels": "avg_channel_var,avg_chanel_var"})
    message = str(caught.value)
    assert message.startswith("the link's panels are invalid: unknown statistic 'avg_chanel_var'")
    assert "activation_mean" in message  # the keys there are


def test_a_linked_panel_switches_on_its_measurement() -> None:
    config = urlstate.default_config()
    measuring = urlstate.measuring(config, ("activation_mean", "grad_avg_channel_var"))
    assert (measuring.extra_stats, measuring.gradients) == (True, True)
    assert measuring == SPPConfig(**{**urlstate.APP_DEFAULTS, "extra_stats": True,
                                     "gradients": True})  # fmt: skip
    assert urlstate.measuring(config, ("avg_channel_var",)) is config
    assert urlstate.measuring(config, None) is config


def test_panels_follow_what_the_config_measures() -> None:
    plain = urlstate.default_config()
    extra = SPPConfig(**{**urlstate.APP_DEFAULTS, "extra_stats": True})
    both = SPPConfig(**{**urlstate.APP_DEFAULTS, "extra_stats": True, "gradients": True})
    chosen = ("avg_channel_var", "activation_mean")
    assert urlstate.panels_for(extra, chosen) == chosen
    assert urlstate.panels_for(extra, reversed(chosen)) == chosen  # table order
    # The default panels are kept as None, so they follow the gradients toggle.
    assert urlstate.panels_for(plain, ("avg_sq_channel_mean", "avg_channel_var",
                                       "residual_avg_channel_var")) is None  # fmt: skip
    # Switching gradients on adds its row, as to the default view; off removes it.
    with_gradients = urlstate.panels_for(both, chosen, before=extra)
    assert with_gradients == (*chosen, "grad_avg_sq_channel_mean", "grad_avg_channel_var",
                              "grad_residual_avg_channel_var")  # fmt: skip
    assert urlstate.panels_for(extra, with_gradients, before=both) == chosen
    # Appendix G switched off: its panels go (and with nothing left, the default is back).
    assert urlstate.panels_for(plain, chosen, before=extra) == ("avg_channel_var",)
    assert urlstate.panels_for(plain, ("activation_mean",), before=extra) is None


def test_a_link_says_what_of_it_is_not_shown() -> None:
    query = {"norm": "nf", "order": "relu-bn-conv", "preset": "fig99", "colour": "red"}
    notices = urlstate.link_notices(query, urlstate.decode_config(query))
    assert len(notices) == 3
    assert notices[0].startswith(
        "The link's preset 'fig99' is not one of the paper's figures (fig1"
    )
    assert notices[1].startswith("The link's order=relu-bn-conv does not apply to NF-ResNetV2-50")
    assert notices[2] == "The link's 'colour' is not a setting of the Explorer; it was ignored."
    good = {"norm": "bn", "order": "relu-bn-conv", "preset": "fig1", "pins": "abc", "log": "1"}
    assert urlstate.link_notices(good, urlstate.decode_config(good)) == []
