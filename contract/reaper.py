"""Jobs whose worker died: retry them (a set number of times), then fail them.

A running job's record expires with its worker's heartbeat TTL (`HEARTBEAT_TTL`, renewed
while it runs); the queue notices a dead worker's job only when it is cleaned. This grants
each abandoned job its retries, then lets the queue's cleanup (`JobQueue.clean`) requeue it
or fail it.
A job whose worker's last record of its memory (`MEMORY_KEY`) was near the worker's limit is
failed at once, saying so: its worker most likely ran out of memory, and the next one would
too. Run often by the API (`MAINTENANCE_INTERVAL`) and by the workers' own maintenance.
"""

from __future__ import annotations

import contextlib
import json
import logging

import redis

from contract.keys import ENDED_CHANNEL, MEMORY_KEY, META_PROGRESS, key_for
from contract.kinds import queues_in_use
from contract.queue import JobQueue, JobRecord
from contract.settings import ServiceSettings

log = logging.getLogger(__name__)

# A worker that died while its last record of its memory was over this share of its limit
# most likely ran out of memory: the kernel's OOM killer ends a process that grows faster
# than the worker's own guard looks (a single large allocation), and records come only with
# heartbeats, a third of HEARTBEAT_TTL apart.
NEAR_MEMORY_LIMIT = 0.8
GIB = 2**30


def reap_abandoned(queue: JobQueue, settings: ServiceSettings) -> int:
    """Clean every queue's abandoned runs; returns how many runs were abandoned."""
    connection = queue.connection
    lock = connection.lock(key_for("lock", "reaper"), timeout=30, blocking=False)
    if not lock.acquire(blocking=False):
        return 0  # another API process or worker is doing it right now
    try:
        return sum(_reap_queue(queue, settings, name) for name in queues_in_use(queue))
    finally:
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()


def _reap_queue(queue: JobQueue, settings: ServiceSettings, name: str) -> int:
    connection = queue.connection
    count, running = queue.abandoned(name)
    for record in running:
        memory = _out_of_memory(connection, record.id)
        if memory is not None:
            _fail_out_of_memory(queue, record, memory)
            continue
        attempts_key = key_for("attempts", record.id)
        attempts = connection.incr(attempts_key)
        connection.expire(attempts_key, settings.result_ttl)
        if attempts <= settings.job_retries:
            progress = record.meta.get(META_PROGRESS)
            # Queued again: nothing of the next attempt done.
            meta = (
                {**record.meta, META_PROGRESS: {**progress, "done": 0}}
                if isinstance(progress, dict)
                else None
            )
            queue.retry(record, meta)
        log.warning("job %s lost its worker (attempt %s)", record.id, attempts)
    if count:
        queue.clean(name)
    return count


def _out_of_memory(connection: redis.Redis, job_id: str) -> tuple[int, int] | None:
    """(RSS, limit) of the job's worker when it last recorded them, where that was near the
    limit; None otherwise (no record, or one that is not the worker's)."""
    try:
        record = json.loads(connection.get(key_for(MEMORY_KEY, job_id)) or "null")
        rss, limit = int(record["rss_bytes"]), int(record["limit_bytes"])
    except (ValueError, TypeError, KeyError):
        return None
    return (rss, limit) if limit > 0 and rss >= NEAR_MEMORY_LIMIT * limit else None


def _fail_out_of_memory(queue: JobQueue, record: JobRecord, memory: tuple[int, int]) -> None:
    rss, limit = memory
    message = (
        f"WorkerOutOfMemory: the worker running this job stopped while it used "
        f"{rss / GIB:.2f} GiB of memory, near its limit of {limit / GIB:.2f} GiB "
        "(WORKER_MAX_RSS_BYTES): it most likely ran out of memory, and the job is not retried"
    )
    log.warning("job %s: %s", record.id, message)
    queue.fail(record, message)
    queue.connection.publish(key_for(ENDED_CHANNEL, record.id), "ended")
