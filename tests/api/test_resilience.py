"""What users rely on when things break: Redis going away and coming back, workers killed in
the middle of a job, jobs that raise.

The Redis outage tests start a Redis server of their own, so they can kill and restart it
without disturbing the session's server. Restarting it loses every key (no persistence).
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from api.settings import ApiSettings
from contract import SPP_QUEUE, TASKS
from contract.rq_queue import queue_for
from tests.api.conftest import SLOW, TINY, WorkerProcess, wait_for
from tests.conftest import RedisServer

DONE = ("finished", "failed", "canceled")
FAST_ENOUGH = 2.0  # seconds an endpoint may take to say that Redis is unreachable: a Redis
# timeout is 0.5 s; the rest is room for a loaded 2-core machine running the suite in parallel
DETECTION = 30.0  # seconds after a SIGKILL by which a job must stop counting as running
# With HEARTBEAT_TTL=6 and MAINTENANCE_INTERVAL=1 a dead worker's job is seen in about 7 s.


def wait_until(what: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll `what` until it returns something truthy; returns it, or None after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(interval)
    return None


def running_with_progress(client: TestClient, job_id: str, timeout: float = 60) -> dict:
    """Wait until the job runs and has measured at least one block; returns its view."""
    view = wait_until(
        lambda: (
            (v := client.get(f"/v1/jobs/{job_id}").json())["state"] == "running"
            and v["progress"]["done"] > 0
            and v
        ),
        timeout,
        interval=0.02,
    )
    assert view, f"job {job_id} never ran with progress: {client.get(f'/v1/jobs/{job_id}').json()}"
    return view


# --- a Redis of our own, to kill -----------------------------------------------------------------


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()  # SIGKILL: also ends a server left frozen with SIGSTOP
        shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def own_client(own_redis: RedisServer) -> Iterator[TestClient]:
    """The API (with its maintenance loop) on `own_redis`."""
    settings = ApiSettings(redis_url=own_redis.url, maintenance_interval=1.0, heartbeat_ttl=6)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def own_workers(own_redis: RedisServer, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers on `own_redis`; every one is killed when the test ends."""
    started: list[WorkerProcess] = []

    def start(**env: str) -> WorkerProcess:
        worker = WorkerProcess(own_redis.url, tmp_path, **env)
        started.append(worker)
        worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.kill()  # SIGKILL: a busy worker would otherwise finish its job first
        worker.log.close()


def break_redis(server: RedisServer, how: str) -> None:
    if how == "killed":
        server.stop()
    else:  # frozen: connections are accepted but never answered, as with a hung host
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)


def mend_redis(server: RedisServer, how: str) -> None:
    if how == "killed":
        server.start()  # same port, empty: the data is gone
    else:
        assert server.process is not None
        server.process.send_signal(signal.SIGCONT)


def wait_for_worker_to_notice(worker: WorkerProcess) -> None:
    noticed = wait_until(lambda: "could not connect to Redis" in worker.log_path.read_text(), 15)
    assert noticed, f"the worker never saw the outage:\n{worker.log_path.read_text()}"


# --- 1. Redis down ---------------------------------------------------------------------------------

NEEDS_REDIS = [
    ("GET", "/v1/jobs", None),
    ("GET", "/v1/jobs/{id}", None),
    ("GET", "/v1/jobs/{id}/result", None),
    ("DELETE", "/v1/jobs/{id}", None),
    ("POST", "/v1/spp", TINY),
    ("POST", "/v1/sweeps", {"base": TINY, "grid": {"seed": [1, 2]}}),
    ("GET", "/v1/sweeps/0123456789abcdef", None),
    ("GET", "/readyz", None),
]


