"""/v1/jobs: state, progress, results, listing and canceling of jobs."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Response

from api.deps import Jobs, require_token
from api.schemas import ErrorBody, JobList, JobView
from nfcore.result import SPPResult

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
ERRORS = {404: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}


@router.get("", response_model=JobList, responses=ERRORS, summary="Recent and running jobs")
def list_jobs(jobs: Jobs, limit: int = Query(50, ge=1, le=500)) -> JobList:
    return JobList(jobs=[JobView(**jobs.view(job)) for job in jobs.recent(limit)])


@router.get("/{job_id}", response_model=JobView, responses=ERRORS, summary="One job's state")
def get_job(job_id: str, jobs: Jobs) -> JobView:
    return JobView(**jobs.view(jobs.get(job_id)))


@router.get(
    "/{job_id}/result",
    responses={
        200: {"description": "The SPP result (JSON), or CSV with `?format=csv`."},
        409: {"model": ErrorBody, "description": "The job has not finished."},
        410: {"model": ErrorBody, "description": "The result expired from the cache."},
        **ERRORS,
    },
    summary="A finished job's result",
)
def get_result(job_id: str, jobs: Jobs, format: Literal["json", "csv"] = Query("json")) -> Response:
    data = jobs.result(job_id)
    if format == "csv":
        csv = SPPResult.model_validate_json(data).to_csv()
        return Response(
            csv,
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="spp-{job_id[:12]}.csv"'},
        )
    return Response(data, media_type="application/json")


@router.delete(
    "/{job_id}",
    response_model=JobView,
    responses={409: {"model": ErrorBody}, 401: {"model": ErrorBody}, **ERRORS},
    dependencies=[Depends(require_token)],
    summary="Cancel a queued job or stop a running one",
)
def cancel_job(job_id: str, jobs: Jobs) -> JobView:
    """A queued job is canceled at once; a running one stops after its current block."""
    return JobView(**jobs.view(jobs.cancel(job_id)))
