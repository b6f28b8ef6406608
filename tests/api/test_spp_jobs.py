"""POST /v1/spp and /v1/jobs on a real Redis with real workers: ids, progress, results, the
cache, deduplication, canceling and failures."""

from __future__ import annotations

import concurrent.futures
import csv
import io
import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue
from rq.job import Job, JobStatus

import nfcore
from api.jobs import JobService
from contract import SPP_QUEUE, JobRecord, JobState, key_for
from contract.rq_queue import SERIALIZER
from nfcore.spec.config import SPPConfig, config_hash
from nfcore.spec.result import block_keys
from tests.api.conftest import SLOW, TINY, wait_for

DONE = ("finished", "failed", "canceled")


def job_id_of(config: dict[str, Any]) -> str:
    return config_hash(SPPConfig(**config), nfcore.__version__)


def computations(store: redis.Redis, job_id: str) -> int:
    """Real computations of a job, as counted by the worker."""
    return int(store.get(key_for("computations", job_id)) or 0)


def queued_ids(store: redis.Redis) -> list[str]:
    return Queue(SPP_QUEUE, connection=store, serializer=SERIALIZER).get_job_ids()


def poll(
    client: TestClient, job_id: str, until: Callable[[dict], bool], timeout: float = 60
) -> list[dict]:
    """Every view of a job seen until one satisfies `until` or is final (the last one)."""
    deadline = time.monotonic() + timeout
    seen: list[dict] = []
    while time.monotonic() < deadline:
        seen.append(client.get(f"/v1/jobs/{job_id}").json())
        if until(seen[-1]) or seen[-1]["state"] in DONE:
            return seen
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never got there; last seen {seen[-1] if seen else None}")


def cli_blocks(config: dict[str, Any]) -> list[dict]:
    """The blocks `nfcore spp --out` writes for `config` on the CPU, computed here.

    With the worker's thread count (the fixture sets OMP_NUM_THREADS=1): CPU reductions split
    over another number of threads round differently in the last bits.
    """
    import torch

    from nfcore.engine.spp import run_spp

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return run_spp(SPPConfig(**config), device="cpu").to_json_dict()["blocks"]
    finally:
        torch.set_num_threads(threads)


# --- submitting, no worker ------------------------------------------------------------------
def test_post_queues_a_job_whose_id_is_the_config_hash(client: TestClient, store: redis.Redis):
    response = client.post("/v1/spp", json=TINY)

    assert response.status_code == 202
    job = response.json()
    job_id = job_id_of(TINY)
    assert job["id"] == job_id
    assert job["url"] == f"/v1/jobs/{job_id}"
    assert response.headers["location"] == job["url"]
    assert response.headers["x-cache"] == "miss"
    assert job["state"] == "queued"
    assert job["progress"] == {"done": 0, "total": 4}  # depth 14: four residual blocks
    assert job["enqueued_at"] is not None
    assert (job["started_at"], job["ended_at"], job["result_url"], job["error"]) == (None,) * 4
    assert queued_ids(store) == [job_id]


def test_the_same_config_however_spelled_is_one_queued_job(client: TestClient, store: redis.Redis):
    first = client.post("/v1/spp", json=TINY).json()
    # What `nfcore spp --out` writes as `config`: every default filled in.
    canonical = SPPConfig(**TINY).model_dump(mode="json")
    # The NF defaults written out, in another key order.
    spelled_out = {"alpha": 0.2, "conv": "ws", "gamma": "auto", **TINY, "layout": [1, 1, 1, 1]}

    for body in (TINY, canonical, spelled_out):
        again = client.post("/v1/spp", json=body)
        assert again.status_code == 202
        assert again.json()["id"] == first["id"]
        assert again.json()["enqueued_at"] == first["enqueued_at"]
    assert queued_ids(store) == [first["id"]]

    other = client.post("/v1/spp", json={**TINY, "seed": 1}).json()
    assert other["id"] == job_id_of({**TINY, "seed": 1}) != first["id"]
    assert queued_ids(store) == [first["id"], other["id"]]


def test_jobs_are_listed_newest_first_and_limited(client: TestClient):
    ids = [client.post("/v1/spp", json={**TINY, "seed": seed}).json()["id"] for seed in range(3)]

    listing = client.get("/v1/jobs")
    assert listing.status_code == 200
    assert [job["id"] for job in listing.json()["jobs"]] == ids[::-1]
    limited = client.get("/v1/jobs", params={"limit": 2}).json()["jobs"]
    assert [job["id"] for job in limited] == ids[::-1][:2]
    refused = client.get("/v1/jobs", params={"limit": 0})
    assert refused.status_code == 422
    assert "limit" in refused.json()["detail"]


