"""What the API refuses before anything is queued: writes without the token, invalid configs,
jobs over the cost limits, bodies over the size limit; what CORS lets a browser do; and that a
client can give back (`replaces`) only its own claim on a job, once."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue

from contract import ASKERS_KEY, CLAIM_KEY, SPP_QUEUE, key_for
from contract.rq_queue import SERIALIZER
from nfcore.spec.config import SPPConfig
from nfcore.spec.cost import estimate
from tests.api.conftest import SLOW, TINY

TOKEN = "s3cret"
ORIGIN = "http://example.org"


def queued_ids(store: redis.Redis) -> list[str]:
    return Queue(SPP_QUEUE, connection=store, serializer=SERIALIZER).get_job_ids()


def assert_refused(response: Any, *phrases: str) -> str:
    """A 422 in JSON whose sentence contains every phrase; returns the sentence."""
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    detail = response.json()["detail"]
    for phrase in phrases:
        assert phrase in detail, (phrase, detail)
    return detail


# --- auth -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": "Basic s3cret"},
    ],
    ids=["none", "wrong-token", "no-scheme", "basic"],
)
def test_writes_without_the_token_are_401(
    make_client: Callable[..., TestClient], store: redis.Redis, headers: dict[str, str]
):
    client = make_client(api_token=TOKEN)
    job_id = client.post("/v1/spp", json=TINY, headers={"Authorization": f"Bearer {TOKEN}"}).json()[
        "id"
    ]

    for method, path, body in (
        ("POST", "/v1/spp", {**TINY, "seed": 1}),
        ("POST", "/v1/sweeps", {"base": TINY, "grid": {"seed": [2, 3]}}),
        ("DELETE", f"/v1/jobs/{job_id}", None),
    ):
        response = client.request(method, path, json=body, headers=headers)
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
        assert "Bearer" in response.json()["detail"]
    assert queued_ids(store) == [job_id]


def test_writes_with_the_token_pass_and_reads_stay_open(make_client: Callable[..., TestClient]):
    client = make_client(api_token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}

    submitted = client.post("/v1/spp", json=TINY, headers=auth)
    assert submitted.status_code == 202
    job_id = submitted.json()["id"]
    sweep = client.post("/v1/sweeps", json={"base": TINY, "grid": {"seed": [2, 3]}}, headers=auth)
    assert sweep.status_code == 202

    for path in (
        f"/v1/jobs/{job_id}",
        "/v1/jobs",
        sweep.json()["url"],
        "/v1/models",
        "/v1/activations",
        "/v1/presets",
        "/healthz",
        "/readyz",
    ):
        assert client.get(path).status_code == 200, path

    canceled = client.delete(f"/v1/jobs/{job_id}", headers=auth)
    assert canceled.status_code == 200
    assert canceled.json()["state"] == "canceled"


def test_an_invalid_config_without_the_token_is_401(make_client: Callable[..., TestClient]):
    client = make_client(api_token=TOKEN)

    assert client.post("/v1/spp", json={"alpha": -1}).status_code == 401


BAD_BODIES = {
    "malformed JSON": b"{depth: 14",
    "bad UTF-8": b'{"depth": "\xff\xfe"}',
    "deep nesting": b"[" * 5000 + b"]" * 5000,
    "empty": b"",
    "wrong types": json.dumps({"batch": True}).encode(),
}


@pytest.mark.parametrize("path", ["/v1/spp", "/v1/train", "/v1/sweeps"])
@pytest.mark.parametrize("body", list(BAD_BODIES.values()), ids=list(BAD_BODIES))
def test_the_token_is_checked_before_the_body_is_read(
    make_client: Callable[..., TestClient], path: str, body: bytes
):
    """Without the token, what the body holds is none of the caller's business: 401, not a 422
    (or a 400 that the schema does not document) telling what is wrong with it."""
    client = make_client(api_token=TOKEN)

    response = client.post(path, content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 401, response.text
    assert "Bearer" in response.json()["detail"]


# --- validation -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("alpha", -1, "0 < alpha <= 10"),
        ("alpha", 11, "0 < alpha <= 10"),
        ("width", 0, "0 < width <= 4"),
        ("depth", 1, "2 <= depth <= 2402"),
        ("se_gain", 10.5, "0 <= se_gain <= 10"),
        ("stochdepth_rate", 1, "0 <= stochdepth_rate < 1"),
        ("drop_rate", -0.1, "0 <= drop_rate < 1"),
        ("num_classes", 1, "2 <= num_classes <= 100000"),
        ("resolution", 2048, "8 <= resolution <= 1024"),
        ("batch", 0, "1 <= batch <= 4096"),
        ("seed", -1, "0 <= seed <= 2147483647"),
    ],
)
def test_a_value_out_of_bounds_is_422_naming_the_field_and_its_range(
    client: TestClient, store: redis.Redis, field: str, value: float, allowed: str
):
    detail = assert_refused(client.post("/v1/spp", json={**TINY, field: value}), allowed)

    assert detail.startswith(f"{field}: ")
    assert queued_ids(store) == []


@pytest.mark.parametrize(
    ("body", "phrases"),
    [
        pytest.param({**TINY, "colour": "red"}, ("colour", "Extra inputs"), id="unknown-field"),
        # Depth 51 has no block layout; the answer names the depths that have one.
        pytest.param({**TINY, "depth": 51}, ("depth: 51", "50, 101"), id="depth-51"),
        pytest.param({**TINY, "depth": "deep"}, ("depth", "integer", "'deep'"), id="depth-str"),
        pytest.param({**TINY, "gradients": "maybe"}, ("gradients", "boolean"), id="bool"),
        pytest.param({**TINY, "width": [1]}, ("width",), id="width-list"),
        pytest.param({**TINY, "norm": "layernorm"}, ("norm", "'layernorm'"), id="norm"),
        pytest.param(
            {**TINY, "family": "nf_regnet", "norm": "fixup"},
            ("norm", "nf_regnet"),
            id="family-norm",
        ),
        pytest.param({**TINY, "device": "tpu"}, ("device", "'tpu'"), id="device"),
        pytest.param({**TINY, "activation": "nope"}, ("activation", "nope"), id="activation"),
        pytest.param({**TINY, "gamma": -1}, ("gamma", "(0, 100.0]"), id="gamma"),
        pytest.param(
            {**TINY, "layout": [1, 0]}, ("layout", "greater than or equal to 1"), id="layout"
        ),
        pytest.param({**TINY, "resolution": 16}, ("resolution", "at least 32"), id="too-small"),
        pytest.param([TINY], ("a JSON object",), id="not-an-object"),
    ],
)
def test_an_invalid_config_is_422_naming_what_is_wrong(
    client: TestClient, store: redis.Redis, body: Any, phrases: tuple[str, ...]
):
    assert_refused(client.post("/v1/spp", json=body), *phrases)
    assert queued_ids(store) == []


@pytest.mark.parametrize(
    "text",
    ['{"alpha": NaN}', '{"width": Infinity}', '{"gamma": NaN}', '{"alpha": -Infinity}'],
)
def test_non_finite_numbers_are_422_not_500(client: TestClient, store: redis.Redis, text: str):
    field = text.split('"')[1]

    response = client.post("/v1/spp", content=text, headers={"Content-Type": "application/json"})

    assert_refused(response, field)
    assert queued_ids(store) == []


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("batch", True, "batch: Input should be an integer (got true)"),
        ("depth", "50", "depth: Input should be an integer or null (got '50')"),
        ("depth", 50.0, "depth: Input should be an integer or null (got 50.0)"),
        ("alpha", "0.2", "alpha: Input should be a number or null (got '0.2')"),
        ("skipinit", 1, "skipinit: Input should be a boolean or null (got 1)"),
        ("gradients", "true", "gradients: Input should be a boolean (got 'true')"),
        ("gamma", "1.5", "gamma: Input should be \"auto\", a number or null (got '1.5')"),
        ("layout", [3, "4"], "layout: Input should be an array of integers or null"),
    ],
)
def test_a_value_of_another_json_type_is_422_not_coerced(
    client: TestClient, store: redis.Redis, field: str, value: Any, words: str
):
    """The API takes the JSON types its schema documents: `"batch": true` was batch 1."""
    assert_refused(client.post("/v1/spp", json={**TINY, field: value}), words)
    assert queued_ids(store) == []


def test_numbers_of_the_documented_types_are_still_accepted(client: TestClient):
    body = {**TINY, "alpha": 1, "gamma": 2, "se_gain": 0, "width": 0.125}  # integers as numbers
    assert client.post("/v1/spp", json=body).status_code == 202


@pytest.mark.parametrize(
    ("body", "phrases"),
    [
        (b'{"depth": "\xff"}', ("not valid JSON",)),
        (b"[" * 5000 + b"]" * 5000, ("not valid JSON", "recursion")),
        (json.dumps({"activation": "\ud800"}).encode(), ("not valid JSON", "lone surrogate")),
    ],
    ids=["bad-utf8", "deep", "lone-surrogate"],
)
@pytest.mark.parametrize("path", ["/v1/spp", "/v1/train", "/v1/sweeps"])
def test_a_body_that_cannot_be_decoded_is_a_documented_422(
    client: TestClient, path: str, body: bytes, phrases: tuple[str, ...]
):
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})

    assert_refused(response, *phrases)
    documented = client.get("/openapi.json").json()["paths"][path]["post"]["responses"]
    assert "422" in documented and "400" not in documented


def test_a_sweep_naming_a_field_no_utf8_can_write_is_422_not_500(client: TestClient):
    """The issue's body: a lone surrogate as a grid field name answered 500 and closed the
    connection (the error message could not be encoded)."""
    http = TestClient(client.app, raise_server_exceptions=False)
    body = json.dumps({"grid": {"\ud800": [1]}}).encode()

    response = http.post("/v1/sweeps", content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == 422, response.text
    unknown = http.post("/v1/sweeps", json={"base": TINY, "grid": {"cölour": [1]}})
    assert_refused(unknown, "grid: unknown config field(s) cölour")


def test_an_error_message_that_is_not_utf8_is_still_written_as_json():
    from api.errors import ErrorResponse

    response = ErrorResponse({"detail": "no job '\udc80'"}, status_code=404)

    assert json.loads(response.body) == {"detail": "no job '\udc80'"}


def test_a_body_that_is_not_json_is_422(client: TestClient):
    response = client.post(
        "/v1/spp", content="{depth: 14", headers={"Content-Type": "application/json"}
    )

    assert_refused(response, "JSON")


# --- cost limits ----------------------------------------------------------------------------
def test_a_job_over_max_flops_is_422_saying_by_how_much(
    make_client: Callable[..., TestClient], store: redis.Redis
):
    client = make_client(max_flops=1e9)
    over = estimate(SPPConfig(**SLOW)).flops / 1e9
    assert over > 1

    response = client.post("/v1/spp", json=SLOW)

    assert_refused(response, "MAX_FLOPS", f"by {over:.1f}x")
    assert queued_ids(store) == []


def test_a_job_over_max_activation_bytes_is_422_saying_by_how_much(
    make_client: Callable[..., TestClient], store: redis.Redis
):
    limit = 50_000
    client = make_client(max_activation_bytes=limit)
    over = estimate(SPPConfig(**TINY)).activation_bytes / limit

    response = client.post("/v1/spp", json=TINY)

    assert_refused(response, "MAX_ACTIVATION_BYTES", f"by {over:.1f}x")
    assert queued_ids(store) == []


def test_weights_too_large_for_memory_are_422_though_flops_and_activations_fit(
    client: TestClient, store: redis.Redis
):
    """The issue's body: about 1.9e10 parameters (76 GB of float32 weights) was accepted."""
    body = {"width": 4, "layout": [200, 200, 200, 200], "resolution": 32, "batch": 1, "norm": "nf"}
    cost = estimate(SPPConfig(**body))
    assert cost.parameters > 1.8e10
    assert cost.weight_bytes >= 4 * cost.parameters
    over = cost.memory_bytes / (8 * 2**30)

    detail = assert_refused(
        client.post("/v1/spp", json=body), "MAX_MEMORY_BYTES", f"by {over:.1f}x"
    )

    assert "of weights" in detail and "FLOPs" not in detail
    assert queued_ids(store) == []


