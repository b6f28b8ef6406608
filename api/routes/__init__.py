"""One router module per resource; `answer_submission` is the reply both POST routes give."""

from __future__ import annotations

from fastapi import Response

from api.jobs import JobConfig, JobService
from api.schemas import JobView


def answer_submission(
    config: JobConfig, jobs: JobService, response: Response
) -> JobView | Response:
    """Check the cost, then 200 with the cached result (`X-Cache: hit`) or 202 with the new or
    already queued job (`X-Cache: miss`); both with `Location: /v1/jobs/<id>`."""
    jobs.check_cost(config)
    submission = jobs.submit(config)
    headers = {"Location": f"/v1/jobs/{submission.job_id}"}
    if submission.cached is not None:
        return Response(
            submission.cached, media_type="application/json", headers=headers | {"X-Cache": "hit"}
        )
    assert submission.job is not None
    response.headers.update(headers | {"X-Cache": "miss"})
    return JobView(**jobs.view(submission.job))
