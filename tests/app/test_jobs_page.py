"""The jobs page in Streamlit's AppTest: the API's recent jobs, or why it cannot list them."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx
import pandas as pd
import pytest
import redis
from rq.job import JobStatus
from streamlit.testing.v1 import AppTest

import nfcore
from app import urlstate
from contract import META_KIND, META_PROGRESS, SPP_QUEUE, key_for, plugin_queue, task_for
from contract.rq_queue import queue_for
from launcher.localhost import free_port
from nfcore.spec.config import SPPConfig, config_hash
from nfcore.spec.foreign_config import ForeignConfig

APP_MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"
RUN_TIMEOUT = 30  # seconds for one script run
JOB_DEADLINE = 60  # seconds for a tiny job, the worker's first import of torch included
TINY = {"depth": 14, "norm": "nf", "width": 0.125, "resolution": 32, "batch": 2}
# A model plugin's job as the API admits it (defaults and version filled in).
PLUGIN_JOB = ForeignConfig(plugin="mixer", plugin_version="0.1.0", model_args={"depth": 2, "width": 16},
                           input_shape=(16, 32), channels="last", batch=4)  # fmt: skip


pytestmark = pytest.mark.usefixtures("fresh_app")


def open_jobs_page() -> AppTest:
    """The dashboard (`app/main.py`), switched to its Jobs page as its sidebar link does."""
    at = AppTest.from_file(str(APP_MAIN), default_timeout=RUN_TIMEOUT)
    at.switch_page("views/jobs.py")
    at.run()
    assert not at.exception, [error.message for error in at.exception]
    assert at.title[0].value == "Jobs"
    return at


def submit_and_wait(api_url: str, configs: list[SPPConfig]) -> None:
    for config in configs:
        response = httpx.post(f"{api_url}/v1/spp", json=config.model_dump(mode="json"))
        assert response.status_code == 202, response.text
    deadline = time.monotonic() + JOB_DEADLINE
    for config in configs:
        url = f"{api_url}/v1/jobs/{config_hash(config, nfcore.__version__)}"
        while httpx.get(url).json()["state"] != "finished":
            assert time.monotonic() < deadline, f"{config.label} did not finish"
            time.sleep(0.1)


def test_jobs_page_lists_recent_jobs(
    api_server: str, worker: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_URL", api_server)
    at = open_jobs_page()
    assert [info.value for info in at.info] == ["No jobs yet: open the explorer to run one."]

    configs = [SPPConfig(**TINY), SPPConfig(**TINY, alpha=0.5, activation="silu")]
    submit_and_wait(api_server, configs)
    [refresh] = [button for button in at.button if button.label == "Refresh"]
    refresh.click().run()
    assert not at.exception and not at.error

    table = at.dataframe[0].value
    assert len(table) == 2
    rows = {row["id"]: row for row in table.to_dict("records")}
    for config in configs:
        job_id = config_hash(config, nfcore.__version__)
        row = rows[job_id[:12]]
        assert row["label"] == config.label
        assert row["state"] == "finished"
        assert row["progress"] == 1.0
        assert row["error"] is None
        assert row["api"] == f"{api_server}/v1/jobs/{job_id}"
        # "open" is the explorer at this job's config.
        link = urlsplit(row["open"])
        assert link.path == "/"
        assert urlstate.decode_config(dict(parse_qsl(link.query))) == config


def plant_finished_plugin_job(redis_url: str, result: dict, config: ForeignConfig) -> str:
    """A finished job of a model plugin, in Redis as the API queues it (on the plugin's queue,
    kind "spp", its `ForeignConfig` as its argument) and as a worker leaves it (finished, its
    result cached). No worker here has plugins: a real one costs a minute to start."""
    job_id = config_hash(config, nfcore.__version__)
    connection = redis.Redis.from_url(redis_url)
    try:
        queue_name = plugin_queue(str(config.plugin))
        queue = queue_for(queue_name, connection)
        total = len(result["blocks"])
        job = queue.enqueue(
            task_for(queue_name), config.model_dump(mode="json"), job_id=job_id,
            description=config.label,
            meta={META_KIND: SPP_QUEUE, META_PROGRESS: {"done": total, "total": total}},
        )  # fmt: skip
        queue.remove(job)
        job.set_status(JobStatus.FINISHED)
        queue.finished_job_registry.add(job, 600)
        connection.set(
            key_for("result", job_id),
            json.dumps({**result, "config": config.model_dump(mode="json")}),
        )
    finally:
        connection.close()
    return job_id


def test_every_kind_of_job_has_a_row_with_its_label_and_where_it_opens(
    api_server: str, worker: object, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A finished model plugin's job beside an SPP and a training run: no traceback (it was a
    pydantic ValidationError for SPPConfig), the plugin's label, and a link to its page."""
    monkeypatch.setenv("API_URL", api_server)
    spp = SPPConfig(**TINY)
    train = {**TINY, "dataset": "gaussian", "steps": 3, "batch": 8, "eval_examples": 16}
    response = httpx.post(f"{api_server}/v1/train", json=train)
    assert response.status_code == 202, response.text
    train_id = response.json()["id"]
    submit_and_wait(api_server, [spp])
    spp_id = config_hash(spp, nfcore.__version__)
    result = httpx.get(f"{api_server}/v1/jobs/{spp_id}/result").json()
    plugin_id = plant_finished_plugin_job(redis_url, result, PLUGIN_JOB)
    deadline = time.monotonic() + JOB_DEADLINE
    while httpx.get(f"{api_server}/v1/jobs/{train_id}").json()["state"] != "finished":
        assert time.monotonic() < deadline, "the training run did not finish"
        time.sleep(0.1)

    at = open_jobs_page()
    assert not at.exception and not at.error, [e.value for e in at.exception or at.error]
    rows = {row["id"]: row for row in at.dataframe[0].value.to_dict("records")}
    assert set(rows) == {spp_id[:12], train_id[:12], plugin_id[:12]}
    plugin = rows[plugin_id[:12]]
    assert plugin["label"] == "mixer(depth=2, width=16)"
    assert (plugin["kind"], plugin["state"], plugin["progress"]) == ("spp", "finished", 1.0)
    link = urlsplit(plugin["open"])
    query = dict(parse_qsl(link.query))
    assert link.path == "/plugins" and query["plugin"] == "mixer", plugin["open"]
    assert json.loads(query["args"]) == {"depth": 2, "width": 16}
    assert query["batch"] == "4" and "resolution" not in query  # a token network: no image
    assert urlsplit(rows[spp_id[:12]]["open"]).path == "/"
    assert rows[train_id[:12]]["open"] == f"/train?jobs={train_id}"


