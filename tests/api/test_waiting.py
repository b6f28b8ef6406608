"""Waiting for a result without polling (`?wait=S`), and a client replacing the job it asked
for (`?replaces=<id>`): what a dashboard slider relies on."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import redis
from fastapi.testclient import TestClient

from contract import ASKERS_KEY, key_for
from tests.api.conftest import SLOW, TINY, WorkerProcess, wait_for

DONE = ("finished", "failed", "canceled")


def test_post_with_wait_answers_with_the_result_as_soon_as_it_is_computed(
    client: TestClient, start_worker: Callable[..., WorkerProcess]
):
    start_worker()
    warm = client.post("/v1/spp", json={**TINY, "seed": 99}, params={"wait": 30})
    assert warm.status_code == 200  # the worker's first job (torch warms up)

    started = time.monotonic()
    answer = client.post("/v1/spp", json=TINY, params={"wait": 30})
    took = time.monotonic() - started

    assert answer.status_code == 200, answer.text
    assert answer.headers["x-cache"] == "miss"  # computed for this request
    assert answer.headers["location"].startswith("/v1/jobs/")
    result = answer.json()
    assert result["config"]["depth"] == 14 and len(result["blocks"]) == 4
    job = client.get(answer.headers["location"]).json()
    assert took < job["run_seconds"] + 1.0, (took, job["run_seconds"])
    again = client.post("/v1/spp", json=TINY, params={"wait": 30})
    assert (again.status_code, again.headers["x-cache"]) == (200, "hit")
    assert again.content == answer.content


def test_get_with_wait_answers_when_the_job_ends_not_after_the_whole_wait(
    client: TestClient, start_worker: Callable[..., WorkerProcess]
):
    start_worker()
    job_id = client.post("/v1/spp", json=SLOW).json()["id"]

    started = time.monotonic()
    view = client.get(f"/v1/jobs/{job_id}", params={"wait": 30}).json()
    took = time.monotonic() - started

    assert view["state"] == "finished", view
    assert took < 20, took  # the job's own time, not the 30 s asked for
    assert client.get(f"/v1/jobs/{job_id}/result").status_code == 200


def test_get_with_wait_answers_after_the_wait_when_the_job_does_not_end(client: TestClient):
    job_id = client.post("/v1/spp", json=TINY).json()["id"]  # no worker: it stays queued

    started = time.monotonic()
    view = client.get(f"/v1/jobs/{job_id}", params={"wait": 1.0}).json()
    took = time.monotonic() - started

    assert view["state"] == "queued"
    assert 1.0 <= took < 3.0, took
    slow_post = client.post("/v1/spp", json=TINY, params={"wait": 0.5})
    assert slow_post.status_code == 202 and slow_post.json()["state"] == "queued"


def test_a_waiting_request_learns_at_once_that_its_job_was_canceled(client: TestClient):
    job_id = client.post("/v1/spp", json=TINY).json()["id"]

    with ThreadPoolExecutor(1) as pool:  # the same app and event loop, from another thread
        started = time.monotonic()
        pending = pool.submit(client.get, f"/v1/jobs/{job_id}", params={"wait": 20})
        time.sleep(0.3)
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 200
        view = pending.result(timeout=10).json()
    assert view["state"] == "canceled"
    assert time.monotonic() - started < 3


def test_wait_is_bounded_and_an_unknown_job_is_404_at_once(client: TestClient):
    too_long = client.get("/v1/jobs/whatever", params={"wait": 31})
    assert too_long.status_code == 422 and "wait" in too_long.json()["detail"]
    started = time.monotonic()
    assert client.get("/v1/jobs/nope", params={"wait": 10}).status_code == 404
    assert time.monotonic() - started < 2
    refused = client.post("/v1/spp", json=TINY, params={"wait": -1})
    assert refused.status_code == 422


def test_a_replaced_job_nobody_else_wants_is_canceled(client: TestClient, store: redis.Redis):
    """A slider dragged across five values leaves one job, not a backlog of five."""
    ids = []
    for seed in range(5):
        params = {"replaces": ids[-1]} if ids else {}
        ids.append(client.post("/v1/spp", json={**TINY, "seed": seed}, params=params).json()["id"])

    states = [client.get(f"/v1/jobs/{job_id}").json()["state"] for job_id in ids]
    assert states == ["canceled"] * 4 + ["queued"]


def test_a_replaced_job_that_another_client_waits_for_is_kept(
    client: TestClient, store: redis.Redis
):
    shared = client.post("/v1/spp", json=TINY).json()["id"]
    assert client.post("/v1/spp", json=TINY).json()["id"] == shared  # a second student
    assert int(store.get(key_for(ASKERS_KEY, shared))) == 2

    client.post("/v1/spp", json={**TINY, "seed": 7}, params={"replaces": shared})
    assert client.get(f"/v1/jobs/{shared}").json()["state"] == "queued"
    client.post("/v1/spp", json={**TINY, "seed": 8}, params={"replaces": shared})
    assert client.get(f"/v1/jobs/{shared}").json()["state"] == "canceled"


def test_a_replaced_running_job_is_stopped(
    client: TestClient, start_worker: Callable[..., WorkerProcess]
):
    start_worker()
    slow = client.post("/v1/spp", json=SLOW).json()["id"]
    deadline = time.monotonic() + 30
    while client.get(f"/v1/jobs/{slow}").json()["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.05)

    current = client.post("/v1/spp", json=TINY, params={"replaces": slow, "wait": 30})

    assert current.status_code == 200, current.text
    assert wait_for(client, slow, DONE)["state"] == "canceled"
