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
from streamlit.testing.v1 import AppTest

import nfcore
from api.localhost import free_port
from app import urlstate
from nfcore.config import SPPConfig, config_hash

APP_MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"
RUN_TIMEOUT = 30  # seconds for one script run
JOB_DEADLINE = 60  # seconds for a tiny job, the worker's first import of torch included
TINY = {"depth": 14, "norm": "nf", "width": 0.125, "resolution": 32, "batch": 2}


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
        f"the API at {closed} is not reachable (ConnectError): start it with `python -m api`"
    ]
    assert not at.dataframe


def test_a_training_job_links_to_the_train_page_following_it() -> None:
    from app.views.jobs import explorer_link

    job = {"id": "abc123", "kind": "train", "state": "finished", "url": "/v1/jobs/abc123"}
    assert explorer_link(job) == "/train?jobs=abc123"
    assert explorer_link({**job, "state": "running"}) == "/train?jobs=abc123"


def test_under_the_launcher_a_silent_api_is_restarting(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make run` restarts a crashed API and tells the dashboard so (APP_API_SUPERVISED): the
    page says the API may be restarting, not that someone must start it."""
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("API_URL", closed)
    monkeypatch.setenv("APP_API_SUPERVISED", "1")
    at = open_jobs_page()
    assert [error.value for error in at.error] == [
        f"The API at {closed} is not answering; it may be restarting. This page tries again "
        "on your next change."
    ]
