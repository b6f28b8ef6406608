"""A job's view says how recently its worker reported (`heartbeat`), so a client can tell a
slow job from one whose worker died before the job is given up and run again.

Workers here renew a running job every 2 s (HEARTBEAT_TTL=6, tests/api/conftest.py): it is
late after 4 s of silence and abandoned after 6.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from api.job_view import LATE_FRACTION_OF_TTL
from tests.api.conftest import WorkerProcess

HEARTBEAT_TTL = 6  # the workers' and the API's (tests/api/conftest.py)
LATE_AFTER = LATE_FRACTION_OF_TTL * HEARTBEAT_TTL  # 4 s
RENEWAL = HEARTBEAT_TTL / 3  # 2 s between renewals of a healthy worker
WATCH_HEALTHY = 4.0  # seconds a healthy job is watched: two renewals
SLACK = 3.0  # seconds a loaded 2-core machine may add to a poll of the job's view
GIVEN_UP = 30.0  # seconds after the kill by which the job must stop counting as running
# A tiny network trained on noise for half a minute (steps of a few milliseconds): a job that
# runs long enough to watch and kill, and needs little memory.
LONG_TRAIN = {
    "depth": 14, "width": 0.125, "norm": "nf", "maxpool": False, "resolution": 16, "batch": 8,
    "dataset": "gaussian", "steps": 5000, "eval_every": 5000, "eval_examples": 16,
    "device": "cpu",
}  # fmt: skip


def view(client: TestClient, job_id: str) -> dict:
    return client.get(f"/v1/jobs/{job_id}").json()


def running(client: TestClient, job_id: str, timeout: float = 60) -> dict:
    """The job's view once it runs and has measured a block."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = view(client, job_id)
        if current["state"] == "running" and current["progress"]["done"] > 0:
            return current
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never ran: {view(client, job_id)}")


@pytest.mark.slow
def test_a_running_jobs_heartbeat_is_fresh_and_grows_late_once_its_worker_is_killed(
    client: TestClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    job_id = client.post("/v1/train", json=LONG_TRAIN).json()["id"]
    assert view(client, job_id)["heartbeat"] is None  # queued: no worker to hear from
    worker = start_worker()
    first = running(client, job_id)

    # A healthy worker: renewed every 2 s, never late, the job far from being given up.
    deadline = time.monotonic() + WATCH_HEALTHY
    healthy = []
    while time.monotonic() < deadline:
        beat = view(client, job_id)["heartbeat"]
        healthy.append(beat["age"])
        assert beat["age"] < LATE_AFTER, beat
        assert not beat["late"], beat
        assert 1 < beat["abandoned_in"] <= HEARTBEAT_TTL, beat
        time.sleep(0.2)
    assert view(client, job_id)["state"] == "running", "finished too soon for this test"

    worker.kill()
    killed_at = time.monotonic()
    beats = []
    while (current := view(client, job_id))["state"] == "running":
        assert current["started_at"] == first["started_at"]
        beats.append((time.monotonic() - killed_at, current["heartbeat"]))
        assert time.monotonic() - killed_at < GIVEN_UP, beats[-1]
        time.sleep(0.1)
    # Silence grows from the kill on; it is late from two thirds of the TTL, and the job is
    # given up (queued again: no worker is left to run it) once abandoned_in reaches 0.
    ages = [beat["age"] for _, beat in beats]
    assert ages == sorted(ages), ages
    late = [(since, beat) for since, beat in beats if beat["late"]]
    assert late, f"never late before the job was given up: {beats[-3:]}"
    since, beat = late[0]
    print(f"healthy: age at most {max(healthy)} s; killed: late {since:.1f} s after the kill "
          f"({beat}), given up after {beats[-1][0]:.1f} s")  # fmt: skip
    assert beat["age"] >= LATE_AFTER, beat  # never late before two thirds of the TTL
    assert since < LATE_AFTER + SLACK, f"late only {since:.1f} s after the kill, at {beat}"
    assert all(b["abandoned_in"] <= HEARTBEAT_TTL - LATE_AFTER + 0.5 for _, b in late), late
    assert current["state"] == "queued" and current["heartbeat"] is None, current
