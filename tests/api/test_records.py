"""Job records in Redis that the API did not write (an older version, a hand edit, anyone who can
write to Redis): the listing and the job's own URL read what they can and never answer 500."""

from __future__ import annotations

import time

import pytest
import redis
from fastapi.testclient import TestClient

from contract import SPP_QUEUE, key_for
from tests.api.conftest import TINY

# RQ's fields that it parses when it reads a job, each with a value it cannot parse.
BAD_FIELDS = {
    "timeout": b"xyz",
    "created_at": b"garbage",
    "status": b"bogus",
    "result_ttl": b"forever",
}


def forge(store: redis.Redis, good_id: str, job_id: str, field: str, value: bytes) -> None:
    """A copy of a good job's record with one bad field, queued and registered as RQ would."""
    record = store.hgetall(f"rq:job:{good_id}")
    store.hset(f"rq:job:{job_id}", mapping={**record, field.encode(): value})
    store.rpush(f"rq:queue:{SPP_QUEUE}", job_id)
    store.zadd(f"rq:finished:{SPP_QUEUE}", {job_id: time.time() + 3600})


@pytest.mark.parametrize("field", BAD_FIELDS)
def test_a_record_with_a_bad_field_is_left_out_of_the_listing_and_named_by_its_url(
    client: TestClient, store: redis.Redis, field: str
):
    good = client.post("/v1/spp", json=TINY).json()["id"]
    forge(store, good, f"forged-{field}", field, BAD_FIELDS[field])

    listing = client.get("/v1/jobs")
    assert listing.status_code == 200, listing.text
    assert [job["id"] for job in listing.json()["jobs"]] == [good]

    for path in ("", "/events", "/result"):
        answer = client.get(f"/v1/jobs/forged-{field}{path}")
        assert answer.status_code == 404, (path, answer.text)
        detail = answer.json()["detail"]
        assert "forged-" in detail and "cannot be read" in detail, detail
    # The good job is untouched by its neighbour.
    assert client.get(f"/v1/jobs/{good}").json()["state"] == "queued"


def test_the_listing_shows_the_good_jobs_beside_all_the_bad_ones(
    client: TestClient, store: redis.Redis
):
    good = client.post("/v1/spp", json=TINY).json()["id"]
    other = client.post("/v1/spp", json={**TINY, "alpha": 0.3}).json()["id"]
    for field, value in BAD_FIELDS.items():
        forge(store, good, f"forged-{field}", field, value)

    listing = client.get("/v1/jobs")
    assert listing.status_code == 200, listing.text
    assert sorted(job["id"] for job in listing.json()["jobs"]) == sorted([good, other])


def test_a_failed_record_with_an_unreadable_result_and_attempts_still_has_a_view(
    client: TestClient, store: redis.Redis
):
    good = client.post("/v1/spp", json=TINY).json()["id"]
    forge(store, good, "forged-failed", "status", b"failed")
    store.xadd("rq:results:forged-failed", {"type": "bogus", "created_at": "garbage"})
    view = client.get("/v1/jobs/forged-failed")
    assert view.status_code == 200, view.text
    assert view.json()["state"] == "failed"
    assert view.json()["error"] == "the job failed without a message"

    # An abandoned job's count of attempts that is not a number reads as one attempt.
    store.delete("rq:results:forged-failed")
    store.hset("rq:job:forged-failed", "exc_info", b"rq.exceptions.AbandonedJobError")
    store.set(key_for("attempts", "forged-failed"), "many")
    view = client.get("/v1/jobs/forged-failed")
    assert view.status_code == 200, view.text
    assert "it was tried 1 time" in view.json()["error"]
    listing = client.get("/v1/jobs")
    assert listing.status_code == 200, listing.text
    assert "forged-failed" in [job["id"] for job in listing.json()["jobs"]]
