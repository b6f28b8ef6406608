"""POST /v1/train: one short training run, answered from the cache or queued."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from api.body import body_doc, json_body
from api.deps import Admit, Jobs, Waiting, require_token
from api.routes import ReplacesQuery, WaitQuery, answer_submission
from api.schemas import ErrorBody, JobView
from nfcore.spec.config import TrainConfig

router = APIRouter(prefix="/v1", tags=["train"])

RESPONSES = {
    200: {"description": "The result was cached: the TrainResult JSON (nfcore.spec.train_result)."},
    401: {"model": ErrorBody},
    413: {"model": ErrorBody},
    422: {
        "model": ErrorBody,
        "description": "Invalid config, or over a resource limit (MAX_TRAIN_STEPS, "
        "MAX_TRAIN_FLOPS, MAX_FLOPS or MAX_ACTIVATION_BYTES per step).",
    },
    503: {"model": ErrorBody, "description": "Redis is unreachable."},
}


@router.post(
    "/train",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobView,
    responses=RESPONSES,
    dependencies=[Depends(require_token)],
    openapi_extra=body_doc(TrainConfig),
    summary="Run a short training",
)
async def submit_train(
    config: Annotated[TrainConfig, Depends(json_body(TrainConfig))],
    jobs: Jobs,
    admission: Admit,
    waiter: Waiting,
    response: Response,
    wait: WaitQuery = 0.0,
    replaces: ReplacesQuery = None,
) -> JobView | Response:
    """The body is a `TrainConfig`: the model, the data set and the recipe.

    200 with the result when it is cached; otherwise 202 with the (new or already queued)
    job, whose id is the hash of the canonical config and the nfcore version. Follow it with
    GET /v1/jobs/{id}/events?since=N while it runs.
    """
    return await answer_submission(config, jobs, admission, response, waiter, wait, replaces)
