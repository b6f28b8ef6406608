"""The sidebar, the URL and the config are one state, whatever the order of changes.

Sequences of changes in Streamlit's AppTest, checked after every step: each widget shows what
the config says (`app.controls.widget_values`), the URL decodes to the config, and the job the
page asked the API for is that config's. Walked: every activation in turn, every preset
after every other, hidden controls reappearing. The API has no worker here: what is checked
is what the page asks for, not the results.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

import nfcore
from app import controls, urlstate
from nfcore.spec.activation_names import BUILTIN_ACTIVATIONS
from nfcore.spec.config import SPPConfig, canonical_json, config_hash
from nfcore.spec.presets import PRESETS, get_preset
from nfcore.spec.statistics import default_panels, measured, statistic
from tests.app.conftest import clear_app_caches

ROOT = Path(__file__).resolve().parents[2]
APP_MAIN = ROOT / "app" / "main.py"
TINY = {"depth": 14, "norm": "nf", "width": 0.125, "resolution": 32, "batch": 2}
WIDGET_KINDS = ("selectbox", "slider", "select_slider", "checkbox", "number_input",
                "text_input", "radio", "toggle")  # fmt: skip


@pytest.fixture(autouse=True)
def page_against_an_api(api_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The page submits and moves on: no worker, no waiting."""
    monkeypatch.setenv("API_URL", api_server)
    monkeypatch.setenv("APP_FOLLOW_SECONDS", "0")
    monkeypatch.setenv("APP_SUBMIT_WAIT_SECONDS", "0")
    monkeypatch.delenv("API_TOKEN", raising=False)
    clear_app_caches()
    yield api_server
    clear_app_caches()


def open_explorer(query: dict[str, str]) -> AppTest:
    at = AppTest.from_file(str(APP_MAIN), default_timeout=30)
    at.query_params.update(query)
    return run(at)


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [error.message for error in at.exception]
    return at


def sidebar(at: AppTest) -> dict[str, Any]:
    """Every config widget on the sidebar, by field name, with the value it shows."""
    version = at.session_state["controls_version"]
    shown = {}
    for kind in WIDGET_KINDS:
        for widget in getattr(at.sidebar, kind):
            name, _, widget_version = str(widget.key).removeprefix("w_").partition("@")
            assert widget_version == str(version), f"{widget.key} is of another version"
            shown[name] = widget.value
    return shown


def control(at: AppTest, kind: str, name: str) -> Any:
    [widget] = [w for w in getattr(at.sidebar, kind) if str(w.key).startswith(f"w_{name}@")]
    return widget


def assert_one_state(at: AppTest, api_url: str, step: str) -> SPPConfig:
    """The sidebar shows the config, the URL decodes to it, and the page follows its job."""
    config: SPPConfig = at.session_state["config"]
    expected = controls.widget_values(config)
    shown = sidebar(at)
    for name, value in shown.items():
        if name == "log":
            continue
        if name == "depth" and value == controls.CUSTOM:
            assert config.layout == tuple(int(part) for part in shown["layout"].split(","))
            continue
        assert value == expected[name], (
            f"after {step}: {name} shows {value!r}, config {expected[name]!r}"
        )
    for name, value in expected.items():  # what applies is shown, what does not is not
        if name in ("family", "norm", "activation", "se_gain", "width", "resolution", "batch"):
            assert name in shown, f"after {step}: no {name} widget"
        if value is None and not name.endswith(("_options", "_label")) and name != "gamma":
            assert name not in shown, f"after {step}: {name} is shown but does not apply"
    assert urlstate.decode_config(at.query_params) == config, f"after {step}: URL differs"
    job_id = config_hash(config, nfcore.__version__)
    assert at.session_state["submitted"][canonical_json(config)] == job_id, f"after {step}"
    assert httpx.get(f"{api_url}/v1/jobs/{job_id}").status_code == 200, f"after {step}"
    return config


def test_every_activation_in_turn_keeps_the_sidebar_url_and_request_one_state(
    page_against_an_api: str,
) -> None:
    """The issue's sequence: relu -> silu left the gamma radio on neither option, and the next
    change flipped it to 'manual' at gelu's value, which went into the URL."""
    at = open_explorer(urlstate.encode_config(SPPConfig(**TINY)))
    for activation in [*BUILTIN_ACTIVATIONS[1:], BUILTIN_ACTIVATIONS[0], "silu"]:
        control(at, "selectbox", "activation").set_value(activation)
        run(at)
        config = assert_one_state(at, page_against_an_api, f"activation {activation}")
        assert config.activation == activation
        assert config.gamma == "auto", f"{activation}: gamma became {config.gamma}"
        assert control(at, "radio", "gamma_mode").value == "auto"
        assert "gamma" not in at.query_params


def test_every_preset_after_every_other_shows_its_first_run(page_against_an_api: str) -> None:
    """The issue's sequence: Fig. 9 -> 10 -> 11 left the sidebar on 'Scaled WS' while the
    network and the URL were He init."""
    at = open_explorer({})
    order = every_pair_once(list(PRESETS))
    assert len(order) == len(PRESETS) * (len(PRESETS) - 1) + 1
    for step, preset in enumerate(order):
        at.button(key=f"preset_{preset.id}").click()
        run(at)
        previous = f" after Fig. {order[step - 1].figure}" if step else ""
        config = assert_one_state(at, page_against_an_api, f"Fig. {preset.figure}{previous}")
        assert config == preset.runs[0].config
        assert at.query_params["preset"] == preset.id


