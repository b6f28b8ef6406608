"""A kind of job is a row (`contract.kinds`): a made-up one, "echo" (tests/worker/echo_kind.py),
is allowed, queued, run by a real worker, viewed and listed, with no other module touched."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.admission import Admission
from api.jobs import JobService
from contract import (
    KINDS,
    PLUGIN,
    SPP,
    TASKS,
    TRAIN,
    ServiceSettings,
    fixed_queues,
    kind_of_queue,
    progress_total,
    register_kind,
    task_for,
)
from contract.kinds import kind_of_result
from contract.rq_queue import TaskJob, queue_for, refusal
from nfcore.spec.config import SPPConfig, TrainConfig
from nfcore.spec.foreign_config import ForeignConfig
from tests.api.conftest import WorkerProcess, wait_for
from tests.worker.echo_kind import ECHO, WORKER_SCRIPT, EchoConfig

DONE = ("finished", "failed", "canceled")


@pytest.fixture
def echo(monkeypatch: pytest.MonkeyPatch) -> None:
    """The echo kind, known to this process (the API) for the test only."""
    monkeypatch.setitem(KINDS, ECHO.name, ECHO)


def test_the_built_in_kinds_give_the_allow_list_queues_timeouts_and_totals():
    assert dict(TASKS) == {"spp": SPP.task, "train": TRAIN.task}
    assert task_for("plugin.tv_resnet") == PLUGIN.task and task_for("elsewhere") is None
    assert fixed_queues() == ["spp", "train"]
    settings = ServiceSettings(spp_job_timeout=11, train_job_timeout=22)
    assert [settings.job_timeout(q) for q in ("spp", "train", "plugin.x")] == [11, 22, 11]
    spp = SPPConfig(depth=14, gradients=True)
    assert progress_total(spp) == 2 * spp.num_blocks == 8
    assert progress_total(TrainConfig(steps=7)) == 7
    assert progress_total(ForeignConfig(plugin="tv_resnet")) == 0
    assert kind_of_result({"steps": [], "evals": [], "spp": []}) == "train"
    assert kind_of_result({"config": {}, "blocks": []}) == kind_of_result(None) == "spp"


def test_a_kind_is_refused_where_its_name_or_queue_is_taken():
    with pytest.raises(ValueError, match="a job kind 'spp' exists already"):
        register_kind(SPP)
    with pytest.raises(ValueError, match=r"the queue 'plugin\.mine' is taken already"):
        register_kind(dataclasses.replace(ECHO, name="mine", queue="plugin.mine"))
    assert "mine" not in KINDS


def test_a_made_up_kind_is_allowed_by_its_row_alone(echo: None, store: redis.Redis):
    assert TASKS["echo"] == task_for("echo") == ECHO.task
    assert kind_of_queue("echo") is ECHO and "echo" in fixed_queues()
    assert ServiceSettings(spp_job_timeout=33).job_timeout("echo") == 33
    assert progress_total(EchoConfig(message="hi", repeats=3)) == 3
    # Its queue runs its task and nothing else.
    queue = queue_for("echo", store)
    ours = queue.create_job(ECHO.task, args=({"message": "hi"},))
    other = queue.create_job(SPP.task, args=({"message": "hi"},))
    assert refusal(ours) is None
    assert refusal(other) == (
        f"it names the function {SPP.task!r}; a job on the 'echo' queue may only run {ECHO.task}"
    )
    assert isinstance(ours, TaskJob)


def test_a_made_up_kind_is_queued_run_viewed_and_listed(
    echo: None, client: TestClient, store: redis.Redis, redis_url: str, tmp_path: Path
):
    worker = WorkerProcess(
        redis_url, tmp_path, command=[sys.executable, "-c", WORKER_SCRIPT], WORKER_QUEUES='["echo"]'
    )
    try:
        worker.wait_ready()
        assert client.get("/readyz").json()["workers"] == {"spp": 0, "train": 0, "echo": 1}
        state = client.app.state
        config = Admission(state.queue, state.settings).admit(EchoConfig(message="hi", repeats=3))
        submission = JobService(state.queue, state.settings).submit(config)

        view = wait_for(client, submission.job_id, DONE)
        assert view["state"] == "finished", (view, worker.log_path.read_text()[-3000:])
        assert (view["kind"], view["label"]) == ("echo", "echo 'hi'")
        assert view["progress"] == {"done": 3, "total": 3}
        assert view["config"] == {"message": "hi", "repeats": 3}
        assert view["attempt"] == 1 and view["device"] == "cpu"
        result = client.get(f"/v1/jobs/{submission.job_id}/result")
        assert result.json() == {"message": "hi", "repeats": 3}
        csv = client.get(f"/v1/jobs/{submission.job_id}/result", params={"format": "csv"})
        assert csv.status_code == 422 and "no CSV form" in csv.json()["detail"]
        listed = client.get("/v1/jobs").json()["jobs"]
        assert [job["kind"] for job in listed if job["id"] == submission.job_id] == ["echo"]

        again = JobService(state.queue, state.settings).submit(config)
        assert again.cached == result.content  # the cache answers the same config
    finally:
        worker.stop()
