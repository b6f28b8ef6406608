"""The FastAPI application and `python -m api` (uvicorn on API_HOST:API_PORT)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import redis
from fastapi import FastAPI, HTTPException
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

import nfcore
from api import errors
from api.body import add_body_schemas
from api.routes import catalog, health, jobs, spp, sweeps, train
from api.settings import ApiSettings, get_settings
from api.waiting import EndWatch
from contract import connect, connect_async
from contract.reaper import reap_abandoned
from contract.rq_queue import RQJobQueue

log = logging.getLogger("api")


class BodyLimit:
    """Refuses request bodies over `limit` bytes with 413, declared or streamed."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or {}).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                # An HTTPException passes through FastAPI's body reading to its handler.
                raise HTTPException(413, self._message)
            return message

        await self.app(scope, counted, send)

    @property
    def _message(self) -> str:
        return f"request body over the limit of {self.limit} bytes"

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"detail": self._message}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


async def _maintain(app: FastAPI) -> None:
    """Retry or fail jobs whose worker died, every MAINTENANCE_INTERVAL seconds."""
    settings: ApiSettings = app.state.settings
    while True:
        await asyncio.sleep(settings.maintenance_interval)
        try:
            await asyncio.to_thread(reap_abandoned, app.state.queue, settings)
        except redis.RedisError as error:
            log.warning("maintenance skipped: %s", error)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    task = asyncio.create_task(_maintain(app))
    await app.state.end_watch.start()
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await app.state.end_watch.stop()
        app.state.redis.close()
        await app.state.async_redis.aclose()


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="nf-signal-prop API",
        version=nfcore.__version__,
        description=(
            "Signal Propagation Plots of normalized and Normalizer-Free ResNets "
            "(Brock, De & Smith, 2021), and short training runs, as cached, deduplicated jobs."
        ),
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.redis = connect(settings)
    app.state.async_redis = connect_async(settings)
    app.state.queue = RQJobQueue(app.state.redis)  # the job queue's one adapter
    app.state.end_watch = EndWatch(app.state.async_redis, settings.max_waiters, app.state.queue)
    errors.install(app)
    routers = (spp.router, train.router, sweeps.router, jobs.router, catalog.router, health.router)
    for router in routers:
        app.include_router(router)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            # A browser client on another origin reads its claim and where its job is.
            expose_headers=["X-Claim", "Location", "X-Cache", "Retry-After"],
        )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the schemas of the bodies that `api.body` reads itself."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        app.openapi_schema = add_body_schemas(document)
    return app.openapi_schema


# Allocations between two collections of the youngest generation (Python's default is 700):
# thousands of waiting requests make objects fast, and each collection pauses every request.
GC_YOUNG_THRESHOLD = 20_000


def _settle_garbage_collection() -> None:
    """What exists at startup (modules, the app and its schemas, the catalog) lives as long as
    the process: leave it out of every collection (`gc.freeze`), and collect young objects
    less often. With 2000 requests waiting, full collections otherwise paused the event loop
    (and /healthz) for 0.2 s at a time; after this, 0.05 s at most (measured)."""
    import gc

    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


# Open files an API process needs besides its waiting requests' sockets: its other clients,
# Redis connections, the threadpool's, logs and Python's own.
OTHER_OPEN_FILES = 1024


def _raise_open_files(max_waiters: int) -> None:
    """Lift the soft limit on open files (often 1024) towards the hard one, so MAX_WAITERS
    waiting requests fit: past it uvicorn cannot accept connections, and every client waits."""
    import resource

    wanted = max_waiters + OTHER_OPEN_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
        if raised < wanted:
            log.warning(
                "open files are limited to %d (ulimit -Hn): fewer than MAX_WAITERS = %d "
                "waiting requests fit", raised, max_waiters,
            )  # fmt: skip


def main() -> None:
    import uvicorn

    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    _raise_open_files(settings.max_waiters)
    if settings.api_workers == 1:
        app = create_app(settings)
        _settle_garbage_collection()
        uvicorn.run(app, host=settings.api_host, port=settings.api_port)
        return
    _settle_garbage_collection()
    # Several processes on one port: each makes its own app (and Redis clients) from the
    # same environment.
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.api_workers,
    )
