"""One job from start to end, the same for every kind: a kind gives only its run function.

`run_job` validates the payload again with the kind's config model, starts this attempt in
the job's meta (its number, the device, no progress yet; a training job's events cleared in
the same transaction), runs the kind's function with a progress callback, and caches the
result JSON under `key_for("result", job_id)`. A function is made a task with
`@kind_task(KIND)`, under the dotted path the kind's row names (`contract.kinds`).
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from contract import EVENTS_KEY, META_ATTEMPT, META_DEVICE, META_PROGRESS, JobKind, key_for
from contract.queue import RunningJob
from contract.rq_queue import current_job
from nfcore.spec.fields import describe_validation_error
from worker.outages import SkipWhileAway, patiently
from worker.settings import get_settings
from worker.stopping import raise_if_stopped

# Progress goes to Redis at most this often (seconds), plus always at the last block.
PROGRESS_INTERVAL = 0.2


@dataclass(frozen=True)
class Run:
    """What a kind's function is given: its job, its config validated again, the device it
    runs on (the worker's WORKER_DEVICE for configs that say 'auto'), and a progress callback
    (`progress(done, total)`) that also stops the job when it was asked to (a cancel)."""

    job: RunningJob
    config: Any
    device: str
    progress: Callable[[int, int], None]


RunFunction = Callable[[Run], dict[str, Any]]  # a run -> its result JSON


def kind_task(kind: JobKind) -> Callable[[RunFunction], Callable[[dict[str, Any]], None]]:
    """The task a worker runs for `kind`'s jobs, from the kind's run function."""

    def task_of(function: RunFunction) -> Callable[[dict[str, Any]], None]:
        @functools.wraps(function)
        def task(payload: dict[str, Any]) -> None:
            run_job(kind, payload, function)

        return task

    return task_of


def run_job(kind: JobKind, payload: dict[str, Any], function: RunFunction) -> None:
    """Validate, start the attempt, run, and cache the result (see the module's docstring)."""
    job = current_job()
    config = validated(kind.config, payload)
    device = _start(job, config, kind.total(config))
    result = function(Run(job, config, device, saved_progress(job)))
    store_result(job, result, get_settings().result_ttl)


def validated(model: type[BaseModel], payload: Any) -> Any:
    """The payload as `model`, or a ValueError that says what is wrong as the API would (an
    API and a worker of different versions may disagree)."""
    if not isinstance(payload, dict):
        raise ValueError(f"invalid config: expected a JSON object, got {type(payload).__name__}")
    try:
        return model.model_validate(payload)
    except ValidationError as error:
        raise ValueError(f"invalid config: {describe_validation_error(error)}") from None


def _start(job: RunningJob, config: Any, total: int) -> str:
    """Start this attempt afresh in the job's meta, in one transaction with clearing a
    training job's events: its number (a job run again after its worker died is attempt 2),
    no progress yet, the device. A client reading the events of attempt 1 sees the change.
    Returns the device."""
    from nfcore.engine.devices import resolve_device  # torch loads here, in the worker only

    settings = get_settings()
    asked = getattr(config, "device", "auto")
    device = settings.worker_device if asked == "auto" else asked
    connection = job.connection
    attempt = int(connection.incr(key_for("starts", job.id)))
    connection.expire(key_for("starts", job.id), settings.result_ttl)
    job.meta[META_ATTEMPT] = attempt
    job.meta[META_DEVICE] = str(resolve_device(device))
    job.meta[META_PROGRESS] = {"done": 0, "total": total}
    with connection.pipeline() as pipe:  # MULTI: the events and the attempt change together
        pipe.delete(key_for(EVENTS_KEY, job.id))
        job.write_meta(pipe)
        pipe.execute()
    return device


def saved_progress(job: RunningJob) -> Callable[[int, int], None]:
    """A progress callback: stops the job when asked to (a cancel), and saves what is done
    into its meta at most every PROGRESS_INTERVAL seconds, and at the last (which waits out a
    short Redis outage; the others are skipped meanwhile: `worker.outages`)."""
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


def store_result(job: RunningJob, result: dict[str, Any], ttl: int) -> None:
    """The result JSON in the cache, and one more computation counted for the job; tried again
    while Redis is unreachable, for up to HEARTBEAT_TTL seconds (`worker.outages`)."""
    text = strict_json(result)

    def store() -> None:
        with job.connection.pipeline() as pipe:
            pipe.set(key_for("result", job.id), text, ex=ttl)
            # Counts real computations, so tests and operators can see the cache working.
            pipe.incr(key_for("computations", job.id))
            pipe.expire(key_for("computations", job.id), ttl)
            pipe.execute()

    patiently(store, get_settings().heartbeat_ttl, f"result of job {job.id}")


def strict_json(value: Any) -> str:
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