@pytest.mark.parametrize("how", ["killed", "frozen"])
@pytest.mark.parametrize(
    ("method", "path", "body"), NEEDS_REDIS, ids=[f"{m} {p}" for m, p, _ in NEEDS_REDIS]
)
def test_without_redis_every_endpoint_that_needs_it_is_a_quick_503(
    own_redis: RedisServer, own_client: TestClient, how: str, method: str, path: str, body: Any
):
    submitted = own_client.post("/v1/spp", json=TINY)
    assert submitted.status_code == 202
    job_id = submitted.json()["id"]
    break_redis(own_redis, how)

    started = time.monotonic()
    response = own_client.request(method, path.format(id=job_id), json=body)
    took = time.monotonic() - started

    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert "Redis" in response.json()["detail"]
    assert response.headers["retry-after"]
    assert took < FAST_ENOUGH, f"{method} {path} took {took:.2f} s to answer 503"


@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_without_redis_health_and_the_catalog_still_answer(
    own_redis: RedisServer, own_client: TestClient, how: str
):
    break_redis(own_redis, how)
    for path in ("/healthz", "/v1/models", "/v1/activations", "/v1/presets"):
        started = time.monotonic()
        response = own_client.get(path)
        assert response.status_code == 200, f"{path}: {response.text}"
        assert time.monotonic() - started < FAST_ENOUGH


@pytest.mark.parametrize("how", ["killed", "frozen"])
def test_the_api_recovers_by_itself_when_redis_returns(
    own_redis: RedisServer, own_client: TestClient, how: str
):
    first = own_client.post("/v1/spp", json=TINY)
    assert first.status_code == 202
    break_redis(own_redis, how)
    assert own_client.post("/v1/spp", json=TINY).status_code == 503
    time.sleep(1.5)  # the maintenance loop meets the outage too
    mend_redis(own_redis, how)

    statuses = []
    for _ in range(3):
        response = own_client.post("/v1/spp", json=TINY)
        statuses.append(response.status_code)
        if response.status_code == 202:
            break
        time.sleep(0.2)
    assert statuses[-1] == 202, f"POST /v1/spp after Redis returned: {statuses}"
    assert response.json()["id"] == first.json()["id"]
    assert response.json()["state"] == "queued"
    assert own_client.get("/readyz").status_code == 200
    assert own_client.get(f"/v1/jobs/{first.json()['id']}").status_code == 200
    assert own_client.get("/v1/jobs").status_code == 200


@pytest.mark.slow
def test_an_idle_worker_lives_through_a_redis_restart_and_serves_the_next_job(
    own_redis: RedisServer, own_client: TestClient, own_workers: Callable[..., WorkerProcess]
):
    worker = own_workers()
    before = own_client.post("/v1/spp", json=TINY).json()["id"]
    assert wait_for(own_client, before, DONE)["state"] == "finished"

    own_redis.stop()
    wait_for_worker_to_notice(worker)
    own_redis.start()

    after = own_client.post("/v1/spp", json={**TINY, "seed": 1})
    assert after.status_code == 202
    # The worker retries Redis with a growing pause (1, 2, 4 s...): well within 30 s here.
    assert wait_for(own_client, after.json()["id"], DONE, timeout=30)["state"] == "finished"
    assert worker.process.poll() is None

    # Its stop-job channel is back too (resubscribed within a few seconds): DELETE stops a job.
    store = redis.Redis.from_url(own_redis.url)
    assert wait_until(lambda: store.pubsub_channels("rq:pubsub:*"), timeout=15)
    store.close()
    slow = own_client.post("/v1/spp", json=SLOW).json()["id"]
    running_with_progress(own_client, slow)
    assert own_client.delete(f"/v1/jobs/{slow}").status_code == 200
    stopped = wait_for(own_client, slow, DONE, timeout=30)
    assert stopped["state"] == "canceled", stopped


