"""`python -m worker`: an RQ worker for the nfcore queues (SPPs and training runs).

It is a `SimpleWorker` (jobs run in this process, no fork), so torch is imported once and a
GPU keeps one CUDA context across jobs, and CUDA is never initialized in a process that forks.
What RQ's forking worker does not give it, or gets wrong for it, is added here:
- only our own tasks run (`contract.TaskJob`): a job naming any other function, a
  callback or a webhook fails, and nothing it names is imported or called;
- a heartbeat thread renews the running job's own execution record, so a job whose worker is
  killed (SIGKILL, out of memory) is seen as abandoned within `HEARTBEAT_TTL` seconds and
  retried or failed; an idle worker heartbeats every third of it, so `/readyz` can tell a live
  worker from a dead record;
- after a Redis outage mid-job, nothing of the interrupted job is kept: each job starts from
  a clean execution state;
- a worker restarted under the `WORKER_NAME` of one that died takes over its record at once
  (same host, process gone) or once the record stops heartbeating (another host);
- a cold shutdown (a second SIGTERM or Ctrl-C) during a job queues the job again;
- cooperative stopping: RQ's stop-job command sets a flag the job checks after every block.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from typing import Any

import redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.utils import as_text, now, utcparse
from rq.worker import WorkerStatus
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

from contract import (
    ENDED_CHANNEL,
    META_PROGRESS,
    SERIALIZER,
    TaskJob,
    advertise,
    connect,
    key_for,
    plugin_queue,
    queue_for,
    redact_url,
    refusal,
)
from contract.reaper import reap_abandoned
from worker.plugins import descriptions
from worker.settings import WorkerSettings, get_settings
from worker.stopping import stop_requested

log = logging.getLogger("worker")

# Seconds between looks at a same-named worker's record while waiting to see if it lives.
TAKEOVER_POLL = 0.5
# How long the pub/sub thread (RQ's stop-job commands) blocks in one read, and how long a
# shutdown waits for it. RQ reads for 60 s at a time and joins the thread with no timeout,
# so an idle worker could take a minute to exit on SIGTERM (Docker kills after 10 s).
PUBSUB_POLL = 1.0
PUBSUB_STOP_TIMEOUT = 2.0


class WorkerNameTaken(RuntimeError):
    """Another live worker already runs under this WORKER_NAME."""


class JobWorker(SimpleWorker):
    """A SimpleWorker for our tasks only, with heartbeats during a job, clean state after a
    Redis outage, takeover of a dead namesake's record, and cooperative stop-job handling."""

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

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is None and not self.connection.sismember(REDIS_WORKER_KEYS, self.key):
            # Redis lost this worker (restarted empty, or flushed), maybe while a job ran, whose
            # heartbeats wrote part of its record back but not its place in the list of
            # workers: register again, so /readyz and the plugin list count it. The partial
            # record is this process's own.
            self.connection.delete(self.key)
            self.register_birth()
        super().heartbeat(timeout, pipeline)
        if pipeline is None:
            self._advertise()

    def _beat(self, job: Job, execution: Any, done: threading.Event) -> None:
        """Renew this job's own execution (never one RQ still holds from an interrupted job)."""
        while not done.wait(self.heartbeat_ttl / 3):
            try:
                self.maintain_heartbeats(job, execution)
            except redis.RedisError as error:  # Redis away for a moment: try again next beat
                log.warning("heartbeat for job %s failed: %s", job.id, error)

    # --- birth: take over the record of a dead worker of the same name -------------------------
    def register_birth(self) -> None:
        self._take_over_dead_namesake()
        super().register_birth()
        self._advertise()

    def _advertise(self) -> None:
        """Renew the descriptions of this worker's plugins (`contract.plugins`)."""
        if self.plugin_descriptions:
            advertise(self.connection, self.plugin_descriptions, get_settings().result_ttl)

    def _take_over_dead_namesake(self) -> None:
        record = self._record()
        if record is None:
            return
        first_beat = record.get("last_heartbeat")
        while not self._is_dead(record):
            time.sleep(TAKEOVER_POLL)
            record = self._record()
            if record is None:
                return
            if record.get("last_heartbeat") != first_beat:
                raise WorkerNameTaken(
                    f"a live worker named {self.name!r} already runs (host "
                    f"{record.get('hostname')}, pid {record.get('pid')}); give this one another "
                    "WORKER_NAME"
                )
        log.warning(
            "worker %s: taking over the record of a dead worker of the same name (host %s, "
            "pid %s, last heartbeat %s)",
            self.name,
            record.get("hostname"),
            record.get("pid"),
            record.get("last_heartbeat"),
        )
        self._bury(record)

    def _record(self) -> dict[str, str] | None:
        """The same-named worker's record, or None when there is none or it registered death."""
        raw = self.connection.hgetall(self.key)
        record = {as_text(key): as_text(value) for key, value in raw.items()}
        return record if record and "death" not in record else None

    def _is_dead(self, record: dict[str, str]) -> bool:
        """On this host with its process gone (or it was this very process, restarted as PID
        1 of a container), or no heartbeat for HEARTBEAT_TTL seconds."""
        if record.get("hostname") == socket.gethostname():
            pid = int(record["pid"]) if record.get("pid", "").isdigit() else None
            if pid == os.getpid() or (pid is not None and not _process_exists(pid)):
                return True
        try:
            last = utcparse(record["last_heartbeat"])
        except (KeyError, ValueError):
            return True
        return (now() - last).total_seconds() > self.heartbeat_ttl

    def _bury(self, record: dict[str, str]) -> None:
        """Remove the dead worker's record, and let its running job be reaped at once."""
        members = [as_text(m) for m in self.connection.smembers(self.executions_key)]
        with self.connection.pipeline() as pipe:
            for member in members:
                job_id = member.rsplit(":", 1)[0]
                origin = self.connection.hget(TaskJob.key_for(job_id), "origin")
                if origin:
                    registry = queue_for(as_text(origin), self.connection).started_job_registry
                    pipe.zadd(registry.key, {member: 0}, xx=True)  # expired: abandoned now
            for name in (record.get("queues") or "").split(","):
                if name:
                    pipe.srem(WORKERS_BY_QUEUE_KEY % name, self.key)
            pipe.srem(self.redis_workers_keys, self.key)
            pipe.delete(self.key, self.executions_key)
            pipe.execute()
        if members:
            reap_abandoned(self.connection, get_settings())

    # --- running a job -------------------------------------------------------------------------
    def execute_job(self, job: Job, queue: Queue) -> None:
        reason = refusal(job)
        if reason is not None:
            self._refuse(job, queue, reason)
            return
        stop_requested.clear()
        done = threading.Event()
        beat: threading.Thread | None = None
        try:
            self._forget_executions()
            execution = self.prepare_execution(job)
            beat = threading.Thread(target=self._beat, args=(job, execution, done), daemon=True)
            beat.start()
            self.perform_job(job, queue, execution)
            self.set_state(WorkerStatus.IDLE)
            self._announce_end(job)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            # Redis went away mid-job and RQ could not record the outcome. Stay alive: once
            # Redis is back, the reaper retries the job if Redis kept it.
            log.warning("Redis unreachable during job %s (%s); waiting for it", job.id, error)
            self._wait_for_redis()
        finally:
            done.set()
            if beat is not None:
                beat.join()
            stop_requested.clear()
            self.executions.clear()
            self._executions = []
        if self._cold_shutdown:
            raise SystemExit()

    def _refuse(self, job: Job, queue: Queue, reason: str) -> None:
        """Fail a job that is not one of ours without running, importing or retrying anything
        of it (TaskJob.func would refuse it too)."""
        log.warning("worker %s: refused job %s: %s", self.name, job.id, reason)
        job.retries_left = None
        job.ended_at = now()
        self.handle_job_failure(
            job,
            queue,
            started_job_registry=queue.started_job_registry,
            exc_string=f"RefusedJob: this job was not run: {reason}",
        )
        self.set_state(WorkerStatus.IDLE)
        self._announce_end(job)

    def _announce_end(self, job: Job) -> None:
        """Tell the API's waiting requests that the job's final state is in Redis."""
        self.connection.publish(key_for(ENDED_CHANNEL, job.id), "ended")

    def _forget_executions(self) -> None:
        """One job at a time: any execution this worker still lists belongs to a job that an
        outage interrupted, in memory (RQ's cache of them) and in Redis."""
        self.executions.clear()
        self._executions = []
        self.connection.delete(self.executions_key)

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        if exc_info and isinstance(exc_info[1], SystemExit | KeyboardInterrupt):
            # A cold shutdown (second SIGTERM or Ctrl-C) interrupted the job: queue it again,
            # from the start and without spending one of its retries; then the worker exits.
            log.warning("worker %s shut down during job %s; it is queued again", self.name, job.id)
            self._cold_shutdown = True
            job.retries_left = (job.retries_left or 0) + 1
            progress = job.meta.get(META_PROGRESS)
            if isinstance(progress, dict):
                job.meta[META_PROGRESS] = {**progress, "done": 0}
        super().handle_exception(job, *exc_info)

    def kill_horse(self, sig: object = None) -> None:
        # RQ's stop-job command lands here (from the pub/sub thread); there is no horse.
        stop_requested.set()

    def clean_registries(self) -> None:
        # Grant abandoned jobs their retries before RQ's own cleanup fails them.
        reap_abandoned(self.connection, get_settings())
        super().clean_registries()

    def _wait_for_redis(self) -> None:
        delay = 0.5
        while True:
            try:
                self.connection.ping()
                return
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(delay)
                delay = min(2 * delay, 10.0)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


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
    from nfcore.plugins import installed

    return bool(installed())


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = get_settings()
    worker = build_worker(settings)
    from nfcore.devices import resolve_device  # torch: this process runs jobs, never forks

    log.info(
        "worker %s on queues %s, device %s (WORKER_DEVICE=%s), Redis %s",
        worker.name,
        ",".join(worker.queue_names()),
        resolve_device(settings.worker_device),
        settings.worker_device,
        redact_url(settings.redis_url),
    )
    try:
        worker.work(with_scheduler=False)
    except WorkerNameTaken as error:
        log.error("%s", error)
        raise SystemExit(1) from None
