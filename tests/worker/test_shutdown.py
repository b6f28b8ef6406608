"""An idle worker exits within a few seconds of SIGTERM, every time (issue 19, item 1).

rq 3.0.0 reads its pub/sub channel (stop-job commands) 60 s at a time and, on shutdown, sends
UNSUBSCRIBE and then joins that thread with no timeout; when the thread had already read the
UNSUBSCRIBE reply it waited out the rest of the 60 s, so about one SIGTERM in eight under load
took a minute (Docker kills after 10 s, and the suite's teardowns timed out).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from contract import connect
from contract.rq_queue import SERIALIZER, queue_for
from tests.api.conftest import TINY, WorkerProcess
from worker.main import PUBSUB_STOP_TIMEOUT, JobWorker, build_worker
from worker.settings import WorkerSettings

EXIT_SECONDS = 8.0  # SIGTERM to exit: the pub/sub stop (2 s) and a loaded machine's slack


def test_unsubscribing_returns_within_its_timeout_whatever_the_thread_is_reading(
    redis_url: str,
) -> None:
    """The race that held the worker: the pub/sub thread reads UNSUBSCRIBE's reply before its
    running flag is cleared, then waits for a subscription that never comes. Sent here on
    purpose before every stop, so the old code waits 60 s on the first try."""
    connection = connect(WorkerSettings(redis_url=redis_url), blocking=True)
    worker = JobWorker(
        [queue_for("spp", connection)],
        connection=connection,
        serializer=SERIALIZER,
        heartbeat_ttl=6,
    )
    for _ in range(3):
        worker.subscribe()
        thread, pubsub = worker.pubsub_thread, worker.pubsub
        deadline = time.monotonic() + 5
        while not pubsub.subscribed and time.monotonic() < deadline:
            time.sleep(0.01)
        pubsub.unsubscribe()  # the reply reaches the thread first
        time.sleep(0.2)
        started = time.monotonic()
        worker.unsubscribe()
        took = time.monotonic() - started
        assert took < PUBSUB_STOP_TIMEOUT + 1.0, f"unsubscribe took {took:.1f} s"
        assert worker.pubsub_thread is None
        assert thread is not None and thread.daemon  # cannot hold the process at exit
    connection.close()


@pytest.mark.slow
def test_an_idle_worker_exits_within_seconds_of_sigterm_every_time(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    for attempt in range(4):
        worker = start_worker()
        time.sleep(0.5 + 0.3 * attempt)  # idle in its dequeue, its pub/sub thread reading
        started = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        worker.process.wait(timeout=60)
        took = time.monotonic() - started
        assert took < EXIT_SECONDS, f"try {attempt}: SIGTERM to exit took {took:.1f} s\n" + (
            worker.log_path.read_text()
        )
        assert worker.process.returncode == 0


def test_a_sigterm_as_a_job_starts_stops_the_worker_after_that_job(
    client: TestClient, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM between a job's dequeue and the start of its body (RQ's BUSY state): RQ raised
    StopRequested inside the job's handling, so the job failed ('could not be handled') and
    the request was forgotten: the worker went on serving and never exited (seen as a
    30 s teardown timeout in tests/api/test_spp_jobs.py, about one run in eight). Now the job
    runs to its end and the worker stops before the next one."""
    first = client.post("/v1/spp", json={**TINY, "seed": 1}).json()["id"]
    second = client.post("/v1/spp", json={**TINY, "seed": 2}).json()["id"]
    settings = WorkerSettings(redis_url=redis_url, worker_plugins=[], heartbeat_ttl=6)
    worker = build_worker(settings)
    signalled = []
    prepare = JobWorker.prepare_execution

    def prepare_then_sigterm(self: JobWorker, job: Any) -> Any:
        if not signalled:  # the signal arrives once the job is dequeued, before its body
            signalled.append(job.id)
            os.kill(os.getpid(), signal.SIGTERM)
        return prepare(self, job)

    monkeypatch.setattr(JobWorker, "prepare_execution", prepare_then_sigterm)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        worker.work(with_scheduler=False, max_jobs=2)  # before the fix, it ran both
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        worker.connection.close()
    assert signalled == [first]
    assert client.get(f"/v1/jobs/{first}").json()["state"] == "finished"
    assert client.get(f"/v1/jobs/{second}").json()["state"] == "queued"
