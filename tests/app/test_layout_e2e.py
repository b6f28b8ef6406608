"""Every page laid out for the width of the window, not the User-Agent: in Chromium with a
DESKTOP User-Agent, at 400 px (a phone in desktop mode, a narrow window beside slides) each
page's panels are stacked, their titles clear of each other, the chart in the first screen or
right after the controls, and the sidebar's controls in a sheet at the bottom; at 1440 px the
panels stand side by side, titles still clear, legends inside their figure.

One stack serves both widths (the runs are computed once). With LAYOUT_SCREENSHOTS=1 every
page is saved at both widths into docs/img/ (layout-<page>-<width>.png) for the README.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.api.conftest import WorkerProcess
from tests.app.conftest import CHROMIUM, CHROMIUM_ARGS, ROOT
from tests.app.test_e2e import fail_on_app_error, poll
from tests.conftest import RedisServer, session_redis_url

DESKTOP = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Safari/537.36"
)
NARROW, MIDDLE, WIDE, HEIGHT = 400, 800, 1440, 850
TINY = {"depth": "14", "width": "0.125", "resolution": "32", "batch": "2"}
SWEEP = {"width": "0.0625", "resolution": "32", "batch": "2", "x": "norm", "xs": "nf,none",
         "y": "depth", "ys": "14", "stat": "final_var"}  # fmt: skip
TIMEOUT = 90  # seconds: the worker imports torch, then the runs of each page
TRAIN_TIMEOUT = 120  # the Quick training preset's two runs
SCREENSHOTS = ROOT / "docs" / "img"
SHEET = ".st-key-controls_sheet"

# Every chart of the page: its panels' x domains, the boxes of its panel titles (subplot
# titles: annotations) and of its legend and whole figure, and its top in the page.
READ_CHARTS = """() => {
    const scroller = document.querySelector('[data-testid="stMain"]');
    const scrolled = scroller ? scroller.scrollTop : 0;
    const box = (e) => { const r = e.getBoundingClientRect();
        return {left: r.left, right: r.right, top: r.top + scrolled, bottom: r.bottom + scrolled}; };
    return [...document.querySelectorAll('[data-testid="stPlotlyChart"] .js-plotly-plot')]
        .filter(g => g._fullLayout && g.data && g.data.length)
        .map(g => {
            const layout = g._fullLayout;
            const xs = Object.keys(layout).filter(k => /^xaxis\\d*$/.test(k))
                .map(k => layout[k].domain);
            const titles = [...g.querySelectorAll('.infolayer .annotation')]
                .filter(a => a.textContent.trim()).map(a => ({text: a.textContent, ...box(a)}));
            const legend = g.querySelector('.infolayer .legend');
            return {xs, titles, figure: box(g), legend: legend ? box(legend) : null,
                    title: (layout.title && layout.title.text) || ''};
        });
}"""
PAGE_WIDTH = "() => document.documentElement.scrollWidth"


@pytest.fixture(scope="module")
def module_worker(
    redis_server: RedisServer | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """This module's worker also serves the example plugins, for the Your network page."""
    process = WorkerProcess(
        session_redis_url(redis_server), tmp_path_factory.mktemp("worker"),
        WORKER_PLUGINS='["mixer", "tv_resnet"]',
    )  # fmt: skip
    try:
        process.wait_ready(timeout=120)
        yield process
    finally:
        process.stop()


