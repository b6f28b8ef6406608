"""Whoever can write to Redis must not be able to run code in a worker or in the API.

RQ imports and calls what a job's data names: its function, a method of its instance, its
success, failure and stopped callbacks; and it sends the job's webhooks. These tests write
such jobs straight into Redis, as an attacker would, and check that nothing they name is
imported or called, and that each fails saying why.
"""

from __future__ import annotations

import ast
import concurrent.futures
import http.server
import inspect
import json
import socket
import textwrap
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import rq
import rq.job
from fastapi.testclient import TestClient
from rq import Queue
from rq.utils import now, utcformat

from api.settings import ApiSettings
from contract import SPP_QUEUE, TASKS, TRAIN_QUEUE, advertise, key_for
from contract.reaper import reap_abandoned
from contract.rq_queue import SERIALIZER, RQJobQueue, TaskJob
from tests.api.conftest import TINY, WorkerProcess, wait_for

DONE = ("finished", "failed", "canceled")
RQ_VERSION = "3.0.0"  # pinned in pyproject.toml: TaskJob overrides what this version resolves


@pytest.fixture
def evil(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A module that leaves a file when imported and another when called."""
    marks = {"imported": tmp_path / "imported", "called": tmp_path / "called"}
    (tmp_path / "evilmod.py").write_text(
        textwrap.dedent(f"""
            import pathlib
            pathlib.Path({str(marks["imported"])!r}).write_text("imported")

            def touch(*args, **kwargs):
                pathlib.Path({str(marks["called"])!r}).write_text("called")
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return marks


def inject(store: redis.Redis, job_id: str, queue: str, call: list[Any], **fields: Any) -> None:
    """A job written into Redis by hand, as in the issue's reproduction, and queued."""
    stamp = utcformat(now())
    store.hset(
        f"rq:job:{job_id}",
        mapping={
            "status": "queued", "origin": queue, "description": "x", "meta": "{}",
            "data": zlib.compress(json.dumps(call).encode()), "created_at": stamp,
            "enqueued_at": stamp, "timeout": "60", "result_ttl": "600", "failure_ttl": "600",
            **fields,
        },
    )  # fmt: skip
    store.rpush(f"rq:queue:{queue}", job_id)


@pytest.fixture
def webhook_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on loopback that records every request it gets."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.end_headers()

        do_POST = do_GET

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", seen
    server.shutdown()


def test_a_worker_runs_no_function_callback_or_webhook_a_job_names(
    client: TestClient,
    start_worker: Callable[..., WorkerProcess],
    store: redis.Redis,
    evil: dict[str, Path],
    tmp_path: Path,
    webhook_server: tuple[str, list[str]],
):
    start_worker(PYTHONPATH=str(tmp_path))
    pwned = tmp_path / "pwned.txt"
    hook_url, hooks_seen = webhook_server
    ours = [TASKS[SPP_QUEUE], None, [TINY], {}]
    bad_config = [TASKS[SPP_QUEUE], None, [{**TINY, "depth": 51}], {}]
    webhook = json.dumps([{"url": hook_url, "job_status": "finished", "method": "GET"}])
    attacks: dict[str, tuple[str, list[Any], dict[str, str], str]] = {
        # name: (queue, call, extra hash fields, what the error must mention)
        "exec": ("spp", ["builtins.exec", None, [f"open({str(pwned)!r}, 'w').write('x')"], {}],
                 {}, "builtins.exec"),
        "os.system": ("spp", ["os.system", None, [f"touch {pwned}"], {}], {}, "os.system"),
        "module": ("spp", ["evilmod.touch", None, [], {}], {}, "evilmod.touch"),
        "instance": ("spp", ["touch", "evilmod", [], {}], {}, "touch"),
        "method": ("spp", [TASKS[SPP_QUEUE], {"x": 1}, [TINY], {}], {}, "object"),
        "other queue's task": ("train", ours, {}, TASKS[TRAIN_QUEUE]),
        "success callback": ("spp", ours, {"success_callback_name": "evilmod.touch"},
                             "success callback"),
        "failure callback": ("spp", bad_config, {"failure_callback_name": "evilmod.touch"},
                             "failure callback"),
        "stopped callback": ("spp", ours, {"stopped_callback_name": "evilmod.touch"},
                             "stopped callback"),
        "webhook": ("spp", ours, {"webhooks": webhook}, "webhooks"),
        "not JSON": ("spp", ours, {"data": "\x80 not json"}, "not the JSON"),
    }  # fmt: skip
    for index, (queue, call, fields, _) in enumerate(attacks.values()):
        inject(store, f"evil-{index}", queue, call, **fields)

    for index, (name, (_, _, _, mention)) in enumerate(attacks.items()):
        view = wait_for(client, f"evil-{index}", DONE, timeout=60)
        assert view["state"] == "failed", (name, view)
        assert "this job was not run" in view["error"], (name, view["error"])
        assert mention in view["error"], (name, view["error"])
        assert "Traceback" not in view["error"]
        assert store.get(key_for("computations", f"evil-{index}")) is None, name
    assert not pwned.exists(), "builtins.exec or os.system ran"
    assert not evil["imported"].exists(), "the worker imported a module a job named"
    assert not evil["called"].exists()
    assert hooks_seen == [], "the worker sent a job's webhook"

    # And the worker still does its own work.
    following = client.post("/v1/spp", json=TINY).json()["id"]
    assert wait_for(client, following, DONE)["state"] == "finished"


def abandoned_job_with_failure_callback(store: redis.Redis) -> str:
    """A started job whose worker is gone, naming a failure callback: what the reaper (in the
    API and in every worker) cleans up."""
    inject(store, "evil-started", SPP_QUEUE, [TASKS[SPP_QUEUE], None, [TINY], {}],
           status="started", failure_callback_name="evilmod.touch")  # fmt: skip
    store.lrem(f"rq:queue:{SPP_QUEUE}", 0, "evil-started")
    store.zadd(f"rq:wip:{SPP_QUEUE}", {"evil-started:execution": 0})  # expired long ago
    return "evil-started"


def test_the_reaper_calls_no_failure_callback_a_job_names(
    redis_url: str, store: redis.Redis, evil: dict[str, Path]
):
    abandoned_job_with_failure_callback(store)
    settings = ApiSettings(redis_url=redis_url, job_retries=0)

    assert reap_abandoned(RQJobQueue(store), settings) == 1

    assert not evil["imported"].exists(), "the API's maintenance imported a module a job named"
    assert not evil["called"].exists()
    assert TaskJob.fetch("evil-started", connection=store, serializer=SERIALIZER).is_failed


def test_rqs_own_cleanup_would_call_it_which_is_why_every_queue_is_ours(
    store: redis.Redis, evil: dict[str, Path]
):
    """The hole is real: the same job cleaned up through a plain RQ queue runs the callback."""
    abandoned_job_with_failure_callback(store)
    plain = Queue(SPP_QUEUE, connection=store, serializer=SERIALIZER)

    plain.started_job_registry.cleanup()

    assert evil["called"].exists()


def test_taskjob_overrides_every_place_rq_resolves_a_callable_from_job_data():
    """If an RQ release adds a place that imports what a job names, this fails: the pin in
    pyproject.toml is what TaskJob was checked against."""
    assert rq.__version__ == RQ_VERSION
    source = ast.parse(inspect.getsource(rq.job))
    resolving = set()
    for node in ast.walk(source):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for call in ast.walk(node):
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Name)
                    and call.func.id in ("import_attribute", "resolve_function_reference")
                ):
                    resolving.add(node.name)
    # Job.create resolves the function a producer passes in (the API passes a string path).
    assert resolving == {"func", "success_callback", "failure_callback", "stopped_callback",
                         "create"}  # fmt: skip
    for name in resolving - {"create"}:
        assert name in TaskJob.__dict__, f"TaskJob does not override Job.{name}"
    assert "send_webhooks" in TaskJob.__dict__


