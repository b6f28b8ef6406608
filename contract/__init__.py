"""What the API (producer) and the workers (consumers) agree on, in one small torch-free package.

Both import it and neither imports the other: the kinds of job as rows, each with its queue,
task (named by dotted path, so the API never loads the worker, or torch), config, result,
progress unit and timeout (`kinds`); the allow-list of tasks and the job states (`jobs`); the
job queue as a port (`queue`) and its one adapter, on RQ (`rq_queue`, imported by whoever
opens a queue); Redis key names (`keys`); the shared settings and Redis clients
(`settings`); the resource limits and their words (`limits`); a queue per model plugin and
what workers advertise of their plugins (`plugins`); and the cleanup of jobs whose worker
died (`reaper`).
"""

from contract.jobs import TASKS, RefusedJob, progress_total, task_for
from contract.keys import (
    ASKERS_KEY,
    CLAIM_KEY,
    ENDED_CHANNEL,
    EVENTS_KEY,
    KEY_PREFIX,
    META_ATTEMPT,
    META_DEVICE,
    META_KIND,
    META_PROGRESS,
    key_for,
)
from contract.kinds import (
    KINDS,
    PLUGIN,
    PLUGIN_QUEUE_PREFIX,
    SPP,
    SPP_QUEUE,
    TRAIN,
    TRAIN_QUEUE,
    JobKind,
    fixed_queues,
    kind_of_config,
    kind_of_queue,
    queues_in_use,
    register_kind,
)
from contract.plugins import advertise, available_plugins, plugin_of_queue, plugin_queue
from contract.queue import (
    JobEnded,
    JobQueue,
    JobRecord,
    JobState,
    NoSuchJob,
    RunningJob,
    UnreadableJob,
    WorkerInfo,
    live,
)
from contract.settings import ServiceSettings, connect, connect_async, redact_url

__all__ = [
    "ASKERS_KEY",
    "CLAIM_KEY",
    "ENDED_CHANNEL",
    "EVENTS_KEY",
    "KEY_PREFIX",
    "KINDS",
    "META_ATTEMPT",
    "META_DEVICE",
    "META_KIND",
    "META_PROGRESS",
    "PLUGIN",
    "PLUGIN_QUEUE_PREFIX",
    "SPP",
    "SPP_QUEUE",
    "TASKS",
    "TRAIN",
    "TRAIN_QUEUE",
    "JobEnded",
    "JobKind",
    "JobQueue",
    "JobRecord",
    "JobState",
    "NoSuchJob",
    "RefusedJob",
    "RunningJob",
    "ServiceSettings",
    "UnreadableJob",
    "WorkerInfo",
    "advertise",
    "available_plugins",
    "connect",
    "connect_async",
    "fixed_queues",
    "key_for",
    "kind_of_config",
    "kind_of_queue",
    "live",
    "plugin_of_queue",
    "plugin_queue",
    "progress_total",
    "queues_in_use",
    "redact_url",
    "register_kind",
    "task_for",
]  # fmt: skip
