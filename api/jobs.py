"""The job service: submitting, claiming, reading, listing and canceling jobs, and the cache.

Three kinds of job share one path (`contract.kinds`): an SPP of a built-in network
(`SPPConfig`, queue "spp"), an SPP of a model plugin's network (`ForeignConfig`, a queue per
plugin), and a short training run (`TrainConfig`, queue "train"); whether a job may be queued
at all is `api.admission`'s to say. A job's id is the hash of its canonical config and the
nfcore version, so asking twice for the same thing finds the same job or the same cached
result. Submissions of one id are serialized by a short Redis lock, so many identical
requests at once cost one computation. A training job also streams events into a Redis
list, which `events` reads page by page.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from redis.lock import Lock

import nfcore
from api.errors import Conflict, Gone, NotFound
from api.events import MAX_EVENTS_PAGE, read_events
from api.job_view import job_view, progress_of
from api.settings import ApiSettings
from contract import (
    ASKERS_KEY,
    CLAIM_KEY,
    ENDED_CHANNEL,
    EVENTS_KEY,
    META_KIND,
    META_PROGRESS,
    JobEnded,
    JobKind,
    JobQueue,
    JobRecord,
    JobState,
    NoSuchJob,
    UnreadableJob,
    key_for,
    kind_of_config,
    queues_in_use,
)
from contract.kinds import kind_of_result, shown
from nfcore.spec.config import config_hash

ACTIVE = (JobState.queued, JobState.running)
SUBMIT_LOCK_SECONDS = 10  # longer than any submission takes; frees itself if an API dies
CLAIM_BYTES = 24  # random bytes of a claim token (32 URL-safe characters): not guessable


@dataclass(frozen=True)
class Submission:
    """What POST found or did: a cached result (bytes of JSON), or a job to wait for and this
    submission's claim on it (`JobService.release` gives it back)."""

    job_id: str
    cached: bytes | None = None
    job: JobRecord | None = None
    claim: str | None = None


