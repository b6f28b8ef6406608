"""Jobs whose worker died: retry them (a set number of times), then fail them.

RQ notices a dead worker's job only when the started-job registry is cleaned; its expiry is
the worker's heartbeat TTL (`HEARTBEAT_TTL`, renewed while a job runs). This grants each
abandoned job its retries, then lets RQ's cleanup requeue it or move it to the failed jobs.
Run often by the API (`MAINTENANCE_INTERVAL`) and by the workers' own maintenance.
"""

from __future__ import annotations

import contextlib
import logging

import redis
from rq.job import JobStatus

from contract import (
    META_PROGRESS,
    QUEUES,
    SERIALIZER,
    ServiceSettings,
    TaskJob,
    key_for,
    known_plugin_queues,
    queue_for,
)

log = logging.getLogger(__name__)


def reap_abandoned(connection: redis.Redis, settings: ServiceSettings) -> int:
    """Clean every queue's started-job registry; returns how many jobs were abandoned."""
    lock = connection.lock(key_for("lock", "reaper"), timeout=30, blocking=False)
    if not lock.acquire(blocking=False):
        return 0  # another API process or worker is doing it right now
    try:
        queues = [*QUEUES, *known_plugin_queues(connection)]
        return sum(_reap_queue(connection, settings, name) for name in queues)
    finally:
        with contextlib.suppress(redis.exceptions.LockError):
            lock.release()


def _reap_queue(connection: redis.Redis, settings: ServiceSettings, name: str) -> int:
    queue = queue_for(name, connection)
    registry = queue.started_job_registry
    expired = registry.get_expired_job_ids()
    for job in TaskJob.fetch_many(expired, connection=connection, serializer=SERIALIZER):
        if job is None or job.get_status(refresh=False) != JobStatus.STARTED:
            continue
        attempts_key = key_for("attempts", job.id)
        attempts = connection.incr(attempts_key)
        connection.expire(attempts_key, settings.result_ttl)
        if attempts <= settings.job_retries:
            job.retries_left = 1  # RQ's cleanup requeues a job that has retries left
            progress = job.meta.get(META_PROGRESS) if isinstance(job.meta, dict) else None
            if isinstance(progress, dict):  # queued again: nothing of the next attempt done
                job.meta[META_PROGRESS] = {**progress, "done": 0}
            job.save(include_meta=isinstance(progress, dict))
        log.warning("job %s lost its worker (attempt %s)", job.id, attempts)
    if expired:
        registry.cleanup()
    return len(expired)
