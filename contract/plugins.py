"""Model plugins between API and workers: a queue per plugin, and what workers advertise.

A worker that has a plugin installed listens on its queue (`plugin.<name>`) and writes the
plugin's description (`nfcore.foreign.plugins.Plugin.description`: version, argument schema, how it
is measured, parameters at the defaults) under `key_for(PLUGIN_KEY, name)`, renewed with its
heartbeat. The API reads those to validate a job and routes it to the plugin's queue, so it
runs only on workers that have the plugin. A plugin counts as available while a live worker
(one that heartbeated within HEARTBEAT_TTL) listens on its queue.

A description read from Redis is data to check, not to trust (anyone who can write to Redis
can write one): its size, its nesting and the type of each field are checked as it is read,
and a description that fails is that plugin's problem, said in `AdvertisedPlugins.refused`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import pydantic_core
import redis
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contract.keys import key_for
from contract.kinds import PLUGIN_QUEUE_PREFIX
from contract.queue import JobQueue, live

PLUGIN_KEY: Final = "plugin"
# A description's JSON, at most: a factory with a few dozen arguments describes itself in a
# few KiB; more is not a plugin's description, and each request reads it.
MAX_DESCRIPTION_BYTES: Final = 64 * 1024
# Its nesting, at most: pydantic's schema of nested argument models is about 10 deep.
MAX_DESCRIPTION_DEPTH: Final = 32


class PluginDescription(BaseModel):
    """What a worker advertises of a plugin (`nfcore.foreign.plugins.Plugin.description`), typed."""

    model_config = ConfigDict(extra="ignore", strict=True)

    name: str = Field(max_length=100)
    version: str = Field(max_length=100)
    target: str | None = Field(None, max_length=300)
    arguments: dict[str, Any]  # a JSON schema: the API checks it (api/plugin_args.py)
    defaults: dict[str, Any] = Field(default_factory=dict)
    blocks: str | list[str] = "auto"
    residual: list[str] | None = None
    input_shape: list[int] | None = None
    channels: Literal["auto", "first", "last"] = "first"  # auto: found from its layers
    resolution: int | None = None
    description: str | None = Field(None, max_length=2000)
    parameters: int | None = None


@dataclass(frozen=True)
class AdvertisedPlugins:
    """The plugins live workers have: those whose description can be used (name -> the
    description, as JSON), and why each other one cannot."""

    usable: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


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


def live_plugin_queues(queue: JobQueue, heartbeat_ttl: int) -> set[str]:
    """The plugin queues a live worker listens on."""
    workers = live(queue.workers(), heartbeat_ttl)
    return {name for worker in workers for name in worker.queues if plugin_of_queue(name)}


def available_plugins(queue: JobQueue, heartbeat_ttl: int) -> AdvertisedPlugins:
    """Every plugin a live worker has, sorted by name, with its description checked."""
    names = sorted(filter(None, map(plugin_of_queue, live_plugin_queues(queue, heartbeat_ttl))))
    if not names:
        return AdvertisedPlugins()
    raw = queue.connection.mget([key_for(PLUGIN_KEY, name) for name in names])
    seen = AdvertisedPlugins()
    for name, value in zip(names, raw, strict=True):
        if value is None:
            continue  # not advertised yet (a worker starting), or expired
        try:
            seen.usable[name] = read_description(name, value)
        except ValueError as error:
            seen.refused[name] = str(error)
    return seen


def read_description(name: str, raw: bytes | str) -> dict[str, Any]:
    """The description of the plugin `name` as read from Redis, checked: ValueError saying
    what is wrong with it (too large, too deep, not JSON, a field of the wrong type)."""
    size = len(raw)
    if size > MAX_DESCRIPTION_BYTES:
        raise ValueError(f"its description is {size} bytes, over {MAX_DESCRIPTION_BYTES}")
    too_deep = f"its description is nested over {MAX_DESCRIPTION_DEPTH} levels deep"
    try:
        data = pydantic_core.from_json(raw)  # a nesting limit of its own: no RecursionError
    except ValueError as error:
        if "recursion limit" in str(error):  # pydantic-core's own limit, about 200 levels
            raise ValueError(too_deep) from None
        raise ValueError("its description is not JSON") from None
    if _depth(data) > MAX_DESCRIPTION_DEPTH:
        raise ValueError(too_deep)
    try:
        description = PluginDescription.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "it"
        raise ValueError(f"its description is not a plugin's: {where}: {first['msg']}") from None
    if description.name != name:
        raise ValueError(f"its description names another plugin ({description.name!r})")
    return description.model_dump(mode="json")


def _depth(data: Any) -> int:
    """How deeply `data` (decoded JSON) nests lists and objects, without recursion."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth)
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
    return deepest
