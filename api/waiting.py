"""Waiting for a job without polling: `?wait=S` on the submissions and on GET /v1/jobs/{id}.

A waiting request holds no thread: it listens, on the API's asyncio Redis client, to the
channel a worker publishes on once the job's final state is in Redis (`ENDED_CHANNEL`), and
answers then, or after S seconds. A job can also end without a message (its worker died and
the reaper failed it, or it was canceled while queued), so the state is looked at again every
`RECHECK_SECONDS` as well.
"""

from __future__ import annotations

import asyncio
from typing import Final

import redis.asyncio

from contract import ENDED_CHANNEL, TaskJob, key_for

MAX_WAIT_SECONDS: Final = 30.0  # longest `wait` a request may ask for
RECHECK_SECONDS: Final = 0.5
_FINAL_STATES: Final = frozenset({b"finished", b"failed", b"stopped", b"canceled"})


async def has_ended(client: redis.asyncio.Redis, job_id: str) -> bool:
    """The job's result is cached, or its state is final, or it no longer exists."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.exists(key_for("result", job_id))
        pipe.hget(TaskJob.key_for(job_id), "status")
        cached, status = await pipe.execute()
    return bool(cached) or status is None or status in _FINAL_STATES


async def wait_for_end(client: redis.asyncio.Redis, job_id: str, seconds: float) -> bool:
    """Return once the job has ended (True) or after `seconds` (False)."""
    if seconds <= 0:
        return await has_ended(client, job_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    try:
        # Subscribed before looking, so an end between the look and the wait is not missed.
        await pubsub.subscribe(key_for(ENDED_CHANNEL, job_id))
        while not await has_ended(client, job_id):
            left = deadline - loop.time()
            if left <= 0:
                return False
            await pubsub.get_message(timeout=min(left, RECHECK_SECONDS))
        return True
    finally:
        await pubsub.aclose()
