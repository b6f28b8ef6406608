"""The job queue as a port: the operations the API, the reaper and the workers' tasks need of
it, and the records they read. One adapter implements it on RQ (`contract.rq_queue`), which
alone (with the worker class, `worker/main.py`) knows RQ's classes, records and key names.

A job's own data beside its record (its result, claims, events, attempts) is ours, under
`key_for`, written with plain Redis commands through the port's `connection`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

import redis


class JobState(StrEnum):
    """What a user sees; the queue's own states are mapped onto these."""

    queued = "queued"
    running = "running"
    finished = "finished"
    failed = "failed"
    canceled = "canceled"


class NoSuchJob(LookupError):
    """There is no job of that id (never queued, or expired)."""


class UnreadableJob(ValueError):
    """A job record in Redis that the queue cannot read: not one the API wrote."""


class JobEnded(Exception):
    """A job asked to stop was no longer running (it ended a moment ago)."""


@dataclass(frozen=True)
class JobRecord:
    """A job as read from the queue, each field checked: a record written into Redis by
    someone else has None or {} where it is not what the API and the workers write."""

    id: str
    queue: str
    state: JobState
    label: str | None
    meta: dict[str, Any]  # ours: kind, progress, attempt, device (`contract.keys`)
    config: dict[str, Any] | None  # the job's one argument, as submitted
    created_at: datetime | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    last_heartbeat: datetime | None = None  # renewed by its worker while it runs
    native: Any = field(default=None, repr=False, compare=False)  # the adapter's own


@dataclass(frozen=True)
class WorkerInfo:
    """A worker as registered in Redis."""

    name: str
    hostname: str | None
    queues: tuple[str, ...]
    last_heartbeat: datetime | None


def live(workers: list[WorkerInfo], heartbeat_ttl: float) -> list[WorkerInfo]:
    """The workers that heartbeated within `heartbeat_ttl` seconds: idle ones do every third
    of it, so one silent for longer is dead (killed), though its record stays a while."""
    moment = datetime.now(UTC)
    alive = []
    for worker in workers:
        beat = worker.last_heartbeat
        if beat is None:
            continue
        if beat.tzinfo is None:
            beat = beat.replace(tzinfo=UTC)
        if (moment - beat).total_seconds() <= heartbeat_ttl:
            alive.append(worker)
    return alive


class JobQueue(Protocol):
    """What is asked of the queue. Job ids are ours (`config_hash`), so asking twice for the
    same config finds the same job."""

    connection: redis.Redis

    # --- submitting and ending jobs (the API) -------------------------------------------------
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
        """Queue `task(payload)` under `job_id`; its record and outcome are kept `ttl` s."""
        ...

    def delete(self, record: JobRecord) -> None:
        """Forget an ended job, to queue its id anew."""
        ...

    def cancel(self, record: JobRecord) -> None:
        """Cancel a job no worker has taken."""
        ...

    def stop(self, job_id: str) -> None:
        """Ask the worker running the job to stop it; JobEnded when it is not running."""
        ...

    # --- reading ------------------------------------------------------------------------------
    def record(self, job_id: str) -> JobRecord:
        """The job; NoSuchJob, or UnreadableJob when its record is not one we wrote."""
        ...

    def records(self, job_ids: list[str]) -> list[JobRecord]:
        """The jobs of `job_ids` in one round trip, leaving out missing and unreadable ones."""
        ...

    def recent_ids(self, queue: str, limit: int) -> set[str]:
        """The ids of up to `limit` newest jobs of each state on `queue`."""
        ...

    def known_queues(self, prefix: str) -> list[str]:
        """Every queue Redis knows of whose name starts with `prefix`, live or not."""
        ...

    def error_text(self, record: JobRecord) -> str:
        """A failed job's traceback (or message) as its worker recorded it; "" when none."""
        ...

    def heartbeat_expiry(self, record: JobRecord) -> float | None:
        """When (a Unix time) a running job counts as abandoned unless its worker renews it."""
        ...

    def status_field(self, job_id: str) -> tuple[str, str]:
        """The Redis hash and field of a job's raw status, for reads pipelined with ours."""
        ...

    def is_final(self, raw_status: bytes) -> bool:
        """Whether a raw status (from `status_field`) is one a job ends in."""
        ...

    def meta_field(self, job_id: str) -> tuple[str, str]:
        """The Redis hash and field of a job's raw meta, for scripts that read it with ours."""
        ...

    def decode_meta(self, raw: bytes) -> Any:
        """A raw meta (from `meta_field`) decoded; ValueError when it is not JSON."""
        ...

    # --- workers ------------------------------------------------------------------------------
    def workers(self) -> list[WorkerInfo]:
        """Every worker registered, live or not (`live` keeps those that heartbeat)."""
        ...

    def worker_registered(self, name: str) -> bool:
        """Whether a worker of that name is registered (it started and listens)."""
        ...

    # --- jobs whose worker died (`contract.reaper`) ---------------------------------------------
    def abandoned(self, queue: str) -> tuple[int, list[JobRecord]]:
        """How many runs on `queue` their workers stopped renewing, and the jobs among them that
        still count as running (records that cannot be read are dropped, saying so)."""
        ...

    def retry(self, record: JobRecord, meta: dict[str, Any] | None) -> None:
        """Let the queue's cleanup (`clean`) queue this abandoned job again; `meta` replaces
        its meta (None: kept)."""
        ...

    def fail(self, record: JobRecord, message: str) -> None:
        """Fail the job now, with `message` as its error, without a retry."""
        ...

    def clean(self, queue: str) -> None:
        """Requeue (a retry left) or fail the abandoned jobs of `queue`."""
        ...


class RunningJob(Protocol):
    """The job a worker's task runs, as the task sees it."""

    id: str
    connection: redis.Redis
    meta: dict[str, Any]

    def save_meta(self) -> None:
        """Write `meta` to the job's record."""
        ...

    def write_meta(self, pipe: redis.client.Pipeline) -> None:
        """Add the write of `meta` to `pipe` (a transaction with writes of ours)."""
        ...
