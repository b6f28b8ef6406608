"""POST /v1/train and the jobs endpoints for training runs, on a real Redis with real workers:
results, the cache, streamed events and their paging, CSV, limits, canceling and collapse."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue

import nfcore
from contract import EVENTS_KEY, SPP_QUEUE, TRAIN_QUEUE, key_for
from contract.rq_queue import SERIALIZER, RQRunningJob
from nfcore.spec.config import TrainConfig, config_hash
from nfcore.spec.cost import train_costs
from nfcore.spec.train_result import EVAL_KEYS, STEP_KEYS, written_bytes
from tests.api.conftest import wait_for

DONE = ("finished", "failed", "canceled")
# A tiny network on noise: a step takes a few milliseconds on one CPU thread.
TINY_TRAIN: dict[str, Any] = {
    "depth": 14, "width": 0.125, "norm": "nf", "maxpool": False, "resolution": 16, "batch": 8,
    "dataset": "gaussian", "steps": 20, "eval_every": 10, "eval_examples": 16, "device": "cpu",
}  # fmt: skip
# Long enough to watch (a few seconds); evaluated and measured only at its start and end.
WATCHED = {**TINY_TRAIN, "steps": 600, "eval_every": 600, "seed": 1}
# Would run for half a minute: only canceling ends it early.
LONG = {**TINY_TRAIN, "steps": 5000, "eval_every": 5000, "seed": 2}
# Issue 19 item 7: a deep, narrow network measured every step.
ISSUE_RUN: dict[str, Any] = {
    "depth": 600, "width": 0.0625, "resolution": 32, "batch": 2, "spp_batch": 2, "steps": 5000,
    "spp_every": 1, "norm": "nf", "dataset": "gaussian",
}  # fmt: skip
# A learning rate that sends the loss far past ln(10) within a couple of steps.
EXPLODING = {**TINY_TRAIN, "lr": 100.0, "warmup_steps": 0, "seed": 3}


def job_id_of(config: dict[str, Any]) -> str:
    return config_hash(TrainConfig(**config), nfcore.__version__)


def computations(store: redis.Redis, job_id: str) -> int:
    return int(store.get(key_for("computations", job_id)) or 0)


def queued_ids(store: redis.Redis, name: str = TRAIN_QUEUE) -> list[str]:
    return Queue(name, connection=store, serializer=SERIALIZER).get_job_ids()


def events_page(client: TestClient, job_id: str, since: int = 0, **params: Any) -> dict:
    response = client.get(f"/v1/jobs/{job_id}/events", params={"since": since, **params})
    assert response.status_code == 200, response.text
    return response.json()


def all_events(client: TestClient, job_id: str) -> list[dict]:
    return events_page(client, job_id)["events"]


def local_train(config: dict[str, Any]) -> dict:
    """The result of the same training in this process, on the worker's single thread."""
    import torch

    from nfcore.training.train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train(TrainConfig(**config), device="cpu").to_json_dict()
    finally:
        torch.set_num_threads(threads)


# --- submitting, no worker ------------------------------------------------------------------
def test_post_queues_a_training_job_on_the_train_queue(client: TestClient, store: redis.Redis):
    response = client.post("/v1/train", json=TINY_TRAIN)

    assert response.status_code == 202, response.text
    job = response.json()
    job_id = job_id_of(TINY_TRAIN)
    assert job["id"] == job_id
    assert job["kind"] == "train"
    assert job["state"] == "queued"
    assert job["progress"] == {"done": 0, "total": 20}
    assert response.headers["location"] == f"/v1/jobs/{job_id}"
    assert response.headers["x-cache"] == "miss"
    assert queued_ids(store) == [job_id]
    assert queued_ids(store, SPP_QUEUE) == []
    assert client.post("/v1/train", json=TINY_TRAIN).json()["enqueued_at"] == job["enqueued_at"]
    assert queued_ids(store) == [job_id]

    pending = client.get(f"/v1/jobs/{job_id}/result")
    assert pending.status_code == 409
    assert "(0/20 steps)" in pending.json()["detail"]
    page = events_page(client, job_id)
    assert page == {
        "events": [],
        "next": 0,
        "state": "queued",
        "progress": {"done": 0, "total": 20},
        "attempt": 0,
        "restarted": False,
    }


