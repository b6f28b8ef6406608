"""What the API (producer) and the workers (consumers) agree on, in one torch-free place.

Queue names, task paths, Redis key names, job states and the settings both read. The worker
imports this module; the API never imports the worker: it enqueues by dotted path.
"""

from __future__ import annotations

import importlib
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

import redis
import redis.asyncio
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from nfcore.config import SPPConfig, TrainConfig

# JSON everywhere, never pickle: RQ's default serializer unpickles the job's data, meta and
# result, so a Redis writer could run code in every process that reads a job.
SERIALIZER: Final = JSONSerializer

SPP_QUEUE: Final = "spp"
TRAIN_QUEUE: Final = "train"  # short training runs
QUEUES: Final[tuple[str, ...]] = (SPP_QUEUE, TRAIN_QUEUE)
# Enqueued by dotted path, so the API process never imports the worker (or torch).
TASKS: Final[dict[str, str]] = {
    SPP_QUEUE: "worker.tasks.run_spp_job",
    TRAIN_QUEUE: "worker.tasks.run_train_job",
}

# Keys of job meta written by the API or the worker and read by the API.
META_KIND: Final = "kind"  # the queue name: "spp" or "train"
META_PROGRESS: Final = "progress"  # {"done": int, "total": int}: blocks, or training steps
META_DEVICE: Final = "device"
# 1 for the first run of a job, 2 when a worker runs it again (its worker died, or was shut
# down): progress and events always describe this attempt.
META_ATTEMPT: Final = "attempt"

# Key kind of a training run's events (`key_for(EVENTS_KEY, job_id)`): a Redis list of JSON
# objects (`nfcore.train_result`), emptied when the job is queued or starts, appended by the
# worker while it runs, read by the API from any index on; it expires with the result.
EVENTS_KEY: Final = "events"
# Pub/sub channel kind (`key_for(ENDED_CHANNEL, job_id)`): a worker publishes on it once a job
# has ended and its final state (and result) are in Redis, so the API's `wait` answers at once.
ENDED_CHANNEL: Final = "ended"
# Key kind counting the submissions that wait for a job (`key_for(ASKERS_KEY, job_id)`): a
# client that moves on (`replaces=<id>`) gives its claim back, and a job nobody waits for
# any more is canceled.
ASKERS_KEY: Final = "askers"


class RefusedJob(Exception):
    """A job in Redis that asks for something other than one of our own tasks; not run."""


class TaskJob(Job):
    """An RQ job that can run only the project's own tasks, and nothing else a job names.

    RQ imports and calls whatever a job's data names: its function (`func`, or a method of
    `instance`), and its success, failure and stopped callbacks (`import_attribute` in rq/job.py,
    called by the worker and by every registry cleanup, the API's reaper included). It also
    sends a job's webhooks (HTTP requests to any URL). Whoever can write to Redis writes job
    data, so here the function is looked up in `TASKS` and nothing else is resolved: the
    callbacks are always None and webhooks are never sent. tests/api/test_security.py checks
    that these are all the places RQ resolves a callable from job data.
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
    (`TASKS`) on one config object, with no callbacks, webhooks, dependencies or repeats."""
    try:
        name, instance, args, kwargs = job.func_name, job.instance, job.args, job.kwargs
    except Exception:  # not JSON, or not RQ's (function, instance, args, kwargs)
        return "its data is not the JSON of a task call"
    expected = TASKS.get(job.origin)
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


class JobState(StrEnum):
    """What a user sees; RQ's own states are mapped onto these."""

    queued = "queued"
    running = "running"
    finished = "finished"
    failed = "failed"
    canceled = "canceled"


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


def progress_total(config: SPPConfig | TrainConfig) -> int:
    """What a job's progress counts to: an SPP's blocks (forward, and again backward with
    gradients), or a training run's optimizer steps."""
    if isinstance(config, TrainConfig):
        return config.steps
    return config.num_blocks * (2 if config.gradients else 1)


KEY_PREFIX: Final = "nfsp"


def key_for(kind: str, ident: str) -> str:
    """The one place Redis key names are made: `nfsp:<kind>:<id>`."""
    return f"{KEY_PREFIX}:{kind}:{ident}"


class ServiceSettings(BaseSettings):
    """Settings the API and the workers share; read from environment variables."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis holding the queue, job state and result cache (rediss:// for TLS).",
    )
    redis_timeout: float = Field(
        0.5, gt=0, le=30, description="Seconds before a Redis call gives up (answers 503)."
    )
    result_ttl: int = Field(
        7 * 24 * 3600, ge=60, description="Seconds a computed result stays in the cache."
    )
    spp_job_timeout: int = Field(600, ge=10, description="Seconds an SPP job may run.")
    train_job_timeout: int = Field(3600, ge=10, description="Seconds a training job may run.")
    job_retries: int = Field(
        1, ge=0, le=10, description="Times a job whose worker died is run again."
    )
    heartbeat_ttl: int = Field(
        30,
        ge=5,
        le=600,
        description="Seconds without a heartbeat after which a running job counts as abandoned.",
    )

    def job_timeout(self, queue: str) -> int:
        return self.train_job_timeout if queue == TRAIN_QUEUE else self.spp_job_timeout


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for logs and the console."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def connect_async(settings: ServiceSettings) -> redis.asyncio.Redis:
    """`connect`'s asyncio twin, for requests that wait on a pub/sub channel."""
    return redis.asyncio.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_timeout,
        socket_timeout=settings.redis_timeout,
        retry_on_timeout=False,
    )


def connect(settings: ServiceSettings, *, blocking: bool = False) -> redis.Redis:
    """A Redis client that fails fast: an unreachable server costs `redis_timeout`, not minutes.

    `blocking` clients (a worker waiting on its queue, its pub/sub thread) have no read timeout.
    """
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_timeout,
        socket_timeout=None if blocking else settings.redis_timeout,
        health_check_interval=10 if blocking else 0,
        retry_on_timeout=False,
    )
