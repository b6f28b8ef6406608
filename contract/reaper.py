"""Jobs whose worker died: retry them (a set number of times), then fail them.

RQ notices a dead worker's job only when the started-job registry is cleaned; its expiry is
the worker's heartbeat TTL (`HEARTBEAT_TTL`, renewed while a job runs). This grants each
abandoned job its retries, then lets RQ's cleanup requeue it or move it to the failed jobs.
A job whose worker's last record of its memory (`MEMORY_KEY`) was near the worker's limit is
failed at once, saying so: its worker most likely ran out of memory, and the next one would
too. Run often by the API (`MAINTENANCE_INTERVAL`) and by the workers' own maintenance.
"""

from __future__ import annotations

import contextlib
import json
import logging

import redis
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.utils import now, utcformat

from contract import (
    ENDED_CHANNEL,
    META_PROGRESS,
    QUEUES,
    SERIALIZER,
    ServiceSettings,
    TaskJob,
    key_for,
    known_plugin_queues,
    queue_for,
)
from contract.keys import MEMORY_KEY

log = logging.getLogger(__name__)

# A worker that died while its last record of its memory was over this share of its limit
# most likely ran out of memory: the kernel's OOM killer ends a process that grows faster
# than the worker's own guard looks (a single large allocation), and records come only with
# heartbeats, a third of HEARTBEAT_TTL apart.
NEAR_MEMORY_LIMIT = 0.8
GIB = 2**30


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
    for job in _readable(connection, registry.key, expired):
        if job.get_status(refresh=False) != JobStatus.STARTED:
            continue
        memory = _out_of_memory(connection, job.id)
        if memory is not None:
            _fail_out_of_memory(connection, job, memory)
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


def _readable(connection: redis.Redis, registry_key: str, job_ids: list[str]) -> list[Job]:
    """The jobs of `job_ids` RQ can read. A record that is not the API's (a `status` of
    "bogus") is taken out of the registry: RQ's cleanup, which reads it too, would fail on it
    every time, in the API's maintenance and in every worker's."""
    jobs: list[Job] = []
    for job_id in job_ids:
        try:
            job = TaskJob.fetch(job_id, connection=connection, serializer=SERIALIZER)
        except redis.RedisError:
            raise
        except Exception as error:  # NoSuchJobError too: nothing left to reap
            log.warning("job %s: its record cannot be read (%s); not reaped", job_id, error)
            members = connection.zrange(registry_key, 0, -1)
            mine = [m for m in members if m.decode(errors="replace").rsplit(":", 1)[0] == job_id]
            if mine:
                connection.zrem(registry_key, *mine)
            continue
        jobs.append(job)
    return jobs


def _out_of_memory(connection: redis.Redis, job_id: str) -> tuple[int, int] | None:
    """(RSS, limit) of the job's worker when it last recorded them, where that was near the
    limit; None otherwise (no record, or one that is not the worker's)."""
    try:
        record = json.loads(connection.get(key_for(MEMORY_KEY, job_id)) or "null")
        rss, limit = int(record["rss_bytes"]), int(record["limit_bytes"])
    except (ValueError, TypeError, KeyError):
        return None
    return (rss, limit) if limit > 0 and rss >= NEAR_MEMORY_LIMIT * limit else None


def _fail_out_of_memory(connection: redis.Redis, job: Job, memory: tuple[int, int]) -> None:
    rss, limit = memory
    message = (
        f"WorkerOutOfMemory: the worker running this job stopped while it used "
        f"{rss / GIB:.2f} GiB of memory, near its limit of {limit / GIB:.2f} GiB "
        "(WORKER_MAX_RSS_BYTES): it most likely ran out of memory, and the job is not retried"
    )
    log.warning("job %s: %s", job.id, message)
    job.ended_at = now()
    with connection.pipeline() as pipe:
        record_job_failure(job, message, pipe)
        pipe.hset(job.key, "ended_at", utcformat(job.ended_at))
        pipe.execute()
    connection.publish(key_for(ENDED_CHANNEL, job.id), "ended")
