"""A running job lives through a short Redis outage (a restart, a failover, a network blip).

A job's writes are of two kinds. Progress (blocks done, a training run's events) can wait:
while Redis is unreachable it is skipped (`SkipWhileAway`) and the job computes on; the next
write brings it up to date. What the job is for (its result, its final state) must get
there: it is tried again for a while (`patiently`), about the heartbeat TTL, during which
the worker's heartbeats keep the job from being counted as abandoned. Before this, the first
failed progress write ended the job; it showed `running` with nobody working on it until its
heartbeat expired, and then ran again from the start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis

log = logging.getLogger("worker")

# The errors of a Redis that is away, as opposed to one that refuses a command.
UNREACHABLE = (redis.ConnectionError, redis.TimeoutError)
# First pause before trying again, doubled each time up to LONGEST_PAUSE (seconds).
FIRST_PAUSE = 0.25
LONGEST_PAUSE = 2.0

T = TypeVar("T")


def patiently(call: Callable[[], T], seconds: float, what: str) -> T:
    """`call()`, tried again while Redis is unreachable, for up to `seconds`; then its error."""
    deadline = time.monotonic() + seconds
    pause = FIRST_PAUSE
    while True:
        try:
            return call()
        except UNREACHABLE as error:
            if time.monotonic() + pause > deadline:
                log.error("%s: Redis still unreachable after %.0f s (%s)", what, seconds, error)
                raise
            log.warning("%s: Redis unreachable (%s); trying again in %.2f s", what, error, pause)
            time.sleep(pause)
            pause = min(2 * pause, LONGEST_PAUSE)


class SkipWhileAway:
    """A write that can wait: tried once; while Redis is unreachable it is skipped, and the
    log says so once per outage, and once when Redis answers again."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.away = False

    def __call__(self, call: Callable[[], object]) -> bool:
        """Whether the write was made."""
        try:
            call()
        except UNREACHABLE as error:
            if not self.away:
                log.warning("%s skipped: Redis unreachable (%s); the job goes on", self.what, error)
            self.away = True
            return False
        if self.away:
            log.info("%s: Redis answers again", self.what)
        self.away = False
        return True
