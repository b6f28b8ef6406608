"""/v1/jobs: state, progress, results, training events, listing and canceling of jobs."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Response
from starlette.concurrency import run_in_threadpool

from api.deps import AsyncRedis, Jobs, require_token
from api.jobs import MAX_EVENTS_PAGE
from api.routes import WaitQuery
from api.schemas import ErrorBody, EventsPage, JobList, JobView
from api.waiting import wait_for_end
from contract import TRAIN_QUEUE
from nfcore.result import SPPResult
from nfcore.train_result import TrainResult

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
ERRORS = {404: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}


@router.get("", response_model=JobList, responses=ERRORS, summary="Recent and running jobs")
def list_jobs(jobs: Jobs, limit: int = Query(50, ge=1, le=500)) -> JobList:
    return JobList(jobs=[JobView(**jobs.view(job)) for job in jobs.recent(limit)])


@router.get("/{job_id}", response_model=JobView, responses=ERRORS, summary="One job's state")
async def get_job(job_id: str, jobs: Jobs, waiter: AsyncRedis, wait: WaitQuery = 0.0) -> JobView:
    """With `wait`, the answer comes once the job has ended (finished, failed or canceled), or
    after `wait` seconds with its state then."""
    await run_in_threadpool(jobs.get, job_id)  # 404 at once for a job that does not exist
    if wait > 0:
        await wait_for_end(waiter, job_id, wait)
    job = await run_in_threadpool(jobs.get, job_id)
    return JobView(**await run_in_threadpool(jobs.view, job))


@router.get(
    "/{job_id}/result",
    responses={
        200: {
            "description": "The SPP or training result (JSON), or CSV with `?format=csv` (a row "
            "per block, or per training step)."
        },
        409: {"model": ErrorBody, "description": "The job has not finished."},
        410: {"model": ErrorBody, "description": "The result expired from the cache."},
        **ERRORS,
    },
    summary="A finished job's result",
)
def get_result(job_id: str, jobs: Jobs, format: Literal["json", "csv"] = Query("json")) -> Response:
    data = jobs.result(job_id)
    if format == "csv":
        kind = jobs.result_kind(job_id, data)
        if kind == TRAIN_QUEUE:
            csv = TrainResult.model_validate_json(data).to_csv()
        else:
            csv = SPPResult.model_validate_json(data).to_csv()
        return Response(
            csv,
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="{kind}-{job_id[:12]}.csv"'},
        )
    return Response(data, media_type="application/json")


@router.get(
    "/{job_id}/events",
    response_model=EventsPage,
    responses=ERRORS,
    summary="A training job's events, from an index on",
)
def get_events(
    job_id: str,
    jobs: Jobs,
    since: int = Query(
        0, ge=0, le=2**31, description="Index of the first event wanted (the last page's `next`)."
    ),
    limit: int = Query(MAX_EVENTS_PAGE, ge=1, le=MAX_EVENTS_PAGE, description="Most events."),
    attempt: int | None = Query(
        None,
        ge=0,
        le=2**31,
        description="The `attempt` of the last page: if the job has started again since, the "
        "page holds the new attempt's events from index 0 and says `restarted`.",
    ),
) -> EventsPage:
    """Poll with `since` = the last page's `next` and `attempt` = its `attempt` to get only
    new events; the page's state is read first, so a final state on a page shorter than
    `limit` means no more events."""
    return EventsPage(**jobs.events(job_id, since, limit, attempt))


@router.delete(
    "/{job_id}",
    response_model=JobView,
    responses={409: {"model": ErrorBody}, 401: {"model": ErrorBody}, **ERRORS},
    dependencies=[Depends(require_token)],
    summary="Cancel a queued job or stop a running one",
)
def cancel_job(job_id: str, jobs: Jobs) -> JobView:
    """A queued job is canceled at once; a running one stops after its current block (or
    training step)."""
    return JobView(**jobs.view(jobs.cancel(job_id)))
