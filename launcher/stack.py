"""The whole stack on one machine: `python -m launcher` starts Redis, the API, the workers and
the dashboard, waits until each is ready, and stops them all on Ctrl-C.

Children run in their own session (a Ctrl-C in the terminal reaches only this launcher, which
stops them in reverse order) and, on Linux, get SIGTERM when the launcher dies. Their pids are
written to DATA_DIR/stack.pid, so a run after a crash stops what the last one left behind.

A child that exits while the stack runs (killed, out of memory, a bug) is started again after
a backoff of 1, 2, 4 ... up to 30 s, its log continued, so an open dashboard tab keeps working
and says the API is restarting; after MAX_FAST_CRASHES exits in a row, each within
STABLE_SECONDS of its start, the launcher gives up and stops the stack, saying why
(`launcher.children`: starting, stopping and restarting the processes).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import redis
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract import TRAIN, fixed_queues, redact_url
from contract.rq_queue import RQJobQueue
from launcher.children import (
    ROOT,
    Child,
    StackError,
    say,
    start,
    stop,
    stop_stale,
    supervise,
    wait_ready,
    write_pid_file,
)
from launcher.localhost import redis_server_command

DASHBOARD = ROOT / "app" / "main.py"  # started only once the dashboard exists
# A training worker per this many cores (each run then has two threads: one thread is about
# half as fast), and per this much memory: a worker with torch imported holds about 0.6 GiB
# while it trains a preset run (ResNet-26 at width 0.25, measured: 561 MiB peak RSS), and
# room is left for the run's own data. A run near the API's MAX_MEMORY_BYTES (8 GiB) needs
# more: set TRAIN_WORKERS lower on a machine that trains such runs side by side.
CORES_PER_TRAIN_WORKER = 2
MEMORY_PER_TRAIN_WORKER = 2 * 2**30


class LocalSettings(BaseSettings):
    """What `python -m launcher` runs, from environment variables only: a `.env` holds the
    services' settings (a deployment's REDIS_URL, say), not this launcher's."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    redis_url: str | None = Field(None, description="Use this Redis instead of starting one.")
    redis_port: int = Field(
        6390,
        ge=1,
        le=65535,
        description="Port of the Redis started here (not 6379: a system Redis may sit there).",
    )
    api_port: int = Field(8000, ge=1, le=65535)
    app_port: int = Field(8501, ge=1, le=65535, description="Port of the dashboard.")
    workers: int = Field(1, ge=1, le=64, description="Number of `python -m worker` processes.")
    train_workers: int | None = Field(
        None,
        ge=0,
        le=64,
        description="Workers for training runs only, so SPPs never wait behind a training run "
        "(the WORKERS then serve SPPs only); 0: the WORKERS serve both queues. Default: one "
        "per two cores, at most one per 2 GiB of memory, at least one.",
    )
    data_dir: Path = Field(ROOT / ".data", description="Redis data, logs and the pid file.")
    startup_timeout: float = Field(120, gt=0, description="Seconds for everything to be ready.")


def auto_train_workers(cores: int, memory_bytes: int | None) -> int:
    """Training workers for a machine of `cores` and `memory_bytes` (None: unknown)."""
    count = cores // CORES_PER_TRAIN_WORKER
    if memory_bytes is not None:
        count = min(count, memory_bytes // MEMORY_PER_TRAIN_WORKER)
    return max(1, count)


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


class Stop(Exception):
    """SIGINT, SIGTERM or SIGHUP asked the stack to stop."""


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could not listen on host:port now (SO_REUSEADDR, as servers bind)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def redis_answers(url: str, worker: str | None = None) -> bool:
    """Redis answers PING; with `worker`, that worker is also registered (it listens)."""
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1) as client:
            if worker is None:
                return bool(client.ping())
            return RQJobQueue(client).worker_registered(worker)
    except redis.RedisError:
        return False


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def check_port(port: int, variable: str) -> None:
    if port_in_use(port):
        raise StackError(f"port {port} is in use by another program; set {variable}")


def redis_child(settings: LocalSettings, url: str) -> Child:
    """redis-server on 127.0.0.1 with an append-only file: results survive restarts."""
    redis_dir = settings.data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    args = redis_server_command(settings.redis_port, redis_dir, appendonly=True)
    return Child("redis", args, "redis-server", lambda: redis_answers(url), {})


