"""docs/architecture.md, "How to add ... An endpoint", tried with a made-up one.

A router of its own (here in the test; in the tree a module in `api/routes/`) included in the
app `api.main.create_app` makes, as `create_app` includes the routers of `api/routes/`: its
errors are `api.errors` exceptions and answer 4xx JSON `{"detail": ...}`, and its POST reads
its body through `api.body.json_body` after the token check. No worker: nothing is queued.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field

from api.body import body_doc, json_body
from api.deps import require_token
from api.errors import Conflict, NotFound
from api.schemas import ErrorBody

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# --- the made-up endpoint, as a module of api/routes/ would write it ----------------------------
class NoteRequest(BaseModel):
    """A body (in the tree: a model of api/schemas.py)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=32)
    stars: int = Field(ge=0, le=5)


class NoteView(BaseModel):
    name: str
    stars: int


NOTES: dict[str, NoteView] = {}
router = APIRouter(prefix="/v1/notes", tags=["notes"])
ERRORS = {404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 422: {"model": ErrorBody}}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=NoteView,
    responses={401: {"model": ErrorBody}, **ERRORS},
    dependencies=[Depends(require_token)],
    openapi_extra=body_doc(NoteRequest),
    summary="Keep a note",
)
def add_note(request: Annotated[NoteRequest, Depends(json_body(NoteRequest))]) -> NoteView:
    if request.name in NOTES:
        raise Conflict(f"a note {request.name!r} exists already")
    NOTES[request.name] = NoteView(name=request.name, stars=request.stars)
    return NOTES[request.name]


@router.get("/{name}", response_model=NoteView, responses=ERRORS, summary="A note")
def get_note(name: str) -> NoteView:
    if name not in NOTES:
        raise NotFound(f"no note {name!r}")
    return NOTES[name]


# --- the tests ------------------------------------------------------------------------------------
def with_notes(make_client: Callable[..., TestClient]) -> TestClient:
    """The service's own app (its error handlers, body limit, token) with the router included."""
    NOTES.clear()
    client = make_client(api_token=TOKEN)
    client.app.include_router(router)  # type: ignore[attr-defined]
    return client


def test_a_new_endpoints_errors_are_4xx_json_with_a_detail(
    make_client: Callable[..., TestClient],
) -> None:
    client = with_notes(make_client)
    added = client.post("/v1/notes", json={"name": "spp", "stars": 5}, headers=AUTH)
    assert added.status_code == 201 and added.json() == {"name": "spp", "stars": 5}
    assert client.get("/v1/notes/spp").json() == {"name": "spp", "stars": 5}

    answers = {
        "not found": client.get("/v1/notes/nothing"),
        "conflict": client.post("/v1/notes", json={"name": "spp", "stars": 1}, headers=AUTH),
        "out of bounds": client.post("/v1/notes", json={"name": "x", "stars": 6}, headers=AUTH),
        "wrong type": client.post("/v1/notes", json={"name": "x", "stars": True}, headers=AUTH),
        "bad JSON": client.post(
            "/v1/notes", content=b"{name", headers={**AUTH, "Content-Type": "application/json"}
        ),
        "not JSON": client.post(
            "/v1/notes", content=b"name=x", headers={**AUTH, "Content-Type": "text/plain"}
        ),
        "no token": client.post("/v1/notes", json={"name": "y", "stars": 1}),
    }
    codes = {what: answer.status_code for what, answer in answers.items()}
    assert codes == {
        "not found": 404, "conflict": 409, "out of bounds": 422, "wrong type": 422,
        "bad JSON": 422, "not JSON": 422, "no token": 401,
    }  # fmt: skip
    for what, answer in answers.items():
        assert answer.headers["content-type"] == "application/json", what
        assert isinstance(answer.json()["detail"], str) and answer.json()["detail"], what
    assert answers["not found"].json()["detail"] == "no note 'nothing'"
    assert answers["conflict"].json()["detail"] == "a note 'spp' exists already"
    assert answers["out of bounds"].json()["detail"].startswith("stars: ")
    assert answers["wrong type"].json()["detail"].startswith("stars: ")  # strict JSON types
    assert "Content-Type: application/json" in answers["not JSON"].json()["detail"]
    assert "y" not in NOTES  # refused writes keep nothing


def test_a_new_post_checks_the_token_before_reading_its_body(
    make_client: Callable[..., TestClient],
) -> None:
    client = with_notes(make_client)
    read: list[bytes] = []

    def body() -> Iterator[bytes]:
        read.append(b"{not json")
        yield b"{not json"

    refused = client.post("/v1/notes", content=body(), headers={"Content-Type": "application/json"})
    assert refused.status_code == 401, refused.text
    assert refused.json()["detail"] == "this API needs 'Authorization: Bearer <token>' for writes"
    assert read == []  # the body was never read
    # With the token the same body is read, and refused for what it is.
    bad = client.post(
        "/v1/notes", content=body(), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert bad.status_code == 422 and read == [b"{not json"]


def test_a_new_endpoint_is_documented_with_its_body(make_client: Callable[..., TestClient]) -> None:
    client = with_notes(make_client)
    document = client.get("/openapi.json").json()
    post = document["paths"]["/v1/notes"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/NoteRequest"
    }
    assert document["components"]["schemas"]["NoteRequest"]["required"] == ["name", "stars"]
    assert {"401", "409", "422"} <= set(post["responses"])
