"""Links that last, in headless Chromium over the whole stack (Redis, a worker, the API,
Streamlit): a teacher's link opened after the API's results expired brings its runs back.

Expiry is simulated by deleting every Redis key of the runs' jobs (their results, records
and events), which is what RESULT_TTL does after a week. The pinned SPP is then computed
again from the config the link carries and drawn with the same numbers; the Train link's
runs are trained again with the same seeds, so they come back with the same curves. A link
with bad fields says so, a sentence each, and keeps its good fields.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import pytest
import redis
from playwright.sync_api import Page

import nfcore
from app import urlstate
from nfcore.plots.training import PANEL_TITLES
from nfcore.spec.config import SPPConfig, TrainConfig, config_hash
from nfcore.spec.variants import RESNET_LAYOUTS
from tests.app.test_e2e import ALERT, fail_on_app_error, poll
from tests.app.test_train_e2e import READ_LEGEND

pytestmark = pytest.mark.slow

TINY = {"depth": 14, "norm": "nf", "width": 0.125, "resolution": 32, "batch": 2}
# Two tiny training runs: seconds each on a CPU.
TRAIN_TINY = {"depth": 14, "width": 0.125, "resolution": 32, "batch": 8, "steps": 4,
              "dataset": "gaussian", "eval_every": 2, "eval_examples": 16, "spp_batch": 2}  # fmt: skip
TIMEOUT = 60  # seconds: the worker imports torch once per module, then computes tiny runs
CHART = '[data-testid="stPlotlyChart"] .js-plotly-plot'
READ_NAMES = """(selector) => Array.from(document.querySelectorAll(selector)).flatMap(
    g => (g._fullData || g.data || []).map(t => String(t.name || '')))"""


def job_id(config: SPPConfig | TrainConfig) -> str:
    return config_hash(config, nfcore.__version__)


def finished_result(api: str, job: str) -> dict[str, Any]:
    """The job's result once it has finished (polling the API)."""
    deadline = time.monotonic() + TIMEOUT
    while httpx.get(f"{api}/v1/jobs/{job}").json().get("state") != "finished":
        assert time.monotonic() < deadline, f"job {job} did not finish"
        time.sleep(0.2)
    return httpx.get(f"{api}/v1/jobs/{job}/result").json()


def expire(redis_url: str, api: str, *jobs: str) -> None:
    """What a week does: every key of these jobs goes (result, record, events, claims)."""
    store = redis.Redis.from_url(redis_url)
    try:
        for job in jobs:
            keys = list(store.scan_iter(match=f"*{job}*"))
            assert keys, f"no keys of job {job}"
            store.delete(*keys)
    finally:
        store.close()
    for job in jobs:
        assert httpx.get(f"{api}/v1/jobs/{job}/result").status_code in (404, 410)
        assert httpx.get(f"{api}/v1/jobs/{job}").status_code in (404, 410)


def alerts(page: Page) -> list[str]:
    return page.locator(ALERT).all_inner_texts()


def test_a_pinned_link_opened_after_the_results_expired_draws_them_again(
    browser_page: Page, streamlit_server: str, api_server: str, redis_url: str
) -> None:
    page = browser_page
    pinned = SPPConfig(**TINY, alpha=0.6)
    current = SPPConfig(**TINY)
    httpx.post(f"{api_server}/v1/spp", json=pinned.model_dump(mode="json")).raise_for_status()
    before = finished_result(api_server, job_id(pinned))
    # The link as the page writes it after "Pin this run": the pin is its config's token.
    query = urlstate.encode_view(current, preset=None, pins=[urlstate.Pin.of(pinned)],
                                 log_y=False)  # fmt: skip
    assert not urlstate.JOB_ID.fullmatch(query["pins"])
    expire(redis_url, api_server, job_id(pinned))

    page.goto(f"{streamlit_server}/?{urlencode(query)}", wait_until="domcontentloaded")
    label = f"pinned: {pinned.label}"
    poll(page, lambda: page.evaluate(READ_NAMES, CHART), lambda names: label in names, TIMEOUT)
    assert not any("no longer available" in text for text in alerts(page)), alerts(page)
    # Computed again: the same job (the same config), with the same numbers.
    after = finished_result(api_server, job_id(pinned))
    assert [b["avg_channel_var"] for b in after["blocks"]] == [
        b["avg_channel_var"] for b in before["blocks"]
    ]
    assert parse_qs(urlparse(page.url).query)["pins"] == [query["pins"]]  # the link stays

    # "Pin this run" writes the current run's config into the URL too.
    poll(page, lambda: page.evaluate(READ_NAMES, CHART),
         lambda names: current.label in names, TIMEOUT)  # fmt: skip
    page.get_by_role("button", name="Pin this run").click()
    poll(page, lambda: parse_qs(urlparse(page.url).query).get("pins", [""])[0].count(","),
         lambda commas: commas == 1, TIMEOUT)  # fmt: skip
    pins = urlstate.decode_pins({"pins": parse_qs(urlparse(page.url).query)["pins"][0]})
    assert [pin.config for pin in pins] == [pinned, current]


