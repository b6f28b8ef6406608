"""Errors as JSON with a human sentence in `detail`; one small exception per failure kind."""

from __future__ import annotations

import json
import logging
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import LockError

from nfcore.spec.fields import describe_error_items


class ApiError(Exception):
    status_code = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class Gone(ApiError):
    status_code = 410


class Invalid(ApiError):
    """Input that parses but cannot be run (over a limit, a bad sweep)."""

    status_code = 422


class Unauthorized(ApiError):
    status_code = 401


log = logging.getLogger("api")


class ErrorResponse(JSONResponse):
    """JSON that can always be written: a message quoting the input (a field name with a lone
    surrogate, say) is escaped to ASCII where it is not valid UTF-8, instead of failing."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode()


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, error: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(error, Unauthorized) else None
        return ErrorResponse(
            {"detail": error.detail}, status_code=error.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        items = [
            {**item, "loc": [p for p in item["loc"] if p not in ("body", "query", "path")]}
            for item in error.errors()
        ]
        detail = _hint(request, error.body) or describe_error_items(items)
        return ErrorResponse({"detail": detail, "errors": _jsonable(items)}, status_code=422)

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def redis_down(_request: Request, error: Exception) -> JSONResponse:
        detail = "the job store (Redis) is unreachable; try again in a moment"
        if isinstance(error, redis.AuthenticationError):
            detail = "the job store (Redis) refused the service's credentials; check REDIS_URL"
        return ErrorResponse({"detail": detail}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(LockError)
    async def busy(_request: Request, _error: Exception) -> JSONResponse:
        return ErrorResponse(
            {"detail": "the same job is being submitted right now; try again in a moment"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        # A bug: logged with its traceback for the operator, a sentence for the client.
        log.exception("%s %s failed", request.method, request.url.path, exc_info=error)
        return ErrorResponse(
            {"detail": "the API failed unexpectedly on this request; the error is in its log"},
            status_code=500,
        )


def _hint(request: Request, body: object) -> str | None:
    """A sentence for two common mistakes, instead of a list of field errors."""
    if request.method == "POST" and isinstance(body, dict) and isinstance(body.get("config"), dict):
        return (
            "this is a whole result (of an SPP or a training run); send its `config` object as "
            "the body "
            "(e.g. jq .config result.json | curl -d @- ...)"
        )
    content_type = request.headers.get("content-type", "")
    if request.method == "POST" and not isinstance(body, dict) and "json" not in content_type:
        return f"send the body as JSON with 'Content-Type: application/json' (got {content_type!r})"
    return None


def _jsonable(items: list[dict]) -> list[dict]:
    """Pydantic error items without the parts JSON cannot carry (exceptions in ctx)."""
    keep = ("type", "loc", "msg")
    return [{k: item[k] for k in keep if k in item} for item in items]
