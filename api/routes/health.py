"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import Queue, Settings
from api.schemas import ErrorBody, Health, Readiness
from contract import fixed_queues, live

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="The API process is up")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": ErrorBody}},
    summary="Redis reachable, and how many live workers listen on each queue",
)
def readyz(queue: Queue, settings: Settings) -> Readiness | JSONResponse:
    """A worker counts while it heartbeats: idle workers do every third of HEARTBEAT_TTL, so
    one silent for longer is dead (killed), though its record stays a while. The queues are
    those of the kinds of job with one queue each (`contract.kinds`)."""
    queue.connection.ping()  # raises -> 503 by the Redis error handler
    alive = live(queue.workers(), settings.heartbeat_ttl)
    counts = {name: sum(name in w.queues for w in alive) for name in fixed_queues()}
    return Readiness(redis="ok", workers=counts)
