"""The queues, their tasks and the job class the API and the workers share; job states.

Jobs are JSON, never pickle, and a job can run only its queue's task (`TaskJob`): whoever
can write to Redis writes job data, and RQ would import and call whatever it names.
"""

from __future__ import annotations

import importlib
from enum import StrEnum
from typing import Any, Final

import redis
from rq import Queue
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from contract.plugins import PLUGIN_QUEUE_PREFIX, PLUGIN_TASK
from nfcore.config import SPPConfig, TrainConfig
from nfcore.foreign_config import ForeignConfig

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


def task_for(queue: str) -> str | None:
    """The one task a queue's jobs may run: `TASKS`, or a plugin queue's `PLUGIN_TASK`."""
    if queue.startswith(PLUGIN_QUEUE_PREFIX):
        return PLUGIN_TASK
    return TASKS.get(queue)


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


def progress_total(config: SPPConfig | TrainConfig | ForeignConfig) -> int:
    """What a job's progress counts to: an SPP's blocks (forward, and again backward with
    gradients), or a training run's optimizer steps; a plugin network's blocks are known once
    its worker has built it (0 until then)."""
    if isinstance(config, TrainConfig):
        return config.steps
    if isinstance(config, ForeignConfig):
        return 0
    return config.num_blocks * (2 if config.gradients else 1)
