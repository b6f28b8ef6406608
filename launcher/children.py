"""The child processes of `python -m launcher`: started in their own session, their output in
a log each, stopped with SIGTERM then SIGKILL, watched, and started again with a backoff when
they exit; their pids in a file, so a run after a crash stops what the last one left behind."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER_MARKER = "-m launcher"  # in the launcher's own /proc/<pid>/cmdline
GRACE_SECONDS = 5.0  # after SIGTERM, before SIGKILL: an idle service exits well within it
POLL_SECONDS = 0.2
LOG_TAIL_LINES = 25
FIRST_BACKOFF_SECONDS = 1.0  # before restarting a child that exited; doubled each time in a row
MAX_BACKOFF_SECONDS = 30.0
STABLE_SECONDS = 60.0  # a child that ran this long before exiting starts a new series
MAX_FAST_CRASHES = 6  # exits in a row, each soon after its start: 1+2+4+8+16 s of trying


class StackError(Exception):
    """A failure to tell the user in one message (which service, and why)."""


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
    started_at: float = 0.0  # time.monotonic() of its last start
    restarts: int = 0  # starts after the first
    fast_crashes: int = 0  # exits in a row, each within STABLE_SECONDS of its start
    restart_at: float | None = None  # when it is due to start again, after an exit
    awaiting_ready: bool = False  # restarted, not ready yet


def say(message: str) -> None:
    print(f"[stack] {message}", flush=True)


def runs(pid: int, marker: str) -> bool:
    """Process `pid` is alive and its command line has `marker` as a whole word or words."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, UnicodeDecodeError):
        return False
    return f"{marker} " in f"{command} "  # "-m api" must not match "-m api_x"


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the launcher dies, even by SIGKILL (Linux)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def start(child: Child, log_dir: Path) -> None:
    """Start the child, its output into its log (continued, after a restart)."""
    child.log_path = log_dir / f"{child.name}.log"
    with child.log_path.open("a" if child.restarts else "w") as log:
        if child.restarts:
            log.write(f"\n[stack] --- restart {child.restarts} ---\n")
            log.flush()
        child.started_at = time.monotonic()
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


def plan_restart(child: Child, now: float) -> str:
    """After `child` exited: when it starts again, and the line saying so. StackError when it
    exited MAX_FAST_CRASHES times in a row, each soon after its start."""
    assert child.process is not None
    code = child.process.returncode
    child.fast_crashes = child.fast_crashes + 1 if now - child.started_at < STABLE_SECONDS else 1
    if child.fast_crashes >= MAX_FAST_CRASHES:
        raise StackError(
            f"{child.name} exited with status {code}, {child.fast_crashes} times in a row "
            f"within {STABLE_SECONDS:g} s of starting; giving up. The end of "
            f"{child.log_path}:\n{log_tail(child)}"
        )
    delay = min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (child.fast_crashes - 1))
    child.restart_at = now + delay
    return (
        f"{child.name} exited with status {code}; restarting in {delay:g} s "
        f"(restart {child.restarts + 1})"
    )


def end_group(child: Child) -> None:
    """SIGKILL what the exited child's process group left behind (a server's own worker
    processes, which would hold its port), as soon as its exit is seen."""
    assert child.process is not None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.process.pid, signal.SIGKILL)  # its own session: pgid == its pid


def restart(child: Child, log_dir: Path) -> None:
    """Start an exited child again, under a new worker name for a worker."""
    child.restarts += 1
    child.restart_at = None
    child.awaiting_ready = True
    if "WORKER_NAME" in child.env:  # RQ refuses a name whose dead owner's record lingers
        base = child.env["WORKER_NAME"].split("~")[0]
        child.env["WORKER_NAME"] = f"{base}~{child.restarts}"
    start(child, log_dir)


def supervise(children: list[Child], data_dir: Path) -> None:
    """One look at every child: restart those due, plan a restart for those that exited, say
    when a restarted one is ready again."""
    now = time.monotonic()
    for child in children:
        process = child.process
        if process is None:
            continue
        if child.restart_at is not None:
            if now >= child.restart_at:
                restart(child, data_dir / "logs")
                write_pid_file(data_dir / "stack.pid", children)
                say(f"{child.name} started again (pid {child.process.pid})")
        elif process.poll() is not None:
            end_group(child)
            say(plan_restart(child, now))
        elif child.awaiting_ready and child.ready():
            child.awaiting_ready = False
            say(f"{child.name} ready again (pid {process.pid})")


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
