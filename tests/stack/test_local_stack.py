"""`python -m launcher` end to end, with real processes: the stack comes up from a copy of the
repository, computes an SPP, stops on Ctrl-C leaving no process and no port behind, and after a
restart on the same data folder still has the result (Redis's append-only file). A service
killed while the stack runs is started again, and one that keeps dying stops the stack."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from launcher.children import MAX_FAST_CRASHES, STABLE_SECONDS
from launcher.localhost import free_port
from launcher.stack import port_in_use

ROOT = Path(__file__).resolve().parents[2]
TINY = {"depth": 14, "width": 0.125, "resolution": 32, "batch": 2, "norm": "nf", "device": "cpu"}
READY_TIMEOUT = 60  # seconds; the stack is usually ready in a few
STOP_TIMEOUT = 15
RESTART_TIMEOUT = 45  # seconds for a killed service to answer again (1 s backoff, then imports)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
]


@dataclass
class Stack:
    """One `python -m launcher` run in a subprocess, its console in a file."""

    process: subprocess.Popen
    console: Path
    data_dir: Path
    api: str
    app: str
    ports: tuple[int, ...]

    def output(self) -> str:
        return self.console.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while "stack ready" not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the stack did not come up:\n{self.output()}")
            time.sleep(0.2)

    def child_pids(self) -> set[int]:
        """Processes whose parent is the launcher, read from /proc."""
        found = set()
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # "pid (comm) state ppid ...": comm may hold spaces, so split after its ')'.
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == self.process.pid:
                found.add(int(stat.parent.name))
        return found

    def pid_file_children(self) -> set[int]:
        lines = (self.data_dir / "stack.pid").read_text().splitlines()
        return {int(line.split()[0]) for line in lines[1:]}  # the first line is the launcher

    def pid_of(self, marker: str) -> int:
        """The pid of the one child whose pid-file marker is `marker` ('-m api', ...)."""
        lines = (self.data_dir / "stack.pid").read_text().splitlines()[1:]
        [pid] = [int(pid) for pid, _, mark in (line.partition(" ") for line in lines)
                 if mark == marker]  # fmt: skip
        return pid

    def wait_for(self, text: str, timeout: float = RESTART_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} in the console:\n{self.output()}")
            time.sleep(0.2)

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(STOP_TIMEOUT)


def copy_repository(target: Path) -> Path:
    """The code the stack runs, without the venv, git data or outputs."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("nfcore", "api", "worker", "app"):
        shutil.copytree(ROOT / name, target / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", target / "pyproject.toml")
    # A .env pointing elsewhere must not win over what the launcher chose.
    (target / ".env").write_text("REDIS_URL=redis://127.0.0.1:1/0\nAPI_PORT=1\n")
    return target


@pytest.fixture
def start_stack(tmp_path: Path) -> Iterator:
    repo = copy_repository(tmp_path / "repo")
    ports = {"API_PORT": free_port(), "APP_PORT": free_port(), "REDIS_PORT": free_port()}
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "API_TOKEN", "WORKERS")}
    env |= {k: str(v) for k, v in ports.items()}
    env |= {"DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(repo)}
    env |= {"WORKER_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "TRAIN_WORKERS": "1"}
    runs: list[Stack] = []

    def start() -> Stack:
        console = tmp_path / f"console-{len(runs)}.txt"
        with console.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "launcher"], cwd=tmp_path, env=env,
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        stack = Stack(process, console, tmp_path / "data",
                      f"http://127.0.0.1:{ports['API_PORT']}",
                      f"http://127.0.0.1:{ports['APP_PORT']}", tuple(ports.values()))  # fmt: skip
        runs.append(stack)
        stack.wait_ready()
        return stack

    yield start
    for stack in runs:  # a failed test must not leave a stack running
        if stack.process.poll() is None:
            stack.process.terminate()
            try:
                stack.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                stack.process.kill()  # its children get SIGTERM (PR_SET_PDEATHSIG)


def compute(client: httpx.Client) -> dict:
    """Submit TINY, poll its job until finished, and return the result."""
    response = client.post("/v1/spp", json=TINY)
    assert response.status_code == 202, response.text
    job_url = response.headers["Location"]
    deadline = time.monotonic() + 30
    while (job := client.get(job_url).json())["state"] != "finished":
        assert job["state"] in ("queued", "running"), job
        assert time.monotonic() < deadline, f"job not finished in time: {job}"
        time.sleep(0.2)
    result = client.get(f"{job_url}/result")
    assert result.status_code == 200
    return result.json()


def test_stack_runs_an_spp_stops_cleanly_and_keeps_results_across_a_restart(start_stack):
    stack = start_stack()
    assert httpx.get(f"{stack.app}/_stcore/health").status_code == 200
    # One worker for SPPs and one for training: an SPP never waits behind a training run.
    assert httpx.get(f"{stack.api}/readyz").json()["workers"] == {"spp": 1, "train": 1}
    with httpx.Client(base_url=stack.api, timeout=10) as client:
        result = compute(client)
    assert len(result["blocks"]) > 0

    children = stack.child_pids()
    assert children == stack.pid_file_children()
    assert len(children) == 5  # redis, api, an SPP worker, a training worker, dashboard
    started = time.monotonic()
    assert stack.interrupt() == 0, stack.output()
    print(f"stopped in {time.monotonic() - started:.1f} s")
    assert all(not Path(f"/proc/{pid}").exists() for pid in children)
    assert not any(port_in_use(port) for port in stack.ports)
    assert not (stack.data_dir / "stack.pid").exists()

    again = start_stack()
    with httpx.Client(base_url=again.api, timeout=10) as client:
        cached = client.post("/v1/spp", json=TINY)
    assert cached.status_code == 200, cached.text
    assert cached.headers["X-Cache"] == "hit"
    assert cached.json() == result
    assert again.interrupt() == 0, again.output()


def test_a_killed_api_and_worker_are_started_again(start_stack):
    """SIGKILL the API: the launcher says so, starts it again after its backoff and /healthz
    answers; the stack (and an open dashboard) stays up. A killed worker comes back under a
    new name (RQ refuses the old one while its record lingers)."""
    stack = start_stack()
    api_pid = stack.pid_of("-m api")
    os.kill(api_pid, signal.SIGKILL)
    started = time.monotonic()
    stack.wait_for("api exited with status -9; restarting in 1 s (restart 1)")
    stack.wait_for("api ready again")
    print(f"the API answered again {time.monotonic() - started:.1f} s after SIGKILL")
    assert httpx.get(f"{stack.api}/healthz").json() == {"status": "ok"}
    assert stack.pid_of("-m api") != api_pid
    assert httpx.get(f"{stack.app}/_stcore/health").status_code == 200  # never went down
    assert "api.log" in {p.name for p in (stack.data_dir / "logs").iterdir()}
    assert "--- restart 1 ---" in (stack.data_dir / "logs" / "api.log").read_text()

    lines = (stack.data_dir / "stack.pid").read_text().splitlines()
    workers = [int(line.split()[0]) for line in lines if line.endswith("-m worker")]
    os.kill(workers[-1], signal.SIGKILL)  # the pid file's order: the SPP worker, then training
    stack.wait_for("train-worker-1 exited with status -9; restarting in 1 s (restart 1)")
    stack.wait_for("train-worker-1 ready again")
    with httpx.Client(base_url=stack.api, timeout=10) as client:
        assert len(compute(client)["blocks"]) > 0  # the SPP worker kept working throughout
    assert stack.interrupt() == 0, stack.output()


def test_a_service_that_keeps_dying_stops_the_stack(start_stack):
    """Each start of the API is killed at once: after MAX_FAST_CRASHES exits in a row the
    launcher gives up with one message, and stops everything."""
    stack = start_stack()
    deadline = time.monotonic() + 120
    killed = set()
    while stack.process.poll() is None:
        assert time.monotonic() < deadline, stack.output()
        time.sleep(0.1)
        try:
            pid = stack.pid_of("-m api")
        except FileNotFoundError:  # the launcher is stopping and took its pid file away
            continue
        except ValueError:  # no api line at this moment: it is between a crash and its restart
            continue
        if pid not in killed and Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
    assert stack.process.returncode == 1, stack.output()
    assert len(killed) == MAX_FAST_CRASHES
    assert (
        f"api exited with status -9, {MAX_FAST_CRASHES} times in a row within "
        f"{STABLE_SECONDS:g} s of starting; giving up" in stack.output()
    )
    assert "[stack] stopped" in stack.output()
    assert not any(port_in_use(port) for port in stack.ports)
