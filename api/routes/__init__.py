"""One router module per resource; `answer_submission` is the reply both POST routes give."""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import Query, Response
from starlette.concurrency import run_in_threadpool

from api.admission import Admission, JobConfig
from api.jobs import JobService, Submission
from api.schemas import JobView
from api.waiting import MAX_WAIT_SECONDS, RETRY_AFTER_SECONDS, EndWatch, TooManyWaiters

WaitQuery = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_WAIT_SECONDS,
        description="Seconds to wait for the job to end before answering (long polling): the "
        "answer comes as soon as it ends, with its result when it finished. When the server "
        "already holds MAX_WAITERS waiting requests, the answer comes at once, with the job "
        "as it is and `Retry-After` (seconds to pause before asking again).",
    ),
]
ReplacesQuery = Annotated[
    str | None,
    Query(
        max_length=64,
        description="The `claim` of an earlier submission that this client no longer wants (a "
        "dashboard's previous slider position; the claim came in that answer's body and "
        "`X-Claim` header): it is given back, once, and its job is canceled (or stopped) when "
        "nobody holds a claim on it any more. Anything else (a job id, a claim given back "
        "already) changes nothing.",
    ),
]


async def answer_submission(
    config: JobConfig,
    jobs: JobService,
    admission: Admission,
    response: Response,
    waiter: EndWatch,
    wait: float = 0.0,
    replaces: str | None = None,
) -> JobView | Response:
    """Admit the config (`api.admission`), then 200 with the cached result (`X-Cache: hit`) or 202 with the new or
    already queued job (`X-Cache: miss`); both with `Location: /v1/jobs/<id>`.

    With `wait`, a job that finishes within it answers 200 with its result (`X-Cache: miss`).
    An answer with a job carries this request's claim on it (`claim`, `X-Claim`): what it
    gives back with `replaces` when it moves on.
    """
    submission = await run_in_threadpool(_submit, jobs, admission, config, replaces)
    headers = {"Location": f"/v1/jobs/{submission.job_id}"}
    if submission.cached is not None:
        return _result(submission.cached, headers | {"X-Cache": "hit"})
    assert submission.claim is not None
    headers |= {"X-Claim": submission.claim, "X-Cache": "miss"}
    try:
        if await wait_for(waiter, submission.job_id, wait, headers):
            cached = await run_in_threadpool(jobs.cached, submission.job_id)
            if cached is not None:
                return _result(cached, headers)
        job = await run_in_threadpool(jobs.get, submission.job_id) if wait > 0 else submission.job
        assert job is not None
        view = await run_in_threadpool(jobs.view, job)
    except BaseException:
        # The client never learns its claim: give it back, so the job is not kept for it.
        with contextlib.suppress(Exception):
            await run_in_threadpool(jobs.release, submission.claim)
        raise
    response.headers.update(headers)
    return JobView(**view, claim=submission.claim)


async def wait_for(waiter: EndWatch, job_id: str, seconds: float, headers: dict[str, str]) -> bool:
    """Whether the job ended within `seconds`; with too many requests already waiting, False
    at once and `Retry-After` in `headers` (a wait is a hint: see `TooManyWaiters`)."""
    if seconds <= 0:
        return False
    try:
        return await waiter.wait_for_end(job_id, seconds)
    except TooManyWaiters:
        headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return False


def _submit(
    jobs: JobService, admission: Admission, config: JobConfig, replaces: str | None
) -> Submission:
    return jobs.submit(admission.admit(config), replaces=replaces)


def _result(data: bytes, headers: dict[str, str]) -> Response:
    return Response(data, media_type="application/json", headers=headers)
