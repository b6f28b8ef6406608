"""The task allow-list the API and the workers share.

A job can run only its queue's task (`task_for`, from the kinds' rows: `contract.kinds`):
whoever can write to Redis writes job data, and the queue would import and call whatever it
names. The queue's own job class applies it (`contract.rq_queue.TaskJob`).
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel

from contract.kinds import TaskPaths, kind_of_config, kind_of_queue

# Queue -> the task its jobs may run, for the kinds with one queue (enqueued by dotted path,
# so the API process never imports the worker, or torch).
TASKS: Final = TaskPaths()


def task_for(queue: str) -> str | None:
    """The one task a queue's jobs may run (its kind's), or None: the queue is not ours."""
    kind = kind_of_queue(queue)
    return kind.task if kind is not None else None


class RefusedJob(Exception):
    """A job in Redis that asks for something other than one of our own tasks; not run."""


def progress_total(config: BaseModel) -> int:
    """What a job's progress counts to, in its kind's unit (an SPP's blocks, forward and
    again backward with gradients; a training run's optimizer steps; 0 for a plugin network
    until its worker has built it)."""
    return kind_of_config(config).total(config)
