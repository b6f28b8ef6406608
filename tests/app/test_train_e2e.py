"""The Train page end to end, in headless Chromium: Redis, a worker, the API and Streamlit.

A user opens /train with the tiny "Quick check" preset, presses Start, and watches both runs
(BN- and NF-ResNet-14, 20 steps) train: the curves appear, each run ends "finished" with its
held-out accuracy, and Play walks the SPP scrubber through the steps.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page

from app.train_controls import preset_settings
from nfcore.plots.training import PANEL_TITLES
from nfcore.spec.train_presets import QUICK, auto_labels

ERROR = '[data-testid="stException"]'
ALERT = '[data-testid="stAlert"]'  # st.error / st.warning / st.info / st.success boxes
TRAIN_TIMEOUT = 60  # seconds: the worker imports torch, then trains two tiny nets
# The legend names of the training-curves figure (the one whose panels include the loss).
READ_LEGEND = """(title) => {
    for (const graph of document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')) {
        const notes = (graph.layout && graph.layout.annotations) || [];
        if (!notes.some(a => a.text === title)) continue;
        return (graph._fullData || graph.data)
            .filter(t => t.showlegend !== false && t.x && t.x.length > 0)
            .map(t => String(t.name));
    }
    return [];
}"""


# (frames Plotly holds, the slider's step) of the SPP scrubber, the figure with a slider.
READ_SCRUBBER = """() => {
    for (const graph of document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')) {
        const sliders = (graph._fullLayout && graph._fullLayout.sliders) || [];
        if (!sliders.length) continue;
        return [(graph._transitionData._frames || []).length, sliders[0].active];
    }
    return [0, null];
}"""


def fail_on_app_error(page: Page) -> None:
    error = page.locator(ERROR)
    if error.count():
        pytest.fail(f"the dashboard shows an exception:\n{error.first.inner_text()}")


@pytest.mark.slow
def test_quick_runs_train_with_live_curves(
    browser_page: Page, streamlit_server: str, output_path: Callable[[str], list[Path]]
) -> None:
    page = browser_page
    labels = auto_labels(QUICK.configs())
    page.goto(f"{streamlit_server}/train?preset=quick", wait_until="domcontentloaded")
    page.get_by_role("button", name="Start").click()

    deadline = time.monotonic() + TRAIN_TIMEOUT
    legend: list[str] = []
    finished: list[str] = []
    while time.monotonic() < deadline:
        fail_on_app_error(page)
        legend = page.evaluate(READ_LEGEND, PANEL_TITLES[0])
        alerts = page.locator(ALERT).all_inner_texts()
        finished = [text for text in alerts if ": finished, held-out accuracy" in text]
        if len(finished) == len(labels) and legend == labels:
            break
        page.wait_for_timeout(250)
    else:
        alerts = "\n".join(page.locator(ALERT).all_inner_texts()) or "none"
        pytest.fail(f"runs not finished within {TRAIN_TIMEOUT} s; legend {legend}; "
                    f"the page's messages: {alerts}")  # fmt: skip
    assert [text.split(": finished")[0].strip() for text in finished] == labels
    assert "jobs=" in page.url  # a reload follows the same runs
    # Start was clicked as soon as it showed, racing the page's first run: the settings must
    # still be the preset's (they once came back as the widgets' bare minimums: batch 1,
    # 1 step, lr 0.0001, which the next Start would have trained with).
    settings = preset_settings(QUICK)
    shown = page.locator('input[type="number"]').evaluate_all("els => els.map(e => e.value)")
    assert shown[:3] == [str(settings["batch"]), str(settings["steps"]), f"{settings['lr']:.4g}"]

    # The SPP scrubber runs in the browser: its frames reached Plotly, and Play walks them.
    frames, first = page.evaluate(READ_SCRUBBER)
    assert frames == 6 and first == 5  # steps 0, 4, ..., 20, shown at the last
    # The first chart with a scrubber, as READ_SCRUBBER reads it (while the page reruns, the
    # chart of the run before can still be in the page beside the new one).
    scrubber = (
        page.locator('[data-testid="stPlotlyChart"] .js-plotly-plot')
        .filter(has=page.get_by_text("▶ Play"))
        .first
    )
    scrubber.get_by_text("▶ Play").first.click()
    page.wait_for_function(f"() => ({READ_SCRUBBER})()[1] !== {first}", timeout=5_000)
    scrubber.get_by_text("❚❚ Pause").first.click()

    for path in output_path("train.png"):
        page.screenshot(path=path, full_page=True)
        print(f"train page screenshot: {path}")
