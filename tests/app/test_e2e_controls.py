"""The sidebar, the URL and the computed config stay one state in a real browser.

Headless Chromium against Redis, a worker, the API and Streamlit. A user walks the
activations in turn and then the presets whose controls come and go (Fig. 9 -> 10 -> 11, the
issue's sequence); after each step the sidebar shows the config, the URL decodes to it, and
the chart's legend names the runs of that config.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qsl, urlsplit

import pytest
from playwright.sync_api import Page

from app import controls, urlstate
from nfcore.spec.config import SPPConfig
from nfcore.spec.presets import get_preset

CHART = '[data-testid="stPlotlyChart"] .js-plotly-plot'
RUNNING = '[data-testid="stStatusWidgetRunningIcon"]'
ERROR = '[data-testid="stException"]'
STEP_TIMEOUT = 60  # seconds per step: a preset computes ResNet-600s at 128 px
TINY = SPPConfig(depth=14, norm="nf", width=0.125, resolution=32, batch=2)
CONV_LABELS = {"ws": "Scaled WS", "he": "He init"}

LEGEND = """(selector) => {
    const graph = document.querySelector(selector);
    if (!graph || !graph._fullData) return null;
    return graph._fullData.filter(t => t.showlegend !== false && t.visible !== false
        && !String(t.name).startsWith('expected')).map(t => String(t.name));
}"""


def url_config(page: Page) -> SPPConfig:
    return urlstate.decode_config(dict(parse_qsl(urlsplit(page.url).query)))


def combobox(page: Page, label: str) -> str:
    return page.get_by_role("combobox", name=label, exact=True).input_value()


def radio(page: Page, label: str) -> str | None:
    """The selected option of a sidebar radio, None when the radio is not shown."""
    group = page.locator(f'[data-testid="stSidebar"] [role="radiogroup"][aria-label="{label}"]')
    if not group.count():
        return None
    return group.locator('label[data-selected="true"]').inner_text().strip()


def settled(page: Page, legend: list[str], timeout: float = STEP_TIMEOUT) -> None:
    """Wait until the chart shows exactly `legend` and the page has stopped changing: the run
    is over (Streamlit shows its running icon only for slow runs, and removes the widgets a
    run replaced only when it ends), so two looks 0.3 s apart find one of each widget."""
    deadline = time.monotonic() + timeout
    shown, calm = None, 0
    while time.monotonic() < deadline:
        if page.locator(ERROR).count():
            pytest.fail(f"the dashboard shows an exception:\n{page.locator(ERROR).inner_text()}")
        shown = page.evaluate(LEGEND, CHART)
        single = all(
            page.get_by_role("combobox", name=name, exact=True).count() == 1
            for name in ("Activation", "Normalization")
        )
        calm = calm + 1 if shown == legend and single and not page.locator(RUNNING).count() else 0
        if calm >= 2:
            return
        page.wait_for_timeout(300)
    pytest.fail(f"the chart shows {shown}, not {legend}")


def assert_one_state(page: Page, runs: list[SPPConfig], step: str) -> None:
    """Sidebar == URL == the config of the chart's first run."""
    config = url_config(page)
    assert config == runs[0], f"after {step}: the URL is {config.label}, not {runs[0].label}"
    shown = controls.widget_values(config)
    assert combobox(page, "Activation") == config.activation, step
    norm = controls.norm_titles(config.family)[str(config.norm)]  # FixUp: ours or the reference
    assert combobox(page, "Normalization") == norm, step
    assert radio(page, "Convolution") == (CONV_LABELS[config.conv] if shown["conv"] else None), step
    gamma = radio(page, "γ (gamma)")
    if shown["gamma_mode"] is None:
        assert gamma is None, step
    else:
        assert gamma is not None and gamma.startswith(shown["gamma_mode"]), (step, gamma)


@pytest.mark.slow
def test_the_sidebar_the_url_and_the_chart_agree_after_every_change(
    browser_page: Page, streamlit_server: str
) -> None:
    page = browser_page
    query = "&".join(f"{k}={v}" for k, v in urlstate.encode_config(TINY).items())
    page.goto(f"{streamlit_server}/?{query}", wait_until="domcontentloaded")
    settled(page, [TINY.label])
    assert_one_state(page, [TINY], "opening the link")

    for activation in ("silu", "gelu", "tanh", "relu"):
        box = page.get_by_role("combobox", name="Activation", exact=True)
        box.click()
        box.fill(activation)  # the list shows the options matching what the box holds
        page.get_by_role("option", name=activation, exact=True).click()
        expected = SPPConfig(**{**TINY.model_dump(), "activation": activation})
        settled(page, [expected.label])
        assert_one_state(page, [expected], f"activation {activation}")
        assert "gamma" not in urlsplit(page.url).query

    for preset_id in ("fig9", "fig10", "fig11"):
        preset = get_preset(preset_id)
        page.get_by_role("button", name=f"Fig. {preset.figure}", exact=True).click()
        settled(page, [run.label for run in preset.runs])
        assert_one_state(page, [run.config for run in preset.runs], f"Fig. {preset.figure}")