def test_training_counts_gradients_momentum_and_the_ema_copy_against_max_memory_bytes(
    make_client: Callable[..., TestClient],
):
    from nfcore.spec.config import TrainConfig
    from nfcore.spec.cost import train_costs

    body = {"depth": 14, "width": 0.25, "norm": "nf", "resolution": 32, "batch": 2, "steps": 10,
            "eval_examples": 2, "spp_batch": 2}  # fmt: skip
    costs = train_costs(TrainConfig(**body))
    plain, with_ema = costs.step, train_costs(TrainConfig(**body, ema_decay=0.99)).step
    # Weights, gradients, momentum and the standardized (Scaled WS) weights; and the EMA copy.
    assert plain.weight_bytes == 4 * 4 * plain.parameters
    assert with_ema.weight_bytes == 5 * 4 * plain.parameters
    limit = (plain.memory_bytes + with_ema.memory_bytes) / 2
    assert max(costs.eval.memory_bytes, costs.spp.memory_bytes) < limit
    client = make_client(max_memory_bytes=limit)

    assert client.post("/v1/train", json=body).status_code == 202
    refused = client.post("/v1/train", json={**body, "ema_decay": 0.99})
    assert_refused(refused, "one step's", "estimated peak memory", "MAX_MEMORY_BYTES")


