"""Submitting, reading and canceling jobs: the API's use of RQ and the result cache.

Two kinds of job share one path: an SPP (`SPPConfig`, queue "spp") and a short training run
(`TrainConfig`, queue "train"). A job's id is the hash of its canonical config and the nfcore
version, so asking twice for the same thing finds the same job or the same cached result.
Submissions of one id are serialized by a short Redis lock, so many identical requests at
once cost one computation. A training job also streams events into a Redis list, which
`events` reads page by page.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

import redis
from redis.lock import Lock
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job

import nfcore
from api.errors import Conflict, Gone, Invalid, NotFound
from api.events import MAX_EVENTS_PAGE, read_events
from api.job_view import job_view, meta_of, progress_of
from api.plugin_args import arguments_problem, usable
from api.records import UnreadableJob, load_jobs
from api.settings import ApiSettings
from contract import (
    ASKERS_KEY,
    CLAIM_KEY,
    ENDED_CHANNEL,
    EVENTS_KEY,
    META_KIND,
    META_PROGRESS,
    SERIALIZER,
    SPP_QUEUE,
    TASKS,
    TRAIN_QUEUE,
    JobState,
    available_plugins,
    job_state,
    key_for,
    known_plugin_queues,
    plugin_queue,
    progress_total,
    queue_for,
    task_for,
)
from contract.limits import over_limit, written_over_limit
from contract.plugins import AdvertisedPlugins
from nfcore.config import SPPConfig, TrainConfig, config_hash
from nfcore.cost import EVAL_BATCH, Cost, estimate, train_costs
from nfcore.foreign_config import ForeignConfig

ACTIVE = (JobState.queued, JobState.running)
SUBMIT_LOCK_SECONDS = 10  # longer than any submission takes; frees itself if an API dies
CLAIM_BYTES = 24  # random bytes of a claim token (32 URL-safe characters): not guessable

JobConfig = SPPConfig | TrainConfig | ForeignConfig
# The plugin's advertised defaults a job takes where its body leaves a field out.
PLUGIN_DEFAULT_FIELDS = ("blocks", "residual", "input_shape", "channels", "resolution")


@dataclass(frozen=True)
class Submission:
    """What POST found or did: a cached result (bytes of JSON), or a job to wait for and this
    submission's claim on it (`JobService.release` gives it back)."""

    job_id: str
    cached: bytes | None = None
    job: Job | None = None
    claim: str | None = None