def every_pair_once(items: list[Any]) -> list[Any]:
    """A walk that steps from every item to every other exactly once (an Euler circuit of the
    complete directed graph, by Hierholzer's algorithm)."""
    left = {i: [j for j in range(len(items)) if j != i] for i in range(len(items))}
    stack, walk = [0], []
    while stack:
        if left[stack[-1]]:
            stack.append(left[stack[-1]].pop())
        else:
            walk.append(stack.pop())
    return [items[i] for i in reversed(walk)]


def test_hidden_controls_show_the_config_when_they_reappear(page_against_an_api: str) -> None:
    at = open_explorer(urlstate.encode_config(SPPConfig(**TINY, conv="he")))
    steps = [
        ("selectbox", "norm", "fixup"),  # conv and SkipInit disappear
        ("selectbox", "norm", "nf"),  # and reappear, as the config has them
        ("radio", "conv", "ws"),
        ("selectbox", "norm", "bn"),  # BN order appears, alpha and gamma go
        ("radio", "order", "relu-bn-conv"),
        ("selectbox", "norm", "none"),
        ("selectbox", "norm", "bn"),  # the order comes back at its default
        ("selectbox", "family", "nf_regnet"),  # depth goes, variant comes
        ("selectbox", "family", "resnetv2"),
        ("selectbox", "depth", "custom"),  # the layout box appears with the current layout
        ("text_input", "layout", "1,2,1"),
        ("selectbox", "depth", 26),
    ]
    for kind, name, value in steps:
        control(at, kind, name).set_value(value)
        run(at)
        assert_one_state(at, page_against_an_api, f"{name} = {value}")
    assert at.session_state["config"].depth == 26


def test_a_refused_change_is_undone_on_screen(page_against_an_api: str) -> None:
    at = open_explorer(urlstate.encode_config(SPPConfig(**TINY)))
    control(at, "select_slider", "resolution").set_value(16)
    run(at)
    assert [error.value for error in at.sidebar.error] == [
        "resolution: 16 is too small: this network downsamples by 32, so the resolution must "
        "be at least 32"
    ]
    assert control(at, "select_slider", "resolution").value == 32
    assert_one_state(at, page_against_an_api, "a refused resolution")


def test_the_border_toggle_and_a_figures_border_button_are_one_state(
    page_against_an_api: str,
) -> None:
    """'Remove the border effect' in the sidebar and under a figure's text edit the same
    config; the figure stays chosen, its runs border-free."""
    at = open_explorer({})
    at.button(key="preset_fig2").click()
    run(at)
    at.button(key="preset_border").click()
    run(at)
    config = assert_one_state(at, page_against_an_api, "the figure's border button")
    assert config == get_preset("fig2").runs_with("circular")[0].config
    assert control(at, "toggle", "padding").value is True
    assert at.query_params["preset"] == "fig2"
    assert at.query_params["padding"] == "circular"
    for preset_run in get_preset("fig2").runs_with("circular"):  # every run of the figure
        job_id = config_hash(preset_run.config, nfcore.__version__)
        assert httpx.get(f"{page_against_an_api}/v1/jobs/{job_id}").status_code == 200

    control(at, "toggle", "padding").set_value(False)
    run(at)
    config = assert_one_state(at, page_against_an_api, "the sidebar's border toggle")
    assert config == get_preset("fig2").runs[0].config
    assert at.query_params["preset"] == "fig2"
    assert "padding" not in at.query_params


def test_the_panels_the_measurements_and_the_url_are_one_state(page_against_an_api: str) -> None:
    """The Panels menu offers what the config measures and follows its toggles: gradients on
    adds their row (as to the default panels), Appendix G off takes its panels away."""
    paper = ["avg_sq_channel_mean", "avg_channel_var", "residual_avg_channel_var"]
    gradients = ["grad_avg_sq_channel_mean", "grad_avg_channel_var",
                 "grad_residual_avg_channel_var"]  # fmt: skip
    at = open_explorer(urlstate.encode_config(SPPConfig(**TINY)))
    steps: list[tuple[str, str, Any, list[str]]] = [
        ("toggle", "extra_stats", True, paper),
        ("multiselect", "panels", ["avg_channel_var", "avg_pixel_norm"],
         ["avg_channel_var", "avg_pixel_norm"]),
        ("toggle", "gradients", True, ["avg_channel_var", "avg_pixel_norm", *gradients]),
        ("toggle", "extra_stats", False, ["avg_channel_var", *gradients]),
        ("toggle", "gradients", False, ["avg_channel_var"]),
        ("multiselect", "panels", [], ["avg_channel_var"]),  # refused: nothing to draw
    ]  # fmt: skip
    for kind, name, value, shown in steps:
        control(at, kind, name).set_value(value)
        run(at)
        config = assert_one_state(at, page_against_an_api, f"{name} = {value}")
        menu = control(at, "multiselect", "panels")
        assert menu.value == shown, f"after {name} = {value}: {menu.value}"
        keys = [row.key for row in measured(config.extra_stats, config.gradients)]
        assert menu.options == [statistic(key).title for key in keys]
        default = list(default_panels(config.extra_stats, config.gradients))
        assert at.query_params.get("panels") == (None if shown == default else ",".join(shown))
    assert [error.value for error in at.sidebar.error] == [
        "Panels: choose at least one statistic to draw"
    ]
