"""`python -m worker`: an RQ worker for the nfcore queues.

It is a `SimpleWorker` (jobs run in this process, no fork), so torch is imported once and a
GPU keeps one CUDA context across jobs, and CUDA is never initialized in a process that forks.
Two things a forking worker gets for free are added here:
- a heartbeat thread, so a job whose worker is killed (SIGKILL, out of memory) is seen as
  abandoned within `HEARTBEAT_TTL` seconds and retried or failed by the registry cleanup;
- cooperative stopping: RQ's stop-job command sets a flag the job checks after every block.
"""

from __future__ import annotations

import logging
import threading
import time

import redis
from rq import Queue, SimpleWorker
from rq.job import Job

from api.contract import SERIALIZER, connect, redact_url
from api.reaper import reap_abandoned
from worker.settings import WorkerSettings, get_settings
from worker.stopping import stop_requested

log = logging.getLogger("worker")


class SPPWorker(SimpleWorker):
    """A SimpleWorker with heartbeats during a job and cooperative stop-job handling."""

    heartbeat_ttl = 30

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # Short on purpose: the heartbeat thread renews it while the job is alive.
        return self.heartbeat_ttl

    def clean_registries(self) -> None:
        # Grant abandoned jobs their retries before RQ's own cleanup fails them.
        reap_abandoned(self.connection, get_settings())
        super().clean_registries()

    def kill_horse(self, sig: object = None) -> None:
        # RQ's stop-job command lands here (from the pub/sub thread); there is no horse.
        stop_requested.set()

    def execute_job(self, job: Job, queue: Queue) -> None:
        stop_requested.clear()
        done = threading.Event()
        beat = threading.Thread(target=self._beat, args=(job, done), daemon=True)
        beat.start()
        try:
            super().execute_job(job, queue)
        except (redis.ConnectionError, redis.TimeoutError) as error:
            # Redis went away mid-job and RQ could not record the outcome. Stay alive: once
            # Redis is back, the reaper retries the job if Redis kept it.
            log.warning("Redis unreachable during job %s (%s); waiting for it", job.id, error)
            self._wait_for_redis()
        finally:
            done.set()
            beat.join()
            stop_requested.clear()

    def _wait_for_redis(self) -> None:
        delay = 0.5
        while True:
            try:
                self.connection.ping()
                return
            except (redis.ConnectionError, redis.TimeoutError):
                time.sleep(delay)
                delay = min(2 * delay, 10.0)

    def heartbeat(self, timeout: int | None = None, pipeline: object = None) -> None:
        if pipeline is None and not self.connection.exists(self.key):
            # Redis came back empty: register again, so /readyz counts this worker.
            self.register_birth()
        super().heartbeat(timeout, pipeline)

    def _beat(self, job: Job, done: threading.Event) -> None:
        while not done.wait(self.heartbeat_ttl / 3):
            execution = self.execution
            if execution is None:
                continue
            try:
                self.maintain_heartbeats(job, execution)
            except redis.RedisError as error:  # Redis away for a moment: try again next beat
                log.warning("heartbeat for job %s failed: %s", job.id, error)


def build_worker(settings: WorkerSettings) -> SPPWorker:
    connection = connect(settings, blocking=True)
    queues = [
        Queue(name, connection=connection, serializer=SERIALIZER) for name in settings.worker_queues
    ]
    worker = SPPWorker(
        queues, connection=connection, serializer=SERIALIZER, name=settings.worker_name
    )
    worker.heartbeat_ttl = settings.heartbeat_ttl
    return worker


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = get_settings()
    worker = build_worker(settings)
    from nfcore.spp import resolve_device  # torch: this process runs the jobs, never forks

    log.info(
        "worker %s on queues %s, device %s (WORKER_DEVICE=%s), Redis %s",
        worker.name,
        ",".join(settings.worker_queues),
        resolve_device(settings.worker_device),
        settings.worker_device,
        redact_url(settings.redis_url),
    )
    worker.work(with_scheduler=False)