def overlapping(boxes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The pairs of boxes that share more than a pixel of the page."""
    pairs = []
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if (min(a["right"], b["right"]) - max(a["left"], b["left"]) > 1
                    and min(a["bottom"], b["bottom"]) - max(a["top"], b["top"]) > 1):  # fmt: skip
                pairs.append((a["text"], b["text"]))
    return pairs


def charts(page: Page, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """The page's charts once `count` of them are drawn (and a moment to settle)."""
    poll(page, lambda: page.evaluate(READ_CHARTS), lambda c: len(c) >= count, timeout)
    page.wait_for_timeout(1500)  # a measured width reruns the page once
    return page.evaluate(READ_CHARTS)


def check(page: Page, name: str, width: int, found: list[dict[str, Any]]) -> None:
    """What a user at `width` relies on, for every chart of the page."""
    assert found, f"{name} at {width} px: no chart"
    assert page.evaluate(PAGE_WIDTH) <= width, f"{name} at {width} px scrolls sideways"
    for chart in found:
        assert not overlapping(chart["titles"]), f"{name} at {width} px: titles overprint"
        if chart["legend"] is not None:  # inside its figure, not clipped by it
            legend, figure = chart["legend"], chart["figure"]
            assert legend["left"] >= figure["left"] - 1 and legend["right"] <= figure["right"] + 1
            assert legend["bottom"] <= figure["bottom"] + 1, f"{name}: legend cut off"
        for title in chart["titles"]:
            assert chart["figure"]["left"] - 1 <= title["left"], f"{name}: {title} cut"
            assert title["right"] <= chart["figure"]["right"] + 1, f"{name}: {title} cut"
        if width <= MIDDLE and len(chart["xs"]) > 1:  # 800 px: 470 px beside the sidebar
            assert {tuple(x) for x in chart["xs"]} == {(0, 1)}, f"{name}: panels not stacked"


def save(page: Page, name: str, width: int, *, scroll_to_chart: bool = False) -> None:
    """Each chart into test-output/ (git-ignored); with LAYOUT_SCREENSHOTS=1, the window
    (scrolled to the first chart) into docs/img/."""
    graphs = page.locator('[data-testid="stPlotlyChart"]')
    for number in range(graphs.count()):
        path = ROOT / "test-output" / f"layout-{name}-{width}-chart{number}.png"
        path.parent.mkdir(exist_ok=True)
        graphs.nth(number).screenshot(path=path)
    if os.environ.get("LAYOUT_SCREENSHOTS"):
        scroller = page.locator('[data-testid="stMain"]')
        scroller.evaluate("e => e.scrollTo(0, 0)")  # a chart's screenshot scrolled to it
        if scroll_to_chart:  # just under Streamlit's header
            top = graphs.first.evaluate("e => e.getBoundingClientRect().top")
            scroller.evaluate(f"e => e.scrollTo(0, {top} - 70)")
        page.wait_for_timeout(500)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / f"layout-{name}-{width}.png")


def open_page(browser: Browser, url: str, width: int) -> Page:
    page = browser.new_page(viewport={"width": width, "height": HEIGHT}, user_agent=DESKTOP)
    page.set_default_timeout(30_000)
    page.goto(url, wait_until="domcontentloaded")
    return page


def quiet(page: Page, seconds: float = 3) -> int:
    """How many messages the page sends its server in `seconds`: none once it has settled
    (a measured width that reran the page forever would send one a run)."""
    sent: list[object] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda frame: sent.append(frame)))
    page.reload(wait_until="domcontentloaded")
    charts(page, 1)
    sent.clear()
    page.wait_for_timeout(seconds * 1000)
    return len(sent)


def _in_chromium(check_page: Callable[[Browser, str], None], server: str) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            check_page(browser, server)
        finally:
            browser.close()


# A test per page, so that the suite's processes share them out; the Jobs page is checked
# after the Train page's runs, which it lists.
@pytest.mark.slow
@pytest.mark.parametrize("pages", ["explorer", "sweeps", "plugins", "train_and_jobs"])
def test_every_page_follows_the_width_of_the_window(pages: str, streamlit_server: str) -> None:
    checks = {"explorer": [_explorer], "sweeps": [_sweeps], "plugins": [_plugins],
              "train_and_jobs": [_train, _jobs]}[pages]  # fmt: skip
    for check_page in checks:
        _in_chromium(check_page, streamlit_server)


