"""The Explorer on a phone, in Chromium at 400 px with a phone's User-Agent: the panels are
stacked one per row under short titles (no overlapping titles or axes), the figure's title
fits, and the paper's figures are a menu instead of eight buttons."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.app.conftest import CHROMIUM, CHROMIUM_ARGS

PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Mobile Safari/537.36"
)
# Each subplot's y domain and the panel titles, as the browser's Plotly holds them.
READ_LAYOUT = """() => {
    const graph = document.querySelector('[data-testid="stPlotlyChart"] .js-plotly-plot');
    if (!graph || !graph.layout || !graph.data || !graph.data.length) return null;
    const layout = graph._fullLayout || graph.layout;
    const axes = Object.keys(layout).filter(k => /^yaxis\\d*$/.test(k)).map(k => layout[k].domain);
    const xs = Object.keys(layout).filter(k => /^xaxis\\d*$/.test(k)).map(k => layout[k].domain);
    return {y: axes, x: xs, titles: (layout.annotations || []).map(a => a.text),
            title: (layout.title && layout.title.text) || ''};
}"""


def test_on_a_phone_the_panels_are_stacked_and_the_figures_are_a_menu(
    api_server: str, worker: object, streamlit_server: str, output_path: Callable[[str], list[Path]]
) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 400, "height": 850}, user_agent=PHONE,
                                    is_mobile=True)  # fmt: skip
            page.set_default_timeout(30_000)
            page.goto(f"{streamlit_server}/?depth=14&width=0.125&resolution=32&batch=2",
                      wait_until="domcontentloaded")  # fmt: skip
            deadline, layout = time.monotonic() + 60, None
            while time.monotonic() < deadline and not layout:
                layout = page.evaluate(READ_LAYOUT)
                page.wait_for_timeout(300)
            assert layout, "no chart on the phone"
            domains = sorted(tuple(d) for d in layout["y"])
            assert len(domains) == 3
            for (_, top), (bottom, _) in itertools.pairwise(domains):
                assert top < bottom, f"panels share a band of the height: {domains}"
            assert {tuple(d) for d in layout["x"]} == {(0, 1)}
            assert {"Squared mean", "Variance", "Residual variance"} <= set(layout["titles"])
            assert len(layout["title"]) <= 40
            assert page.get_by_text("Fig. 1", exact=True).count() == 0  # no row of buttons
            assert page.get_by_text("Paper figure").count() == 1
            page.wait_for_timeout(500)
            for path in output_path("mobile.png"):
                page.screenshot(path=path, full_page=True)
        finally:
            browser.close()
