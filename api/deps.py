"""FastAPI dependencies: the settings, the Redis client, the job queue, the job service and
the admission policies, the write token.

Each is `async def` although none waits on anything: FastAPI runs a plain `def` dependency in
its threadpool, a thread hop per dependency per request, which thousands of waiting requests
arriving together pay in event-loop time (and /healthz with them).
"""

from __future__ import annotations

import secrets
from typing import Annotated

import redis
from fastapi import Depends, Request

from api.admission import Admission
from api.errors import Unauthorized
from api.jobs import JobService
from api.settings import ApiSettings
from api.waiting import EndWatch
from contract import JobQueue


async def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


async def get_redis(request: Request) -> redis.Redis:
    return request.app.state.redis


async def get_end_watch(request: Request) -> EndWatch:
    """What waiting requests wait on: the process's one subscription to job ends."""
    return request.app.state.end_watch


async def get_queue(request: Request) -> JobQueue:
    return request.app.state.queue


async def get_jobs(
    queue: Annotated[JobQueue, Depends(get_queue)],
    settings: Annotated[ApiSettings, Depends(get_settings)],
) -> JobService:
    return JobService(queue, settings)


async def get_admission(
    queue: Annotated[JobQueue, Depends(get_queue)],
    settings: Annotated[ApiSettings, Depends(get_settings)],
) -> Admission:
    return Admission(queue, settings)


async def require_token(
    request: Request, settings: Annotated[ApiSettings, Depends(get_settings)]
) -> None:
    """Writes (POST, DELETE) need `Authorization: Bearer <API_TOKEN>` when a token is set."""
    if settings.api_token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = settings.api_token.get_secret_value()
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("this API needs 'Authorization: Bearer <token>' for writes")


Settings = Annotated[ApiSettings, Depends(get_settings)]
Jobs = Annotated[JobService, Depends(get_jobs)]
Admit = Annotated[Admission, Depends(get_admission)]
Queue = Annotated[JobQueue, Depends(get_queue)]
Redis = Annotated[redis.Redis, Depends(get_redis)]
Waiting = Annotated[EndWatch, Depends(get_end_watch)]
