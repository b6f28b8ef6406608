"""Waiting for a job without polling: `?wait=S` on the submissions and on GET /v1/jobs/{id}.

A waiting request holds no thread and no Redis connection of its own. Each API process keeps
one `EndWatch`: one pub/sub connection, subscribed to every job's `ENDED_CHANNEL` (a worker
publishes there once the job's final state is in Redis), that wakes the requests waiting for
that job; and one loop that looks, in one pipeline, at the jobs that requests have just begun
waiting for, and every `RECHECK_SECONDS` at all of them, since a job can also end without a
message (its worker died and the reaper failed it) or while the subscription was down.

So a thousand browsers waiting cost two Redis connections, not two thousand. The number of
waiting requests is bounded (MAX_WAITERS): past it, a request is answered at once with the
job as it is, as if its wait had run out, with `Retry-After` (see `TooManyWaiters`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final

import redis
import redis.asyncio
from starlette.concurrency import run_in_threadpool

from contract import ENDED_CHANNEL, JobQueue, key_for

MAX_WAIT_SECONDS: Final = 30.0  # longest `wait` a request may ask for
# How often every waited-for job is looked at, for ends that sent no message; also the most a
# request waits beyond its job's end while Redis's pub/sub is reconnecting.
RECHECK_SECONDS: Final = 0.5
# Pause before subscribing again after the pub/sub connection broke (Redis restarting).
RECONNECT_SECONDS: Final = 0.5
# Seconds a request over MAX_WAITERS is told to wait before asking again (`Retry-After`).
RETRY_AFTER_SECONDS: Final = 1
# Longest an API shutdown waits for the watch's tasks (a Redis close can hang on a dead host).
STOP_SECONDS: Final = 2.0
_CHANNEL_PREFIX: Final = key_for(ENDED_CHANNEL, "")

log = logging.getLogger("api")


class TooManyWaiters(Exception):
    """This process already holds MAX_WAITERS waiting requests: answer without waiting.

    Why not an error status: the wait is a hint (every client already handles an answer that
    comes when the wait ran out, job still queued), a POST's job has been submitted by then
    (an error would hide its id and claim), and a 429 or 503 would break a dashboard page
    that a slower answer only delays. `Retry-After` asks a polling client to pause first."""


class EndWatch:
    """The requests of one API process waiting for jobs to end, and the one subscription
    that wakes them. `start` and `stop` it in the app's lifespan."""

    def __init__(self, client: redis.asyncio.Redis, max_waiters: int, queue: JobQueue) -> None:
        self.client = client
        self.queue = queue  # where a job's status is, and which statuses are final
        self.max_waiters = max_waiters
        self.waiting = 0
        self.reads = SharedReads()
        self._waiters: dict[str, set[asyncio.Future[bool]]] = {}
        self._fresh: set[str] = set()  # jobs with waiters not looked at since they came
        self._look_now = asyncio.Event()
        self._subscribed = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks)

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(self._listen()), asyncio.create_task(self._look())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:  # bounded: a shutdown must not hang on a Redis close that never ends
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_SECONDS)
            if stuck:
                log.warning("the watch of job ends did not stop within %s s", STOP_SECONDS)
        self._wake_all()

    async def wait_for_end(self, job_id: str, seconds: float) -> bool:
        """True once the job has ended (finished, failed, canceled, or gone); False after
        `seconds`, or at once when Redis was lost meanwhile (the caller's next read says so).

        The request is registered before its job is looked at, and the subscription covers
        every job, so an end between the look and the wait wakes it."""
        if not self.running:  # an app served without its lifespan (no watch): look once
            return bool(await ended_among(self.client, self.queue, [job_id]))
        if self.waiting >= self.max_waiters:
            raise TooManyWaiters
        woken: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(job_id, set()).add(woken)
        self.waiting += 1
        self._fresh.add(job_id)
        self._look_now.set()
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancel.
            async with asyncio.timeout(seconds):
                return await woken
        except TimeoutError:
            return False
        finally:
            self.waiting -= 1
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(woken)
                if not waiters:
                    del self._waiters[job_id]

    def _wake(self, job_id: str, ended: bool) -> None:
        for woken in self._waiters.get(job_id, ()):
            if not woken.done():
                woken.set_result(ended)

    def _wake_all(self) -> None:
        """Answer every waiting request now; each reads the job's state itself (a 503 while
        Redis is away)."""
        for job_id in list(self._waiters):
            self._wake(job_id, False)

    async def _listen(self) -> None:
        """Stay subscribed to every job's end channel, subscribing again after Redis is lost."""
        while True:
            pubsub = self.client.pubsub()
            try:
                await pubsub.psubscribe(f"{_CHANNEL_PREFIX}*")
                while True:
                    message = await pubsub.get_message(timeout=RECHECK_SECONDS)
                    if message is None:
                        continue
                    if message["type"] == "psubscribe":
                        # Redis confirms: every end from now on reaches us. Ends while we
                        # were not subscribed are found by looking at every waited job.
                        self._subscribed = True
                        self._fresh.update(self._waiters)
                        self._look_now.set()
                    elif message["type"] == "pmessage":
                        channel = message["channel"].decode(errors="replace")
                        self._wake(channel.removeprefix(_CHANNEL_PREFIX), True)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
                _reraise_if_cancelled()
                if self._subscribed:
                    log.warning("lost the subscription to job ends (%s); subscribing again", error)
                self._subscribed = False
                self._wake_all()
                await asyncio.sleep(RECONNECT_SECONDS)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    await pubsub.aclose()

    async def _look(self) -> None:
        """Look at newly waited-for jobs at once, and at all of them every RECHECK_SECONDS,
        each time in one pipeline."""
        loop = asyncio.get_running_loop()
        next_full = loop.time() + RECHECK_SECONDS
        failing = False
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(next_full):
                    await self._look_now.wait()
            self._look_now.clear()
            if loop.time() >= next_full:
                next_full = loop.time() + RECHECK_SECONDS
                job_ids = list(self._waiters)
            else:
                job_ids = [job_id for job_id in self._fresh if job_id in self._waiters]
            self._fresh.clear()
            if not job_ids:
                continue
            try:
                ended = await ended_among(self.client, self.queue, job_ids)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as error:
                _reraise_if_cancelled()
                # Looked at again on the next round. A lost connection also ends the
                # subscription, which answers the waiting requests; a frozen Redis does not,
                # and they wait out their time, then read the state (a 503).
                if not failing:
                    log.warning("could not look at %d waited-for jobs: %s", len(job_ids), error)
                failing = True
                await asyncio.sleep(RECONNECT_SECONDS)
                continue
            failing = False
            for job_id in ended:
                self._wake(job_id, True)


