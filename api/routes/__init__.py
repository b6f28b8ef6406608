"""One router module per resource; `answer_submission` is the reply both POST routes give."""

from __future__ import annotations

from typing import Annotated

import redis.asyncio
from fastapi import Query, Response
from starlette.concurrency import run_in_threadpool

from api.jobs import JobConfig, JobService, Submission
from api.schemas import JobView
from api.waiting import MAX_WAIT_SECONDS, wait_for_end

WaitQuery = Annotated[
    float,
    Query(
        ge=0,
        le=MAX_WAIT_SECONDS,
        description="Seconds to wait for the job to end before answering (long polling): the "
        "answer comes as soon as it ends, with its result when it finished.",
    ),
]
ReplacesQuery = Annotated[
    str | None,
    Query(
        max_length=64,
        description="The id of a job this client asked for before and no longer wants (a "
        "dashboard's previous slider position): it is canceled unless others still wait for it.",
    ),
]


async def answer_submission(
    config: JobConfig,
    jobs: JobService,
    response: Response,
    waiter: redis.asyncio.Redis,
    wait: float = 0.0,
    replaces: str | None = None,
) -> JobView | Response:
    """Check the cost, then 200 with the cached result (`X-Cache: hit`) or 202 with the new or
    already queued job (`X-Cache: miss`); both with `Location: /v1/jobs/<id>`.

    With `wait`, a job that finishes within it answers 200 with its result (`X-Cache: miss`).
    """
    submission = await run_in_threadpool(_submit, jobs, config, replaces)
    headers = {"Location": f"/v1/jobs/{submission.job_id}"}
    if submission.cached is not None:
        return _result(submission.cached, headers | {"X-Cache": "hit"})
    if wait > 0 and await wait_for_end(waiter, submission.job_id, wait):
        cached = await run_in_threadpool(jobs.cached, submission.job_id)
        if cached is not None:
            return _result(cached, headers | {"X-Cache": "miss"})
    job = await run_in_threadpool(jobs.get, submission.job_id) if wait > 0 else submission.job
    assert job is not None
    response.headers.update(headers | {"X-Cache": "miss"})
    return JobView(**await run_in_threadpool(jobs.view, job))


def _submit(jobs: JobService, config: JobConfig, replaces: str | None) -> Submission:
    return jobs.submit(jobs.admit(config), replaces=replaces)


def _result(data: bytes, headers: dict[str, str]) -> Response:
    return Response(data, media_type="application/json", headers=headers)
