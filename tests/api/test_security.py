"""Whoever can write to Redis must not be able to run code in a worker or in the API.

RQ imports and calls what a job's data names: its function, a method of its instance, its
success, failure and stopped callbacks; and it sends the job's webhooks. These tests write
such jobs straight into Redis, as an attacker would, and check that nothing they name is
imported or called, and that each fails saying why.
"""

from __future__ import annotations

import ast
import http.server
import inspect
import json
import textwrap
import threading
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
from contract import SERIALIZER, SPP_QUEUE, TASKS, TRAIN_QUEUE, TaskJob, key_for
from contract.reaper import reap_abandoned
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

    assert reap_abandoned(store, settings) == 1

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
