"""`python -m worker`: an RQ worker for the nfcore queues (SPPs and training runs).

It is a `SimpleWorker` (jobs run in this process, no fork), so torch is imported once and a
GPU keeps one CUDA context across jobs, and CUDA is never initialized in a process that forks.
What RQ's forking worker does not give it, or gets wrong for it, is added here:
- only our own tasks run (`contract.rq_queue.TaskJob`): a job naming any other function, a
  callback or a webhook fails, and nothing it names is imported or called;
- a heartbeat thread renews the running job's own execution record, so a job whose worker is
  killed (SIGKILL, out of memory) is seen as abandoned within `HEARTBEAT_TTL` seconds and
  retried or failed; an idle worker heartbeats every third of it, so `/readyz` can tell a live
  worker from a dead record. Each heartbeat during a job writes the job's `last_heartbeat`
  (RQ's field of the job's hash) and the worker's memory (`contract.keys.MEMORY_KEY`);
- the worker's record stays whole (`worker.record`): a worker restarted under the
  `WORKER_NAME` of one that died takes over its record, and a worker whose record Redis lost
  in part (a restart, a flush, a stall longer than the record's expiry) registers again;
- a short Redis outage during a job does not end it: progress writes are skipped meanwhile,
  and the result and the job's final state are tried again for up to `HEARTBEAT_TTL` seconds
  (`worker.outages`); after a longer one nothing of the interrupted job is kept, each job
  starts from a clean execution state;
- a job's limits (`worker.guards`): its queue's timeout, whatever the job's record says, and
  the worker's memory limit (WORKER_MAX_RSS_BYTES) end it with an exception that
  `except Exception` does not catch; a job that reached one fails and is not retried;
- a record in a queue that is not the API's never ends the worker: one that cannot be read is
  dropped (and marked failed), one that breaks RQ's handling is failed, and the worker goes on;
- a cold shutdown (a second SIGTERM or Ctrl-C) during a job queues the job again;
- cooperative stopping: RQ's stop-job command sets a flag the job checks after every block;
- an idle worker exits within seconds of SIGTERM (its pub/sub thread reads a second at a time).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job, JobStatus
from rq.utils import now
from rq.worker import WorkerStatus

from contract import ENDED_CHANNEL, META_PROGRESS, connect, key_for, plugin_queue, redact_url
from contract.keys import MEMORY_KEY
from contract.reaper import reap_abandoned
from contract.rq_queue import SERIALIZER, RQJobQueue, TaskJob, queue_for, refusal
from worker.guards import (
    MEMORY_SLACK,
    JobLimits,
    JobOverLimit,
    Limits,
    memory_limit_words,
    rss_bytes,
)
from worker.outages import UNREACHABLE, patiently
from worker.plugins import descriptions
from worker.record import WorkerNameTaken, WorkerRecord
from worker.settings import WorkerSettings, get_settings
from worker.stopping import stop_requested

log = logging.getLogger("worker")

# How long the pub/sub thread (RQ's stop-job commands) blocks in one read, and how long a
# shutdown waits for it. RQ reads for 60 s at a time and joins the thread with no timeout,
# so an idle worker could take a minute to exit on SIGTERM (Docker kills after 10 s).
PUBSUB_POLL = 1.0
PUBSUB_STOP_TIMEOUT = 2.0


class JobWorker(WorkerRecord, SimpleWorker):
    """A SimpleWorker for our tasks only, with heartbeats during a job, a record kept whole,
    jobs that live through short Redis outages, time and memory limits, and cooperative
    stop-job handling."""

    job_class = TaskJob

    def __init__(
        self,
        queues: list[Queue],
        *,
        heartbeat_ttl: int,
        plugin_descriptions: list[dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> None:
        self.heartbeat_ttl = heartbeat_ttl  # read by RQ's constructor (dequeue_timeout)
        self.plugin_descriptions = plugin_descriptions or []
        self._cold_shutdown = False
        self._waiting_for_job = False  # in the dequeue: a SIGTERM stops the worker at once
        self._limits = Limits(seconds=get_settings().spp_job_timeout)  # the running job's
        # worker_ttl: RQ lets the worker's own key expire 60 s after its last heartbeat.
        super().__init__(queues, worker_ttl=heartbeat_ttl, job_class=TaskJob, **kwargs)

    # --- commands (stop-job) -------------------------------------------------------------------
    def subscribe(self) -> None:
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=PUBSUB_POLL, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def unsubscribe(self) -> None:
        """Stop the pub/sub thread within PUBSUB_STOP_TIMEOUT seconds, whatever it is reading:
        it is a daemon thread, so one that does not stop in time does not hold the exit."""
        thread, pubsub = self.pubsub_thread, self.pubsub
        if thread is None or pubsub is None:
            return
        self.pubsub_thread = None
        thread.stop(timeout=PUBSUB_STOP_TIMEOUT)
        if not thread.is_alive():
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()

    # --- heartbeats ----------------------------------------------------------------------------
    @property
    def dequeue_timeout(self) -> int:
        # An idle worker heartbeats after every dequeue timeout: three times per HEARTBEAT_TTL,
        # so a worker whose last heartbeat is older than that is dead.
        return max(1, self.heartbeat_ttl // 3)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # Short on purpose: the heartbeat thread renews it while the job is alive.
        return self.heartbeat_ttl

    def _beat(self, job: Job, execution: Any, done: threading.Event) -> None:
        """Every third of HEARTBEAT_TTL: renew this job's own execution (never one RQ still
        holds from an interrupted job) and its `last_heartbeat`, record the worker's memory,
        and register this worker again if Redis lost its record meanwhile."""
        while not done.wait(self.heartbeat_ttl / 3):
            try:
                self.maintain_heartbeats(job, execution)
                rss = rss_bytes()
                if rss is not None:
                    self._record_memory(job.id, rss)
                self._register_if_lost()
            except redis.RedisError as error:  # Redis away for a moment: try again next beat
                log.warning("heartbeat for job %s failed: %s", job.id, error)
            except Exception:  # never end the beats of a running job: it would be reaped
                log.exception("heartbeat for job %s failed", job.id)

    def _record_memory(self, job_id: str, rss: int) -> None:
        """The worker's memory and its limit, for the reaper should the worker die."""
        limit = self._limits.memory_bytes
        if limit is None:
            return
        record = json.dumps({"rss_bytes": rss, "limit_bytes": limit})
        self.connection.set(key_for(MEMORY_KEY, job_id), record, ex=get_settings().result_ttl)

    # --- a queue's records ---------------------------------------------------------------------
    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """RQ's dequeue, but a job whose record cannot be read (not the API's: a `timeout` of
        "xyz", a `status` of "bogus") is dropped and the next one dequeued; RQ let the error
        end the work loop, and the worker exited."""
        while True:
            self._waiting_for_job = True
            try:
                return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
            except StopRequested:
                raise
            except Exception as error:
                job_id = getattr(error, "job_id", None)  # set by RQ on an error reading a job
                if job_id is None or isinstance(error, redis.RedisError):
                    raise
                self._drop_unreadable(str(job_id), getattr(error, "queue", None), error)
            finally:
                self._waiting_for_job = False

    def _shutdown(self) -> None:
        """A warm shutdown (the first SIGTERM or Ctrl-C): at once while waiting for a job;
        after the job while one is handled, from its dequeue to its end. RQ asks whether the
        worker is BUSY, a state it sets only once the job's body starts: a signal a moment
        before raised StopRequested inside the handling of the job, which failed it and
        forgot the request, and the worker never stopped."""
        if self._waiting_for_job:
            raise StopRequested()
        self._stop_requested = True
        self.set_shutdown_requested_date()

    def _drop_unreadable(self, job_id: str, queue: Queue | None, error: Exception) -> None:
        log.error(
            "worker %s: dropped job %s: its record cannot be read (%s: %s); it is marked "
            "failed and the worker goes on",
            self.name,
            job_id,
            type(error).__name__,
            str(error)[:200],
        )
        if queue is not None:  # RQ moved it there to start it (one queue: LMOVE)
            self.connection.lrem(IntermediateQueue.get_intermediate_queue_key(queue.key), 0, job_id)
        key = TaskJob.key_for(job_id)
        if self.connection.exists(key):  # not "queued" for ever to whoever reads it
            self.connection.hset(key, "status", JobStatus.FAILED.value)
        self.connection.publish(key_for(ENDED_CHANNEL, job_id), "ended")

    def run_maintenance_tasks(self) -> None:
        """RQ's cleanup of the registries, which reads their jobs: a record that is not the
        API's must not end the worker (RQ's work loop exits on any error it raises)."""
        try:
            super().run_maintenance_tasks()
        except redis.RedisError:
            raise
        except Exception:
            log.exception(
                "worker %s: cleaning the registries failed; the worker goes on", self.name
            )
            self.last_cleaned_at = now()

    # --- running a job -------------------------------------------------------------------------
    def execute_job(self, job: Job, queue: Queue) -> None:
        try:
            self._execute(job, queue)
        except UNREACHABLE as error:
            # Redis stayed away past the patience of the job's writes, and RQ could not record
            # the outcome. Stay alive: once Redis is back, the reaper retries the job if Redis
            # kept it.
            log.warning("Redis unreachable during job %s (%s); waiting for it", job.id, error)
            self._wait_for_redis()
        except Exception as error:
            # RQ's own handling of the job broke on its record (not the API's): fail the job
            # where Redis lets us, and serve the next one.
            log.exception("worker %s: job %s could not be handled; it is failed", self.name, job.id)
            with contextlib.suppress(Exception):
                self._fail(job, queue, f"BrokenJob: the worker could not handle this job: {error}")
        if self._cold_shutdown:
            raise SystemExit()

    def _execute(self, job: Job, queue: Queue) -> None:
        reason = refusal(job)
        if reason is not None:
            log.warning("worker %s: refused job %s: %s", self.name, job.id, reason)
            self._fail(job, queue, f"RefusedJob: this job was not run: {reason}")
            return
        stop_requested.clear()
        done = threading.Event()
        beat: threading.Thread | None = None
        try:
            self._forget_executions()
            self._limits = self._limits_for(job, queue)
            self.connection.delete(key_for(MEMORY_KEY, job.id))  # an earlier attempt's
            execution = self.prepare_execution(job)
            beat = threading.Thread(target=self._beat, args=(job, execution, done), daemon=True)
            beat.start()
            self.perform_job(job, queue, execution)
            self.set_state(WorkerStatus.IDLE)
            self._announce_end(job)
        finally:
            done.set()
            if beat is not None:
                beat.join()
            stop_requested.clear()
            self.executions.clear()
            self._executions = []

    def _fail(self, job: Job, queue: Queue, message: str) -> None:
        """Fail a job without running, importing or retrying anything of it (a job that is not
        one of ours: TaskJob.func would refuse it too)."""
        job.retries_left = None
        job.ended_at = now()
        self.handle_job_failure(
            job, queue, started_job_registry=queue.started_job_registry, exc_string=message
        )
        self.set_state(WorkerStatus.IDLE)
        self._announce_end(job)

    def _announce_end(self, job: Job) -> None:
        """Tell the API's waiting requests that the job's final state is in Redis (those that
        miss it, Redis being away, see it at their next look)."""
        with contextlib.suppress(*UNREACHABLE):
            self.connection.publish(key_for(ENDED_CHANNEL, job.id), "ended")

    def _forget_executions(self) -> None:
        """One job at a time: any execution this worker still lists belongs to a job that an
        outage interrupted, in memory (RQ's cache of them) and in Redis."""
        self.executions.clear()
        self._executions = []
        self.connection.delete(self.executions_key)

    # --- a job's limits (worker.guards) --------------------------------------------------------
    def _limits_for(self, job: Job, queue: Queue) -> Limits:
        """The job's timeout, at most its queue's (a record may say anything), and the memory
        limit: WORKER_MAX_RSS_BYTES, or the RSS now plus MEMORY_SLACK x MAX_MEMORY_BYTES."""
        settings = get_settings()
        longest = settings.job_timeout(queue.name)
        asked = job.timeout
        seconds = asked if isinstance(asked, int) and 0 < asked <= longest else longest
        rss = rss_bytes()
        if settings.worker_max_rss_bytes == 0 or rss is None:
            return Limits(seconds=seconds)
        memory = settings.worker_max_rss_bytes or rss + MEMORY_SLACK * settings.max_memory_bytes
        job_id = job.id

        def on_over(rss: int) -> None:  # from the memory thread: the kernel may be next
            with contextlib.suppress(redis.RedisError):
                self._record_memory(job_id, rss)

        return Limits(seconds=seconds, memory_bytes=int(memory), on_over=on_over)

    @property
    def death_penalty_class(self) -> Callable[..., JobLimits]:  # type: ignore[override]
        """What RQ runs a job's body in: RQ's timeout, with the worker's limits."""
        return functools.partial(JobLimits, limits=self._limits)

    # --- the end of a job ----------------------------------------------------------------------
    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        error = exc_info[1] if len(exc_info) > 1 else None
        if isinstance(error, SystemExit | KeyboardInterrupt):
            # A cold shutdown (second SIGTERM or Ctrl-C) interrupted the job: queue it again,
            # from the start and without spending one of its retries; then the worker exits.
            log.warning("worker %s shut down during job %s; it is queued again", self.name, job.id)
            self._cold_shutdown = True
            job.retries_left = (job.retries_left or 0) + 1
            progress = job.meta.get(META_PROGRESS)
            if isinstance(progress, dict):
                job.meta[META_PROGRESS] = {**progress, "done": 0}
        elif isinstance(error, JobOverLimit):
            # It would reach the same limit on the next worker.
            log.warning("worker %s: job %s stopped: %s", self.name, job.id, error)
            job.retries_left = None
        super().handle_exception(job, *exc_info)

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        ended = super().handle_execution_ended
        patiently(lambda: ended(job, queue, heartbeat_ttl), self.heartbeat_ttl, f"job {job.id}")

    def handle_job_success(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> None:
        succeeded = super().handle_job_success
        patiently(lambda: succeeded(job, queue, *args, **kwargs), self.heartbeat_ttl, job.id)

    def handle_job_failure(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> None:
        # RQ logs and forgets a failure it could not write: wait for Redis first.
        patiently(self.connection.ping, self.heartbeat_ttl, f"failure of job {job.id}")
        super().handle_job_failure(job, queue, *args, **kwargs)

    def kill_horse(self, sig: object = None) -> None:
        # RQ's stop-job command lands here (from the pub/sub thread); there is no horse.
        stop_requested.set()

    def clean_registries(self) -> None:
        # Grant abandoned jobs their retries before RQ's own cleanup fails them.
        reap_abandoned(RQJobQueue(self.connection), get_settings())
        super().clean_registries()

    def _wait_for_redis(self) -> None:
        delay = 0.5
        while True:
            try:
                self.connection.ping()
                return
            except UNREACHABLE:
                time.sleep(delay)
                delay = min(2 * delay, 10.0)


def build_worker(settings: WorkerSettings) -> JobWorker:
    """The worker of `settings`: its queues, and one queue per model plugin it serves (which
    loads torch and the plugins, so only where plugins are installed or asked for)."""
    connection = connect(settings, blocking=True)
    names = list(settings.worker_queues)
    described: list[dict[str, Any]] = []
    if settings.worker_plugins != [] and (settings.worker_plugins or installed_plugins()):
        described = descriptions()
        names += [plugin_queue(d["name"]) for d in described]
    queues = [queue_for(name, connection) for name in names]
    return JobWorker(
        queues,
        connection=connection,
        serializer=SERIALIZER,
        name=settings.worker_name,
        heartbeat_ttl=settings.heartbeat_ttl,
        plugin_descriptions=described,
    )


def installed_plugins() -> bool:
    from nfcore.foreign.plugins import installed

    return bool(installed())


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = get_settings()
    worker = build_worker(settings)
    from nfcore.engine.devices import resolve_device  # torch: this process runs jobs, never forks

    log.info(
        "worker %s on queues %s, device %s (WORKER_DEVICE=%s), Redis %s",
        worker.name,
        ",".join(worker.queue_names()),
        resolve_device(settings.worker_device),
        settings.worker_device,
        redact_url(settings.redis_url),
    )
    log.info("%s", memory_limit_words(settings))
    try:
        worker.work(with_scheduler=False)
    except WorkerNameTaken as error:
        log.error("%s", error)
        raise SystemExit(1) from None
