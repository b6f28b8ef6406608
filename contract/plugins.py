"""Model plugins between API and workers: a queue per plugin, and what workers advertise.

A worker that has a plugin installed listens on its queue (`plugin.<name>`) and writes the
plugin's description (`nfcore.plugins.Plugin.description`: version, argument schema, how it
is measured, parameters at the defaults) under `key_for(PLUGIN_KEY, name)`, renewed with its
heartbeat. The API reads those to validate a job and routes it to the plugin's queue, so it
runs only on workers that have the plugin. A plugin counts as available while a live worker
(one that heartbeated within HEARTBEAT_TTL) listens on its queue.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Final

import redis
from rq import Worker

from contract.keys import key_for

PLUGIN_QUEUE_PREFIX: Final = "plugin."
PLUGIN_TASK: Final = "worker.tasks.run_plugin_job"
PLUGIN_KEY: Final = "plugin"


def plugin_queue(name: str) -> str:
    return f"{PLUGIN_QUEUE_PREFIX}{name}"


def plugin_of_queue(queue: str) -> str | None:
    return (
        queue.removeprefix(PLUGIN_QUEUE_PREFIX) if queue.startswith(PLUGIN_QUEUE_PREFIX) else None
    )


def advertise(connection: redis.Redis, descriptions: list[dict[str, Any]], ttl: int) -> None:
    """Write (or renew) the descriptions of a worker's plugins for `ttl` seconds."""
    if not descriptions:
        return
    with connection.pipeline(transaction=False) as pipe:
        for description in descriptions:
            pipe.set(key_for(PLUGIN_KEY, description["name"]), json.dumps(description), ex=ttl)
        pipe.execute()


def live_plugin_queues(connection: redis.Redis, heartbeat_ttl: int, serializer: Any) -> set[str]:
    """The plugin queues a live worker listens on."""
    moment = datetime.now(UTC)
    queues: set[str] = set()
    for worker in Worker.all(connection=connection, serializer=serializer):
        beat = worker.last_heartbeat
        if beat is None:
            continue
        if beat.tzinfo is None:
            beat = beat.replace(tzinfo=UTC)
        if (moment - beat).total_seconds() <= heartbeat_ttl:
            queues.update(q for q in worker.queue_names() if q.startswith(PLUGIN_QUEUE_PREFIX))
    return queues


def available_plugins(
    connection: redis.Redis, heartbeat_ttl: int, serializer: Any
) -> dict[str, dict[str, Any]]:
    """Name -> description of every plugin a live worker has, sorted by name."""
    names = sorted(
        filter(
            None, map(plugin_of_queue, live_plugin_queues(connection, heartbeat_ttl, serializer))
        )
    )
    if not names:
        return {}
    raw = connection.mget([key_for(PLUGIN_KEY, name) for name in names])
    out: dict[str, dict[str, Any]] = {}
    for name, value in zip(names, raw, strict=True):
        if value is None:
            continue
        try:
            description = json.loads(value)
        except ValueError:
            continue
        if isinstance(description, dict) and description.get("name") == name:
            out[name] = description
    return out


def known_plugin_queues(connection: redis.Redis) -> list[str]:
    """Every plugin queue RQ knows of (for the reaper and the job list), live or not."""
    prefix = f"rq:queue:{PLUGIN_QUEUE_PREFIX}"
    names = [
        key.decode() if isinstance(key, bytes) else key for key in connection.smembers("rq:queues")
    ]
    return sorted(name.removeprefix("rq:queue:") for name in names if name.startswith(prefix))