def test_a_jobs_view_names_its_config(client: TestClient, store: redis.Redis):
    """A client that knows only a job's id (a dashboard link) can say what the job trains."""
    job_id = client.post("/v1/train", json=TINY_TRAIN).json()["id"]
    expected = TrainConfig(**TINY_TRAIN).model_dump(mode="json")
    assert client.get(f"/v1/jobs/{job_id}").json()["config"] == expected
    [listed] = client.get("/v1/jobs").json()["jobs"]
    assert listed["config"] == expected
    # A record that is not what the API enqueues has no config, and does not break the view.
    store.hset(f"rq:job:{job_id}", "data", b"not json")
    assert client.get(f"/v1/jobs/{job_id}").json()["config"] is None


def test_events_of_an_unknown_job_are_404_and_a_negative_since_is_422(client: TestClient):
    missing = client.get("/v1/jobs/no-such-job/events")
    assert missing.status_code == 404
    assert "no-such-job" in missing.json()["detail"]

    job_id = client.post("/v1/train", json=TINY_TRAIN).json()["id"]
    for params in ({"since": -1}, {"since": "two"}, {"limit": 0}):
        refused = client.get(f"/v1/jobs/{job_id}/events", params=params)
        assert refused.status_code == 422, params
        assert next(iter(params)) in refused.json()["detail"]


def test_a_job_queued_again_starts_with_no_events(client: TestClient, store: redis.Redis):
    job_id = client.post("/v1/train", json=TINY_TRAIN).json()["id"]
    assert client.delete(f"/v1/jobs/{job_id}").json()["state"] == "canceled"
    # What a canceled run leaves behind.
    store.rpush(key_for(EVENTS_KEY, job_id), json.dumps({"kind": "step", "step": 1}))
    assert len(all_events(client, job_id)) == 1

    again = client.post("/v1/train", json=TINY_TRAIN)
    assert again.status_code == 202
    assert again.json()["state"] == "queued"
    assert events_page(client, job_id) == {
        "events": [],
        "next": 0,
        "state": "queued",
        "progress": {"done": 0, "total": 20},
        "attempt": 0,
        "restarted": False,
    }


def test_steps_over_max_train_steps_are_422_naming_the_setting(
    make_client: Callable[..., TestClient], store: redis.Redis
):
    default = make_client()
    refused = default.post("/v1/train", json={**TINY_TRAIN, "steps": 5001})
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert detail.startswith("steps: 5001"), detail
    assert "MAX_TRAIN_STEPS = 5000" in detail

    small = make_client(max_train_steps=50)
    refused = small.post("/v1/train", json={**TINY_TRAIN, "steps": 51})
    assert refused.status_code == 422
    assert "MAX_TRAIN_STEPS = 50" in refused.json()["detail"]
    assert queued_ids(store) == []
    assert small.post("/v1/train", json={**TINY_TRAIN, "steps": 50}).status_code == 202


def test_a_training_over_max_train_flops_is_422_saying_by_how_much_and_how_many_steps_fit(
    make_client: Callable[..., TestClient], store: redis.Redis
):
    config = {**TINY_TRAIN, "steps": 1000, "eval_every": 1000}
    total = train_costs(TrainConfig(**config)).total
    client = make_client(max_train_flops=total / 4)

    refused = client.post("/v1/train", json=config)
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert "MAX_TRAIN_FLOPS" in detail
    assert "by 4.0x" in detail
    assert "reduce the steps" in detail
    assert queued_ids(store) == []
    fitting = int(detail.split("at most about ")[1].split()[0])
    assert 200 < fitting < 250, detail  # a quarter of the budget, less the SPPs and evaluation
    assert client.post("/v1/train", json={**config, "steps": fitting}).status_code == 202
    refused = client.post("/v1/train", json={**config, "steps": fitting + 10})
    assert refused.status_code == 422


