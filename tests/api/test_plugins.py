"""Model plugins through the service: workers advertise what they have installed (the example
package in examples/plugins), the API validates a plugin job without importing torch or the
plugin and routes it to those workers, which count its cost before they run it."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest
import redis
from fastapi.testclient import TestClient

from nfcore.foreign.plugins import installed
from tests.api.conftest import ROOT, WorkerProcess, wait_for

# `make` installs examples/plugins beside the project; without it these tests fail saying so.
assert "tv_resnet" in installed(), "install the example plugins: pip install -e examples/plugins"

SMALL = {"plugin": "tv_resnet", "model_args": {"depth": 14, "width": 4}, "resolution": 32,
         "batch": 4, "device": "cpu"}  # fmt: skip


@pytest.fixture
def plugin_worker(start_worker: Callable[..., WorkerProcess]) -> WorkerProcess:
    return start_worker(WORKER_QUEUES='["spp"]', WORKER_PLUGINS='["tv_resnet", "mixer"]')


def test_a_plugin_job_runs_through_the_api_and_a_worker_that_has_it(
    client: TestClient, plugin_worker: WorkerProcess
) -> None:
    models = client.get("/v1/models").json()
    plugins = {row["plugin"]: row for row in models if row["family"] == "plugin"}
    assert set(plugins) == {"tv_resnet", "mixer"}
    assert plugins["tv_resnet"]["arguments"]["properties"]["depth"]["enum"] == [14, 26, 50, 101]
    assert plugins["tv_resnet"]["parameters"] > 0 and plugins["mixer"]["input_shape"] == [16, 64]

    posted = client.post("/v1/spp", json=SMALL)
    assert posted.status_code == 202, posted.text
    view = wait_for(client, posted.json()["id"], ("finished", "failed"))
    assert view["state"] == "finished", view
    result = client.get(f"/v1/jobs/{view['id']}/result").json()
    config = result["config"]
    assert config["plugin"] == "tv_resnet" and config["plugin_version"] == "0.1.0"
    assert config["residual"] == ["layer*.*.bn3"]  # the plugin's default, filled in by the API
    assert [b["name"] for b in result["blocks"]] == ["layer1.0", "layer2.0", "layer3.0", "layer4.0"]
    assert [b["stage"] for b in result["blocks"]] == [0, 1, 2, 3]
    assert all(b["residual_avg_channel_var"] > 0 for b in result["blocks"])
    # The arguments written out in full are the same job: defaults are part of the id.
    again = client.post(
        "/v1/spp", json={**SMALL, "model_args": {**SMALL["model_args"], "num_classes": 10}}
    )
    assert again.status_code == 200 and again.headers["Location"] == f"/v1/jobs/{view['id']}"
    assert "layer1.0" in client.get(f"/v1/jobs/{view['id']}/result?format=csv").text


def test_a_token_plugin_takes_its_advertised_input(
    client: TestClient, plugin_worker: WorkerProcess
) -> None:
    posted = client.post(
        "/v1/spp", json={"plugin": "mixer", "model_args": {"depth": 3}, "batch": 4}
    )
    assert posted.status_code == 202, posted.text
    view = wait_for(client, posted.json()["id"], ("finished", "failed"))
    assert view["state"] == "finished", view
    result = client.get(f"/v1/jobs/{view['id']}/result").json()
    assert result["config"]["input_shape"] == [16, 64] and result["meta"]["reduced_over"] == "N,L"
    assert len(result["blocks"]) == 3


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({**SMALL, "plugin": "resnet9000"}, "no live worker has the model plugin 'resnet9000'; available: 'mixer', 'tv_resnet'"),
        ({**SMALL, "model_args": {"depth": 7}}, "model_args of plugin 'tv_resnet': depth: 7 is not one of [14, 26, 50, 101]"),
        ({**SMALL, "model_args": {"colour": "red"}}, "Additional properties are not allowed ('colour' was unexpected)"),
        ({**SMALL, "model_args": {"width": "wide"}}, "width: 'wide' is not of type 'integer'"),
        ({**SMALL, "plugin_version": "9.9"}, "plugin_version: the workers have tv_resnet 0.1.0, not 9.9"),
    ],
    ids=["unknown", "enum", "extra", "type", "version"],
)  # fmt: skip
def test_a_plugin_job_the_workers_cannot_run_is_a_422_saying_why(
    client: TestClient, plugin_worker: WorkerProcess, body: dict, words: str
) -> None:
    response = client.post("/v1/spp", json=body)
    assert response.status_code == 422 and words in response.json()["detail"], response.text


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"depth": 1_000_000}, "depth: 1000000 is greater than the maximum of 256"),
        ({"depth": 99999999999999999999999999999},
         "depth: 99999999999999999999999999999 is greater than the maximum of 256"),
        ({"depth": 0}, "depth: 0 is less than the minimum of 1"),
        ({"tokens": 17}, "tokens: 16 was expected"),
    ],
    ids=["million", "huge", "zero", "fixed"],
)  # fmt: skip
def test_plugin_arguments_out_of_their_bounds_are_refused_before_anything_is_queued(
    client: TestClient, plugin_worker: WorkerProcess, store: redis.Redis, args: dict, words: str
) -> None:
    """The issue's `{"plugin": "mixer", "model_args": {"depth": 1000000}}` was queued, and
    took two workers down one after the other."""
    response = client.post("/v1/spp", json={"plugin": "mixer", "model_args": args})
    assert response.status_code == 422, response.text
    assert response.json()["detail"] == f"model_args of plugin 'mixer': {words}"
    assert store.llen("rq:queue:plugin.mixer") == 0


@pytest.mark.parametrize("number", ["NaN", "1e999", "-Infinity"])
def test_non_finite_plugin_arguments_are_a_422_naming_the_argument(
    client: TestClient, number: str
) -> None:
    """They were stored as null, so NaN and 1e999 were one job."""
    body = '{"plugin": "nf_tv_resnet", "model_args": {"depth": 14, "alpha": ALPHA}}'
    body = body.replace("ALPHA", number)  # not JSON, but what Python's json reads
    response = client.post("/v1/spp", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert "model_args.alpha is" in response.json()["detail"]
    assert "not a finite number" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {**SMALL, "model": "os:system"},
        {"kind": "foreign", "model": "/tmp/evil.py:build"},
        {"plugin": "tv_resnet", "model": "builtins:exec", "model_args": {"source": "1"}},
    ],
    ids=["with-plugin", "kind-foreign", "exec"],
)
def test_a_request_naming_a_module_path_is_refused(client: TestClient, body: dict) -> None:
    response = client.post("/v1/spp", json=body)
    assert response.status_code == 422
    assert response.json()["detail"].startswith(
        "model: a request may not name a module, file or callable"
    )


def test_without_a_live_worker_no_plugin_is_available(client: TestClient) -> None:
    response = client.post("/v1/spp", json=SMALL)
    assert response.status_code == 422
    assert response.json()["detail"].endswith("available: none")


def test_the_worker_refuses_a_plugin_network_over_the_limits_in_the_apis_words(
    client: TestClient, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker(WORKER_QUEUES='["spp"]', WORKER_PLUGINS='["tv_resnet"]', MAX_FLOPS="1e6")
    posted = client.post("/v1/spp", json=SMALL)
    assert posted.status_code == 202, posted.text
    view = wait_for(client, posted.json()["id"], ("finished", "failed"))
    assert view["state"] == "failed"
    assert "JobTooLarge: this job is too large: the tv_resnet network's FLOPs (" in view["error"]
    assert "is over the limit MAX_FLOPS = 1e+06 by" in view["error"]


def test_the_api_validates_and_queues_a_plugin_job_without_importing_torch(
    redis_url: str, plugin_worker: WorkerProcess
) -> None:
    code = f"""
import sys
from fastapi.testclient import TestClient
from api.main import create_app
from api.settings import ApiSettings
with TestClient(create_app(ApiSettings(redis_url={redis_url!r}))) as client:
    models = client.get("/v1/models").json()
    response = client.post("/v1/spp", json={json.dumps(SMALL)})
    assert response.status_code in (200, 202), response.text
    assert any(row["family"] == "plugin" for row in models)
assert "torch" not in sys.modules, "torch was imported"
assert not any(name.startswith("nfcore_example_plugins") for name in sys.modules)
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
