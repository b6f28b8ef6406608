"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from rq import Worker

from api.contract import QUEUES, SERIALIZER
from api.deps import Redis
from api.schemas import ErrorBody, Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The API process is up")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": ErrorBody}},
    summary="Redis reachable, and how many workers listen on each queue",
)
def readyz(connection: Redis) -> Readiness | JSONResponse:
    connection.ping()  # raises -> 503 by the Redis error handler
    workers = Worker.all(connection=connection, serializer=SERIALIZER)
    counts = {name: sum(name in w.queue_names() for w in workers) for name in QUEUES}
    return Readiness(redis="ok", workers=counts)
