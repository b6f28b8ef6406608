"""The Sweep page end to end, in headless Chromium: Redis, a worker, the API and Streamlit.

A user opens a link naming a tiny sweep (NF and unnormalized ResNets by depth), waits until
every cell of the heatmap is filled from the finished jobs, and finds the numbers the API's
results give; the colours are in decades, since the unnormalized networks' variance grows
exponentially with depth (Section 3). Hovering a cell shows its variance per block, clicking it
shows its SPP with a link to the Explorer at its config, and the CSV holds one row per point.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest
from playwright.sync_api import Page

from app import sweeps, urlstate
from nfcore.spec.summaries import summarize
from tests.app.test_e2e import fail_on_app_error, poll

HEATMAP = '[data-testid="stPlotlyChart"] .js-plotly-plot'
FILL_TIMEOUT = 60  # seconds: the worker's first import of torch, then six tiny jobs
QUERY = {"width": "0.0625", "resolution": "32", "batch": "2",
         "x": "norm", "xs": "nf,none", "y": "depth", "ys": "14,50,101", "stat": "final_var"}  # fmt: skip

# The first chart's traces: the statistic's heatmap (raw values in customdata) and its meta.
READ_HEATMAP = """(selector) => {
    const graph = document.querySelector(selector);
    if (!graph || !graph.data) return null;
    const heat = graph.data[0];
    return {x: heat.x, y: heat.y, values: heat.customdata, log: heat.meta && heat.meta.log};
}"""
HOVER_TEXT = """() => Array.from(document.querySelectorAll('.hoverlayer text'))
    .map(t => t.textContent).join(' ')"""


def filled(heatmap: dict[str, Any] | None) -> bool:
    values = (heatmap or {}).get("values") or []
    return bool(values) and all(v is not None for row in values for v in row)


def api_values(api_url: str, sweep: sweeps.Sweep) -> dict[tuple[str, str], tuple[float, str]]:
    """Each point's final-block variance and job id, from the API's own results: the same
    sweep posted again is the same sweep (its points are cached now)."""
    view = httpx.post(f"{api_url}/v1/sweeps", json=sweep.request()).json()
    out = {}
    for point in view["points"]:
        job_id = point["job"]["id"]
        result = httpx.get(f"{api_url}/v1/jobs/{job_id}/result").json()
        key = (sweeps.format_value(point["params"]["norm"]),
               sweeps.format_value(point["params"]["depth"]))  # fmt: skip
        out[key] = (summarize(result, "final_var").value, job_id)
    return out


def click_cell(page: Page, ix: int, iy: int, nx: int, ny: int) -> None:
    """Click near a corner of cell (ix, iy), not its centre: the whole cell is the target."""
    box = page.locator(f"{HEATMAP} .nsewdrag").first.bounding_box()
    assert box is not None
    x = box["x"] + box["width"] * (ix + 0.15) / nx
    y = box["y"] + box["height"] * (1 - (iy + 0.85) / ny)  # categories go up the y axis
    page.mouse.move(x, y)
    page.wait_for_timeout(300)
    page.mouse.click(x, y)


@pytest.mark.slow
def test_sweep_heatmap_fills_in_from_real_jobs(
    browser_page: Page,
    streamlit_server: str,
    api_server: str,
    output_path: Callable[[str], list[Path]],
    tmp_path: Path,
) -> None:
    page = browser_page
    started = time.monotonic()
    page.goto(f"{streamlit_server}/sweeps?{urlencode(QUERY)}", wait_until="domcontentloaded")
    heatmap = poll(page, lambda: page.evaluate(READ_HEATMAP, HEATMAP), filled, FILL_TIMEOUT)
    print(f"all 6 cells filled {time.monotonic() - started:.1f} s after opening the link")

    sweep = sweeps.decode_sweep(QUERY)
    assert heatmap["x"] == ["nf", "none"] and heatmap["y"] == ["14", "50", "101"]
    expected = api_values(api_server, sweep)
    for iy, depth in enumerate(heatmap["y"]):
        for ix, norm in enumerate(heatmap["x"]):
            value = heatmap["values"][iy][ix]
            assert value == pytest.approx(expected[norm, depth][0], rel=1e-12), (norm, depth)
    # Unnormalized, the variance explodes with depth (Section 3), so the colours span decades.
    unnormalized = [row[1] for row in heatmap["values"]]
    assert unnormalized == sorted(unnormalized) and unnormalized[2] > 100 * unnormalized[0]
    assert heatmap["log"] is True

    # Hover: the point's values and a sparkline of its variance per block.
    click_cell(page, 1, 2, nx=2, ny=3)
    hover = page.evaluate(HOVER_TEXT)
    assert "Normalization = none, Depth = 101" in hover and "variance per block" in hover, hover
    assert any(char in hover for char in "▁▂▃▄▅▆▇█"), hover
    # Click: the point's SPP below, and a link opening the Explorer at its config.
    link = page.get_by_role("link", name="Open in the Explorer")
    link.wait_for(timeout=20_000)
    fail_on_app_error(page)
    target = urlsplit(link.get_attribute("href") or "")
    assert target.path == "/"
    assert urlstate.decode_config(dict(parse_qsl(target.query))) == sweep.point_config("none", 101)
    # The heatmap and the point's SPP (while the page reruns, a chart of the run before can be
    # in the page beside them for a moment).
    page.wait_for_function(
        f"() => document.querySelectorAll({json.dumps(HEATMAP)}).length === 2", timeout=20_000
    )

    # The CSV: one row per point, the API's numbers.
    with page.expect_download() as download:
        page.get_by_role("button", name="CSV").click()
    path = tmp_path / "sweep.csv"
    download.value.save_as(path)
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    assert [(r["norm"], r["depth"]) for r in rows] == [
        (n, d) for n in ("nf", "none") for d in ("14", "50", "101")
    ]
    for row in rows:
        value, job_id = expected[row["norm"], row["depth"]]
        assert float(row["final_var"]) == value and row["job_id"] == job_id
        assert row["state"] == "finished" and row["label"].startswith(
            "NF-" if row["norm"] == "nf" else "Unnormalized-"
        )

    page.mouse.move(0, 0)  # no hover label in the picture
    page.set_viewport_size({"width": 1600, "height": 1500})  # the heatmap and the point's SPP
    page.wait_for_timeout(1000)
    for target_path in output_path("sweeps.png"):
        page.screenshot(path=target_path, full_page=True)
        print(f"sweeps screenshot: {target_path}")
