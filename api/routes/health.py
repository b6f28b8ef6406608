"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from rq import Worker
from rq.utils import now

from api.deps import Redis, Settings
from api.schemas import ErrorBody, Health, Readiness
from contract import QUEUES, SERIALIZER

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
def readyz(connection: Redis, settings: Settings) -> Readiness | JSONResponse:
    """A worker counts while it heartbeats: idle workers do every third of HEARTBEAT_TTL, so
    one silent for longer is dead (killed), though RQ keeps its record for a while."""
    connection.ping()  # raises -> 503 by the Redis error handler
    moment = now()
    alive = [
        worker
        for worker in Worker.all(connection=connection, serializer=SERIALIZER)
        if worker.last_heartbeat is not None
        and (moment - worker.last_heartbeat).total_seconds() <= settings.heartbeat_ttl
    ]
    counts = {name: sum(name in w.queue_names() for w in alive) for name in QUEUES}
    return Readiness(redis="ok", workers=counts)