def test_a_train_link_opened_after_the_results_expired_trains_its_runs_again(
    browser_page: Page, streamlit_server: str, api_server: str, redis_url: str
) -> None:
    page = browser_page
    configs = [TrainConfig(**TRAIN_TINY, norm=norm) for norm in ("bn", "nf")]
    before = []
    for config in configs:
        httpx.post(f"{api_server}/v1/train", json=config.model_dump(mode="json")).raise_for_status()
    for config in configs:
        before.append(finished_result(api_server, job_id(config)))
    token = urlstate.encode_train_runs(configs, [None, "NF, my label"])
    expire(redis_url, api_server, *map(job_id, configs))

    page.goto(f"{streamlit_server}/train?{urlencode({'runs': token})}",
              wait_until="domcontentloaded")  # fmt: skip

    def finished() -> list[str]:
        fail_on_app_error(page)
        return [text for text in alerts(page) if ": finished, held-out accuracy" in text]

    done = poll(page, finished, lambda texts: len(texts) == 2, TIMEOUT)
    assert done[0].startswith("BN-ResNet-14") and done[1].startswith("NF, my label")
    assert any("had expired, so they are trained again" in text for text in alerts(page))
    legend = poll(page, lambda: page.evaluate(READ_LEGEND, PANEL_TITLES[0]), bool, TIMEOUT)
    assert legend[-1] == "NF, my label", legend
    # Trained again with the same seeds: the same curves.
    for config, old in zip(configs, before, strict=True):
        new = finished_result(api_server, job_id(config))
        assert [s["loss"] for s in new["steps"]] == pytest.approx([s["loss"] for s in old["steps"]])
    query = parse_qs(urlparse(page.url).query)
    assert query["runs"] == [token]  # the page keeps the link's runs (and names their jobs)
    assert query["jobs"] == [",".join(map(job_id, configs))]


def test_a_links_bad_fields_are_a_sentence_each_and_its_good_fields_stay(
    browser_page: Page, streamlit_server: str
) -> None:
    page = browser_page
    link = {"depth": "99999", "alpha": "abc", "width": "0.125", "resolution": "32",
            "batch": "2", "pins": "zzz"}  # fmt: skip
    page.goto(f"{streamlit_server}/?{urlencode(link)}", wait_until="domcontentloaded")
    known = ", ".join(str(depth) for depth in RESNET_LAYOUTS)
    expected = [
        f"The link's depth=99999 was left out: 99999 has no block layout (known depths: "
        f"{known}); give a custom per-stage layout instead.",
        "The link's alpha=abc was left out: Input should be a valid number, unable to parse "
        "string as a number (got 'abc').",
        "The link's pin 1 is not one this dashboard wrote (it may have been cut short); it was "
        "unpinned.",
    ]
    shown = poll(page, lambda: alerts(page), lambda texts: all(
        any(line in text for text in texts) for line in expected), TIMEOUT)  # fmt: skip
    assert not any("invalid:" in text or "Traceback" in text for text in shown), shown
    # The good fields stay: the chart is the link's tiny network, and the URL says what is shown.
    config = SPPConfig(**{**urlstate.APP_DEFAULTS, "width": 0.125, "resolution": 32, "batch": 2})
    poll(page, lambda: page.evaluate(READ_NAMES, CHART), lambda n: config.label in n, TIMEOUT)
    query = {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}
    assert query == {"width": "0.125", "resolution": "32", "batch": "2"}

    # The Sweeps page says the same of a sweep link, once per bad part, and keeps the rest.
    sweep = {"depth": "14", "width": "0.125", "resolution": "32", "x": "colour", "ys": "14,26",
             "y": "depth"}  # fmt: skip
    page.goto(f"{streamlit_server}/sweeps?{urlencode(sweep)}", wait_until="domcontentloaded")
    texts = poll(page, lambda: alerts(page), lambda t: any("x=colour" in x for x in t), TIMEOUT)
    [note] = [text for text in texts if "x=colour" in text]
    assert note.startswith("The link's x=colour was left out: it cannot be swept here")
    assert "invalid" not in note and note.count("The link") == 1
    query = {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}
    assert (query["x"], query["y"], query["ys"], query["depth"]) == (
        "alpha",
        "depth",
        "14,26",
        "14",
    )