def test_a_training_step_over_max_flops_or_memory_is_422(
    make_client: Callable[..., TestClient], store: redis.Redis
):
    config = TrainConfig(**TINY_TRAIN)
    step = train_costs(config).step
    client = make_client(max_flops=step.flops / 2)
    refused = client.post("/v1/train", json=TINY_TRAIN)
    assert refused.status_code == 422
    detail = refused.json()["detail"]
    assert "one step's" in detail
    assert "MAX_FLOPS" in detail
    assert "by 2.0x" in detail
    assert "batch" in detail
    # A forward pass of the same batch passes: the backward of training is what costs more.
    forward = config.spp_config().model_copy(update={"batch": config.batch})
    assert client.post("/v1/spp", json=forward.model_dump(mode="json")).status_code == 202

    client = make_client(max_activation_bytes=step.activation_bytes / 3)
    refused = client.post("/v1/train", json=TINY_TRAIN)
    assert refused.status_code == 422
    assert "MAX_ACTIVATION_BYTES" in refused.json()["detail"]
    assert queued_ids(store) == []


def test_the_issues_deep_narrow_run_is_422_for_what_it_writes_and_how_long_it_runs(
    make_client: Callable[..., TestClient], store: redis.Redis
):
    """Issue 19 item 7: 0.5% of MAX_TRAIN_FLOPS by its FLOPs, it ran about an hour (the fixed
    cost of its 1808 layer calls a step) and wrote ~220 MB of SPP frames, once as events and
    again as its result."""
    client = make_client()
    refused = client.post("/v1/train", json=ISSUE_RUN)
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert "MAX_TRAIN_RESULT_BYTES = 1.68e+07" in detail, detail
    assert "5001 SPPs of 200 blocks" in detail, detail
    assert 10 < float(detail.split(" by ")[1].split("x")[0]) < 30, detail  # ~220 MB measured
    assert "spp_every of at least" in detail, detail
    at_least = int(detail.split("spp_every of at least ")[1].split(")")[0])
    assert 15 < at_least < 30, detail  # 16 MiB holds about 250 frames of 200 blocks

    # Recording few SPPs, it still runs too long: the time its layers take, not its FLOPs.
    few_spps = {**ISSUE_RUN, "spp_every": at_least}
    refused = client.post("/v1/train", json=few_spps)
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert "MAX_TRAIN_FLOPS = 6e+13" in detail, detail
    assert "1808 layer calls" in detail, detail
    assert 1.2 < float(detail.split(" by ")[1].split("x")[0]) < 3, detail
    assert "reduce the steps (at most about" in detail and "depth" in detail, detail
    fitting = int(detail.split("at most about ")[1].split()[0])
    assert 2500 < fitting < 4000, detail
    assert queued_ids(store) == []

    assert client.post("/v1/train", json={**few_spps, "steps": fitting}).status_code == 202


def test_every_presets_run_is_accepted_with_the_default_limits(
    client: TestClient, store: redis.Redis
):
    from nfcore.spec.train_presets import TRAIN_PRESETS

    configs = [config for preset in TRAIN_PRESETS for config in preset.configs()]
    for config in configs:
        response = client.post("/v1/train", json=config.model_dump(mode="json"))
        assert response.status_code == 202, (config, response.text)
    assert len(queued_ids(store)) == len({config_hash(c, nfcore.__version__) for c in configs})


def test_batchnorm_at_batch_1_is_422_naming_batch(client: TestClient, store: redis.Redis):
    refused = client.post("/v1/train", json={**TINY_TRAIN, "norm": "bn", "batch": 1})

    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("batch:"), refused.json()["detail"]
    assert queued_ids(store) == []
    # A Normalizer-Free network trains at batch 1.
    assert client.post("/v1/train", json={**TINY_TRAIN, "batch": 1}).status_code == 202


