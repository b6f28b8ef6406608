"""Request bodies: read by a dependency, after the token check, as strict JSON.

FastAPI reads and validates a declared body before any dependency runs, so an unauthenticated
POST would learn whether its body is valid, and pydantic's lax mode would turn `"batch": true`
into 1. A route instead takes `Annotated[SPPConfig, Depends(json_body(SPPConfig))]` and
declares `openapi_extra=body_doc(SPPConfig)`: the token dependency runs first, then the body
is parsed (bad JSON, bad UTF-8 and deep nesting are 422s like any invalid body), its JSON
types are checked against the config's schema, and it is validated.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pydantic_core
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from api.errors import Invalid
from nfcore.spec.fields import json_type_errors

M = TypeVar("M", bound=BaseModel)

# The models read by `json_body`, whose schemas `add_body_schemas` puts into the OpenAPI.
BODY_MODELS: list[type[BaseModel]] = []


def json_body(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency giving the request's body as a validated `model`."""
    if model not in BODY_MODELS:
        BODY_MODELS.append(model)

    async def read(request: Request) -> M:
        raw = await request.body()
        content_type = request.headers.get("content-type", "")
        if "json" not in content_type.lower():
            raise Invalid(
                f"send the body as JSON with 'Content-Type: application/json' (got {content_type!r})"
            )
        return validated(model, parse_json(raw))

    return read


def validated(model: type[M], data: Any) -> M:
    """`data` (decoded JSON) as a `model`: its JSON types checked, then validated (422s)."""
    errors = json_type_errors(model, data)
    if errors:
        raise RequestValidationError(errors, body=data)
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise RequestValidationError(error.errors(include_url=False), body=data) from None


def json_body_of(
    choose: Callable[[Any], type[BaseModel]], models: tuple[type[BaseModel], ...]
) -> Callable[[Request], Awaitable[BaseModel]]:
    """`json_body` for a body of one of `models`, which `choose(data)` picks."""
    for model in models:
        if model not in BODY_MODELS:
            BODY_MODELS.append(model)

    async def read(request: Request) -> BaseModel:
        raw = await request.body()
        content_type = request.headers.get("content-type", "")
        if "json" not in content_type.lower():
            raise Invalid(
                f"send the body as JSON with 'Content-Type: application/json' (got {content_type!r})"
            )
        data = parse_json(raw)
        model = choose(data)
        assert model in models
        return validated(model, data)

    return read


def parse_json(raw: bytes) -> Any:
    """The decoded body, or a 422 saying where it stops being JSON (pydantic's parser: UTF-8
    only, no lone surrogates, nesting at most a few hundred deep)."""
    try:
        return pydantic_core.from_json(raw)
    except ValueError as error:
        reason = str(error)
        if "hex escape" in reason:  # jiter's words for a lone surrogate (not a character)
            where = reason[reason.find(" at line") :] if " at line" in reason else ""
            reason = f"a \\u escape that is not a character, such as a lone surrogate,{where}"
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": (),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": reason},
                }
            ]
        ) from None


def body_doc(*models: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose body `json_body(model)` (or `json_body_of`) reads."""
    refs = [{"$ref": f"#/components/schemas/{model.__name__}"} for model in models]
    schema = refs[0] if len(refs) == 1 else {"oneOf": refs}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def add_body_schemas(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with the schemas of the `json_body` models among its components."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in BODY_MODELS:
        body = model.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(body.pop("$defs", {}))
        components[model.__name__] = body
    return schema
