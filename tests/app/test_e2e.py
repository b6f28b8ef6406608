"""The dashboard end to end, in headless Chromium: Redis, a worker, the API and Streamlit.

A user opens the dashboard, sees the SPP of the default NF model, moves the alpha slider and
sees the plot redrawn: the expected variance beta^2 of an NF-ResNet grows by alpha^2 per
block (Section 4 of the paper), so a larger alpha ends higher.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from playwright.sync_api import Locator, Page

CHART = '[data-testid="stPlotlyChart"] .js-plotly-plot'
ERROR = '[data-testid="stException"]'
ALERT = '[data-testid="stAlert"]'  # st.error / st.warning / st.info boxes
RUNNING = '[data-testid="stStatusWidgetRunningIcon"]'  # shown while the script reruns
# Seconds. The first chart also waits for the worker to import torch; with the stack's start
# the whole test stays under a minute even when every wait runs out.
CHART_TIMEOUT = 30
RERUN_TIMEOUT = 20  # for the chart to show the new alpha
ARROW_PRESSES = 4

T = TypeVar("T")

# Each trace of the Plotly graph div as {name, y}. Plotly's computed `_fullData` has typed
# arrays decoded; `data` is what Streamlit passed in.
READ_TRACES = """(selector) => {
    const graph = document.querySelector(selector);
    if (!graph || !graph.data) return null;
    const traces = graph._fullData || graph.data;
    return traces.map(t => ({name: String(t.name || ''), y: Array.from(t.y || [], Number)}));
}"""


@dataclass(frozen=True)
class Chart:
    """What the SPP chart shows: its legend names and the expected-variance (beta^2) curve."""

    names: tuple[str, ...]
    expected_var: tuple[float, ...]

    def shows_alpha(self, alpha: float) -> bool:
        """The legend names the run with this alpha (the model label, e.g. 'alpha=0.4')."""
        return any(f"alpha={alpha:g}" in name for name in self.names)


def read_chart(page: Page) -> Chart | None:
    """The chart on screen once the script is idle; None while there is none or it reruns."""
    if page.locator(RUNNING).count():
        return None
    traces = page.evaluate(READ_TRACES, CHART)
    if not traces:
        return None
    names = tuple(t["name"] for t in traces)
    curves = [t["y"] for t in traces if t["name"].lower().startswith("expected")]
    assert curves, f"the chart has no expected-variance trace, only {names}"
    return Chart(names, tuple(curves[0]))


def slider_value(slider: Locator) -> float:
    """The value of a slider thumb: an <input type=range> in Streamlit 1.67, else ARIA."""
    return float(slider.evaluate("e => e.value ?? e.getAttribute('aria-valuenow')"))


def fail_on_app_error(page: Page) -> None:
    """Stop early, with Streamlit's message, when the script raised."""
    error = page.locator(ERROR)
    if error.count():
        pytest.fail(f"the dashboard shows an exception:\n{error.first.inner_text()}")


def poll(page: Page, read: Callable[[], T], done: Callable[[T], bool], timeout: float) -> T:
    """Read until `done` holds, or fail with the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    value: T | None = None
    while time.monotonic() < deadline:
        fail_on_app_error(page)
        value = read()
        if done(value):
            return value
        page.wait_for_timeout(200)
    alerts = "\n".join(page.locator(ALERT).all_inner_texts()) or "none"
    pytest.fail(f"gave up after {timeout:.0f} s; last read {value}; the page's messages: {alerts}")


@pytest.mark.slow
def test_alpha_slider_redraws_expected_variance(
    browser_page: Page, streamlit_server: str, output_path: Callable[[str], list[Path]]
) -> None:
    # browser_page first: without Chromium the test is skipped before the stack starts.
    page = browser_page
    # Not "networkidle": Streamlit keeps a websocket open and renders over it.
    page.goto(streamlit_server, wait_until="domcontentloaded")
    before = poll(page, lambda: read_chart(page), bool, CHART_TIMEOUT)

    slider = page.get_by_role("slider", name=re.compile("alpha", re.IGNORECASE))
    alpha_before = slider_value(slider)
    assert before.shows_alpha(alpha_before), f"chart {before.names} is not for alpha {alpha_before}"
    slider.focus()
    for _ in range(ARROW_PRESSES):
        slider.press("ArrowRight")

    # Every arrow press is a rerun of its own, the old chart stays on screen meanwhile, and the
    # thumb's value can lag the last key press: wait until the chart shows the alpha the
    # slider settled on, reading both afresh each time.
    def settled(chart: Chart | None) -> bool:
        alpha = slider_value(slider)
        return chart is not None and alpha != alpha_before and chart.shows_alpha(alpha)

    after = poll(page, lambda: read_chart(page), settled, RERUN_TIMEOUT)
    alpha_after = slider_value(slider)
    assert alpha_after > alpha_before, f"the alpha slider did not move from {alpha_before}"
    # Var(x) grows by alpha^2 per block (Section 4): a larger alpha ends higher.
    assert after.expected_var[-1] > before.expected_var[-1], (
        f"alpha {alpha_before} -> {alpha_after}: the final expected variance went from "
        f"{before.expected_var[-1]} to {after.expected_var[-1]}"
    )

    for path in output_path("dashboard.png"):
        page.screenshot(path=path, full_page=True)
        print(f"dashboard screenshot: {path}")