# --- with a worker --------------------------------------------------------------------------
def test_a_training_job_finishes_matches_a_local_run_and_a_second_post_is_a_cache_hit(
    client: TestClient, start_worker: Callable, store: redis.Redis
):
    start_worker()
    job_id = client.post("/v1/train", json=TINY_TRAIN).json()["id"]

    view = wait_for(client, job_id, DONE)
    assert view["state"] == "finished", view["error"]
    assert view["kind"] == "train"
    assert view["progress"] == {"done": 20, "total": 20}
    assert view["device"] == "cpu"
    result = client.get(view["result_url"]).json()
    assert result["status"] == "finished"
    assert result["collapse"] is None
    assert result["config"] == TrainConfig(**TINY_TRAIN).model_dump(mode="json")
    assert [record["step"] for record in result["steps"]] == list(range(1, 21))
    assert [record["step"] for record in result["evals"]] == [10, 20]
    assert [snapshot["step"] for snapshot in result["spp"]] == [0, 20]
    assert all(len(snapshot["result"]["blocks"]) == 4 for snapshot in result["spp"])
    expected = local_train(TINY_TRAIN)
    assert [r["loss"] for r in result["steps"]] == pytest.approx(
        [r["loss"] for r in expected["steps"]], rel=1e-5
    )
    assert computations(store, job_id) == 1

    hit = client.post("/v1/train", json=TINY_TRAIN)
    assert hit.status_code == 200
    assert hit.headers["x-cache"] == "hit"
    assert hit.headers["location"] == f"/v1/jobs/{job_id}"
    assert hit.json() == result
    assert computations(store, job_id) == 1
    assert queued_ids(store) == []


def test_events_are_streamed_while_the_job_runs_and_page_with_since(
    client: TestClient, start_worker: Callable, store: redis.Redis
):
    start_worker()
    store.config_resetstat()
    job_id = client.post("/v1/train", json=WATCHED).json()["id"]

    pages, since = [], 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = events_page(client, job_id, since)
        assert page["next"] == since + len(page["events"])
        pages.append(page)
        since = page["next"]
        if page["state"] in DONE:
            break
        time.sleep(0.05)
    assert pages[-1]["state"] == "finished"
    streamed = [event for page in pages for event in page["events"]]
    while_running = [page for page in pages if page["state"] == "running" and page["events"]]
    assert len(while_running) >= 3, "the events only came at the end"
    assert any(
        event["kind"] == "step" for page in while_running[:-1] for event in page["events"]
    ), "no step event was seen while the job ran"

    # Read again from the start, whole or in pages: the same events, once each, in order.
    everything = events_page(client, job_id)
    assert everything["next"] == len(everything["events"]) == len(streamed)
    assert everything["events"] == streamed
    assert events_page(client, job_id, since=everything["next"])["events"] == []
    assert events_page(client, job_id, since=10_000) == {**everything, "events": [], "next": 10_000}
    assert events_page(client, job_id, since=5, limit=7)["events"] == streamed[5:12]
    assert events_page(client, job_id, since=5, limit=7)["next"] == 12

    kinds = [event["kind"] for event in streamed]
    assert kinds[0] == "spp" and streamed[0]["step"] == 0
    assert kinds[-3:] == ["step", "eval", "spp"]
    steps = [event for event in streamed if event["kind"] == "step"]
    assert [event["step"] for event in steps] == list(range(1, 601))
    assert set(STEP_KEYS) <= set(steps[0])
    result = client.get(f"/v1/jobs/{job_id}/result").json()
    assert [event["loss"] for event in steps] == [record["loss"] for record in result["steps"]]

    # Batched: at most about ten pushes a second (EVENTS_INTERVAL), so far fewer pushes than
    # events while steps are fast (how fast depends on the machine's load: not asserted).
    run_seconds = client.get(f"/v1/jobs/{job_id}").json()["run_seconds"]
    pushes = store.info("commandstats")["cmdstat_rpush"]["calls"]
    assert pushes <= 10 * run_seconds + 10, (pushes, run_seconds)
    if run_seconds < 0.1 * len(steps) / 4:  # four or more steps per interval on average
        assert pushes < len(streamed) / 2, (pushes, len(streamed), run_seconds)


