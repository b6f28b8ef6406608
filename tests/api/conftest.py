"""Fixtures for the service tests: real Redis (tests/conftest.py), real workers in subprocesses,
and the API in-process through FastAPI's TestClient (its lifespan, so maintenance runs too)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import ApiSettings

ROOT = Path(__file__).resolve().parents[2]

# Small networks: a job takes well under a second on a CPU worker.
TINY = {"depth": 14, "width": 0.125, "resolution": 32, "batch": 2, "norm": "nf", "device": "cpu"}
# A job that runs for several seconds on 2 CPU cores, for cancel and kill tests.
# SIGTERM to exit, for a worker idle or finishing a TINY job on a loaded machine.
STOP_SECONDS = 20
SLOW = {"depth": 600, "width": 0.25, "resolution": 128, "batch": 8, "norm": "nf", "gradients": True}


class WorkerProcess:
    """`python -m worker` in a subprocess, with its log in a file for failing tests to show."""

    def __init__(
        self, redis_url: str, log_dir: Path, command: list[str] | None = None, **env: str
    ) -> None:
        self.log_path = log_dir / f"worker-{time.monotonic_ns()}.log"
        environment = {
            **os.environ,
            "REDIS_URL": redis_url,
            "WORKER_DEVICE": "cpu",
            "HEARTBEAT_TTL": "6",
            "OMP_NUM_THREADS": "1",
            # No model plugins unless a test asks (tests/api/test_plugins.py): loading them
            # costs every worker start a second or two on a loaded machine.
            "WORKER_PLUGINS": "[]",
            **env,
        }
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", "worker"], cwd=ROOT, env=environment,
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "Listening on" in self.log_path.read_text():
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"worker did not start:\n{self.log_path.read_text()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM, as Docker and the launcher stop a worker; one still alive after
        STOP_SECONDS is killed (never left to take the next test's jobs) and the test fails."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
                    raise AssertionError(
                        f"the worker did not exit within {STOP_SECONDS} s of SIGTERM:\n"
                        + self.log_path.read_text()[-3000:]
                    ) from None
        finally:
            self.log.close()


@pytest.fixture
def start_worker(redis_url: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers on the test's Redis; all are stopped when the test ends."""
    started: list[WorkerProcess] = []

    def start(**env: str) -> WorkerProcess:
        worker = WorkerProcess(redis_url, tmp_path, **env)
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    problems = []
    for worker in started:  # every one, even after one failed to stop
        try:
            worker.stop()
        except AssertionError as problem:
            problems.append(problem)
    if problems:
        raise problems[0]


@pytest.fixture
def make_client(redis_url: str) -> Iterator[Callable[..., TestClient]]:
    """An API client on the test's Redis; settings can be overridden per test."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        settings = ApiSettings(
            redis_url=redis_url, maintenance_interval=1.0, heartbeat_ttl=6, **overrides
        )
        client = TestClient(create_app(settings))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def store(redis_url: str) -> Iterator[redis.Redis]:
    """A plain Redis client on the test's database, to look at what the service wrote."""
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


def wait_for(client: TestClient, job_id: str, states: tuple[str, ...], timeout: float = 60) -> dict:
    """Poll a job until it reaches one of `states`; returns its last view."""
    deadline = time.monotonic() + timeout
    view: dict = {}
    while time.monotonic() < deadline:
        view = client.get(f"/v1/jobs/{job_id}").json()
        if view.get("state") in states:
            return view
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {states}; last seen {view}")
