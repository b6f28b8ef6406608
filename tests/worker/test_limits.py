"""A job that runs out of time or memory is stopped, fails saying so, and is not retried on the
next worker, which would end the same way (issue 19, item 2).

Before: RQ's timeout was an `Exception` that code catching every exception swallowed (the
plugin cost count did, and the job went on to build a network of 1.8e10 parameters); the
kernel's OOM killer then ended the worker, and the reaper ran the job again on the next one.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable

import pytest
import redis
from fastapi.testclient import TestClient
from rq.job import JobStatus

from contract import SPP_QUEUE, ServiceSettings, key_for
from contract.keys import MEMORY_KEY
from contract.reaper import reap_abandoned
from contract.rq_queue import RQJobQueue, queue_for
from tests.api.conftest import SLOW, TINY, WorkerProcess, wait_for
from tests.api.test_train_jobs import TINY_TRAIN
from worker.guards import JobLimits, JobOutOfMemory, JobOutOfTime, Limits, rss_bytes

DONE = ("finished", "failed", "canceled")
MB = 10**6
LONG_TRAIN = {**TINY_TRAIN, "steps": 5000, "eval_every": 5000, "seed": 21}


def swallowing(work: Callable[[], None], seconds: float) -> None:
    """Code that catches every exception (a plugin's, a library's) and carries on."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # `except Exception: pass`
            work()


def test_a_timeout_is_not_swallowed_by_code_that_catches_every_exception() -> None:
    started = time.monotonic()
    with pytest.raises(JobOutOfTime, match="ran for over 1 s"), JobLimits(1, limits=Limits(1)):
        swallowing(lambda: time.sleep(0.05), seconds=10)
    assert time.monotonic() - started < 3


@pytest.mark.skipif(rss_bytes() is None, reason="no /proc to read the RSS from")
def test_memory_over_the_limit_stops_the_job_even_where_it_catches_every_exception() -> None:
    limit = rss_bytes() + 100 * MB  # type: ignore[operator]
    seen: list[int] = []
    kept: list[bytearray] = []

    def grow() -> None:
        kept.append(bytearray(10 * MB))  # written: resident, not just reserved
        time.sleep(0.01)

    limits = Limits(seconds=60, memory_bytes=limit, on_over=seen.append)
    with pytest.raises(JobOutOfMemory) as stopped, JobLimits(60, limits=limits):
        swallowing(grow, seconds=20)
    kept.clear()
    assert "over the worker's limit" in str(stopped.value)
    assert "not retried" in str(stopped.value)
    assert seen and seen[0] > limit  # recorded for the reaper, once
    assert len(seen) == 1


@pytest.mark.slow
def test_a_job_over_the_workers_memory_limit_fails_on_its_first_attempt_and_the_worker_goes_on(
    client: TestClient, start_worker: Callable[..., WorkerProcess], store: redis.Redis
) -> None:
    # The default limit: the RSS when a job starts plus 1.5 x MAX_MEMORY_BYTES, here 150 MB.
    # SLOW grows by about 760 MB on a CPU; TINY by about 20.
    worker = start_worker(MAX_MEMORY_BYTES=str(100 * MB))
    job_id = client.post("/v1/spp", json=SLOW).json()["id"]

    view = wait_for(client, job_id, DONE, timeout=60)
    assert view["state"] == "failed", view
    assert "of memory, over the worker's limit of" in view["error"], view["error"]
    assert "it was stopped and is not retried" in view["error"]
    assert view["attempt"] == 1
    assert view["progress"]["done"] < view["progress"]["total"]  # stopped part way
    record = json.loads(store.get(key_for(MEMORY_KEY, job_id)))
    assert record["rss_bytes"] > record["limit_bytes"]

    following = client.post("/v1/spp", json=TINY).json()["id"]
    assert wait_for(client, following, DONE)["state"] == "finished"
    again = client.get(f"/v1/jobs/{job_id}").json()
    assert again["state"] == "failed" and again["attempt"] == 1  # not run again
    assert worker.process.poll() is None


@pytest.mark.slow
def test_a_job_over_its_queues_timeout_fails_on_its_first_attempt(
    client: TestClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker(TRAIN_JOB_TIMEOUT="10")  # the API's is an hour: the worker's holds
    job_id = client.post("/v1/train", json=LONG_TRAIN).json()["id"]  # about a minute
    try:
        view = wait_for(client, job_id, DONE, timeout=60)
    finally:  # a worker stopped with SIGTERM finishes its job first
        client.delete(f"/v1/jobs/{job_id}")
    assert view["state"] == "failed", view
    assert "ran for over 10 s" in view["error"] and "not retried" in view["error"], view
    assert view["attempt"] == 1
    following = client.post("/v1/spp", json=TINY).json()["id"]
    assert wait_for(client, following, DONE)["state"] == "finished"
    assert worker.process.poll() is None


# --- the reaper: a worker that died near its memory limit -----------------------------------------


def started_and_abandoned(client: TestClient, store: redis.Redis, seed: int) -> str:
    """A job as the API queues it, then as a worker leaves it when the kernel kills it:
    started, its execution's heartbeat long expired."""
    job_id = client.post("/v1/spp", json={**TINY, "seed": seed}).json()["id"]
    queue = queue_for(SPP_QUEUE, store)
    store.lrem(queue.key, 0, job_id)
    store.hset(f"rq:job:{job_id}", "status", JobStatus.STARTED.value)
    store.zadd(queue.started_job_registry.key, {f"{job_id}:dead-execution": 1})
    return job_id


def remember(store: redis.Redis, job_id: str, rss: int, limit: int) -> None:
    store.set(key_for(MEMORY_KEY, job_id), json.dumps({"rss_bytes": rss, "limit_bytes": limit}))


def test_a_job_whose_worker_died_near_its_memory_limit_fails_saying_so_and_is_not_retried(
    client: TestClient, store: redis.Redis, redis_url: str
) -> None:
    near = started_and_abandoned(client, store, seed=1)
    remember(store, near, rss=int(9.5 * 2**30), limit=10 * 2**30)
    far = started_and_abandoned(client, store, seed=2)
    remember(store, far, rss=2**30, limit=10 * 2**30)
    unrecorded = started_and_abandoned(client, store, seed=3)

    assert (
        reap_abandoned(RQJobQueue(store), ServiceSettings(redis_url=redis_url, job_retries=1)) == 3
    )

    failed = client.get(f"/v1/jobs/{near}").json()
    assert failed["state"] == "failed", failed
    assert "9.50 GiB of memory, near its limit of 10.00 GiB" in failed["error"], failed
    assert "most likely ran out of memory" in failed["error"]
    assert "not retried" in failed["error"]
    for retried in (far, unrecorded):  # killed for another reason: run again
        assert client.get(f"/v1/jobs/{retried}").json()["state"] == "queued"


def test_a_record_in_the_started_registry_that_is_not_the_apis_does_not_stop_the_reaper(
    client: TestClient, store: redis.Redis, redis_url: str
) -> None:
    bogus = started_and_abandoned(client, store, seed=4)
    store.hset(f"rq:job:{bogus}", "created_at", "garbage")
    good = started_and_abandoned(client, store, seed=5)

    reap_abandoned(RQJobQueue(store), ServiceSettings(redis_url=redis_url, job_retries=1))

    assert client.get(f"/v1/jobs/{good}").json()["state"] == "queued"
    registry = queue_for(SPP_QUEUE, store).started_job_registry
    assert store.zcard(registry.key) == 0