@pytest.mark.slow
def test_readyz_still_counts_a_worker_that_lived_through_a_redis_restart(
    own_redis: RedisServer, own_client: TestClient, own_workers: Callable[..., WorkerProcess]
):
    worker = own_workers()
    assert own_client.get("/readyz").json()["workers"][SPP_QUEUE] == 1

    own_redis.stop()
    wait_for_worker_to_notice(worker)
    own_redis.start()
    job_id = own_client.post("/v1/spp", json=TINY).json()["id"]
    assert wait_for(own_client, job_id, DONE, timeout=30)["state"] == "finished"

    # The worker is serving the queue, so readiness must say so (within a heartbeat or two).
    counted = wait_until(
        lambda: own_client.get("/readyz").json()["workers"][SPP_QUEUE] == 1, timeout=15
    )
    assert counted, f"/readyz after the restart: {own_client.get('/readyz').json()}"


@pytest.mark.slow
def test_a_busy_worker_lives_through_a_redis_restart_and_serves_the_next_job(
    own_redis: RedisServer, own_client: TestClient, own_workers: Callable[..., WorkerProcess]
):
    worker = own_workers()
    slow = own_client.post("/v1/spp", json=SLOW).json()["id"]
    running_with_progress(own_client, slow)

    own_redis.stop()  # mid-job: the job's next progress write fails
    time.sleep(2)
    own_redis.start()

    after = own_client.post("/v1/spp", json=TINY)
    assert after.status_code == 202
    after_id = after.json()["id"]
    wait_until(
        lambda: (
            worker.process.poll() is not None
            or own_client.get(f"/v1/jobs/{after_id}").json()["state"] in DONE
        ),
        timeout=30,
    )
    if worker.process.poll() is not None:
        said = [line for line in worker.log_path.read_text().splitlines() if "ERROR" in line]
        pytest.fail(
            f"the worker exited ({worker.process.returncode}) on a Redis outage during a job; "
            "its log:\n" + "\n".join(said)
        )
    assert own_client.get(f"/v1/jobs/{after_id}").json()["state"] == "finished"


# --- 2. a worker killed in the middle of a job -----------------------------------------------------


def leaves_first_attempt(client: TestClient, job_id: str, first: dict) -> dict | None:
    """The job's view once it is no longer the first attempt running (retried, or ended)."""
    view = client.get(f"/v1/jobs/{job_id}").json()
    if view["state"] != "running" or view["started_at"] != first["started_at"]:
        return view
    return None


@pytest.mark.slow
def test_a_job_whose_worker_is_killed_runs_again_on_another_and_nothing_queued_is_lost(
    client: TestClient, start_worker: Callable[..., WorkerProcess]
):
    first_worker = start_worker()
    slow = client.post("/v1/spp", json=SLOW).json()["id"]
    behind = [client.post("/v1/spp", json={**TINY, "seed": seed}).json()["id"] for seed in (1, 2)]
    first = running_with_progress(client, slow)

    first_worker.kill()
    killed_at = time.monotonic()
    start_worker()

    moved_on = wait_until(lambda: leaves_first_attempt(client, slow, first), DETECTION)
    assert moved_on, f"still running {DETECTION:.0f} s after its worker was killed"
    assert time.monotonic() - killed_at < DETECTION
    assert moved_on["state"] != "failed", moved_on["error"]

    retried = wait_for(client, slow, DONE, timeout=90)
    assert retried["state"] == "finished", retried
    assert retried["started_at"] != first["started_at"]  # it ran again from the start
    assert retried["progress"]["done"] == retried["progress"]["total"]
    assert client.get(f"/v1/jobs/{slow}/result").status_code == 200
    for job_id in behind:
        assert wait_for(client, job_id, DONE, timeout=30)["state"] == "finished"


