"""An open page recovers by itself when the API comes back, in headless Chromium.

The API is stopped while the Explorer is open (as `make run`'s launcher sees a crash), the
page is asked for a new configuration and says the API is not answering, and the API starts
again on the same port. Without a click, the page notices within its retry interval and draws
the chart. Before, it said it would try again "on your next change" and stayed blank.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page

from app import urlstate
from app.problems import RETRY_SECONDS
from launcher.localhost import free_port
from nfcore.spec.config import SPPConfig
from tests.app.conftest import ServerProcess, start_streamlit
from tests.app.test_e2e import ALERT, CHART_TIMEOUT, poll, read_chart
from tests.conftest import RedisServer, session_redis_url

TINY = {"depth": 14, "norm": "nf", "width": 0.125, "resolution": 32, "batch": 2}
MESSAGE_TIMEOUT = 30  # seconds for the page to say the API is not answering (a page run)
# Seconds from the API answering again to the new chart, untouched: the retry interval, a
# page run, and a tiny job (the worker has imported torch already); room for a loaded machine.
RECOVERY_BOUND = 15


class RestartableApi:
    """`python -m api` on one port, stopped and started again as a launcher does."""

    def __init__(self, redis_url: str, log_dir: Path, server_logs: list[Path]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {"REDIS_URL": redis_url, "API_HOST": "127.0.0.1", "API_PORT": str(self.port)}
        self.log_dir, self.server_logs = log_dir, server_logs
        self.server: ServerProcess | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.server = ServerProcess(
            f"api-{self.starts}", [sys.executable, "-m", "api"], self.env, self.log_dir
        )
        self.server_logs.append(self.server.log_path)
        self.server.wait_ready(f"{self.url}/readyz", timeout=30)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def restartable_api(
    redis_server: RedisServer | None, redis_url: str, tmp_path: Path, server_logs: list[Path]
) -> Iterator[RestartableApi]:
    api = RestartableApi(session_redis_url(redis_server), tmp_path, server_logs)
    api.start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture
def supervised_dashboard(
    restartable_api: RestartableApi, worker: object, tmp_path: Path, server_logs: list[Path]
) -> Iterator[str]:
    """The dashboard as `make run` starts it: told that its API is restarted when it exits."""
    server, url = start_streamlit(restartable_api.url, tmp_path, APP_API_SUPERVISED="1")
    server_logs.append(server.log_path)
    try:
        server.wait_ready(f"{url}/_stcore/health", timeout=30)
        yield url
    finally:
        server.stop()


def explorer_url(dashboard: str, **changes: float) -> str:
    return f"{dashboard}/?{urlencode(urlstate.encode_config(SPPConfig(**TINY, **changes)))}"


def alerts(page: Page) -> str:
    return "\n".join(page.locator(ALERT).all_inner_texts())


@pytest.mark.slow
def test_an_open_explorer_draws_by_itself_once_a_restarted_api_answers(
    browser_page: Page, restartable_api: RestartableApi, supervised_dashboard: str
) -> None:
    page = browser_page
    page.goto(explorer_url(supervised_dashboard, alpha=0.2), wait_until="domcontentloaded")
    poll(page, lambda: read_chart(page), bool, CHART_TIMEOUT)  # the worker has loaded torch

    restartable_api.stop()
    page.goto(explorer_url(supervised_dashboard, alpha=0.5), wait_until="domcontentloaded")
    said = poll(page, lambda: alerts(page), lambda text: "not answering" in text, MESSAGE_TIMEOUT)
    assert (
        f"The API at {restartable_api.url} is not answering; it may be restarting. This page "
        f"tries again every {RETRY_SECONDS:g} s." in said
    ), said
    assert read_chart(page) is None

    restartable_api.start()
    answered_at = time.monotonic()
    chart = poll(
        page,
        lambda: read_chart(page),
        lambda chart: chart is not None and chart.shows_alpha(0.5),
        RECOVERY_BOUND,
    )
    print(f"the chart was drawn {time.monotonic() - answered_at:.1f} s after the API answered")
    assert chart.shows_alpha(0.5)
    assert "not answering" not in alerts(page)