def _explorer(browser: Browser, server: str) -> None:
    # Appendix G's five panels: side by side at 1440 px under short titles, stacked at 400.
    query = {
        **TINY,
        "panels": "avg_sq_channel_mean,avg_channel_var,residual_avg_channel_var,activation_mean,avg_pixel_norm",
    }
    for width in (NARROW, MIDDLE, WIDE):
        page = open_page(browser, f"{server}/?{urlencode(query)}", width)
        found = charts(page, 1)
        check(page, "explorer", width, found)
        chart = found[0]
        assert len(chart["titles"]) >= 5
        if width == NARROW:
            assert chart["figure"]["top"] < HEIGHT, "the chart is below the first screen"
            assert page.locator(SHEET).count() == 1  # the controls: a sheet at the bottom
            assert page.get_by_text("Paper figure").count() == 1  # a menu, not 8 buttons
            assert page.get_by_text("Fig. 1", exact=True).count() == 0
        elif width == MIDDLE:  # stacked, the controls in the sidebar beside the chart
            assert page.locator(SHEET).count() == 0
            assert page.locator('[data-testid="stSidebar"]').get_by_text("Family").count()
        else:
            assert len({tuple(x) for x in chart["xs"]}) == 5  # side by side
            assert page.locator(SHEET).count() == 0
            assert page.locator('[data-testid="stSidebar"]').get_by_text("Family").count()
            assert page.locator("h1").get_by_text("Signal propagation explorer").count() == 1
        save(page, "explore", width)
        if width == NARROW:
            assert quiet(page) == 0, "the page keeps rerunning"
        fail_on_app_error(page)
        page.close()


def _sweeps(browser: Browser, server: str) -> None:
    for width in (NARROW, WIDE):
        page = open_page(browser, f"{server}/sweeps?{urlencode(SWEEP)}", width)
        found = charts(page, 1)
        check(page, "sweeps", width, found)
        heatmap = found[0]
        if width == NARROW:
            # The axes, values and Run sweep stay over the heatmap; right after them it shows.
            run = page.get_by_role("button", name="Run sweep").bounding_box()
            assert run is not None
            assert heatmap["figure"]["top"] < max(HEIGHT, run["y"] + run["height"] + 150)
            assert page.locator(SHEET).count() == 1
        save(page, "sweeps", width)
        page.close()


def _plugins(browser: Browser, server: str) -> None:
    for width in (NARROW, WIDE):
        page = open_page(browser, f"{server}/plugins", width)
        found = charts(page, 1)
        check(page, "plugins", width, found)
        if width == NARROW:
            assert found[0]["figure"]["top"] < 2 * HEIGHT
            assert page.locator(SHEET).count() == 1
        else:
            assert len({tuple(x) for x in found[0]["xs"]}) >= 3  # side by side
        save(page, "plugins", width)
        page.close()


def _train(browser: Browser, server: str) -> None:
    page = open_page(browser, f"{server}/train?preset=quick", WIDE)
    page.get_by_role("button", name="Start").click()
    poll(page, lambda: page.get_by_text(": finished, held-out accuracy").count(),
         lambda n: n >= 2, TRAIN_TIMEOUT)  # fmt: skip
    link = page.url
    assert "jobs=" in link
    page.close()
    for width in (NARROW, WIDE):
        page = open_page(browser, link, width)
        found = charts(page, 4)  # the curves, the scrubber, the SPPs before and after
        check(page, "train", width, found)
        if width == NARROW:
            start = page.get_by_role("button", name="Start").bounding_box()
            assert start is not None
            assert found[0]["figure"]["top"] < start["y"] + 2 * HEIGHT
        save(page, "train", width, scroll_to_chart=True)
        page.close()


def _jobs(browser: Browser, server: str) -> None:
    for width in (NARROW, WIDE):
        page = open_page(browser, f"{server}/jobs", width)
        page.get_by_text("newest first").wait_for()
        page.wait_for_timeout(1500)
        assert page.evaluate(PAGE_WIDTH) <= width, f"jobs at {width} px scrolls sideways"
        heading = "h3" if width == NARROW else "h1"
        assert page.locator(heading).get_by_text("Jobs").count() == 1
        save(page, "jobs", width)
        fail_on_app_error(page)
        page.close()


def test_a_run_with_no_browser_keeps_the_wide_layout() -> None:
    """AppTest runs the page with no browser behind it: no width is measured, and nothing
    breaks; the User-Agent then decides, as before."""
    from streamlit.testing.v1 import AppTest

    script = """
import streamlit as st
from app import layout
layout.measure()
st.write(f"narrow={layout.narrow()} width={layout.width()}")
with layout.controls():
    st.write("a control")
"""
    at = AppTest.from_string(script, default_timeout=30).run()
    assert not at.exception
    assert at.markdown[0].value == "narrow=False width=None"
    assert at.sidebar.markdown[0].value == "a control"
    started = time.monotonic()
    at.run()
    assert time.monotonic() - started < 10