def test_an_events_page_holds_at_most_max_events_page_bytes_and_the_pages_join_to_all_events(
    client: TestClient, store: redis.Redis
):
    """Issue 19 item 7: one read of 170 MB of events took the API to 1.26 GB of memory."""
    from api.events import MAX_EVENTS_PAGE_BYTES

    job_id = client.post("/v1/train", json=TINY_TRAIN).json()["id"]
    # As a deep network's SPP frames: 60 of about 50 kB, then small step events.
    frames = [
        {"kind": "spp", "step": i, "result": {"blocks": ["x" * 1000] * 50}} for i in range(60)
    ]
    steps = [{"kind": "step", "step": i, "loss": 2.3} for i in range(1, 2001)]
    huge = {"kind": "spp", "step": 2001, "result": {"blocks": ["x" * 1000] * 1500}}  # 1.5 MB
    events = [*frames, *steps, huge, {"kind": "eval", "step": 2001, "loss": 2.3}]
    store.rpush(key_for(EVENTS_KEY, job_id), *(json.dumps(event) for event in events))

    pages, since = [], 0
    while len(pages) < 100:
        page = events_page(client, job_id, since)
        if not page["events"]:
            break
        size = sum(len(json.dumps(event)) for event in page["events"])
        assert size <= MAX_EVENTS_PAGE_BYTES or len(page["events"]) == 1, (since, size)
        assert page["next"] == since + len(page["events"])
        pages.append(page["events"])
        since = page["next"]
    assert [event for page in pages for event in page] == events
    assert len(pages) >= 5, [len(page) for page in pages]
    assert [huge] in pages  # an event larger than a page comes alone, and the reads go on
    # The count limit still holds beside the bytes.
    assert len(events_page(client, job_id, since=60, limit=7)["events"]) == 7