def service_children(settings: LocalSettings, redis_url: str) -> list[Child]:
    """The API, the workers, and the dashboard when app/main.py exists.

    REDIS_URL and API_PORT are passed explicitly: the environment wins over a `.env`.
    """
    python = sys.executable
    api_url = f"http://127.0.0.1:{settings.api_port}"
    shared = {"REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    api_env = {"API_HOST": "127.0.0.1", "API_PORT": str(settings.api_port)}
    children = [Child("api", [python, "-m", "api"], "-m api", lambda: http_ok(f"{api_url}/readyz"),
                      {**shared, **api_env})]  # fmt: skip
    cores = os.cpu_count() or 1
    train_workers = settings.train_workers
    if train_workers is None:
        train_workers = auto_train_workers(cores, physical_memory())
    # With training workers, the others serve every other queue (a worker's default: all).
    others = [name for name in fixed_queues() if name != TRAIN.queue] if train_workers else None
    queues = [(f"worker-{i}", others, settings.workers)
              for i in range(1, settings.workers + 1)]  # fmt: skip
    queues += [(f"train-worker-{i}", [TRAIN.queue], train_workers)
               for i in range(1, train_workers + 1)]  # fmt: skip
    for label, serves, alike in queues:
        env = {**shared, "WORKER_NAME": f"local-{os.getpid()}-{label}"}  # unique: no clash
        if alike > 1 and "OMP_NUM_THREADS" not in os.environ:
            # N torch processes each using every core would slow each other down. (The
            # training workers beside the SPP workers keep theirs: the two are rarely busy at
            # once; N training workers are, when a class trains its runs.)
            env["OMP_NUM_THREADS"] = str(max(1, cores // alike))
        if serves is not None:
            env["WORKER_QUEUES"] = json.dumps(serves)
        child = Child(label, [python, "-m", "worker"], "-m worker", lambda: False, env)
        # Its name changes when it is restarted: the check reads the current one.
        child.ready = lambda child=child: redis_answers(redis_url, worker=child.env["WORKER_NAME"])
        children.append(child)
    if DASHBOARD.exists():
        app_url = f"http://127.0.0.1:{settings.app_port}"
        args = [python, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
                "--server.port", str(settings.app_port), "--server.address", "127.0.0.1",
                "--browser.gatherUsageStats", "false"]  # fmt: skip
        ready = lambda: http_ok(f"{app_url}/_stcore/health")  # noqa: E731
        env = {"API_URL": api_url, "APP_API_SUPERVISED": "1"}  # it says a lost API restarts
        children.append(Child("dashboard", args, "-m streamlit", ready, env))
    return children


def _request_stop(signum: int, frame: object) -> None:
    raise Stop(signal.Signals(signum).name)


def launch(group: list[Child], children: list[Child], data_dir: Path, started: float,
           deadline: float) -> None:  # fmt: skip
    """Start `group` at once (they start in parallel), then wait for each to be ready."""
    for child in group:
        start(child, data_dir / "logs")
        children.append(child)
    write_pid_file(data_dir / "stack.pid", children)
    for child in group:
        wait_ready(child, deadline)
        say(f"{child.name} ready (pid {child.process.pid}, {time.monotonic() - started:.1f} s)")


def choose_redis(settings: LocalSettings) -> tuple[str, list[Child]]:
    """REDIS_URL when set (it must answer), else a redis-server to start here."""
    if settings.redis_url is not None:
        if not redis_answers(settings.redis_url):
            raise StackError(
                f"the Redis at REDIS_URL={redact_url(settings.redis_url)} does not answer"
            )
        say(f"using the Redis at REDIS_URL={redact_url(settings.redis_url)}")
        return settings.redis_url, []
    check_port(settings.redis_port, "REDIS_PORT (or REDIS_URL to use a running Redis)")
    url = f"redis://127.0.0.1:{settings.redis_port}/0"
    say(f"starting Redis at {url}, append-only file in {settings.data_dir / 'redis'}")
    return url, [redis_child(settings, url)]


def run(settings: LocalSettings, children: list[Child]) -> None:
    """Start everything, say where it is, then wait for a signal or a child's death."""
    (settings.data_dir / "logs").mkdir(parents=True, exist_ok=True)
    stop_stale(settings.data_dir / "stack.pid")
    check_port(settings.api_port, "API_PORT")
    if DASHBOARD.exists():
        check_port(settings.app_port, "APP_PORT")
    redis_url, redis_group = choose_redis(settings)
    say(f"logs in {settings.data_dir / 'logs'}")
    started = time.monotonic()
    deadline = started + settings.startup_timeout
    launch(redis_group, children, settings.data_dir, started, deadline)
    services = service_children(settings, redis_url)
    launch(services, children, settings.data_dir, started, deadline)
    if DASHBOARD.exists():
        say(f"dashboard: http://127.0.0.1:{settings.app_port}")
    say(f"API docs:  http://127.0.0.1:{settings.api_port}/docs")
    say(f"stack ready in {time.monotonic() - started:.1f} s; Ctrl-C stops it")
    while True:
        supervise(children, settings.data_dir)
        time.sleep(0.5)


def main() -> None:
    """`python -m launcher`: exit 0 after a Ctrl-C or SIGTERM, 1 when something failed."""
    try:
        settings = LocalSettings()
    except ValidationError as error:
        say(f"error in the environment: {error}")
        sys.exit(2)
    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for signum in stop_signals:
        signal.signal(signum, _request_stop)
    children: list[Child] = []
    code = 0
    try:
        run(settings, children)
    except Stop as request:
        say(f"{request}: stopping")
    except (StackError, RuntimeError, OSError) as error:
        say(f"error: {error}")
        code = 1
    finally:
        for signum in stop_signals:
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not cut the stopping
        for child in reversed(children):
            stop(child)
        if children:  # only then is the pid file ours
            (settings.data_dir / "stack.pid").unlink(missing_ok=True)
            say("stopped")
    sys.exit(code)


if __name__ == "__main__":
    main()
