"""FastAPI dependencies: the settings, the Redis client and job service, the write token."""

from __future__ import annotations

import secrets
from typing import Annotated

import redis
import redis.asyncio
from fastapi import Depends, Request

from api.errors import Unauthorized
from api.jobs import JobService
from api.settings import ApiSettings


def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings


def get_redis(request: Request) -> redis.Redis:
    return request.app.state.redis


def get_async_redis(request: Request) -> redis.asyncio.Redis:
    """The asyncio client that waiting requests listen on (`api.waiting`)."""
    return request.app.state.async_redis


def get_jobs(
    connection: Annotated[redis.Redis, Depends(get_redis)],
    settings: Annotated[ApiSettings, Depends(get_settings)],
) -> JobService:
    return JobService(connection, settings)


def require_token(
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
Redis = Annotated[redis.Redis, Depends(get_redis)]
AsyncRedis = Annotated[redis.asyncio.Redis, Depends(get_async_redis)]