@pytest.mark.slow
def test_a_job_whose_worker_is_killed_twice_fails_saying_the_worker_died(
    client: TestClient, start_worker: Callable[..., WorkerProcess]
):
    worker = start_worker()
    slow = client.post("/v1/spp", json=SLOW).json()["id"]
    attempt = running_with_progress(client, slow)

    worker.kill()
    worker = start_worker()
    retried = wait_until(lambda: leaves_first_attempt(client, slow, attempt), DETECTION)
    assert retried and retried["state"] != "failed", retried
    attempt = running_with_progress(client, slow)

    worker.kill()  # JOB_RETRIES=1: no third try
    killed_at = time.monotonic()
    start_worker()
    ended = wait_until(
        lambda: (v := client.get(f"/v1/jobs/{slow}").json())["state"] in DONE and v, DETECTION
    )
    assert ended, f"still {client.get(f'/v1/jobs/{slow}').json()['state']} after the second kill"
    assert time.monotonic() - killed_at < DETECTION
    assert ended["state"] == "failed"
    assert "worker" in ended["error"] and "stopped" in ended["error"]
    assert "killed" in ended["error"]
    assert "tried 2 times" in ended["error"]
    assert ended["result_url"] is None

    time.sleep(2)  # the new worker does not pick it up again
    assert client.get(f"/v1/jobs/{slow}").json()["state"] == "failed"
    refused = client.get(f"/v1/jobs/{slow}/result")
    assert refused.status_code == 409


@pytest.mark.slow
def test_without_retries_a_killed_job_fails_at_once_and_can_be_submitted_again(
    make_client: Callable[..., TestClient], start_worker: Callable[..., WorkerProcess]
):
    client = make_client(job_retries=0)
    client_for_500s = TestClient(client.app, raise_server_exceptions=False)
    worker = start_worker(JOB_RETRIES="0")
    slow = client.post("/v1/spp", json=SLOW).json()["id"]
    running_with_progress(client, slow)

    worker.kill()
    start_worker(JOB_RETRIES="0")
    ended = wait_until(
        lambda: (v := client.get(f"/v1/jobs/{slow}").json())["state"] != "running" and v, DETECTION
    )
    assert ended, f"still running {DETECTION:.0f} s after its worker was killed"
    assert ended["state"] == "failed"
    assert "tried 1 time" in ended["error"] and "tried 1 times" not in ended["error"]

    # The user's next step, a moment later: submit it again. It must start afresh, not answer
    # 500 (for about a minute RQ still lists the dead worker's execution, whose record has
    # expired with its heartbeat).
    time.sleep(2)
    again = client_for_500s.post("/v1/spp", json=SLOW)
    assert again.status_code == 202, again.text
    assert again.json()["state"] in ("queued", "running")
    assert wait_for(client, slow, DONE, timeout=90)["state"] == "finished"


# --- 3. jobs that raise ----------------------------------------------------------------------------


def test_a_job_that_raises_fails_with_the_exceptions_message_and_the_worker_goes_on(
    client: TestClient, start_worker: Callable[..., WorkerProcess]
):
    # No GPU visible to this worker, even on a machine that has one.
    worker = start_worker(CUDA_VISIBLE_DEVICES="")
    job_id = client.post("/v1/spp", json={**TINY, "device": "cuda"}).json()["id"]

    view = wait_for(client, job_id, DONE)
    assert view["state"] == "failed"
    assert "no CUDA GPU is available" in view["error"]
    assert "Traceback" not in view["error"]

    following = client.post("/v1/spp", json=TINY).json()["id"]
    assert wait_for(client, following, DONE)["state"] == "finished"
    assert worker.process.poll() is None


def test_a_payload_the_worker_refuses_fails_with_a_readable_message(
    client: TestClient, start_worker: Callable[..., WorkerProcess]
):
    """An API of another version may enqueue a config this worker finds invalid: the job's
    error must say what is wrong with it, as the API itself would (`depth: 51 has no ...`)."""
    worker = start_worker()
    queue_for(SPP_QUEUE, client.app.state.redis).enqueue(
        TASKS[SPP_QUEUE], {**TINY, "depth": 51}, job_id="from-another-version", meta={"kind": "spp"}
    )

    view = wait_for(client, "from-another-version", DONE)
    assert view["state"] == "failed"
    assert "depth" in view["error"] and "51" in view["error"], view["error"]

    following = client.post("/v1/spp", json=TINY).json()["id"]
    assert wait_for(client, following, DONE)["state"] == "finished"
    assert worker.process.poll() is None
