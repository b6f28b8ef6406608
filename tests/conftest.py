"""Shared fixtures: a real Redis server for the service tests, started here when none is given.

Set TEST_REDIS_URL to use an existing server instead (its database is flushed per test).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis

from launcher.localhost import free_port, redis_server_command

# The suite runs in parallel processes (pytest-xdist, `-n` in pyproject.toml), each of which
# also starts workers; torch's default of a thread per core in each of them would oversubscribe
# the cores many times over (a 7 s test took 56 s). One thread each, set before torch loads,
# and inherited by the processes the tests start.
os.environ.setdefault("OMP_NUM_THREADS", "1")


class RedisServer:
    """A throwaway redis-server on a free port; can be killed and restarted. Without
    persistence a restart loses every key; with `appendonly` it comes back with them, as the
    local stack's and Compose's Redis does."""

    def __init__(self, *, appendonly: bool = False) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="nfsp-redis-")
        self.appendonly = appendonly
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = redis_server_command(self.port, self.dir, appendonly=self.appendonly)
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer | None]:
    if os.environ.get("TEST_REDIS_URL"):
        yield None
        return
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


def session_redis_url(redis_server: RedisServer | None) -> str:
    """The URL of the session's Redis (TEST_REDIS_URL, or the server started here)."""
    return os.environ.get("TEST_REDIS_URL") or redis_server.url  # type: ignore[union-attr]


@pytest.fixture
def redis_url(redis_server: RedisServer | None) -> Iterator[str]:
    """A clean database for one test."""
    url = session_redis_url(redis_server)
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()
