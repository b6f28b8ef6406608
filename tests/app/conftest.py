"""Fixtures for the dashboard tests: the whole stack as a user runs it, each part a subprocess.

Redis (tests/conftest.py) <- worker (`python -m worker`) and API (`python -m api`) <- dashboard
(`streamlit run app/main.py` with API_URL). Every process logs to a file under the test's
tmp_path; when a test fails, the end of each log is added to its report.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import streamlit as st
from playwright.sync_api import Page, sync_playwright

from app.settings import get_settings
from launcher.localhost import free_port
from tests.api.conftest import WorkerProcess
from tests.conftest import RedisServer, session_redis_url

ROOT = Path(__file__).resolve().parents[2]
APP_SCRIPT = ROOT / "app" / "main.py"
# The system's Chromium (Debian's `chromium` package), never a browser Playwright downloads.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
LOG_TAIL = 6000  # characters of each log shown with a failure

SERVER_LOGS = pytest.StashKey[list[Path]]()


class ServerProcess:
    """A server in a subprocess, ready once `ready_url` answers 200; output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, ready_url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                last = f"exited with status {self.process.returncode}"
                break
            try:
                response = httpx.get(ready_url, timeout=2)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as error:
                last = repr(error)
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"{self.name} not ready at {ready_url} within {timeout:.0f} s ({last}):\n"
            f"{tail(self.log_path)}"
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def tail(path: Path) -> str:
    text = path.read_text(errors="replace")
    return text if len(text) <= LOG_TAIL else "...\n" + text[-LOG_TAIL:]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """Append the servers' logs to the report of a failed setup or test."""
    report = yield
    if report.failed:
        for path in item.stash.get(SERVER_LOGS, []):
            report.sections.append((f"log {path.name}", tail(path)))
    return report


@pytest.fixture
def server_logs(request: pytest.FixtureRequest) -> list[Path]:
    """Log files of this test's processes, shown when it fails."""
    return request.node.stash.setdefault(SERVER_LOGS, [])


@pytest.fixture(scope="module")
def module_api(
    redis_server: RedisServer | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    """`python -m api` (uvicorn) on a free port, shared by a module's tests (each test gets a
    flushed database, `redis_url`): its base URL once /readyz answers, and its log."""
    port = free_port()
    env = {"REDIS_URL": session_redis_url(redis_server), "API_HOST": "127.0.0.1",
           "API_PORT": str(port)}  # fmt: skip
    server = ServerProcess(
        "api", [sys.executable, "-m", "api"], env, tmp_path_factory.mktemp("api")
    )
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_ready(f"{url}/readyz", timeout=30)
        yield url, server.log_path
    finally:
        server.stop()


@pytest.fixture
def api_server(
    module_api: tuple[str, Path], redis_url: str, server_logs: list[Path]
) -> Iterator[str]:
    """The module's API, on this test's clean database."""
    url, log_path = module_api
    server_logs.append(log_path)
    yield url


@pytest.fixture(scope="module")
def module_worker(
    redis_server: RedisServer | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One `python -m worker` shared by a module's tests (it imports torch once)."""
    process = WorkerProcess(session_redis_url(redis_server), tmp_path_factory.mktemp("worker"))
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.fixture
def worker(
    module_worker: WorkerProcess, redis_url: str, server_logs: list[Path]
) -> Iterator[WorkerProcess]:
    """The module's worker, listening on this test's clean database."""
    server_logs.append(module_worker.log_path)
    yield module_worker


@pytest.fixture
def streamlit_server(
    api_server: str, worker: WorkerProcess, tmp_path: Path, server_logs: list[Path]
) -> Iterator[str]:
    """The dashboard (`streamlit run app/main.py`) on a free port, talking to `api_server`."""
    server, url = start_streamlit(api_server, tmp_path)
    server_logs.append(server.log_path)
    try:
        server.wait_ready(f"{url}/_stcore/health", timeout=30)
        yield url
    finally:
        server.stop()


def start_streamlit(api_url: str, log_dir: Path, **env: str) -> tuple[ServerProcess, str]:
    """`streamlit run app/main.py` on a free port with API_URL (and `env`), and its URL."""
    if not APP_SCRIPT.exists():
        pytest.fail(f"{APP_SCRIPT.relative_to(ROOT)} is missing")
    port = free_port()
    args = [
        sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT),
        "--server.headless", "true",
        "--server.port", str(port),
        "--server.address", "127.0.0.1",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    server = ServerProcess("streamlit", args, {"API_URL": api_url, **env}, log_dir)
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture
def output_path(tmp_path: Path) -> Callable[[str], list[Path]]:
    """Where a test saves an artifact: its tmp_path and the git-ignored test-output/ folder."""

    def paths(name: str) -> list[Path]:
        stable = ROOT / "test-output" / name
        stable.parent.mkdir(exist_ok=True)
        return [tmp_path / name, stable]

    return paths


@pytest.fixture
def browser_page() -> Iterator[Page]:
    """A page in headless Chromium; every Playwright call on it fails after 30 s."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(30_000)
            yield page
        finally:
            browser.close()


@pytest.fixture
def fresh_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A page test's own settings, caches and API client (no token from the environment)."""
    monkeypatch.delenv("API_TOKEN", raising=False)
    clear_app_caches()
    yield
    clear_app_caches()


@pytest.fixture
def quick_polls(fresh_app: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """`fresh_app`, with waits on running jobs of 0.1 s, so a page test follows them closely."""
    monkeypatch.setenv("APP_POLL_SECONDS", "0.1")


def clear_app_caches() -> None:
    """Settings and the API client are made once per process: forget them between tests."""
    get_settings.cache_clear()
    st.cache_data.clear()
    st.cache_resource.clear()
