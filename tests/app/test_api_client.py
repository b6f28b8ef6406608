"""The dashboard's API client against a stand-in API (httpx.MockTransport): the claim it keeps
from a submission, and the pause it takes when the API asks for one (`Retry-After`)."""

from __future__ import annotations

import time

import httpx

from app.api_client import ApiClient

JOB = {"id": "a" * 32, "state": "queued", "claim": "c" * 32}


def client_of(answer: httpx.Response) -> tuple[ApiClient, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer

    return ApiClient("http://api", transport=httpx.MockTransport(handle)), seen


def test_a_submission_keeps_its_claim_and_gives_back_the_one_it_replaces() -> None:
    queued, seen = client_of(httpx.Response(202, json=JOB, headers={"X-Claim": JOB["claim"]}))
    submission = queued.submit({"depth": 14}, replaces="old-claim")
    assert (submission.job_id, submission.claim) == (JOB["id"], JOB["claim"])
    assert seen[0].url.params["replaces"] == "old-claim"

    headers = {"Location": f"/v1/jobs/{JOB['id']}", "X-Claim": "d" * 32}
    finished, _ = client_of(httpx.Response(200, json={"blocks": []}, headers=headers))
    assert finished.submit({"depth": 14}, wait=1).claim == "d" * 32  # a 200 after its wait


def test_a_wait_the_api_answers_at_once_with_retry_after_pauses_before_the_next() -> None:
    """An API holding too many waiting requests answers at once: the page following the job
    must not ask again and again without a pause."""
    busy, seen = client_of(httpx.Response(200, json=JOB, headers={"Retry-After": "1"}))

    started = time.monotonic()
    assert busy.job(JOB["id"], wait=0.4)["state"] == "queued"
    took = time.monotonic() - started

    assert 0.35 <= took < 1.0  # paused, within the wait asked for
    assert len(seen) == 1
    quick, _ = client_of(httpx.Response(200, json=JOB))
    started = time.monotonic()
    quick.job(JOB["id"], wait=0.4)
    assert time.monotonic() - started < 0.3  # no Retry-After: no pause
