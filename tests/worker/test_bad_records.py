"""A record in a queue that is not the API's never takes a worker down (issue 19, item 9).

Whoever can write to Redis can push any hash's id on a queue. RQ raised while reading such a
job (`timeout: "xyz"`, `created_at: "garbage"`, `status: "bogus"`, a bad `result_ttl`) and
its work loop ended on it: the worker left `work()` with exit 0, and nothing served the queue.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis
from fastapi.testclient import TestClient

from contract import SPP_QUEUE, TASKS
from contract.rq_queue import queue_for
from tests.api.conftest import TINY, WorkerProcess, wait_for
from tests.api.test_resilience import wait_until

# One field each that RQ cannot read (the whole record is then unreadable) ...
UNREADABLE = {
    "timeout": "xyz",
    "created_at": "garbage",
    "status": "bogus",
    "result_ttl": "a week",
    "enqueued_at": "yesterday",
    "retries_left": "many",
}
# ... and a value RQ reads but the API never writes: the worker applies its own timeout.
ODD_TIMEOUT = "-5"


def push_record(store: redis.Redis, job_id: str, field: str, value: str) -> None:
    """A job as the API would queue it, with one field replaced, pushed on the spp queue."""
    queue = queue_for(SPP_QUEUE, store)
    job = queue.create_job(TASKS[SPP_QUEUE], args=({**TINY, "seed": 7},), job_id=job_id)
    job.save()
    store.hset(job.key, field, value)
    store.rpush(queue.key, job_id)


def status_of(store: redis.Redis, job_id: str) -> str | None:
    value = store.hget(f"rq:job:{job_id}", "status")
    return value.decode() if value else None


def test_records_that_are_not_the_apis_are_dropped_or_failed_and_the_worker_goes_on(
    client: TestClient, start_worker: Callable[..., WorkerProcess], store: redis.Redis
) -> None:
    worker = start_worker()
    bad = {f"bad-{field}": (field, value) for field, value in UNREADABLE.items()}
    for job_id, (field, value) in bad.items():
        push_record(store, job_id, field, value)
    push_record(store, "odd-timeout", "timeout", ODD_TIMEOUT)

    following = client.post("/v1/spp", json=TINY).json()["id"]
    view = wait_for(client, following, ("finished", "failed"), timeout=60)
    assert view["state"] == "finished", view
    assert worker.process.poll() is None, worker.log_path.read_text()

    queue = queue_for(SPP_QUEUE, store)
    assert store.llen(queue.key) == 0
    assert store.llen(f"{queue.key}:intermediate") == 0
    log = worker.log_path.read_text()
    for job_id, (field, _) in bad.items():
        assert status_of(store, job_id) == "failed", (job_id, log)
        assert job_id in log, f"nothing in the worker's log about {job_id} ({field}):\n{log}"
        assert f"{job_id}: its record cannot be read" in log, log
    assert wait_for(client, "odd-timeout", ("finished", "failed"))["state"] == "finished"

    # Still serving, seconds later (RQ's maintenance reads the queue's lists again).
    time.sleep(1)
    again = client.post("/v1/spp", json={**TINY, "seed": 3}).json()["id"]
    assert wait_for(client, again, ("finished", "failed"))["state"] == "finished"
    assert wait_until(lambda: worker.process.poll() is None, timeout=1)
