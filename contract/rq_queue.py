"""The job queue on RQ: the one adapter of the port `contract.queue`, and the job class that
runs only our tasks. With the worker class (`worker/main.py`, `worker/record.py`,
`worker/guards.py`) it is the only code that knows RQ: its classes, its records and its
Redis key names (`rq:job:<id>`, `rq:queues`, `rq:worker:<name>`, the registries).

Jobs are JSON, never pickle, and a job can run only its queue's task (`TaskJob`): whoever can
write to Redis writes job data, and RQ would import and call whatever it names.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Final

import redis
from rq import Queue, Worker, get_current_job
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.serializers import JSONSerializer
from rq.utils import now, utcformat

from contract.jobs import RefusedJob, task_for
from contract.queue import JobEnded, JobRecord, JobState, NoSuchJob, UnreadableJob, WorkerInfo

log = logging.getLogger(__name__)

# JSON everywhere, never pickle: RQ's default serializer unpickles the job's data, meta and
# result, so a Redis writer could run code in every process that reads a job.
SERIALIZER: Final = JSONSerializer
MAX_EXECUTIONS_READ = 8  # a job runs once at a time; more entries are a record to distrust
_FINAL_STATES: Final = frozenset({b"finished", b"failed", b"stopped", b"canceled"})


class TaskJob(Job):
    """An RQ job that can run only the project's own tasks, and nothing else a job names.

    RQ imports and calls whatever a job's data names: its function (`func`, or a method of
    `instance`), and its success, failure and stopped callbacks (`import_attribute` in rq/job.py,
    called by the worker and by every registry cleanup, the API's reaper included). It also
    sends a job's webhooks (HTTP requests to any URL). Whoever can write to Redis writes job
    data, so here the function is looked up in the allow-list (`task_for`) and nothing else is
    resolved: the callbacks are always None and webhooks are never sent.
    tests/api/test_security.py checks that these are all the places RQ resolves a callable
    from job data.
    """

    @property
    def func(self) -> Any:
        reason = refusal(self)
        if reason is not None:
            raise RefusedJob(f"this job was not run: {reason}")
        module, _, name = str(self.func_name).rpartition(".")
        return getattr(importlib.import_module(module), name)

    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None

    def send_webhooks(self, status: object, *, exc_string: str | None = None) -> None:
        return None


def refusal(job: Job) -> str | None:
    """Why `job` is not one of ours (a sentence), or None: it must call its queue's task
    (`task_for`) on one config object, with no callbacks, webhooks, dependencies or repeats."""
    try:
        name, instance, args, kwargs = job.func_name, job.instance, job.args, job.kwargs
    except Exception:  # not JSON, or not RQ's (function, instance, args, kwargs)
        return "its data is not the JSON of a task call"
    expected = task_for(str(job.origin))
    if expected is None:
        return f"it is on the queue {job.origin!r}, which has no task"
    if name != expected:
        return (
            f"it names the function {str(name)[:80]!r}; a job on the {job.origin!r} queue "
            f"may only run {expected}"
        )
    if instance is not None:
        return "it names an object to call the task on; tasks are plain functions"
    if kwargs or not (isinstance(args, list | tuple) and len(args) == 1):
        return "its arguments are not one config object"
    for what in ("success", "failure", "stopped"):
        named = getattr(job, f"_{what}_callback_name", None)
        if named:
            return f"it names a {what} callback ({str(named)[:80]!r}); tasks run without any"
    if getattr(job, "webhooks", None):
        return "it names webhooks; workers send none"
    if getattr(job, "_dependency_ids", None):
        return "it depends on other jobs; tasks run on their own"
    if getattr(job, "repeats_left", None):
        return "it asks to be repeated; each job runs once"
    return None


def queue_for(name: str, connection: redis.Redis) -> Queue:
    """A queue of ours: JSON jobs of the `TaskJob` class (so its registries' cleanups, too,
    resolve no callable a job names)."""
    return Queue(name, connection=connection, serializer=SERIALIZER, job_class=TaskJob)


_RQ_STATES: Final[dict[str, JobState]] = {
    JobStatus.QUEUED.value: JobState.queued,
    JobStatus.DEFERRED.value: JobState.queued,
    JobStatus.SCHEDULED.value: JobState.queued,
    JobStatus.CREATED.value: JobState.queued,
    JobStatus.STARTED.value: JobState.running,
    JobStatus.FINISHED.value: JobState.finished,
    JobStatus.FAILED.value: JobState.failed,
    JobStatus.STOPPED.value: JobState.canceled,
    JobStatus.CANCELED.value: JobState.canceled,
}


def job_state(rq_status: JobStatus | str | None) -> JobState:
    """The user-facing state of a job from RQ's status (stopped on request = canceled)."""
    value = getattr(rq_status, "value", rq_status)
    return _RQ_STATES.get(str(value), JobState.queued)


def record_of(job: Job) -> JobRecord:
    """What the port shows of an RQ job, each field read defensively."""
    try:
        args = job.args
    except Exception:  # not JSON, or not RQ's (function, instance, args, kwargs)
        args = None
    one = isinstance(args, list | tuple) and len(args) == 1 and isinstance(args[0], dict)
    return JobRecord(
        id=job.id,
        queue=str(job.origin),
        state=job_state(job.get_status(refresh=False)),
        label=job.description,
        meta=job.meta if isinstance(job.meta, dict) else {},
        config=args[0] if one else None,  # type: ignore[index]
        created_at=job.created_at,
        enqueued_at=job.enqueued_at,
        started_at=job.started_at,
        ended_at=job.ended_at,
        last_heartbeat=job.last_heartbeat,
        native=job,
    )


class RQJobQueue:
    """`contract.queue.JobQueue` on RQ, over one Redis client."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection

    # --- submitting and ending jobs -----------------------------------------------------------
    def enqueue(
        self,
        queue: str,
        task: str,
        payload: dict[str, Any],
        *,
        job_id: str,
        timeout: int,
        ttl: int,
        label: str | None,
        meta: dict[str, Any],
    ) -> JobRecord:
        job = queue_for(queue, self.connection).enqueue(
            task,
            payload,
            job_id=job_id,
            job_timeout=timeout,
            result_ttl=ttl,
            failure_ttl=ttl,
            description=label,
            meta=meta,
        )
        return record_of(job)

    def delete(self, record: JobRecord) -> None:
        # A dead worker's execution entry can outlive its record, and RQ's delete walks them.
        job = record.native
        self.connection.delete(job.execution_registry.key)
        job.delete()

    def cancel(self, record: JobRecord) -> None:
        record.native.cancel()

    def stop(self, job_id: str) -> None:
        # The worker runs jobs cooperatively: it stops at the next block or training step.
        try:
            send_stop_job_command(self.connection, job_id, serializer=SERIALIZER)
        except (InvalidJobOperation, NoSuchJobError):  # it ended (and expired) a moment ago
            raise JobEnded(job_id) from None

    # --- reading ------------------------------------------------------------------------------
    def record(self, job_id: str) -> JobRecord:
        return self._load([job_id], skip_unreadable=False)[0]

    def records(self, job_ids: list[str]) -> list[JobRecord]:
        return self._load(job_ids)

    def _load(self, ids: list[str], skip_unreadable: bool = True) -> list[JobRecord]:
        """The jobs of `ids`, read in one round trip. A record the API did not write (an older
        version, a hand edit) is left out or named unreadable, never an error for everyone: a
        job hash with `timeout: "xyz"` or `status: "bogus"` made RQ's own `fetch_many` raise,
        and with it `GET /v1/jobs`."""
        with self.connection.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(TaskJob.key_for(job_id))
            hashes = pipe.execute()
        records = []
        for job_id, fields in zip(ids, hashes, strict=True):
            try:
                records.append(record_of(self._restored(job_id, fields)))
            except (NoSuchJob, UnreadableJob):
                if not skip_unreadable:
                    raise
        return records

    def _restored(self, job_id: str, fields: dict[bytes, bytes]) -> TaskJob:
        if not fields:
            raise NoSuchJob(job_id)
        try:
            job = TaskJob(job_id, connection=self.connection, serializer=SERIALIZER)
        except ValueError:  # not a valid RQ job id, so no job of ours
            raise NoSuchJob(job_id) from None
        try:
            job.restore(fields)
        except Exception as error:  # RQ parses each field its own way (ValueError, ...)
            raise UnreadableJob(str(error)[:200] or type(error).__name__) from None
        return job

    def recent_ids(self, queue: str, limit: int) -> set[str]:
        rq_queue = queue_for(queue, self.connection)
        ids = set(rq_queue.get_job_ids(offset=max(0, rq_queue.count - limit)))  # newest last
        for registry in (
            rq_queue.started_job_registry,
            rq_queue.finished_job_registry,
            rq_queue.failed_job_registry,
            rq_queue.canceled_job_registry,
        ):
            # Scored by expiry, so the highest scores are the newest entries.
            ids.update(registry.get_job_ids(0, limit - 1, desc=True, cleanup=False))
        return ids

    def known_queues(self, prefix: str) -> list[str]:
        keys = Queue.redis_queue_namespace_prefix
        names = [_text(key) for key in self.connection.smembers(Queue.redis_queues_keys)]
        return sorted(n.removeprefix(keys) for n in names if n.startswith(f"{keys}{prefix}"))

    def error_text(self, record: JobRecord) -> str:
        job = record.native
        try:
            latest = job.latest_result()
            return (latest.exc_string if latest is not None else None) or job.exc_info or ""
        except Exception:  # a results stream RQ cannot read: not written by one of our workers
            return ""

    def heartbeat_expiry(self, record: JobRecord) -> float | None:
        """The latest execution's score in the started-job registry (whose members are
        `<job id>:<execution id>`): its worker's last renewal plus its TTL."""
        job = record.native
        executions = self.connection.zrange(job.execution_registry.key, 0, MAX_EXECUTIONS_READ - 1)
        if not executions:
            return None
        members = [f"{job.id}:{_text(execution)}" for execution in executions]
        scores = self.connection.zmscore(job.started_job_registry.key, members)
        found = [score for score in scores if score is not None]
        return max(found) if found else None

    def status_field(self, job_id: str) -> tuple[str, str]:
        return TaskJob.key_for(job_id), "status"

    def is_final(self, raw_status: bytes) -> bool:
        return raw_status in _FINAL_STATES

    def meta_field(self, job_id: str) -> tuple[str, str]:
        return TaskJob.key_for(job_id), "meta"

    def decode_meta(self, raw: bytes) -> Any:
        return SERIALIZER.loads(raw)

    # --- workers ------------------------------------------------------------------------------
    def workers(self) -> list[WorkerInfo]:
        return [
            WorkerInfo(
                name=worker.name,
                hostname=worker.hostname,
                queues=tuple(worker.queue_names()),
                last_heartbeat=worker.last_heartbeat,
            )
            for worker in Worker.all(connection=self.connection, serializer=SERIALIZER)
        ]

    def worker_registered(self, name: str) -> bool:
        return bool(self.connection.exists(Worker.redis_worker_namespace_prefix + name))

    # --- jobs whose worker died ---------------------------------------------------------------
    def abandoned(self, queue: str) -> tuple[int, list[JobRecord]]:
        """RQ notices a dead worker's job only when the started-job registry is cleaned: an
        execution whose score (its expiry, renewed with the heartbeats) has passed."""
        registry = queue_for(queue, self.connection).started_job_registry
        expired = registry.get_expired_job_ids()
        running = []
        for job_id in expired:
            try:
                record = self.record(job_id)
            except (NoSuchJob, UnreadableJob) as error:  # nothing left to reap
                # A record that is not the API's (a `status` of "bogus") is taken out of the
                # registry: RQ's cleanup, which reads it too, would fail on it every time.
                log.warning("job %s: its record cannot be read (%s); not reaped", job_id, error)
                members = self.connection.zrange(registry.key, 0, -1)
                mine = [m for m in members if _text(m).rsplit(":", 1)[0] == job_id]
                if mine:
                    self.connection.zrem(registry.key, *mine)
                continue
            if record.state == JobState.running:
                running.append(record)
        return len(expired), running

    def retry(self, record: JobRecord, meta: dict[str, Any] | None) -> None:
        job = record.native
        job.retries_left = 1  # RQ's cleanup requeues a job that has retries left
        if meta is not None:
            job.meta = meta
        job.save(include_meta=meta is not None)

    def fail(self, record: JobRecord, message: str) -> None:
        job = record.native
        job.ended_at = now()
        with self.connection.pipeline() as pipe:
            record_job_failure(job, message, pipe)
            pipe.hset(job.key, "ended_at", utcformat(job.ended_at))
            pipe.execute()

    def clean(self, queue: str) -> None:
        queue_for(queue, self.connection).started_job_registry.cleanup()


class RQRunningJob:
    """`contract.queue.RunningJob`: the RQ job a worker's task runs."""

    def __init__(self, job: Job) -> None:
        self.job = job
        self.id: str = job.id
        self.connection: redis.Redis = job.connection
        self.meta: dict[str, Any] = job.meta  # the job's own: `save_meta` writes it

    def save_meta(self) -> None:
        self.job.save_meta()

    def write_meta(self, pipe: redis.client.Pipeline) -> None:
        pipe.hset(self.job.key, "meta", self.job.serializer.dumps(self.meta))


def current_job() -> RQRunningJob:
    """The job the calling worker task runs."""
    job = get_current_job()
    if job is None:
        raise RuntimeError("a worker task must run inside an RQ job")
    return RQRunningJob(job)


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
