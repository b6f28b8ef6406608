"""What the API (producer) and the workers (consumers) agree on, in one small torch-free package.

Both import it and neither imports the other: the queues and their tasks, named by dotted
path so the API never loads the worker (or torch), the job class that runs only those tasks
(`jobs`); Redis key names (`keys`); the shared settings and Redis clients (`settings`); and
the cleanup of jobs whose worker died (`reaper`).
"""

from contract.jobs import (
    QUEUES,
    SERIALIZER,
    SPP_QUEUE,
    TASKS,
    TRAIN_QUEUE,
    JobState,
    RefusedJob,
    TaskJob,
    job_state,
    progress_total,
    queue_for,
    refusal,
    task_for,
)
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
from contract.plugins import (
    PLUGIN_QUEUE_PREFIX,
    PLUGIN_TASK,
    advertise,
    available_plugins,
    known_plugin_queues,
    plugin_of_queue,
    plugin_queue,
)
from contract.settings import ServiceSettings, connect, connect_async, redact_url

__all__ = [
    "ASKERS_KEY",
    "CLAIM_KEY",
    "ENDED_CHANNEL",
    "EVENTS_KEY",
    "KEY_PREFIX",
    "META_ATTEMPT",
    "META_DEVICE",
    "META_KIND",
    "META_PROGRESS",
    "PLUGIN_QUEUE_PREFIX",
    "PLUGIN_TASK",
    "QUEUES",
    "SERIALIZER",
    "SPP_QUEUE",
    "TASKS",
    "TRAIN_QUEUE",
    "JobState",
    "RefusedJob",
    "ServiceSettings",
    "TaskJob",
    "advertise",
    "available_plugins",
    "connect",
    "connect_async",
    "job_state",
    "key_for",
    "known_plugin_queues",
    "plugin_of_queue",
    "plugin_queue",
    "progress_total",
    "queue_for",
    "redact_url",
    "refusal",
    "task_for",
]  # fmt: skip
