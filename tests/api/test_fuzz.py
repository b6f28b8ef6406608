"""Schemathesis against the API's own OpenAPI schema: no generated request may cause a 5xx,
and every answer must be the one the schema documents.

In-process (ASGI, no network), on a real Redis and with no worker: valid jobs only queue.
Cases the fuzzer found are pinned below it, so they are checked on every run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import response_schema_conformance

from api.main import create_app
from api.settings import ApiSettings
from tests.api.conftest import TINY

# Small limits: a generated config is either tiny or refused before it is queued.
LIMITS: dict[str, Any] = {
    "api_token": None,
    "max_flops": 1e9,
    "max_activation_bytes": 64 * 2**20,
    "max_sweep_points": 4,
    "maintenance_interval": 1.0,
}

# The schema is read from an app that never touches Redis (its client connects lazily); each
# test calls an app of its own on the test's Redis. (schemathesis' `from_fixture` cannot be
# used: it reads `Item._nodeid`, which pytest 9 no longer has.)
schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(ApiSettings(**LIMITS)))

# About 25 requests per operation, the same ones every run: a pass/fail suite, not a search.
bounded = settings(
    max_examples=25,
    deadline=2000,
    derandomize=True,
    database=None,
    # One app and one Redis database serve all the examples of an operation, on purpose.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
    ],
)


@pytest.fixture
def api(redis_url: str) -> Iterator[FastAPI]:
    app = create_app(ApiSettings(redis_url=redis_url, **LIMITS))
    try:
        yield app
    finally:
        shutdown_lifespans()  # ends the maintenance loop schemathesis started for the app


@schema.parametrize()
@bounded
def test_no_request_causes_a_server_error(case: schemathesis.Case, api: FastAPI) -> None:
    response = case.call(app=api)
    case.validate_response(response, checks=[not_a_server_error])


@schema.parametrize()
@bounded
def test_every_answer_matches_the_documented_schema(case: schemathesis.Case, api: FastAPI) -> None:
    response = case.call(app=api)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])


# --- found by the fuzzer ---------------------------------------------------------------------------


@pytest.fixture
def http(api: FastAPI) -> Iterator[TestClient]:
    """A client that sees a crash as the 500 a user would get, not as an exception."""
    with TestClient(api, raise_server_exceptions=False) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/spp", {**TINY, "family": [None, None]}),
        ("/v1/spp", {**TINY, "family": {"name": "resnetv2"}}),
        ("/v1/sweeps", {"base": TINY, "grid": {"family": [["resnetv2"]]}}),
    ],
    ids=["spp-family-list", "spp-family-object", "sweep-family-list"],
)
def test_a_config_field_of_the_wrong_json_type_is_422(http: TestClient, path: str, body: dict):
    response = http.post(path, json=body)
    assert response.status_code == 422, response.text
    assert "family" in response.json()["detail"]


@pytest.mark.parametrize("method", ["GET", "DELETE", "GET result"])
def test_a_job_id_that_cannot_exist_is_404_or_422(http: TestClient, method: str):
    verb, _, result = method.partition(" ")
    for job_id in (";", "x.y"):  # RQ refuses such ids with a ValueError
        path = f"/v1/jobs/{job_id}" + ("/result" if result else "")
        response = http.request(verb, path)
        assert response.status_code in (404, 422), f"{verb} {path}: {response.text}"
        assert isinstance(response.json()["detail"], str)


def test_every_documented_422_has_the_shape_the_api_sends(http: TestClient):
    """The API answers 422 with `detail` as a sentence (api/errors.py); its schema must say so."""
    assert isinstance(http.get("/v1/jobs?limit=0").json()["detail"], str)
    documented = http.get("/openapi.json").json()
    components = documented["components"]["schemas"]
    wrong = []
    for path, operations in documented["paths"].items():
        for method, operation in operations.items():
            answer = operation["responses"].get("422")
            if answer is None:
                continue
            ref = answer["content"]["application/json"]["schema"]["$ref"]
            name = ref.rsplit("/", 1)[-1]
            if components[name]["properties"]["detail"].get("type") != "string":
                wrong.append(f"{method.upper()} {path} ({name})")
    assert not wrong, f"422 documented with a `detail` that is not a string: {wrong}"
