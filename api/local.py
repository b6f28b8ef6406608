"""The whole stack on one machine: `python -m api.local` starts Redis, the API, the workers and
the dashboard, waits until each is ready, and stops them all on Ctrl-C.

Children run in their own session (a Ctrl-C in the terminal reaches only this launcher, which
stops them in reverse order) and, on Linux, get SIGTERM when the launcher dies. Their pids are
written to DATA_DIR/stack.pid, so a run after a crash stops what the last one left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import redis
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from rq import Worker

from api.localhost import redis_server_command
from contract import SPP_QUEUE, TRAIN_QUEUE, redact_url

ROOT = Path(__file__).resolve().parents[1]
GRACE_SECONDS = 5.0  # after SIGTERM, before SIGKILL: an idle service exits well within it
POLL_SECONDS = 0.2
LOG_TAIL_LINES = 25
LAUNCHER_MARKER = "api.local"  # in the launcher's own /proc/<pid>/cmdline
DASHBOARD = ROOT / "app" / "main.py"  # started only once the dashboard exists


class LocalSettings(BaseSettings):
    """What `python -m api.local` runs, from environment variables only: a `.env` holds the
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
    train_workers: int = Field(
        1,
        ge=0,
        le=64,
        description="Workers for training runs only, so SPPs never wait behind a training run "
        "(the WORKERS then serve SPPs only); 0: the WORKERS serve both queues.",
    )
    data_dir: Path = Field(ROOT / ".data", description="Redis data, logs and the pid file.")
    startup_timeout: float = Field(120, gt=0, description="Seconds for everything to be ready.")


class StackError(Exception):
    """A failure to tell the user in one message (which service, and why)."""


class Stop(Exception):
    """SIGINT, SIGTERM or SIGHUP asked the stack to stop."""


@dataclass
class Child:
    """One service process: how to start it, how to recognise it, and when it is ready."""

    name: str
    args: list[str]
    marker: str  # in its /proc/<pid>/cmdline, so a stale pid is only stopped when it is ours
    ready: Callable[[], bool]
    env: dict[str, str]
    process: subprocess.Popen | None = None
    log_path: Path | None = None


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


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
    """Redis answers PING; with `worker`, RQ also registered that worker (it listens)."""
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1) as client:
            if worker is None:
                return bool(client.ping())
            return bool(client.exists(Worker.redis_worker_namespace_prefix + worker))
    except redis.RedisError:
        return False


def http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def runs(pid: int, marker: str) -> bool:
    """Process `pid` is alive and its command line has `marker` as a whole word or words."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, UnicodeDecodeError):
        return False
    return f"{marker} " in f"{command} "  # "-m api" must not match "-m api.local"


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the launcher dies, even by SIGKILL (Linux)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def start(child: Child, log_dir: Path) -> None:
    child.log_path = log_dir / f"{child.name}.log"
    with child.log_path.open("w") as log:
        child.process = subprocess.Popen(
            child.args, cwd=ROOT, env={**os.environ, **child.env}, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )  # fmt: skip


def stop(child: Child) -> None:
    """SIGTERM, then SIGKILL after GRACE_SECONDS (a worker finishing a long job, say)."""
    process = child.process
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        say(f"{child.name} did not stop within {GRACE_SECONDS:g} s; killing it")
        process.kill()
        process.wait()


def log_tail(child: Child) -> str:
    if child.log_path is None or not child.log_path.exists():
        return "(no log)"
    lines = child.log_path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return "\n".join(f"    {line}" for line in lines) or "    (empty log)"


def wait_ready(child: Child, deadline: float) -> None:
    """Until `child.ready()`; StackError with its log's tail when it exits or time runs out."""
    assert child.process is not None
    while not child.ready():
        code = child.process.poll()
        if code is not None:
            why = f"{child.name} exited with code {code}"
        elif time.monotonic() > deadline:
            why = f"{child.name} was not ready in time (STARTUP_TIMEOUT)"
        else:
            time.sleep(POLL_SECONDS)
            continue
        raise StackError(f"{why}; the end of {child.log_path}:\n{log_tail(child)}")


def write_pid_file(path: Path, children: list[Child]) -> None:
    """`<pid> <marker>` lines, the launcher first, for the next run to find stale processes."""
    lines = [f"{os.getpid()} {LAUNCHER_MARKER}"]
    lines += [f"{c.process.pid} {c.marker}" for c in children if c.process is not None]
    path.write_text("\n".join(lines) + "\n")


def stop_stale(pid_file: Path) -> None:
    """Stop the processes a crashed run left behind; refuse when that run is still alive."""
    if not pid_file.exists():
        return
    for line in pid_file.read_text().splitlines():
        pid_text, _, marker = line.partition(" ")
        if not pid_text.isdigit() or int(pid_text) == os.getpid():
            continue
        pid = int(pid_text)
        if not runs(pid, marker):
            continue  # gone, or the pid now belongs to another program
        if marker == LAUNCHER_MARKER:
            raise StackError(f"a stack from {pid_file.parent} is already running (pid {pid})")
        say(f"stopping pid {pid} ({marker}) left by an earlier run")
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + GRACE_SECONDS
        while runs(pid, marker) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink()


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
    threads = {}
    if settings.workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        # N torch processes each using every core would slow each other down. (A training
        # worker beside one SPP worker keeps all cores: the two are rarely busy at once.)
        threads = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // settings.workers))}
    queues = [(f"worker-{i}", [SPP_QUEUE] if settings.train_workers else None)
              for i in range(1, settings.workers + 1)]  # fmt: skip
    queues += [(f"train-worker-{i}", [TRAIN_QUEUE]) for i in range(1, settings.train_workers + 1)]
    for label, serves in queues:
        name = f"local-{os.getpid()}-{label}"  # unique, so a stale registration cannot clash
        ready = lambda name=name: redis_answers(redis_url, worker=name)  # noqa: E731
        env = {**shared, **threads, "WORKER_NAME": name}
        if serves is not None:
            env["WORKER_QUEUES"] = json.dumps(serves)
        children.append(Child(label, [python, "-m", "worker"], "-m worker", ready, env))
    if DASHBOARD.exists():
        app_url = f"http://127.0.0.1:{settings.app_port}"
        args = [python, "-m", "streamlit", "run", "app/main.py", "--server.headless", "true",
                "--server.port", str(settings.app_port), "--server.address", "127.0.0.1",
                "--browser.gatherUsageStats", "false"]  # fmt: skip
        ready = lambda: http_ok(f"{app_url}/_stcore/health")  # noqa: E731
        children.append(Child("dashboard", args, "-m streamlit", ready, {"API_URL": api_url}))
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
        for child in children:
            if child.process is not None and child.process.poll() is not None:
                code = child.process.returncode
                raise StackError(f"{child.name} exited with code {code}:\n{log_tail(child)}")
        time.sleep(0.5)


def main() -> None:
    """`python -m api.local`: exit 0 after a Ctrl-C or SIGTERM, 1 when something failed."""
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
