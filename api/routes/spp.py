"""POST /v1/spp: one SPP, answered from the cache or queued."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from api.admission import MODEL_REFUSED
from api.body import body_doc, json_body_of
from api.deps import Admit, Jobs, Waiting, require_token
from api.errors import Invalid
from api.routes import ReplacesQuery, WaitQuery, answer_submission
from api.schemas import ErrorBody, JobView
from nfcore.spec.config import SPPConfig
from nfcore.spec.foreign_config import ForeignConfig

router = APIRouter(prefix="/v1", tags=["spp"])

RESPONSES = {
    200: {"description": "The result was cached: the same JSON as `nfcore spp --out`."},
    401: {"model": ErrorBody},
    413: {"model": ErrorBody},
    422: {"model": ErrorBody, "description": "Invalid config, or over a resource limit."},
    503: {"model": ErrorBody, "description": "Redis is unreachable."},
}


def _which(data: object) -> type[SPPConfig] | type[ForeignConfig]:
    """A body naming a `plugin` (or of kind foreign) is a plugin network's; one naming a
    `model` (a module path) is refused before anything else is read."""
    if isinstance(data, dict) and ("plugin" in data or data.get("kind") == "foreign"):
        if "model" in data:
            raise Invalid(MODEL_REFUSED)
        return ForeignConfig
    return SPPConfig


@router.post(
    "/spp",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobView,
    responses=RESPONSES,
    dependencies=[Depends(require_token)],
    openapi_extra=body_doc(SPPConfig, ForeignConfig),
    summary="Compute a Signal Propagation Plot",
)
async def submit_spp(
    config: Annotated[
        SPPConfig | ForeignConfig, Depends(json_body_of(_which, (SPPConfig, ForeignConfig)))
    ],
    jobs: Jobs,
    admission: Admit,
    waiter: Waiting,
    response: Response,
    wait: WaitQuery = 0.0,
    replaces: ReplacesQuery = None,
) -> JobView | Response:
    """The body is exactly the `config` that `nfcore spp --out` writes; or, for a network of
    one's own, an installed model plugin's name with its arguments and how to measure it
    (`{"plugin": "tv_resnet", "model_args": {"depth": 50}}`: the fields of ForeignConfig but
    `model`, which no request may give).

    200 with the result when it is cached; otherwise 202 with the (new or already queued)
    job, whose id is the hash of the canonical config and the nfcore version.
    """
    return await answer_submission(config, jobs, admission, response, waiter, wait, replaces)