def test_a_job_view_of_an_unexpected_shape_is_a_row_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Views from an API of another version (fields missing, null or of another type) still
    make rows: one odd job does not hide the others behind a traceback."""
    from app.views import jobs

    odd = [
        {"id": "a1", "state": "finished", "kind": "spp", "config": {"depth": "deep"}},
        {"id": "b2", "progress": None, "label": 7, "url": None, "run_seconds": "soon"},
        {"id": "c3", "state": "running", "progress": {"done": 5, "total": 2},
         "heartbeat": {"age": "?", "late": True}},
    ]  # fmt: skip
    monkeypatch.setattr(jobs, "get_settings", lambda: type("S", (), {"api_url": "http://api"}))
    rows = [jobs._row(job, jobs.UTC) for job in odd]
    assert [row["state"] for row in rows] == ["finished", "unknown", "running"]
    assert [row["open"] for row in rows] == [
        "http://api/v1/jobs/a1", "http://api/v1/jobs/b2", "http://api/v1/jobs/c3",
    ]  # fmt: skip
    assert rows[1]["label"] is None and rows[1]["run seconds"] is None
    assert rows[2]["progress"] == 1.0


def test_a_collapsed_training_run_says_so_and_times_are_local(
    api_server: str, worker: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_URL", api_server)
    # An absurd learning rate: the loss explodes within a few of the 50 steps.
    config = {**TINY, "dataset": "gaussian", "steps": 50, "lr": 100.0, "batch": 8,
              "eval_examples": 16}  # fmt: skip
    response = httpx.post(f"{api_server}/v1/train", json=config)
    assert response.status_code == 202, response.text
    job_url = f"{api_server}/v1/jobs/{response.json()['id']}"
    submit_and_wait(api_server, [SPPConfig(**TINY)])
    deadline = time.monotonic() + JOB_DEADLINE
    while (job := httpx.get(job_url).json())["state"] != "finished":
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    collapse = httpx.get(f"{job_url}/result").json()["collapse"]
    assert collapse is not None

    at = open_jobs_page()
    rows = {row["kind"]: row for row in at.dataframe[0].value.to_dict("records")}
    assert set(rows) == {"spp", "train"}
    assert rows["train"]["state"] == f"collapsed at step {collapse['step']}"
    assert rows["train"]["progress"] < 1
    assert rows["spp"]["state"] == "finished"
    # Enqueued times are the API's UTC times, shown in a named local zone.
    enqueued = datetime.fromisoformat(job["enqueued_at"])
    assert rows["train"]["enqueued"].tzinfo is not None
    assert rows["train"]["enqueued"] == pd.Timestamp(enqueued)
    header = json.loads(at.dataframe[0].proto.columns)["enqueued"]["label"]
    assert re.fullmatch(r"enqueued \(.+\)", header), header


def test_jobs_page_says_when_the_api_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("API_URL", closed)
    at = open_jobs_page()
    assert [error.value for error in at.error] == [
        f"The API at {closed} is not reachable (ConnectError): start it with `python -m api`. "
        "This page tries again every 2 s."
    ]
    assert not at.dataframe


def test_a_training_job_links_to_the_train_page_following_it() -> None:
    from app.views.jobs import open_link

    job = {"id": "abc123", "kind": "train", "state": "finished", "url": "/v1/jobs/abc123"}
    assert open_link(job) == "/train?jobs=abc123"
    assert open_link({**job, "state": "running"}) == "/train?jobs=abc123"


def test_under_the_launcher_a_silent_api_is_restarting(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make run` restarts a crashed API and tells the dashboard so (APP_API_SUPERVISED): the
    page says the API may be restarting, not that someone must start it."""
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("API_URL", closed)
    monkeypatch.setenv("APP_API_SUPERVISED", "1")
    at = open_jobs_page()
    assert [error.value for error in at.error] == [
        f"The API at {closed} is not answering; it may be restarting. This page tries again "
        "every 2 s."
    ]
