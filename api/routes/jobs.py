"""/v1/jobs: state, progress, results, training events, listing and canceling of jobs."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Response
from starlette.concurrency import run_in_threadpool

from api.deps import Jobs, Waiting, require_token
from api.errors import Invalid
from api.events import MAX_EVENTS_PAGE
from api.jobs import JobService
from api.routes import WaitQuery, wait_for
from api.schemas import ErrorBody, EventsPage, JobList, JobView
from contract.kinds import SPP, kind_of_queue, shown

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
ERRORS = {404: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}


@router.get("", response_model=JobList, responses=ERRORS, summary="Recent and running jobs")
def list_jobs(jobs: Jobs, limit: int = Query(50, ge=1, le=500)) -> JobList:
    return JobList(jobs=[JobView(**jobs.view(job)) for job in jobs.recent(limit)])


@router.get("/{job_id}", response_model=JobView, responses=ERRORS, summary="One job's state")
async def get_job(job_id: str, jobs: Jobs, waiter: Waiting, wait: WaitQuery = 0.0) -> Response:
    """With `wait`, the answer comes once the job has ended (finished, failed or canceled), or
    after `wait` seconds with its state then."""
    if wait <= 0:
        return _json(await run_in_threadpool(_view_json, jobs, job_id), {})
    # Many requests wait on one job at once (a class of browsers) and wake together: they
    # share their reads of it, and the JSON of its view.
    await waiter.reads.read(f"get:{job_id}", lambda: jobs.get(job_id))  # 404 at once
    headers: dict[str, str] = {}
    await wait_for(waiter, job_id, wait, headers)
    view = await waiter.reads.read(f"view:{job_id}", lambda: _view_json(jobs, job_id))
    return _json(view, headers)


def _view_json(jobs: JobService, job_id: str) -> bytes:
    return JobView(**jobs.view(jobs.get(job_id))).model_dump_json().encode()


def _json(body: bytes, headers: dict[str, str]) -> Response:
    return Response(body, media_type="application/json", headers=headers)


@router.get(
    "/{job_id}/result",
    responses={
        200: {
            "description": "The SPP or training result (JSON), or CSV with `?format=csv` (a row "
            "per block, or per training step).",
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "text/csv": {"schema": {"type": "string"}},
            },
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
        row = shown(kind) or kind_of_queue(kind) or SPP  # a record of another's: as an SPP
        if row.csv is None:
            raise Invalid(f"format: a {kind} job's result has no CSV form; ask for json")
        csv = row.csv(data)
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
    new events. A page holds at most `limit` events and about 1 MiB of them (one event
    however large): read on from `next` until a page comes back empty. The page's state is
    read first, so an empty page with a final state means no more events."""
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