def _reraise_if_cancelled() -> None:
    """A cancel (the app stopping) that a Redis client turned into a timeout error on its way
    up must still end the task, not be taken for a lost connection."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def ended_among(
    client: redis.asyncio.Redis, queue: JobQueue, job_ids: list[str]
) -> list[str]:
    """The jobs whose result is cached, whose state is final, or that no longer exist."""
    async with client.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.exists(key_for("result", job_id))
            pipe.hget(*queue.status_field(job_id))
        replies = await pipe.execute()
    return [
        job_id
        for job_id, cached, status in zip(job_ids, replies[::2], replies[1::2], strict=True)
        if cached or status is None or queue.is_final(status)
    ]


class SharedReads:
    """Requests that want the same read at once share one. The requests waiting for a job
    wake together (a class of browsers on one job), and each would otherwise read the job in
    a thread of its own: thousands of thread hops, whose work starves the event loop.

    A request never gets what was read before it asked: it joins the read that has not
    started yet, which starts once the one in progress ends."""

    def __init__(self) -> None:
        self._next: dict[str, asyncio.Future[Any]] = {}  # not started yet: open to join
        self._current: dict[str, asyncio.Future[Any]] = {}  # started: too late to join

    async def read(self, key: str, read: Callable[[], Any]) -> Any:
        """`read()`'s value (run in the threadpool), shared by the callers of `key`."""
        flight = self._next.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._run(key, read))
            self._next[key] = flight
        return await asyncio.shield(flight)

    async def _run(self, key: str, read: Callable[[], Any]) -> Any:
        current = self._current.get(key)
        if current is not None:
            await asyncio.wait([current])
        flight = self._next.pop(key)
        self._current[key] = flight
        try:
            return await run_in_threadpool(read)
        finally:
            if self._current.get(key) is flight:
                del self._current[key]