# --- plugin descriptions: whoever writes one into Redis must not make the API read files, fetch
# URLs, hang or fail -------------------------------------------------------------------------

BOUNDED = {"depth": {"type": "integer", "minimum": 1, "maximum": 8, "default": 2}}


def described(arguments: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A plugin description as a worker advertises it, with `fields` changed."""
    schema = arguments if arguments is not None else {
        "type": "object", "properties": BOUNDED, "additionalProperties": False,
    }  # fmt: skip
    return {"name": "evil", "version": "1.0", "target": "x:y", "arguments": schema,
            "defaults": {}, "blocks": "auto", "residual": None, "input_shape": [8],
            "channels": "first", "resolution": 64, "description": "", "parameters": 1,
            **fields}  # fmt: skip


@pytest.fixture
def advertise_evil(store: redis.Redis) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Write a description of the plugin 'evil' into Redis, with a live worker (a record
    that heartbeats, as an attacker can write) listening on its queue."""
    fake = rq.Worker(["plugin.evil"], connection=store, serializer=SERIALIZER, name="fake")
    fake.register_birth()

    def write(description: dict[str, Any]) -> None:
        fake.heartbeat()
        advertise(store, [description], 600)

    yield write
    fake.register_death()


def evil_job(client: TestClient, model_args: dict[str, Any] | None = None) -> Any:
    return client.post("/v1/spp", json={"plugin": "evil", "model_args": model_args or {}})


def test_a_schema_that_refers_to_a_file_is_refused_without_reading_it(
    client: TestClient, advertise_evil: Callable, tmp_path: Path
) -> None:
    """The file's content came back in a 422 (jsonschema's default registry opens file://)."""
    secret = tmp_path / "secret.json"
    secret.write_text('{"type": "string", "description": "TOP-SECRET-7f3a"}')
    properties = {"depth": {"$ref": secret.as_uri()}}
    advertise_evil(described({"type": "object", "properties": properties}))

    response = evil_job(client, {"depth": 3})
    assert response.status_code == 422
    assert response.json()["detail"].startswith(
        "plugin: the model plugin 'evil' is unavailable: its argument schema refers to 'file://"
    )
    assert "no file or URL is read" in response.json()["detail"]
    models = client.get("/v1/models")
    assert models.status_code == 200
    assert "evil" not in {row["plugin"] for row in models.json()}  # listed as unavailable
    for answer in (response, models):
        assert "TOP-SECRET" not in answer.text


def test_a_schema_that_refers_to_a_url_answers_at_once_without_fetching_it(
    client: TestClient, advertise_evil: Callable
) -> None:
    """A URL that never answers held a threadpool thread per POST, until /healthz timed out."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections into its backlog, never answers
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/schema.json"
        advertise_evil(described({"type": "object", "properties": {"depth": {"$ref": url}}}))
        started = time.monotonic()
        response = pool.submit(evil_job, client, {"depth": 3}).result(timeout=5)
        assert time.monotonic() - started < 3  # slack for a loaded machine; it hung before
        assert response.status_code == 422 and "'evil' is unavailable" in response.text
        silent.settimeout(0)
        with pytest.raises(BlockingIOError):
            silent.accept()  # nobody connected
    finally:
        silent.close()  # resets a connection waiting in its backlog: a hung request ends
        pool.shutdown()


@pytest.mark.parametrize(
    ("description", "words"),
    [
        (described(defaults=None), "its description is not a plugin's: defaults: "),
        (described(version=3), "its description is not a plugin's: version: "),
        (described(input_shape="big"), "its description is not a plugin's: input_shape: "),
        (described({"type": "object", "properties": {"depth": {"$ref": "#/$defs/missing"}}}),
         "its argument schema refers to '#/$defs/missing', which is not in it"),
        (described({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}),
         "its argument schema's $ref '#/$defs/a' contains itself"),
        (described({"type": "object", "properties": {"depth": {"type": "integer"}}}),
         "its argument schema leaves work unbounded: argument 'depth' (a number) has no lower "
         "and no upper bound"),
        (described({"type": "object", "properties": {"n": {"$id": "http://x/"}}}),
         "its argument schema uses '$id', which the API refuses"),
        (described({"type": "object", "properties": {"n": {"type": "string", "maxLength": 9,
                                                           "pattern": "(?=a)"}}}),
         "its argument schema's pattern '(?=a)' is not one the API's linear-time regex engine "
         "runs"),
        (described({"type": "bogus"}), "its argument schema is not valid JSON Schema"),
    ],
    ids=["defaults-null", "version-int", "input-shape", "missing-ref", "ref-cycle", "unbounded",
         "id", "lookahead", "invalid"],
)  # fmt: skip
def test_a_bad_description_is_that_plugins_422_never_a_500(
    client: TestClient, advertise_evil: Callable, description: dict[str, Any], words: str
) -> None:
    advertise_evil(description)
    response = evil_job(client, {"depth": 3})
    assert response.status_code == 422, response.text
    expected = f"plugin: the model plugin 'evil' is unavailable: {words}"
    assert response.json()["detail"].startswith(expected), response.text
    models = client.get("/v1/models")
    assert models.status_code == 200 and "evil" not in {r["plugin"] for r in models.json()}


def test_a_deeply_nested_or_huge_description_is_refused_before_it_is_read(
    client: TestClient, advertise_evil: Callable
) -> None:
    """A schema nested 200 levels deep made /v1/models answer 500."""
    nested: dict[str, Any] = {"type": "integer", "minimum": 1, "maximum": 2}
    for _ in range(200):
        nested = {"type": "array", "maxItems": 1, "items": nested}
    advertise_evil(described({"type": "object", "properties": {"depth": nested}}))
    assert client.get("/v1/models").status_code == 200
    response = evil_job(client)
    assert response.status_code == 422
    assert "its description is nested over 32 levels deep" in response.json()["detail"]
    nested = {"type": "integer", "minimum": 1, "maximum": 2}
    for _ in range(40):  # under pydantic-core's own limit, over ours
        nested = {"type": "array", "maxItems": 1, "items": nested}
    advertise_evil(described({"type": "object", "properties": {"depth": nested}}))
    assert "its description is nested over 32 levels" in evil_job(client).json()["detail"]

    advertise_evil(described(description="x" * 100_000))
    assert "its description is 100" in evil_job(client).json()["detail"]


def test_a_backtracking_pattern_cannot_hold_the_api(
    client: TestClient, advertise_evil: Callable
) -> None:
    """`^(a+)+$` against 27 characters held the API and /healthz for 6 s (Python's `re`); it
    is matched in linear time now."""
    name = {"type": "string", "maxLength": 64, "pattern": "^(a+)+$"}
    advertise_evil(described({"type": "object", "properties": {"name": name},
                              "additionalProperties": False}))  # fmt: skip
    started = time.monotonic()
    response = evil_job(client, {"name": "a" * 30 + "!"})  # Python's re: about 50 s
    assert time.monotonic() - started < 5  # slack for a loaded machine
    assert response.status_code == 422
    assert response.json()["detail"] == (
        f"model_args of plugin 'evil': name: '{'a' * 30}!' does not match '^(a+)+$'"
    )
    assert evil_job(client, {"name": "aaa"}).status_code == 202  # a match is a valid job
