"""What the API (producer) and the workers (consumers) agree on, in one torch-free place.

Queue names, task paths, Redis key names, job states and the settings both read. The worker
imports this module; the API never imports the worker: it enqueues by dotted path.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final
from urllib.parse import urlsplit

import redis
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from rq.job import JobStatus
from rq.serializers import JSONSerializer

# JSON everywhere, never pickle: a Redis reachable by others must not mean code execution.
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

# Key kind of a training run's events (`key_for(EVENTS_KEY, job_id)`): a Redis list of JSON
# objects (`nfcore.train_result`), emptied when the job is queued or starts, appended by the
# worker while it runs, read by the API from any index on; it expires with the result.
EVENTS_KEY: Final = "events"


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
