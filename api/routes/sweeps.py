"""/v1/sweeps: a grid of configs submitted as one request, followed as one resource."""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Annotated

from fastapi import APIRouter, Depends, status
from pydantic import ValidationError

import nfcore
from api.body import body_doc, json_body
from api.deps import Admit, Jobs, Redis, Settings, require_token
from api.errors import Invalid, NotFound
from api.schemas import ErrorBody, JobView, SweepPoint, SweepRequest, SweepView
from contract import JobState, key_for
from nfcore.spec.config import SPPConfig, config_hash
from nfcore.spec.cost import estimate
from nfcore.spec.edits import with_changes
from nfcore.spec.fields import describe_error_items, describe_validation_error, json_type_errors

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])
ERRORS = {404: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}


def expand(request: SweepRequest, limit: int) -> list[tuple[dict, SPPConfig]]:
    """Every grid point as (its values, its validated config); nothing is queued on error."""
    unknown = sorted(set(request.grid) - set(SPPConfig.model_fields))
    if unknown:
        raise Invalid(f"grid: unknown config field(s) {', '.join(unknown)}")
    empty = sorted(name for name, values in request.grid.items() if not values)
    if empty:
        raise Invalid(f"grid: no values for {', '.join(empty)}")
    size = 1
    for values in request.grid.values():
        size *= len(values)
    if size > limit:
        raise Invalid(f"grid: {size} points is over the limit MAX_SWEEP_POINTS = {limit}")
    names = list(request.grid)
    points = []
    for combo in itertools.product(*request.grid.values()):
        params = dict(zip(names, combo, strict=True))
        values = with_changes(request.base, params)
        wrong_types = json_type_errors(SPPConfig, values)
        if wrong_types:
            raise Invalid(f"point {json.dumps(params)}: {describe_error_items(wrong_types)}")
        try:
            config = SPPConfig(**values)
        except ValidationError as error:
            raise Invalid(
                f"point {json.dumps(params)}: {describe_validation_error(error)}"
            ) from None
        points.append((params, config))
    return points


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SweepView,
    responses={401: {"model": ErrorBody}, **ERRORS},
    dependencies=[Depends(require_token)],
    openapi_extra=body_doc(SweepRequest),
    summary="Submit a grid of SPP configs",
)
def submit_sweep(
    request: Annotated[SweepRequest, Depends(json_body(SweepRequest))],
    jobs: Jobs,
    admission: Admit,
    connection: Redis,
    settings: Settings,
) -> SweepView:
    points = expand(request, settings.max_sweep_points)
    for params, config in points:
        try:
            admission.check_cost(config)
        except Invalid as error:
            raise Invalid(f"point {json.dumps(params)}: {error.detail}") from None
    # Equal points (equal values in the grid) are one job: submitted once, costed once.
    distinct = {config_hash(config, nfcore.__version__): config for _, config in points}
    _check_total(distinct, connection, settings.max_sweep_flops)
    submissions = {job_id: jobs.submit(config) for job_id, config in distinct.items()}
    record = []
    for params, config in points:
        submission = submissions[config_hash(config, nfcore.__version__)]
        record.append(
            {"params": params, "job_id": submission.job_id, "cached": submission.cached is not None}
        )
    canonical = json.dumps([r["job_id"] for r in record])
    sweep_id = hashlib.sha256(f"{nfcore.__version__}\n{canonical}".encode()).hexdigest()[:32]
    connection.set(key_for("sweep", sweep_id), json.dumps(record), ex=settings.result_ttl)
    return _view(sweep_id, record, jobs)


def _check_total(configs: dict[str, SPPConfig], connection: Redis, limit: float) -> None:
    """Refuse a sweep whose points not computed yet add up to more than MAX_SWEEP_FLOPS: they
    run one after another on the SPP workers. Points whose result is cached cost nothing."""
    with connection.pipeline(transaction=False) as pipe:
        for job_id in configs:
            pipe.exists(key_for("result", job_id))
        cached = pipe.execute()
    to_compute = [
        config for config, found in zip(configs.values(), cached, strict=True) if not found
    ]
    total = sum(estimate(config).flops for config in to_compute)
    if total > limit:
        raise Invalid(
            f"this sweep is too large: the FLOPs of its {len(to_compute)} points not computed "
            f"yet ({total:.3g}) are over the limit MAX_SWEEP_FLOPS = {limit:.3g} by "
            f"{total / limit:.1f}x; give fewer points (fewer values in the grid), or reduce the "
            "width, depth, resolution or batch"
        )


@router.get("/{sweep_id}", response_model=SweepView, responses=ERRORS, summary="A sweep's jobs")
def get_sweep(sweep_id: str, jobs: Jobs, connection: Redis) -> SweepView:
    raw = connection.get(key_for("sweep", sweep_id))
    if raw is None:
        raise NotFound(f"no sweep {sweep_id!r} (it may have expired)")
    return _view(sweep_id, json.loads(raw), jobs)


def _view(sweep_id: str, record: list[dict], jobs: Jobs) -> SweepView:
    """The points as the grid gave them; `states` counts each job once, however many equal
    points share it."""
    points, states = [], dict.fromkeys((s.value for s in JobState), 0)
    counted: set[str] = set()
    for entry in record:
        job = jobs.fetch(entry["job_id"])
        view = JobView(**jobs.view(job)) if job is not None else None
        state = view.state if view else (JobState.finished if entry["cached"] else None)
        if state is not None and entry["job_id"] not in counted:
            states[state] += 1
        counted.add(entry["job_id"])
        points.append(SweepPoint(params=entry["params"], job=view, cached=entry["cached"]))
    return SweepView(
        id=sweep_id, url=f"/v1/sweeps/{sweep_id}", size=len(record), states=states, points=points
    )