class JobService:
    def __init__(self, queue: JobQueue, settings: ApiSettings) -> None:
        self.queue = queue
        self.redis = queue.connection
        self.settings = settings

    # --- submit -------------------------------------------------------------------------------
    def submit(self, config: BaseModel, replaces: str | None = None) -> Submission:
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
            state = job.state if job is not None else None
            if job is not None and state == JobState.queued:
                self._cancel_queued(job)
            elif state == JobState.running:
                with contextlib.suppress(JobEnded):  # it ended a moment ago
                    self.queue.stop(job_id)

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

    def _submit(self, config: BaseModel, job_id: str, claim: str) -> Submission:
        kind = kind_of_config(config)
        cached = self.redis.get(key_for("result", job_id))
        if cached is not None:
            return Submission(job_id, cached=cached)
        with self._submit_lock(job_id):
            # The job before the cache: a worker writes the result before the queue marks the
            # job finished, so a finished job seen here has its result readable just below.
            job = self.fetch(job_id)
            if job is not None and job.state in ACTIVE:
                self._hold(job_id, claim)
                return Submission(job_id, job=job, claim=claim)
            cached = self.redis.get(key_for("result", job_id))
            if cached is not None:
                return Submission(job_id, cached=cached)
            if job is not None:  # finished with an expired result, failed or canceled: again
                self.queue.delete(job)
            # A run again starts with no events: those of the last run would read as its own.
            self.redis.delete(
                key_for("attempts", job_id),
                key_for("starts", job_id),
                key_for(EVENTS_KEY, job_id),
                key_for(ASKERS_KEY, job_id),
            )
            job = self._enqueue(kind, config, job_id)
            self._hold(job_id, claim)
        return Submission(job_id, job=job, claim=claim)

    def _enqueue(self, kind: JobKind, config: BaseModel, job_id: str) -> JobRecord:
        queue = kind.queue_of(config)
        return self.queue.enqueue(
            queue,
            kind.task,
            config.model_dump(mode="json"),
            job_id=job_id,
            timeout=self.settings.job_timeout(queue),
            ttl=self.settings.result_ttl,
            label=getattr(config, "label", None),
            meta={
                META_KIND: kind.shown_as,
                META_PROGRESS: {"done": 0, "total": kind.total(config)},
            },
        )

    # --- read ---------------------------------------------------------------------------------
    def fetch(self, job_id: str) -> JobRecord | None:
        """The job, or None when there is none or its record cannot be read."""
        try:
            return self.queue.record(job_id)
        except (NoSuchJob, UnreadableJob):
            return None

    def get(self, job_id: str) -> JobRecord:
        """The job, or a 404 saying there is none or that its record cannot be read."""
        try:
            return self.queue.record(job_id)
        except NoSuchJob:
            raise NotFound(f"no job {job_id!r} (it may have expired)") from None
        except UnreadableJob as error:
            raise NotFound(
                f"job {job_id!r} cannot be read: its record in Redis is not one this API "
                f"wrote ({error})"
            ) from None

    def kind(self, job: JobRecord) -> str:
        """The job's kind as a user sees it: "spp" or "train" (`JobKind.shown_as`)."""
        return str(job.meta.get(META_KIND, job.queue))

    def result(self, job_id: str) -> bytes:
        """The cached result JSON, or a 404/409/410 saying why there is none."""
        cached = self.redis.get(key_for("result", job_id))
        if cached is not None:
            return cached
        job = self.get(job_id)
        state = job.state
        if state in ACTIVE:
            done, total = progress_of(job)
            kind = shown(self.kind(job))
            unit = kind.unit if kind is not None else "blocks"
            raise Conflict(f"job {job_id} is {state} ({done}/{total} {unit}); no result yet")
        if state == JobState.finished:
            raise Gone("the result has expired from the cache; submit the config again")
        raise Conflict(f"job {job_id} is {state}; it has no result")

    def result_kind(self, job_id: str, result: bytes) -> str:
        """The kind of job that made `result`: from the job, or, once the job record has
        expired, from the JSON's shape (`JobKind.result_keys`: a training result has steps and
        evals)."""
        job = self.fetch(job_id)
        if job is not None:
            return self.kind(job)
        try:
            shape = json.loads(result)
        except ValueError:
            shape = None
        return kind_of_result(shape)

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
        state = job.state
        done, total = progress_of(job)
        current, raw = read_events(self.queue, job.id, since, limit)
        restarted = attempt is not None and attempt != current
        if restarted:
            current, raw = read_events(self.queue, job.id, 0, limit)
        return {
            "events": [json.loads(item) for item in raw],
            "next": (0 if restarted else since) + len(raw),
            "state": state,
            "progress": {"done": done, "total": total},
            "attempt": current,
            "restarted": restarted,
        }

    def recent(self, limit: int) -> list[JobRecord]:
        """The most recently enqueued jobs on every queue, newest first."""
        ids: set[str] = set()
        for name in queues_in_use(self.queue):
            ids.update(self.queue.recent_ids(name, limit))
        jobs = self.queue.records(sorted(ids))  # leaving out records it cannot read
        jobs.sort(key=lambda j: j.enqueued_at or j.created_at, reverse=True)
        return jobs[:limit]

    # --- cancel -------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> JobRecord:
        job = self.get(job_id)
        state = job.state
        if state == JobState.queued:
            self._cancel_queued(job)
        elif state == JobState.running:
            # The worker runs jobs cooperatively: it stops at the next block or training step.
            try:
                self.queue.stop(job_id)
            except JobEnded:
                raise Conflict(f"job {job_id} ended while it was being canceled") from None
        else:
            raise Conflict(f"job {job_id} is already {state}; there is nothing to cancel")
        return self.get(job_id)

    def _cancel_queued(self, job: JobRecord) -> None:
        """Cancel a job no worker has taken, and wake the requests waiting for it."""
        self.queue.cancel(job)
        self.redis.publish(key_for(ENDED_CHANNEL, job.id), "canceled")

    # --- views --------------------------------------------------------------------------------
    def view(self, job: JobRecord) -> dict[str, Any]:
        """The JSON a user reads about a job (the `JobView` schema)."""
        return job_view(job, self.kind(job), self.queue)
