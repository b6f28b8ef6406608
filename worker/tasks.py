"""The job functions RQ runs, by dotted path (`contract.TASKS`): payload in, small dict out.

A thin adapter: it re-validates the config, runs nfcore, streams progress into the job's
meta, and stores the result JSON in the cache under `key_for("result", job_id)`. A training
job also appends its events (`nfcore.train_result`) to the list `key_for(EVENTS_KEY, job_id)`.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import redis
from pydantic import ValidationError
from rq import get_current_job
from rq.job import Job

from contract import (
    EVENTS_KEY,
    META_ATTEMPT,
    META_DEVICE,
    META_PROGRESS,
    key_for,
    progress_total,
)
from contract.limits import over_limit, written_over_limit
from nfcore.config import SPPConfig, TrainConfig
from nfcore.fields import describe_validation_error
from nfcore.foreign_config import ForeignConfig
from worker.outages import SkipWhileAway, patiently
from worker.settings import get_settings
from worker.stopping import JobStopped, raise_if_stopped

# Progress goes to Redis at most this often (seconds), plus always at the last block.
PROGRESS_INTERVAL = 0.2
# Training events go to Redis at most this often (seconds): a step can take a millisecond.
EVENTS_INTERVAL = 0.1

if TYPE_CHECKING:
    from torch import nn

    from nfcore.model_cache import ModelCache
    from nfcore.plugins import Plugin

ConfigT = TypeVar("ConfigT", SPPConfig, TrainConfig, ForeignConfig)


class JobTooLarge(ValueError):
    """A plugin network over the limits the API applies to built-in ones (counted here), or a
    training job that writes more than MAX_TRAIN_RESULT_BYTES."""


def _start(kind: type[ConfigT], payload: dict[str, Any]) -> tuple[Job, ConfigT, str]:
    """The running RQ job, its config validated again, and the device it runs on (the
    worker's WORKER_DEVICE for configs that say 'auto').

    The job's meta starts this attempt afresh, in one transaction with clearing a training
    job's events: its number (a job run again after its worker died is attempt 2), no
    progress yet, the device. A client reading the events of attempt 1 sees the change.
    """
    from nfcore.devices import resolve_device

    job = get_current_job()
    if job is None:
        raise RuntimeError("a worker task must run inside an RQ job")
    if not isinstance(payload, dict):
        raise ValueError(f"invalid config: expected a JSON object, got {type(payload).__name__}")
    try:
        config = kind.model_validate(payload)
    except ValidationError as error:  # e.g. an API and a worker of different versions
        raise ValueError(f"invalid config: {describe_validation_error(error)}") from None
    device = get_settings().worker_device if config.device == "auto" else config.device
    connection: redis.Redis = job.connection
    attempt = int(connection.incr(key_for("starts", job.id)))
    connection.expire(key_for("starts", job.id), get_settings().result_ttl)
    job.meta[META_ATTEMPT] = attempt
    job.meta[META_DEVICE] = str(resolve_device(device))
    job.meta[META_PROGRESS] = {"done": 0, "total": progress_total(config)}
    with connection.pipeline() as pipe:  # MULTI: the events and the attempt change together
        pipe.delete(key_for(EVENTS_KEY, job.id))
        pipe.hset(job.key, "meta", job.serializer.dumps(job.meta))
        pipe.execute()
    return job, config, device


@functools.cache
def _models() -> ModelCache:
    """The networks this worker built recently (WORKER_MODEL_CACHE_BYTES), to measure again."""
    from nfcore.model_cache import ModelCache

    return ModelCache(get_settings().worker_model_cache_bytes)


def run_spp_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Compute one SPP and cache it; returns where the result is and how long it took.

    A network that differs from one built recently only in alpha, gamma or the S+E gain is
    not built again (`nfcore.model_cache`): a slider move costs one forward pass."""
    from nfcore.devices import resolve_device  # torch loads here, in the worker only
    from nfcore.spp import run_spp

    job, config, device = _start(SPPConfig, payload)
    settings = get_settings()
    progress = _block_progress(job)
    model = _models().model(config, resolve_device(device))
    result = run_spp(config, progress=progress, model=model, device=device)
    _store_result(job, result.to_json_dict(), settings.result_ttl)
    return {
        "result_key": key_for("result", job.id),
        "blocks": len(result.blocks),
        "seconds": result.meta.seconds,
        "device": result.meta.device,
    }


def run_plugin_job(payload: dict[str, Any]) -> dict[str, Any]:
    """The SPP of a model plugin's network: the plugin installed here, its arguments checked
    again, its cost counted before it runs (`nfcore.foreign_cost`: the API cannot), then
    measured as `nfcore.measure` does and cached like any SPP."""
    from nfcore.foreign_spp import measure_config  # torch loads here, in the worker only
    from nfcore.plugins import PluginError
    from worker.plugins import loaded_plugins

    job, config, device = _start(ForeignConfig, payload)
    settings = get_settings()
    plugin = loaded_plugins().get(str(config.plugin))
    if plugin is None:
        raise PluginError(f"the model plugin {config.plugin!r} is not served by this worker")
    if config.plugin_version not in (None, plugin.version):
        raise PluginError(
            f"the job asks for {plugin.name} {config.plugin_version}; this worker has "
            f"{plugin.version}"
        )
    model = _counted_network(plugin, plugin.validated(dict(config.model_args)), config)
    progress = _block_progress(job)
    result = measure_config(model, config, progress=progress, device=device)
    _store_result(job, result.to_json_dict(), settings.result_ttl)
    return {
        "result_key": key_for("result", job.id),
        "blocks": len(result.blocks),
        "seconds": result.meta.seconds,
        "device": result.meta.device,
    }


def _counted_network(plugin: Plugin, args: dict[str, Any], config: ForeignConfig) -> nn.Module:
    """The plugin's network, built only once its cost is counted within the limits.

    Counted first on the meta device, then its real build and one example's pass, each ended
    as soon as it is over the limits or the job is canceled (`nfcore.foreign_cost.Budget`); a
    network that cannot be counted is refused, not built. A job's timeout and a cancel end it
    as they are (RQ's JobTimeoutException, JobStopped), never read as the network's failure.
    """
    from rq.timeouts import JobTimeoutException

    from nfcore.foreign import build_foreign
    from nfcore.foreign_cost import (
        Budget,
        BuildGuard,
        OverBudget,
        meta_cost,
        real_cost,
        weights_only,
    )

    settings = get_settings()
    budget = Budget(
        max_flops=settings.max_flops,
        max_activation_bytes=settings.max_activation_bytes,
        max_memory_bytes=settings.max_memory_bytes,
        check_stop=raise_if_stopped,
        propagate=(JobTimeoutException, JobStopped),
    )
    subject = f"this job is too large: the {plugin.name} network's"
    try:
        counted = meta_cost(
            lambda: plugin.factory(**args), config, budget, f"the {plugin.name} network"
        )
        _check(weights_only(counted, config), subject)  # nothing real is built over the limits
        with BuildGuard(budget):
            model = build_foreign(plugin.factory, args, config.seed, f"plugin {plugin.name}",
                                  propagate=budget.passes_through)  # fmt: skip
        _check(real_cost(model, config, counted.flops, budget), subject)
    except OverBudget as over:  # stopped part way: what was reached is already over a limit
        part_way = (
            f"this job is too large (its count stopped once past a limit: the numbers are at "
            f"least these; nothing more was built): the {plugin.name} network's"
        )
        message = over_limit(over.cost, settings, part_way, "batch")
        raise JobTooLarge(message or f"{part_way} cost is over the limits") from None
    return model


def _block_progress(job: Job) -> Callable[[int, int], None]:
    """An SPP's progress callback: stops the job when asked to (a cancel), and saves the
    blocks done into its meta at most every PROGRESS_INTERVAL seconds, and at the last (which
    waits out a short Redis outage; the others are skipped meanwhile: `worker.outages`)."""
    last_saved = 0.0
    save = SkipWhileAway(f"progress of job {job.id}")

    def progress(done: int, total: int) -> None:
        nonlocal last_saved
        raise_if_stopped()
        now = time.monotonic()
        if done == total or now - last_saved >= PROGRESS_INTERVAL:
            job.meta[META_PROGRESS] = {"done": done, "total": total}
            if done == total:
                patiently(job.save_meta, get_settings().heartbeat_ttl, f"progress of job {job.id}")
            else:
                save(job.save_meta)
            last_saved = now

    return progress


def _check(cost: Any, subject: str) -> None:
    message = over_limit(cost, get_settings(), subject, "batch")
    if message is not None:
        raise JobTooLarge(message)


def run_train_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one short training and cache its result, streaming its events while it runs."""
    from nfcore.train import train  # torch loads here, in the worker only

    job, config, device = _start(TrainConfig, payload)
    settings = get_settings()
    # The API refused it if it writes too much; an older API or a Redis writer may not have.
    too_much = written_over_limit(config, settings.max_train_result_bytes)
    if too_much is not None:
        raise JobTooLarge(too_much)
    # Emptied by _start (a new attempt); it stops the run if it writes more all the same.
    stream = EventStream(job, settings.result_ttl, settings.max_train_result_bytes)
    # A step before an evaluation or an SPP (slow) is written at once, not after them.
    slow_next = set(config.eval_steps) | set(config.spp_steps)

    def on_event(event: dict[str, Any]) -> None:
        raise_if_stopped()
        step = int(event["step"])
        if event["kind"] == "step":
            job.meta[META_PROGRESS] = {"done": step, "total": config.steps}
        stream.add(event, now=event["kind"] != "step" or step in slow_next)

    try:
        result = train(config, on_event, device=device, data_dir=settings.cifar10_dir)
    finally:
        stream.flush(wait=True)  # what a canceled or failed run did, too
    _store_result(job, result.to_json_dict(), settings.result_ttl)
    return {
        "result_key": key_for("result", job.id),
        "status": result.status,
        "steps": len(result.steps),
        "seconds": result.meta.seconds,
        "device": result.meta.device,
    }


class EventStream:
    """A training job's events, appended to its Redis list in batches.

    One round trip (RPUSH, EXPIRE and the job's progress meta) at most every
    `EVENTS_INTERVAL` seconds; an event added with `now` goes at once with those before it.
    While Redis is unreachable the events wait for a later flush and the run goes on
    (`worker.outages`).
    """

    def __init__(self, job: Job, ttl: int, max_bytes: int | None = None) -> None:
        self.job = job
        self.key = key_for(EVENTS_KEY, job.id)
        self.ttl = ttl
        self.max_bytes = max_bytes  # MAX_TRAIN_RESULT_BYTES
        self.written = 0  # bytes of the events added
        self.pending: list[str] = []
        self.last_flush = 0.0
        self._save = SkipWhileAway(f"events of job {job.id}")

    def add(self, event: dict[str, Any], *, now: bool = False) -> None:
        """Queue an event for the list; JobTooLarge, and the event left out, when it would take
        the run's events past `max_bytes` (the estimate the API and `run_train_job` check is an
        upper bound, so only a run that estimate missed gets here)."""
        text = _json(event)  # ASCII: its length is its bytes
        if self.max_bytes is not None and self.written + len(text) > self.max_bytes:
            raise JobTooLarge(
                f"this training job was stopped at step {event.get('step')}: its events would "
                f"pass the limit MAX_TRAIN_RESULT_BYTES = {self.max_bytes:.3g} bytes; record "
                "fewer SPPs (a larger spp_every), or take fewer steps or a shallower network"
            )
        self.written += len(text)
        self.pending.append(text)
        if now or time.monotonic() - self.last_flush >= EVENTS_INTERVAL:
            self.flush()

    def flush(self, *, wait: bool = False) -> None:
        """Write the pending events; `wait` (the last flush) waits out a short outage."""
        if not self.pending:
            return
        self.last_flush = time.monotonic()
        if wait:
            patiently(self._write, get_settings().heartbeat_ttl, f"events of job {self.job.id}")
        elif not self._save(self._write):
            return
        self.pending.clear()

    def _write(self) -> None:
        connection: redis.Redis = self.job.connection
        # MULTI: a write cut short by an outage leaves nothing to push twice.
        with connection.pipeline(transaction=True) as pipe:
            pipe.rpush(self.key, *self.pending)
            pipe.expire(self.key, self.ttl)
            pipe.hset(self.job.key, "meta", self.job.serializer.dumps(self.job.meta))
            pipe.execute()


def _json(value: Any) -> str:
    """Strict JSON (what browsers parse): a non-finite number, were one left, becomes null."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _store_result(job: Job, result: dict[str, Any], ttl: int) -> None:
    """The result JSON in the cache, and one more computation counted for the job; tried again
    while Redis is unreachable, for up to HEARTBEAT_TTL seconds (`worker.outages`)."""
    text = _json(result)

    def store() -> None:
        with job.connection.pipeline() as pipe:
            pipe.set(key_for("result", job.id), text, ex=ttl)
            # Counts real computations, so tests and operators can see the cache working.
            pipe.incr(key_for("computations", job.id))
            pipe.expire(key_for("computations", job.id), ttl)
            pipe.execute()

    patiently(store, get_settings().heartbeat_ttl, f"result of job {job.id}")
