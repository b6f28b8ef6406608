"""A worker stays in view (`/readyz`, the plugin list) after a stall or a Redis hiccup
(issue 19, item 8).

RQ lets a worker's hash expire `worker_ttl + 60` s after its last heartbeat. A worker frozen
for longer (SIGSTOP, a laptop asleep, memory pressure) wakes up to a heartbeat that writes
back only `last_heartbeat`; it was still in RQ's set of workers, so it did not register
again, and every reader of the list (which wants its `queues`) stopped counting it for good.
Here the expiry is made at once: the worker is frozen, its hash deleted as the expiry would
leave it (its places in the sets kept), and thawed.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable

import redis
from fastapi.testclient import TestClient
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

from contract import SPP_QUEUE, TRAIN_QUEUE
from tests.api.conftest import TINY, WorkerProcess, wait_for
from tests.api.test_resilience import running_with_progress, wait_until
from tests.api.test_train_jobs import TINY_TRAIN

BACK_IN_VIEW = 8.0  # seconds: a heartbeat (every HEARTBEAT_TTL / 3 = 2 s) and a loaded machine
LONG_TRAIN = {**TINY_TRAIN, "steps": 5000, "eval_every": 5000, "seed": 22}  # about a minute


def spp_workers(client: TestClient) -> int:
    return client.get("/readyz").json()["workers"][SPP_QUEUE]


def test_a_worker_whose_record_expired_while_it_was_frozen_comes_back_into_view(
    make_client: Callable[..., TestClient],
    start_worker: Callable[..., WorkerProcess],
    store: redis.Redis,
) -> None:
    worker = start_worker(WORKER_NAME="w-frozen")
    client = make_client()
    assert wait_until(lambda: spp_workers(client) == 1, timeout=10)
    key = "rq:worker:w-frozen"

    worker.process.send_signal(signal.SIGSTOP)
    try:
        store.delete(key)  # what RQ's expiry leaves: no hash, still in the sets
        assert store.sismember(REDIS_WORKER_KEYS, key)
        assert store.sismember(WORKERS_BY_QUEUE_KEY % SPP_QUEUE, key)
    finally:
        worker.process.send_signal(signal.SIGCONT)

    # Its next heartbeat writes the hash back (RQ's `last_heartbeat`, maybe no more) before
    # anyone reads the list: a reader would drop a missing key from the sets itself.
    assert wait_until(lambda: store.exists(key), timeout=BACK_IN_VIEW, interval=0.05)
    started = time.monotonic()
    back = wait_until(lambda: spp_workers(client) == 1, timeout=BACK_IN_VIEW, interval=0.2)
    record = {k.decode(): v.decode() for k, v in store.hgetall(key).items()}
    assert back, f"/readyz: {client.get('/readyz').json()}; the worker's hash: {record}"
    assert set(record["queues"].split(",")) == {SPP_QUEUE, TRAIN_QUEUE}
    assert "birth" in record
    assert time.monotonic() - started < BACK_IN_VIEW

    job_id = client.post("/v1/spp", json=TINY).json()["id"]
    assert wait_for(client, job_id, ("finished", "failed"))["state"] == "finished"
    assert worker.process.poll() is None


def test_a_worker_left_out_of_its_queues_list_registers_again(
    make_client: Callable[..., TestClient],
    start_worker: Callable[..., WorkerProcess],
    store: redis.Redis,
) -> None:
    """RQ's cleanup of a queue's list of workers removes a key that is missing at that moment;
    the worker must put itself back in every list it belongs to."""
    start_worker(WORKER_NAME="w-unlisted")
    client = make_client()
    assert wait_until(lambda: spp_workers(client) == 1, timeout=10)
    key = "rq:worker:w-unlisted"
    store.srem(WORKERS_BY_QUEUE_KEY % SPP_QUEUE, key)

    assert wait_until(
        lambda: store.sismember(WORKERS_BY_QUEUE_KEY % SPP_QUEUE, key), timeout=BACK_IN_VIEW
    ), "the worker did not put itself back in the spp queue's list of workers"


def test_a_worker_whose_record_redis_lost_mid_job_is_back_in_view_before_the_job_ends(
    make_client: Callable[..., TestClient],
    start_worker: Callable[..., WorkerProcess],
    store: redis.Redis,
) -> None:
    """A job of minutes: the worker must not stay out of view until it ends."""
    start_worker(WORKER_NAME="w-busy")
    client = make_client()
    job_id = client.post("/v1/train", json=LONG_TRAIN).json()["id"]
    try:
        running_with_progress(client, job_id)
        key = "rq:worker:w-busy"
        store.delete(key)
        store.srem(REDIS_WORKER_KEYS, key)
        for name in (SPP_QUEUE, TRAIN_QUEUE):
            store.srem(WORKERS_BY_QUEUE_KEY % name, key)

        back = wait_until(lambda: spp_workers(client) == 1, timeout=BACK_IN_VIEW, interval=0.2)
        assert back, f"/readyz: {client.get('/readyz').json()}"
        assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "running"
    finally:  # a worker stopped with SIGTERM finishes its job first
        client.delete(f"/v1/jobs/{job_id}")
    assert wait_for(client, job_id, ("finished", "failed", "canceled"))["state"] == "canceled"