class JobService:
    def __init__(self, connection: redis.Redis, settings: ApiSettings) -> None:
        self.redis = connection
        self.settings = settings

    def queue(self, name: str) -> Queue:
        return queue_for(name, self.redis)

    # --- submit -------------------------------------------------------------------------------
    def admit(self, config: JobConfig) -> JobConfig:
        """The config to queue, or a 422: a built-in network within the cost limits, or a
        plugin a live worker has, with arguments its schema accepts (and its defaults and
        version filled in, so that equal requests share one job id). A plugin network's cost
        is checked by the worker, which can count it."""
        if isinstance(config, ForeignConfig):
            return self._admit_plugin(config)
        self.check_cost(config)
        return config

    def _admit_plugin(self, config: ForeignConfig) -> ForeignConfig:
        if config.model is not None:
            raise Invalid(MODEL_REFUSED)
        if config.plugin is None:
            raise Invalid("plugin: name an installed model plugin (GET /v1/models lists them)")
        advertised = self.advertised_plugins()
        if config.plugin in advertised.refused:
            raise Invalid(
                f"plugin: the model plugin {config.plugin!r} is unavailable: "
                f"{advertised.refused[config.plugin]}"
            )
        info = advertised.usable.get(config.plugin)
        if info is None:
            names = ", ".join(repr(name) for name in advertised.usable) or "none"
            raise Invalid(
                f"plugin: no live worker has the model plugin {config.plugin!r}; available: {names}"
            )
        if config.plugin_version not in (None, info["version"]):
            raise Invalid(
                f"plugin_version: the workers have {config.plugin} {info['version']}, "
                f"not {config.plugin_version}"
            )
        args = {**info["defaults"], **config.model_args}
        problem = arguments_problem(info["arguments"], args)
        if problem is not None:
            raise Invalid(f"model_args of plugin {config.plugin!r}: {problem}")
        updates: dict[str, Any] = {"model_args": args, "plugin_version": info["version"]}
        for name in PLUGIN_DEFAULT_FIELDS:
            if name not in config.model_fields_set and info.get(name) is not None:
                updates[name] = info[name]
        try:
            return ForeignConfig.model_validate({**config.model_dump(), **updates})
        except ValueError as error:
            raise Invalid(f"the plugin's defaults do not make a valid config: {error}") from None

    def plugins(self) -> dict[str, dict[str, Any]]:
        """The plugins a live worker has and the API can use: name -> what it advertises."""
        return self.advertised_plugins().usable

    def advertised_plugins(self) -> AdvertisedPlugins:
        """The plugins live workers have, each usable or refused with the reason (a
        description or an argument schema the API will not apply: `api.plugin_args`)."""
        return usable(available_plugins(self.redis, self.settings.heartbeat_ttl, SERIALIZER))

    def check_cost(self, config: JobConfig) -> None:
        """Refuse, before enqueueing, a job over the configured limits, saying by how much."""
        if isinstance(config, TrainConfig):
            self._check_training(config)
            return
        self._check_limits(estimate(config), "this job is too large: its", "batch")

    def _check_limits(self, cost: Cost, subject: str, batch: str) -> None:
        """MAX_FLOPS, MAX_ACTIVATION_BYTES and MAX_MEMORY_BYTES (weights and activations), for
        one SPP or one training step."""
        message = over_limit(cost, self.settings, subject, batch)
        if message is not None:
            raise Invalid(message)

    def _check_training(self, config: TrainConfig) -> None:
        """Steps under MAX_TRAIN_STEPS; each step (and each SPP taken during the run) under the
        SPP limits; what the run writes under MAX_TRAIN_RESULT_BYTES; all steps, evaluations
        and SPPs together, in FLOP-equivalents (with their layers' fixed cost: a deep, narrow
        network takes far longer than its FLOPs say), under MAX_TRAIN_FLOPS."""
        limit = self.settings.max_train_steps
        if config.steps > limit:
            raise Invalid(
                f"steps: {config.steps} is over the limit MAX_TRAIN_STEPS = {limit}; "
                f"ask for at most {limit} steps"
            )
        costs = train_costs(config)
        self._check_limits(
            costs.step,
            "this training job is too large: one step's (forward and backward)",
            "batch",
        )
        self._check_limits(costs.spp, "this training job is too large: its SPP's", "spp_batch")
        self._check_limits(
            costs.eval,
            f"this training job is too large: an evaluation batch's ({EVAL_BATCH} examples)",
            "eval_examples",
        )
        written = written_over_limit(config, self.settings.max_train_result_bytes)
        if written is not None:
            raise Invalid(written)
        total, budget = costs.total, self.settings.max_train_flops
        if total > budget:
            raise Invalid(
                f"this training job is too large: its cost over {config.steps} steps, "
                f"evaluations and SPPs ({total:.3g} FLOP-equivalents: {total - costs.overhead:.3g}"
                f" FLOPs, and {costs.overhead:.3g} for the fixed cost of its "
                f"{costs.spp.layer_calls} layer calls a pass) is over the limit MAX_TRAIN_FLOPS "
                f"= {budget:.3g} by {total / budget:.1f}x; reduce the steps (at most about "
                f"{costs.affordable_steps(config, budget)} at this size), the SPPs (a larger "
                "spp_every), or the depth, width, resolution or batch"
            )

    def submit(self, config: JobConfig, replaces: str | None = None) -> Submission:
        """Find the cached result or the active job of `config`, or queue a new job; a job
        comes with a new claim on it, held until given back or until the result expires.

        `replaces`: a claim this client got before and no longer wants (a dashboard's
        previous slider position), given back once the new submission holds its own (so a
        client asking again for the same job never drops it). See `release`.
        """
        job_id = config_hash(config, nfcore.__version__)
        submission = self._submit(config, job_id, secrets.token_urlsafe(CLAIM_BYTES))
        if replaces is not None:
            self.release(replaces)
        return submission

    def release(self, claim: str) -> None:
        """Give a claim back, once: its job is canceled (queued) or stopped (running) when it
        was the last claim on it. Anything that is not a live claim (a job id, a claim given
        back already, as a retried request does) changes nothing: only the client a claim was
        given to can know it."""
        found = self.redis.get(key_for(CLAIM_KEY, claim))
        if found is None:
            return
        job_id = found.decode(errors="replace")
        # Under the job's submit lock: a submission joining the job now either adds its
        # claim before the count below, or finds the job canceled and queues it again.
        with self._submit_lock(job_id):
            with self.redis.pipeline() as pipe:  # MULTI
                pipe.srem(key_for(ASKERS_KEY, job_id), claim)
                pipe.delete(key_for(CLAIM_KEY, claim))
                pipe.scard(key_for(ASKERS_KEY, job_id))
                taken_out, _, left = pipe.execute()
            if not taken_out or left:
                return
            job = self.fetch(job_id)
            state = self.state(job) if job is not None else None
            if job is not None and state == JobState.queued:
                self._cancel_queued(job)
            elif state == JobState.running:
                with contextlib.suppress(InvalidJobOperation):  # it ended a moment ago
                    send_stop_job_command(self.redis, job_id, serializer=SERIALIZER)

    def _hold(self, job_id: str, claim: str) -> None:
        """Record a claim on the job (under its submit lock, see `release`)."""
        ttl = self.settings.result_ttl
        with self.redis.pipeline() as pipe:  # MULTI
            pipe.sadd(key_for(ASKERS_KEY, job_id), claim)
            pipe.expire(key_for(ASKERS_KEY, job_id), ttl)
            pipe.set(key_for(CLAIM_KEY, claim), job_id, ex=ttl)
            pipe.execute()

    def _submit_lock(self, job_id: str) -> Lock:
        """Serializes what is done to one job id: its submissions and the release of claims."""
        return self.redis.lock(
            key_for("submit", job_id), timeout=SUBMIT_LOCK_SECONDS, blocking_timeout=5
        )

    def cached(self, job_id: str) -> bytes | None:
        """The cached result JSON of a job, if any."""
        return self.redis.get(key_for("result", job_id))

    def _submit(self, config: JobConfig, job_id: str, claim: str) -> Submission:
        if isinstance(config, ForeignConfig):
            assert config.plugin is not None  # `admit` saw to it
            queue, kind = plugin_queue(config.plugin), SPP_QUEUE
        else:
            kind = TRAIN_QUEUE if isinstance(config, TrainConfig) else SPP_QUEUE
            queue = kind
        cached = self.redis.get(key_for("result", job_id))
        if cached is not None:
            return Submission(job_id, cached=cached)
        with self._submit_lock(job_id):
            # The job before the cache: a worker writes the result before RQ marks the job
            # finished, so a finished job seen here has its result readable just below.
            job = self.fetch(job_id)
            if job is not None and self.state(job) in ACTIVE:
                self._hold(job_id, claim)
                return Submission(job_id, job=job, claim=claim)
            cached = self.redis.get(key_for("result", job_id))
            if cached is not None:
                return Submission(job_id, cached=cached)
            if job is not None:
                # Finished with an expired result, failed or canceled: run it again. A dead
                # worker's execution entry can outlive its record, and RQ's delete walks them.
                self.redis.delete(job.execution_registry.key)
                job.delete()
            # A run again starts with no events: those of the last run would read as its own.
            self.redis.delete(
                key_for("attempts", job_id),
                key_for("starts", job_id),
                key_for(EVENTS_KEY, job_id),
                key_for(ASKERS_KEY, job_id),
            )
            job = self.queue(queue).enqueue(
                task_for(queue),
                config.model_dump(mode="json"),
                job_id=job_id,
                job_timeout=self.settings.job_timeout(kind),
                result_ttl=self.settings.result_ttl,
                failure_ttl=self.settings.result_ttl,
                description=config.label,
                meta={META_KIND: kind, META_PROGRESS: {"done": 0, "total": progress_total(config)}},
            )
            self._hold(job_id, claim)
        return Submission(job_id, job=job, claim=claim)

    # --- read ---------------------------------------------------------------------------------
    def fetch(self, job_id: str) -> Job | None:
        """The job, or None when there is none or its record cannot be read."""
        try:
            return self._load(job_id)
        except (NoSuchJobError, UnreadableJob):
            return None

    def get(self, job_id: str) -> Job:
        """The job, or a 404 saying there is none or that its record cannot be read."""
        try:
            return self._load(job_id)
        except NoSuchJobError:
            raise NotFound(f"no job {job_id!r} (it may have expired)") from None
        except UnreadableJob as error:
            raise NotFound(
                f"job {job_id!r} cannot be read: its record in Redis is not one this API "
                f"wrote ({error})"
            ) from None

    def _load(self, job_id: str) -> Job:
        """NoSuchJobError or UnreadableJob (`api.records`) when there is no job to read."""
        return load_jobs(self.redis, [job_id], skip_unreadable=False)[0]

    def state(self, job: Job) -> JobState:
        return job_state(job.get_status(refresh=False))

    def kind(self, job: Job) -> str:
        """The job's kind: "spp" or "train" (its queue)."""
        return str(meta_of(job).get(META_KIND, job.origin))

    def result(self, job_id: str) -> bytes:
        """The cached result JSON, or a 404/409/410 saying why there is none."""
        cached = self.redis.get(key_for("result", job_id))
        if cached is not None:
            return cached
        job = self.get(job_id)
        state = self.state(job)
        if state in ACTIVE:
            done, total = progress_of(job)
            unit = "steps" if self.kind(job) == TRAIN_QUEUE else "blocks"
            raise Conflict(f"job {job_id} is {state} ({done}/{total} {unit}); no result yet")
        if state == JobState.finished:
            raise Gone("the result has expired from the cache; submit the config again")
        raise Conflict(f"job {job_id} is {state}; it has no result")

    def result_kind(self, job_id: str, result: bytes) -> str:
        """The kind of job that made `result`: from the job, or, once the job record has
        expired, from the JSON's shape (a training result has steps and evals)."""
        job = self.fetch(job_id)
        if job is not None:
            return self.kind(job)
        try:
            shape = json.loads(result)
        except ValueError:
            return SPP_QUEUE
        is_train = isinstance(shape, dict) and "steps" in shape and "evals" in shape
        return TRAIN_QUEUE if is_train else SPP_QUEUE

    def events(
        self, job_id: str, since: int, limit: int = MAX_EVENTS_PAGE, attempt: int | None = None
    ) -> dict[str, Any]:
        """A training job's events from index `since` on (at most `limit` of them, and of
        MAX_EVENTS_PAGE_BYTES: `api.events`), its state, progress and attempt (the
        `EventsPage` schema). `next` is the `since` of the following read. A client that gives
        the `attempt` it has been reading gets, once the job has started again, the new
        attempt's events from index 0 and `restarted`.

        The state is read before the events: once it is final, no event comes after those
        in the list (the worker writes its last ones before the job ends), so a client reads
        on from `next` until a page comes back empty. The events and the attempt are read in
        one atomic step, as the worker changes them in one transaction.
        """
        job = self.get(job_id)
        state = self.state(job)
        done, total = progress_of(job)
        current, raw = read_events(self.redis, job, since, limit)
        restarted = attempt is not None and attempt != current
        if restarted:
            current, raw = read_events(self.redis, job, 0, limit)
        return {
            "events": [json.loads(item) for item in raw],
            "next": (0 if restarted else since) + len(raw),
            "state": state,
            "progress": {"done": done, "total": total},
            "attempt": current,
            "restarted": restarted,
        }

    def recent(self, limit: int) -> list[Job]:
        """The most recently enqueued jobs on every queue, newest first."""
        ids: set[str] = set()
        for name in [*TASKS, *known_plugin_queues(self.redis)]:
            queue = self.queue(name)
            ids.update(queue.get_job_ids(offset=max(0, queue.count - limit)))  # newest last
            for registry in (
                queue.started_job_registry,
                queue.finished_job_registry,
                queue.failed_job_registry,
                queue.canceled_job_registry,
            ):
                # Scored by expiry, so the highest scores are the newest entries.
                ids.update(registry.get_job_ids(0, limit - 1, desc=True, cleanup=False))
        jobs = load_jobs(self.redis, sorted(ids))  # leaving out records it cannot read
        jobs.sort(key=lambda j: j.enqueued_at or j.created_at, reverse=True)
        return jobs[:limit]

    # --- cancel -------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        state = self.state(job)
        if state == JobState.queued:
            self._cancel_queued(job)
        elif state == JobState.running:
            # The worker runs jobs cooperatively: it stops at the next block or training step.
            try:
                send_stop_job_command(self.redis, job_id, serializer=SERIALIZER)
            except InvalidJobOperation:
                raise Conflict(f"job {job_id} ended while it was being canceled") from None
        else:
            raise Conflict(f"job {job_id} is already {state}; there is nothing to cancel")
        return self.get(job_id)

    def _cancel_queued(self, job: Job) -> None:
        """Cancel a job no worker has taken, and wake the requests waiting for it."""
        job.cancel()
        self.redis.publish(key_for(ENDED_CHANNEL, job.id), "canceled")

    # --- views --------------------------------------------------------------------------------
    def view(self, job: Job) -> dict[str, Any]:
        """The JSON a user reads about a job (the `JobView` schema)."""
        return job_view(job, self.state(job), self.kind(job), self.redis)


MODEL_REFUSED = (
    "model: a request may not name a module, file or callable; a network of your own runs "
    "through an installed model plugin (give `plugin`; GET /v1/models lists them)"
)