def test_a_job_exactly_at_the_limit_is_accepted(make_client: Callable[..., TestClient]):
    flops = estimate(SPPConfig(**TINY)).flops

    assert make_client(max_flops=flops).post("/v1/spp", json=TINY).status_code == 202
    assert make_client(max_flops=flops - 1).post("/v1/spp", json=TINY).status_code == 422


# --- body size ------------------------------------------------------------------------------
def padded(size: int) -> bytes:
    """TINY as a JSON body of exactly `size` bytes (whitespace is valid JSON)."""
    text = json.dumps(TINY).encode()
    return text + b" " * (size - len(text))


def test_a_body_over_max_body_bytes_is_413(
    make_client: Callable[..., TestClient], store: redis.Redis
):
    client = make_client(max_body_bytes=1024)
    headers = {"Content-Type": "application/json"}

    response = client.post("/v1/spp", content=padded(1025), headers=headers)

    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert "1024" in response.json()["detail"]
    assert queued_ids(store) == []
    assert client.post("/v1/spp", content=padded(1024), headers=headers).status_code == 202


def test_a_chunked_body_over_max_body_bytes_is_413(
    make_client: Callable[..., TestClient], store: redis.Redis
):
    client = make_client(max_body_bytes=1024)

    def chunks() -> Iterator[bytes]:
        body = padded(2000)
        yield from (body[start : start + 256] for start in range(0, len(body), 256))

    response = client.post(
        "/v1/spp", content=chunks(), headers={"Content-Type": "application/json"}
    )

    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert "1024" in response.json()["detail"]
    assert queued_ids(store) == []


