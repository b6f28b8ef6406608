"""The run function of each kind of job (`contract.kinds`): config in, result JSON out.

Each is a task through `worker.template.kind_task`, which validates the config again, starts
the attempt, and caches the result; here is only what differs: an SPP of a built-in network,
of a model plugin's network (counted before it is built), and a short training run, whose
events (`nfcore.spec.train_result`) go to the list `key_for(EVENTS_KEY, job_id)` while it runs.
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

from contract import EVENTS_KEY, META_PROGRESS, PLUGIN, SPP, TRAIN, key_for
from contract.limits import over_limit, written_over_limit
from contract.queue import RunningJob
from nfcore.spec.foreign_config import ForeignConfig
from worker.guards import JobTimeoutException
from worker.outages import SkipWhileAway, patiently
from worker.settings import get_settings
from worker.stopping import JobStopped, raise_if_stopped
from worker.template import Run, kind_task, strict_json

# Training events go to Redis at most this often (seconds): a step can take a millisecond.
EVENTS_INTERVAL = 0.1

if TYPE_CHECKING:
    from torch import nn

    from nfcore.engine.model_cache import ModelCache
    from nfcore.foreign.plugins import Plugin


class JobTooLarge(ValueError):
    """A plugin network over the limits the API applies to built-in ones (counted here), or a
    training job that writes more than MAX_TRAIN_RESULT_BYTES."""


@functools.cache
def _models() -> ModelCache:
    """The networks this worker built recently (WORKER_MODEL_CACHE_BYTES), to measure again."""
    from nfcore.engine.model_cache import ModelCache

    return ModelCache(get_settings().worker_model_cache_bytes)


@kind_task(SPP)
def run_spp_job(run: Run) -> dict[str, Any]:
    """One SPP of a built-in network.

    A network that differs from one built recently only in alpha, gamma or the S+E gain is
    not built again (`nfcore.engine.model_cache`): a slider move costs one forward pass."""
    from nfcore.engine.devices import resolve_device  # torch loads here, in the worker only
    from nfcore.engine.spp import run_spp

    model = _models().model(run.config, resolve_device(run.device))
    result = run_spp(run.config, progress=run.progress, model=model, device=run.device)
    return result.to_json_dict()


@kind_task(PLUGIN)
def run_plugin_job(run: Run) -> dict[str, Any]:
    """The SPP of a model plugin's network: the plugin installed here, its arguments checked
    again, its cost counted before it runs (`nfcore.foreign.cost`: the API cannot), then
    measured as `nfcore.measure` does and cached like any SPP."""
    from nfcore.foreign.measure import measure_config  # torch loads here, in the worker only
    from nfcore.foreign.plugins import PluginError
    from worker.plugins import loaded_plugins

    config: ForeignConfig = run.config
    plugin = loaded_plugins().get(str(config.plugin))
    if plugin is None:
        raise PluginError(f"the model plugin {config.plugin!r} is not served by this worker")
    if config.plugin_version not in (None, plugin.version):
        raise PluginError(
            f"the job asks for {plugin.name} {config.plugin_version}; this worker has "
            f"{plugin.version}"
        )
    model = _counted_network(plugin, plugin.validated(dict(config.model_args)), config)
    result = measure_config(model, config, progress=run.progress, device=run.device)
    return result.to_json_dict()


def _counted_network(plugin: Plugin, args: dict[str, Any], config: ForeignConfig) -> nn.Module:
    """The plugin's network, built only once its cost is counted within the limits.

    Counted first on the meta device, then its real build and one example's pass, each ended
    as soon as it is over the limits or the job is canceled (`nfcore.foreign.cost.Budget`); a
    network that cannot be counted is refused, not built. A job's timeout and a cancel end it
    as they are (RQ's JobTimeoutException, JobStopped), never read as the network's failure.
    """
    from nfcore.foreign.cost import (
        Budget,
        BuildGuard,
        OverBudget,
        meta_cost,
        real_cost,
        weights_only,
    )
    from nfcore.foreign.discovery import build_foreign

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


def _check(cost: Any, subject: str) -> None:
    message = over_limit(cost, get_settings(), subject, "batch")
    if message is not None:
        raise JobTooLarge(message)


@kind_task(TRAIN)
def run_train_job(run: Run) -> dict[str, Any]:
    """One short training, streaming its events while it runs."""
    from nfcore.training.train import train  # torch loads here, in the worker only

    config, job, settings = run.config, run.job, get_settings()
    # The API refused it if it writes too much; an older API or a Redis writer may not have.
    too_much = written_over_limit(config, settings.max_train_result_bytes)
    if too_much is not None:
        raise JobTooLarge(too_much)
    # Emptied as the attempt started; it stops the run if it writes more all the same.
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
        result = train(config, on_event, device=run.device, data_dir=settings.cifar10_dir)
    finally:
        stream.flush(wait=True)  # what a canceled or failed run did, too
    return result.to_json_dict()


class EventStream:
    """A training job's events, appended to its Redis list in batches.

    One round trip (RPUSH, EXPIRE and the job's progress meta) at most every
    `EVENTS_INTERVAL` seconds; an event added with `now` goes at once with those before it.
    While Redis is unreachable the events wait for a later flush and the run goes on
    (`worker.outages`).
    """

    def __init__(self, job: RunningJob, ttl: int, max_bytes: int | None = None) -> None:
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
        text = strict_json(event)  # ASCII: its length is its bytes
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
        # MULTI: a write cut short by an outage leaves nothing to push twice.
        with self.job.connection.pipeline(transaction=True) as pipe:
            pipe.rpush(self.key, *self.pending)
            pipe.expire(self.key, self.ttl)
            self.job.write_meta(pipe)
            pipe.execute()