def test_the_csv_of_a_training_result_has_a_row_per_step(
    client: TestClient, start_worker: Callable, store: redis.Redis
):
    start_worker()
    job_id = client.post("/v1/train", json=TINY_TRAIN).json()["id"]
    assert wait_for(client, job_id, DONE)["state"] == "finished"
    result = client.get(f"/v1/jobs/{job_id}/result").json()

    def table() -> list[dict[str, str]]:
        response = client.get(f"/v1/jobs/{job_id}/result", params={"format": "csv"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        assert f"train-{job_id[:12]}.csv" in response.headers["content-disposition"]
        header = response.text.splitlines()[0].split(",")
        assert header == [*STEP_KEYS, *(f"eval_{key}" for key in EVAL_KEYS[1:])]
        return list(csv.DictReader(io.StringIO(response.text)))

    rows = table()
    assert len(rows) == 20
    assert [float(row["loss"]) for row in rows] == [r["loss"] for r in result["steps"]]
    evaluated = {int(row["step"]): float(row["eval_accuracy"]) for row in rows if row["eval_loss"]}
    assert evaluated == {e["step"]: e["accuracy"] for e in result["evals"]}
    assert set(evaluated) == {10, 20}

    # Once the job's record has expired, the result alone says it is a training.
    store.delete(f"rq:job:{job_id}")
    assert client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert table() == rows


def test_a_worker_refuses_a_training_that_writes_too_much_though_an_api_queued_it(
    make_client: Callable[..., TestClient], start_worker: Callable, store: redis.Redis
):
    """A job queued by an older API (here: one with a larger limit), or written into Redis,
    is held to the worker's MAX_TRAIN_RESULT_BYTES all the same, before it trains."""
    config = {**TINY_TRAIN, "steps": 40, "spp_every": 1}
    limit = 2**16
    assert written_bytes(TrainConfig(**config)) > limit
    client = make_client(max_train_result_bytes=2**30)
    start_worker(MAX_TRAIN_RESULT_BYTES=str(limit))
    job_id = client.post("/v1/train", json=config).json()["id"]

    view = wait_for(client, job_id, DONE)
    assert view["state"] == "failed"
    assert "MAX_TRAIN_RESULT_BYTES = 6.55e+04 bytes" in view["error"], view["error"]
    assert "spp_every of at least" in view["error"], view["error"]
    assert view["progress"]["done"] == 0
    assert events_page(client, job_id)["events"] == []
    assert computations(store, job_id) == 0


def test_the_events_of_a_run_stop_at_max_train_result_bytes_whatever_the_estimate(
    client: TestClient, store: redis.Redis
):
    """The worker's last guard: an event that would take a run's events past the limit stops
    the run, and what it wrote stays under the limit."""
    from worker.tasks import EventStream, JobTooLarge

    job_id = client.post("/v1/train", json=TINY_TRAIN).json()["id"]
    job = Queue(TRAIN_QUEUE, connection=store, serializer=SERIALIZER).fetch_job(job_id)
    stream = EventStream(RQRunningJob(job), ttl=60, max_bytes=10_000)
    with pytest.raises(JobTooLarge, match=r"stopped at step 3: .* MAX_TRAIN_RESULT_BYTES = 1e\+04"):
        for step in range(1, 100):
            stream.add({"kind": "spp", "step": step, "result": "x" * 4000})
    stream.flush()
    stored = store.lrange(key_for(EVENTS_KEY, job_id), 0, -1)
    assert [json.loads(event)["step"] for event in stored] == [1, 2]
    assert sum(len(event) for event in stored) <= 10_000


def test_a_running_training_stops_on_delete(
    client: TestClient, start_worker: Callable, store: redis.Redis
):
    worker = start_worker()
    job_id = client.post("/v1/train", json=LONG).json()["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        page = events_page(client, job_id)
        if any(event["kind"] == "step" for event in page["events"]):
            break
        time.sleep(0.02)
    assert page["state"] == "running", page["state"]

    response = client.delete(f"/v1/jobs/{job_id}")
    assert response.status_code == 200
    assert response.json()["state"] in ("running", "canceled")

    view = wait_for(client, job_id, DONE, timeout=10)
    assert view["state"] == "canceled"
    assert view["progress"]["done"] < 2500, view["progress"]
    assert computations(store, job_id) == 0
    assert client.get(f"/v1/jobs/{job_id}/result").status_code == 409
    page = events_page(client, job_id)
    assert page["state"] == "canceled"
    steps = [event["step"] for event in page["events"] if event["kind"] == "step"]
    assert steps == list(range(1, len(steps) + 1))
    assert steps[-1] == page["progress"]["done"], "the events and the progress disagree"

    following = client.post("/v1/train", json=TINY_TRAIN).json()["id"]
    assert wait_for(client, following, DONE)["state"] == "finished"
    assert worker.process.poll() is None


def test_a_collapsed_training_finishes_as_a_job_with_a_collapsed_result(
    client: TestClient, start_worker: Callable
):
    start_worker()
    job_id = client.post("/v1/train", json=EXPLODING).json()["id"]

    view = wait_for(client, job_id, DONE)
    assert view["state"] == "finished", view["error"]
    result = client.get(f"/v1/jobs/{job_id}/result").json()
    assert result["status"] == "collapsed"
    step = result["collapse"]["step"]
    assert 1 <= step < EXPLODING["steps"]
    assert "exploded" in result["collapse"]["reason"] or "finite" in result["collapse"]["reason"]
    taken = len(result["steps"])  # a finite spike is confirmed over up to 3 steps
    assert step <= taken < step + 3
    assert [snapshot["step"] for snapshot in result["spp"]] == [0, taken]
    assert view["progress"] == {"done": taken, "total": EXPLODING["steps"]}

    page = events_page(client, job_id)
    collapse = [event for event in page["events"] if event["kind"] == "collapse"]
    assert collapse == [{"kind": "collapse", **result["collapse"]}]
    assert page["events"][-1]["kind"] == "spp"
    # JSON that strict parsers read (no NaN or Infinity), however the loss broke.
    text = client.get(f"/v1/jobs/{job_id}/result").text
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the result JSON"))


def test_cifar10_is_read_from_the_workers_folder_and_its_absence_is_a_readable_failure(
    client: TestClient, start_worker: Callable, tmp_path: Path
):
    from tests.nfcore.training.test_data import write_cifar10

    config = {**TINY_TRAIN, "dataset": "cifar10", "steps": 2, "eval_every": 2}
    worker = start_worker()  # no CIFAR10_DIR
    job_id = client.post("/v1/train", json=config).json()["id"]
    view = wait_for(client, job_id, DONE)
    assert view["state"] == "failed"
    assert "CIFAR10_DIR" in view["error"] and "Traceback" not in view["error"]
    worker.stop()

    folder = write_cifar10(tmp_path / "cifar-10-batches-py", train_sizes=(8, 8, 8, 8, 8))
    start_worker(CIFAR10_DIR=str(folder.parent))
    job_id = client.post("/v1/train", json=config).json()["id"]  # a failed job runs again
    assert wait_for(client, job_id, DONE)["state"] == "finished"
    result = client.get(f"/v1/jobs/{job_id}/result").json()
    assert result["meta"]["train_examples"] == 40