# --- CORS -----------------------------------------------------------------------------------
def preflight(client: TestClient, origin: str) -> Any:
    return client.options(
        "/v1/spp",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


def test_cors_allows_the_configured_origin_only(make_client: Callable[..., TestClient]):
    client = make_client(cors_origins=[ORIGIN])

    allowed = preflight(client, ORIGIN)
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()

    other = preflight(client, "http://elsewhere.example")
    assert "access-control-allow-origin" not in other.headers

    read = client.get("/v1/models", headers={"Origin": ORIGIN})
    assert read.headers["access-control-allow-origin"] == ORIGIN
    # A page on that origin reads the claim it must send back as `replaces`, and the job URL.
    exposed = read.headers["access-control-expose-headers"].lower()
    assert "x-claim" in exposed and "location" in exposed


def test_no_cors_headers_without_configured_origins(client: TestClient):
    response = client.get("/v1/models", headers={"Origin": ORIGIN})

    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


# --- claims: `replaces` gives back only what this client asked for, once ------------------------
def claim_of(answer: Any) -> str:
    """The claim a submission answered with, in its body and its X-Claim header."""
    assert answer.status_code == 202, answer.text
    claim = answer.json()["claim"]
    assert claim and answer.headers["x-claim"] == claim
    return claim


def state_of(client: TestClient, job_id: str) -> str:
    return client.get(f"/v1/jobs/{job_id}").json()["state"]


def test_a_job_id_in_replaces_cancels_nobody_elses_job(client: TestClient, store: redis.Redis):
    """A teacher's sweep point that a student asked for too; a third client replaces its id,
    twice, with a cheap body: the point stays queued for both."""
    sweep = client.post("/v1/sweeps", json={"base": TINY, "grid": {"seed": [0, 1]}})
    point = sweep.json()["points"][0]["job"]["id"]
    student = client.post("/v1/spp", json={**TINY, "seed": 0})
    assert student.json()["id"] == point

    for _ in range(2):
        cheap = client.post("/v1/spp", json={**TINY, "seed": 5}, params={"replaces": point})
        assert cheap.status_code == 202

    assert state_of(client, point) == "queued"
    assert store.scard(key_for(ASKERS_KEY, point)) == 2  # the sweep's claim and the student's
    moved_on = {"replaces": claim_of(student)}  # the student moves on; the sweep still holds it
    client.post("/v1/spp", json={**TINY, "seed": 6}, params=moved_on)
    assert state_of(client, point) == "queued"


def test_a_claim_given_back_twice_at_once_counts_once(client: TestClient, store: redis.Redis):
    """A retried request gives its claim back with both tries: one counts, neither fails."""
    mine, theirs = (client.post("/v1/spp", json=TINY) for _ in "ab")
    job_id = mine.json()["id"]
    my_claim, their_claim = claim_of(mine), claim_of(theirs)

    def give_back(_: int) -> int:
        params = {"replaces": my_claim}
        return client.post("/v1/spp", json={**TINY, "seed": 7}, params=params).status_code

    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(give_back, range(2))) == [202, 202]

    assert state_of(client, job_id) == "queued"
    assert store.smembers(key_for(ASKERS_KEY, job_id)) == {their_claim.encode()}
    client.post("/v1/spp", json={**TINY, "seed": 8}, params={"replaces": their_claim})
    assert state_of(client, job_id) == "canceled"


def test_claims_are_only_in_the_submissions_answer_and_expire_with_the_result(
    client: TestClient, store: redis.Redis
):
    answer = client.post("/v1/spp", json=TINY)
    job_id, claim = answer.json()["id"], claim_of(answer)
    sweep = client.post("/v1/sweeps", json={"base": TINY, "grid": {"seed": [0]}}).json()

    assert len(claim) >= 32 and claim != job_id
    assert client.get(f"/v1/jobs/{job_id}").json()["claim"] is None
    assert all(job["claim"] is None for job in client.get("/v1/jobs").json()["jobs"])
    assert all(p["job"]["claim"] is None for p in client.get(sweep["url"]).json()["points"])
    assert sweep["points"][0]["job"]["claim"] is None  # a sweep's claims stay with the API
    assert store.get(key_for(CLAIM_KEY, claim)) == job_id.encode()
    settings = client.app.state.settings  # type: ignore[attr-defined]
    assert 0 < store.ttl(key_for(CLAIM_KEY, claim)) <= settings.result_ttl
    made_up = client.post("/v1/spp", json={**TINY, "seed": 3}, params={"replaces": "x" * 43})
    assert made_up.status_code == 202 and state_of(client, job_id) == "queued"