def test_unknown_and_unfinished_jobs_answer_404_and_409(client: TestClient):
    for method, path in (
        ("GET", "/v1/jobs/no-such-job"),
        ("GET", "/v1/jobs/no-such-job/result"),
        ("DELETE", "/v1/jobs/no-such-job"),
    ):
        response = client.request(method, path)
        assert response.status_code == 404, (method, path)
        assert response.headers["content-type"] == "application/json"
        assert "no-such-job" in response.json()["detail"]

    job_id = client.post("/v1/spp", json=TINY).json()["id"]
    pending = client.get(f"/v1/jobs/{job_id}/result")
    assert pending.status_code == 409
    assert "queued" in pending.json()["detail"]
    assert client.get(f"/v1/jobs/{job_id}/result", params={"format": "xml"}).status_code == 422


# --- with a worker --------------------------------------------------------------------------
def test_worker_result_matches_the_cli_and_a_second_post_is_a_cache_hit(
    client: TestClient, start_worker: Callable, store: redis.Redis
):
    start_worker()
    job_id = client.post("/v1/spp", json=TINY).json()["id"]

    view = wait_for(client, job_id, DONE)
    assert view["state"] == "finished", view["error"]
    assert view["progress"] == {"done": 4, "total": SPPConfig(**TINY).num_blocks}
    assert view["device"] == "cpu"
    assert view["error"] is None
    assert view["result_url"] == f"/v1/jobs/{job_id}/result"
    enqueued, started, ended = (
        datetime.fromisoformat(view[key]) for key in ("enqueued_at", "started_at", "ended_at")
    )
    assert enqueued <= started <= ended
    assert view["run_seconds"] == pytest.approx((ended - started).total_seconds())

    response = client.get(view["result_url"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    result = response.json()
    assert result["config"] == SPPConfig(**TINY).model_dump(mode="json")
    assert result["blocks"] == cli_blocks(TINY)
    assert computations(store, job_id) == 1

    table = client.get(view["result_url"], params={"format": "csv"})
    assert table.status_code == 200
    assert table.headers["content-type"].startswith("text/csv")
    lines = table.text.splitlines()
    assert lines[0].split(",") == list(block_keys(extra_stats=False, gradients=False))
    rows = list(csv.DictReader(io.StringIO(table.text)))
    assert len(rows) == len(result["blocks"]) == 4
    assert [float(row["avg_channel_var"]) for row in rows] == [
        block["avg_channel_var"] for block in result["blocks"]
    ]

    hit = client.post("/v1/spp", json=TINY)
    assert hit.status_code == 200
    assert hit.headers["x-cache"] == "hit"
    assert hit.headers["location"] == f"/v1/jobs/{job_id}"
    assert hit.json() == result
    assert computations(store, job_id) == 1
    assert queued_ids(store) == []

    finished = client.delete(f"/v1/jobs/{job_id}")
    assert finished.status_code == 409
    assert "finished" in finished.json()["detail"]


def test_progress_of_a_slow_job_is_reported_while_it_runs(
    client: TestClient, start_worker: Callable
):
    start_worker()
    submitted = client.post("/v1/spp", json=SLOW).json()

    seen = poll(client, submitted["id"], lambda view: False)
    final = seen[-1]
    assert final["state"] == "finished", final["error"]
    # With gradients every block is measured twice: forward, then backward.
    total = 2 * SPPConfig(**SLOW).num_blocks
    assert final["progress"] == {"done": total, "total": total}
    running = [view["progress"] for view in seen if view["state"] == "running"]
    assert any(0 < p["done"] < p["total"] for p in running), running
    # A progress bar drawn from the queued job must not change its length once it runs.
    assert submitted["progress"]["total"] == total, (
        f"a queued job announces {submitted['progress']['total']} steps, "
        f"but runs {total} (forward and backward)"
    )


def test_fifty_identical_submissions_at_once_compute_once(
    client: TestClient, start_worker: Callable, store: redis.Redis
):
    start_worker()
    config = {**TINY, "seed": 50}
    job_id = job_id_of(config)

    def submit(_: int) -> tuple[int, str]:
        response = client.post("/v1/spp", json=config)
        return response.status_code, response.headers.get("location", response.text)

    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(submit, range(50)))

    assert {status for status, _ in answers} <= {200, 202}, answers
    assert {location for _, location in answers} == {f"/v1/jobs/{job_id}"}
    assert wait_for(client, job_id, DONE)["state"] == "finished"
    assert computations(store, job_id) == 1


def test_a_submission_that_meets_the_job_finishing_answers_with_its_result(
    client: TestClient, store: redis.Redis, monkeypatch: pytest.MonkeyPatch
):
    """The race behind a second computation of one config, made certain: the worker finishes
    the job between a submission's look at the cache and its look at the job."""
    assert client.post("/v1/spp", json=TINY).status_code == 202
    result = {"config": SPPConfig(**TINY).model_dump(mode="json"), "blocks": [], "meta": {}}
    fetch = JobService.fetch

    def fetch_as_the_worker_finishes(self: JobService, wanted: str) -> JobRecord | None:
        job = fetch(self, wanted)
        if job is not None and job.state == JobState.queued:
            # What the worker does at the end of a job: cache the result, then mark it finished.
            Queue(SPP_QUEUE, connection=store, serializer=SERIALIZER).remove(wanted)
            store.set(key_for("result", wanted), json.dumps(result))
            Job.fetch(wanted, connection=store, serializer=SERIALIZER).set_status(
                JobStatus.FINISHED
            )
            job = fetch(self, wanted)  # the job as it is now
        return job

    monkeypatch.setattr(JobService, "fetch", fetch_as_the_worker_finishes)
    response = client.post("/v1/spp", json=TINY)

    assert response.status_code == 200, "the finished job was queued to run again"
    assert response.json() == result
    assert queued_ids(store) == []


def test_a_canceled_queued_job_never_runs_and_can_be_submitted_again(
    client: TestClient, start_worker: Callable, store: redis.Redis
):
    job_id = client.post("/v1/spp", json=TINY).json()["id"]

    response = client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200
    assert response.json()["state"] == "canceled"
    assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "canceled"
    assert queued_ids(store) == []
    assert client.delete(f"/v1/jobs/{job_id}").status_code == 409
    assert client.get(f"/v1/jobs/{job_id}/result").status_code == 409

    # A job queued after it runs: once it has finished, the worker has passed the canceled one.
    later = client.post("/v1/spp", json={**TINY, "seed": 1}).json()["id"]
    start_worker()
    assert wait_for(client, later, DONE)["state"] == "finished"
    assert client.get(f"/v1/jobs/{job_id}").json()["state"] == "canceled"
    assert computations(store, job_id) == 0

    again = client.post("/v1/spp", json=TINY)
    assert again.status_code == 202
    assert again.json()["id"] == job_id
    assert again.json()["state"] == "queued"
    assert wait_for(client, job_id, DONE)["state"] == "finished"
    assert computations(store, job_id) == 1


def test_a_running_job_stops_on_delete_and_the_worker_goes_on(
    client: TestClient, start_worker: Callable, store: redis.Redis
):
    worker = start_worker()
    job_id = client.post("/v1/spp", json=SLOW).json()["id"]
    running = poll(client, job_id, lambda view: view["progress"]["done"] > 0)[-1]
    assert running["state"] == "running", running

    response = client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200
    assert response.json()["state"] in ("running", "canceled")

    view = wait_for(client, job_id, DONE, timeout=10)
    assert view["state"] == "canceled"
    assert view["progress"]["done"] < view["progress"]["total"]
    assert computations(store, job_id) == 0
    assert client.get(f"/v1/jobs/{job_id}/result").status_code == 409

    following = client.post("/v1/spp", json=TINY).json()["id"]
    assert wait_for(client, following, DONE)["state"] == "finished"
    assert worker.process.poll() is None


def test_a_job_that_raises_fails_with_its_message_and_the_worker_goes_on(
    client: TestClient, start_worker: Callable
):
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA, where a cuda job fails in the worker")
    worker = start_worker()
    broken = {**TINY, "device": "cuda"}  # valid for the API, impossible for this worker
    job_id = client.post("/v1/spp", json=broken).json()["id"]

    view = wait_for(client, job_id, DONE)
    assert view["state"] == "failed"
    assert "cuda" in view["error"].lower()
    assert view["ended_at"] is not None
    assert view["result_url"] is None
    refused = client.get(f"/v1/jobs/{job_id}/result")
    assert refused.status_code == 409
    assert "failed" in refused.json()["detail"]

    following = client.post("/v1/spp", json=TINY).json()["id"]
    assert wait_for(client, following, DONE)["state"] == "finished"
    assert worker.process.poll() is None

    retried = client.post("/v1/spp", json=broken)
    assert retried.status_code == 202
    assert retried.json()["state"] == "queued"
