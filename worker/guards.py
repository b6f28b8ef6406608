"""What ends a running job from outside its own code: its time limit and its memory limit.

RQ ends a job that runs past its timeout with SIGALRM, whose handler raises
`JobTimeoutException` in the job: an `Exception`, which code that catches every exception (a
plugin's, a library's) swallowed, and the job went on. Here both limits raise a
`JobOverLimit`, a `BaseException` as `KeyboardInterrupt` is, and raise it again every
`REPEAT_SECONDS` until the job's body has ended. RQ fails the job with its message, and the
worker does not run it again (`JobWorker.handle_exception`).

Memory: a thread reads the process's resident memory (RSS) every `POLL_SECONDS` while the
job's body runs; once it is over the worker's limit it says so (`on_over`, which writes it
into Redis for the reaper, in case the kernel kills the process first) and sends SIGUSR1 to
the process, whose handler raises `JobOutOfMemory` in the job (handlers run in the main
thread, where the worker runs its jobs). A single allocation larger than what is left of the
machine's memory is not seen in time: the kernel's OOM killer ends the worker, and the
reaper reads the last RSS the worker recorded (`contract.reaper`).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from rq.timeouts import BaseDeathPenalty, JobTimeoutException

from worker.settings import WorkerSettings

# Seconds between two looks at the RSS: a look reads /proc/self/statm (tens of microseconds),
# and memory that grows by 1 GiB/s is stopped within about 100 MiB of the limit.
POLL_SECONDS = 0.1
# Seconds between two raises of the same limit, for a job whose code caught the first one.
REPEAT_SECONDS = 1
# The default memory limit is the worker's RSS when a job starts plus this many times
# MAX_MEMORY_BYTES: the API and the worker accept a job whose estimated peak is under that
# (weights and activations), and half as much again is room for what the estimate leaves out
# (allocator caches, temporaries of an op, Python objects), so no accepted job is stopped.
MEMORY_SLACK = 1.5
# The signal the memory thread sends; RQ uses SIGALRM (timeouts) and SIGTERM/SIGINT.
MEMORY_SIGNAL = signal.SIGUSR1
GIB = 2**30


class JobOverLimit(BaseException):
    """A running job reached one of the worker's limits; it is failed and not retried.

    A `BaseException`, as `KeyboardInterrupt` is: code that catches `Exception` must not keep
    a job running past its limits."""


class JobOutOfTime(JobOverLimit):
    """The job ran for longer than its queue allows (SPP_JOB_TIMEOUT, TRAIN_JOB_TIMEOUT)."""


class JobOutOfMemory(JobOverLimit):
    """The worker's memory grew over its limit (WORKER_MAX_RSS_BYTES) during the job."""


def rss_bytes() -> int | None:
    """The resident memory of this process, in bytes; None where /proc cannot tell (not Linux),
    and the memory limit is then off."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            resident_pages = int(statm.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def gib(size: float) -> str:
    return f"{size / GIB:.2f} GiB"


@dataclass(frozen=True)
class Limits:
    """One job's limits, set by the worker before it runs the job."""

    seconds: int
    # None: no memory limit (WORKER_MAX_RSS_BYTES=0, or no /proc to read the RSS from).
    memory_bytes: int | None = None
    # Called from the memory thread with the RSS, once, when it goes over `memory_bytes`.
    on_over: Callable[[int], None] | None = None


class MemoryWatch:
    """A thread that sends MEMORY_SIGNAL once the RSS is over `limit`, and again every
    REPEAT_SECONDS while it stays over; `over` is the RSS it saw then."""

    def __init__(self, limit: int, on_over: Callable[[int], None] | None) -> None:
        self.limit = limit
        self.on_over = on_over
        self.over: int | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="memory-watch", daemon=True)

    def start(self) -> MemoryWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _watch(self) -> None:
        pause = POLL_SECONDS
        while not self._done.wait(pause):
            rss = rss_bytes()
            if rss is None or rss <= self.limit:
                pause = POLL_SECONDS
                continue
            first = self.over is None
            self.over = max(rss, self.over or 0)
            # To the main thread, where the job runs: it also wakes it from a blocking call.
            signal.pthread_kill(threading.main_thread().ident or 0, MEMORY_SIGNAL)
            if first and self.on_over is not None:
                self.on_over(rss)
            pause = REPEAT_SECONDS


class JobLimits(BaseDeathPenalty):
    """RQ's death penalty (the context the worker runs a job's body in) with the worker's
    limits: `limits.seconds` whatever the job's record says, and `limits.memory_bytes`.

    Its handlers raise only while the body runs (`_armed`): a signal that arrives as the
    body ends does nothing, so the failure handling that follows is never cut short."""

    def __init__(
        self,
        timeout: int,
        exception: type[BaseException] = JobTimeoutException,
        *,
        limits: Limits,
        **kwargs: Any,
    ) -> None:
        super().__init__(timeout, exception, **kwargs)
        self.limits = limits
        self._armed = False
        self._watch: MemoryWatch | None = None

    def setup_death_penalty(self) -> None:
        signal.signal(signal.SIGALRM, self._out_of_time)
        signal.signal(MEMORY_SIGNAL, self._out_of_memory)
        self._armed = True
        signal.alarm(self.limits.seconds)
        if self.limits.memory_bytes is not None:
            self._watch = MemoryWatch(self.limits.memory_bytes, self.limits.on_over).start()

    def __exit__(self, *exc_info: Any) -> bool:
        while True:
            try:
                self._armed = False  # from here on the handlers do nothing
                self.cancel_death_penalty()
                return False
            except JobOverLimit:  # a handler ran before the line above took effect
                continue

    def cancel_death_penalty(self) -> None:
        signal.alarm(0)
        if self._watch is not None:
            self._watch.stop()  # no signal is sent after this
            self._watch = None

    def _out_of_time(self, signum: int, frame: FrameType | None) -> None:
        if not self._armed:
            return
        signal.alarm(REPEAT_SECONDS)
        raise JobOutOfTime(
            f"this job ran for over {self.limits.seconds} s, the longest its queue allows "
            "(SPP_JOB_TIMEOUT or TRAIN_JOB_TIMEOUT); it was stopped and is not retried"
        )

    def _out_of_memory(self, signum: int, frame: FrameType | None) -> None:
        if not self._armed or self._watch is None or self._watch.over is None:
            return
        raise JobOutOfMemory(
            f"this job used {gib(self._watch.over)} of memory, over the worker's limit of "
            f"{gib(self._watch.limit)} (WORKER_MAX_RSS_BYTES); it was stopped and is not "
            "retried: ask for a smaller network, batch or resolution"
        )


def memory_limit_words(settings: WorkerSettings) -> str:
    """The worker's memory limit, for its log."""
    if rss_bytes() is None:
        return "memory limit off: this system has no /proc/self/statm to read the RSS from"
    if settings.worker_max_rss_bytes == 0:
        return "memory limit off (WORKER_MAX_RSS_BYTES=0)"
    if settings.worker_max_rss_bytes:
        return f"memory limit {gib(settings.worker_max_rss_bytes)} (WORKER_MAX_RSS_BYTES)"
    return (
        f"memory limit: the RSS when a job starts plus "
        f"{gib(MEMORY_SLACK * settings.max_memory_bytes)} ({MEMORY_SLACK} x MAX_MEMORY_BYTES)"
    )
