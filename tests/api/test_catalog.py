"""What can be asked for (/v1/models, /v1/activations, /v1/presets), liveness and readiness, the
docs; and that the API process never loads torch."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

import nfcore
from api.main import create_app
from api.settings import ApiSettings
from tests.api.conftest import ROOT, TINY
from tests.conftest import free_port

PAPER_FIGURES = [1, 2, 6, 7, 8, 9, 10, 11]


def test_models_lists_families_depths_and_variants_with_parameter_counts(client: TestClient):
    response = client.get("/v1/models")

    assert response.status_code == 200
    rows = response.json()
    assert {row["family"] for row in rows} == {"resnetv2", "resnetv1", "nf_regnet"}
    for family, norm in (("resnetv2", "nf"), ("resnetv2", "bn"), ("resnetv1", "bn")):
        depths = {row["depth"] for row in rows if (row["family"], row["norm"]) == (family, norm)}
        assert {50, 101, 152, 200, 288, 600} <= depths, (family, norm)
    variants = [row["variant"] for row in rows if row["family"] == "nf_regnet"]
    assert variants == ["B0", "B1", "B2", "B3", "B4", "B5"]

    def params(family: str, norm: str, depth: int) -> int:
        (row,) = [r for r in rows if (r["family"], r["norm"], r["depth"]) == (family, norm, depth)]
        return row["parameters"]

    assert params("resnetv1", "bn", 50) == 25_557_032  # torchvision's resnet50
    assert params("resnetv2", "bn", 600) > params("resnetv2", "bn", 50)
    layouts = {row["depth"]: row["layout"] for row in rows if row["family"] == "resnetv2"}
    assert layouts[50] == [3, 4, 6, 3]
    assert layouts[600] == [50, 50, 50, 50]  # the paper's ResNet-600: 200 bottleneck blocks


def test_activations_give_both_gamma_estimates(client: TestClient):
    response = client.get("/v1/activations")

    assert response.status_code == 200
    rows = {row["name"]: row for row in response.json()}
    assert {"relu", "silu", "gelu", "tanh", "identity"} <= set(rows)
    relu = rows["relu"]
    # Var relu(x) = (1 - 1/pi) / 2 for x ~ N(0, 1), so gamma = sqrt(2 / (1 - 1/pi)).
    assert relu["quadrature"] == pytest.approx(1.7128585, abs=1e-7)
    assert relu["quadrature"] == pytest.approx(math.sqrt(2 / (1 - 1 / math.pi)), rel=1e-11)
    # Appendix D.1's recipe: 1024 vectors of 256; its population variance biases it high by
    # sqrt(256 / 255), on top of about 0.2% of sampling noise.
    assert relu["sampled"] == pytest.approx(relu["quadrature"] * math.sqrt(256 / 255), rel=5e-3)
    assert relu["sampled"] > relu["quadrature"]
    assert relu["he_gain"] == pytest.approx(math.sqrt(2))
    assert rows["identity"]["quadrature"] == 1.0


def test_presets_are_the_papers_figures_and_each_run_can_be_posted(client: TestClient):
    response = client.get("/v1/presets")

    assert response.status_code == 200
    presets = response.json()
    assert [preset["figure"] for preset in presets] == PAPER_FIGURES
    assert [preset["id"] for preset in presets] == [f"fig{n}" for n in PAPER_FIGURES]
    ids = set()
    for preset in presets:
        assert preset["caption"] and preset["title"], preset["id"]
        assert preset["runs"], preset["id"]
        for run in preset["runs"]:
            # Within the default cost limits, as a user's dashboard would post it.
            submitted = client.post("/v1/spp", json=run["config"])
            assert submitted.status_code == 202, (preset["id"], run["label"], submitted.text)
            ids.add(submitted.json()["id"])
    listed = client.get("/v1/jobs", params={"limit": 500}).json()["jobs"]
    assert {job["id"] for job in listed} == ids


def test_healthz_and_readyz_without_workers(client: TestClient):
    assert client.get("/healthz").json() == {"status": "ok"}

    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["redis"] == "ok"
    assert ready.json()["workers"]["spp"] == 0


def test_readyz_counts_a_started_worker(client: TestClient, start_worker: Callable):
    start_worker()

    deadline = time.monotonic() + 10
    workers = client.get("/readyz").json()["workers"]
    while workers["spp"] != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
        workers = client.get("/readyz").json()["workers"]
    assert workers == {"spp": 1, "train": 1}


def test_without_redis_readyz_and_writes_are_503_but_healthz_is_200():
    settings = ApiSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=0.2)
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        for response in (client.get("/readyz"), client.post("/v1/spp", json=TINY)):
            assert response.status_code == 503
            assert "Redis" in response.json()["detail"]
            assert response.headers["retry-after"] == "5"
        # The catalog needs no Redis.
        assert client.get("/v1/models").status_code == 200


def test_docs_and_openapi_are_served(client: TestClient):
    docs = client.get("/docs")
    assert docs.status_code == 200
    assert "text/html" in docs.headers["content-type"]

    schema = client.get("/openapi.json").json()
    assert schema["info"]["version"] == nfcore.__version__
    assert {"/v1/spp", "/v1/sweeps", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result"} <= set(
        schema["paths"]
    )
    # The bounds a client needs are in the published schema.
    alpha = schema["components"]["schemas"]["SPPConfig"]["properties"]["alpha"]
    bounds = next(option for option in alpha["anyOf"] if option.get("type") == "number")
    assert (bounds["exclusiveMinimum"], bounds["maximum"]) == (0, 10)


NO_TORCH_SCRIPT = """
import json, sys
from fastapi.testclient import TestClient
import api.main
from api.settings import ApiSettings

app = api.main.create_app(ApiSettings(redis_url=sys.argv[1]))
statuses = {}
with TestClient(app) as client:
    submitted = client.post("/v1/spp", json=json.loads(sys.argv[2]))
    statuses["spp"] = submitted.status_code
    job = submitted.json()["id"]
    for name, path in (("models", "/v1/models"), ("activations", "/v1/activations"),
                       ("presets", "/v1/presets"), ("job", f"/v1/jobs/{job}"), ("readyz", "/readyz")):
        statuses[name] = client.get(path).status_code
    sweep = {"base": json.loads(sys.argv[2]), "grid": {"seed": [1, 2]}}
    statuses["sweep"] = client.post("/v1/sweeps", json=sweep).status_code
print(json.dumps({"statuses": statuses, "torch": "torch" in sys.modules}))
"""


def test_the_api_process_never_imports_torch(redis_url: str):
    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH_SCRIPT, redis_url, json.dumps(TINY)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["statuses"] == {
        "spp": 202,
        "models": 200,
        "activations": 200,
        "presets": 200,
        "job": 200,
        "readyz": 200,
        "sweep": 202,
    }
    assert report["torch"] is False


def test_limits_are_the_settings_a_job_is_checked_against(make_client):
    client = make_client(max_train_steps=123, max_flops=4e9)
    limits = client.get("/v1/limits")
    assert limits.status_code == 200
    assert limits.json()["max_train_steps"] == 123
    assert limits.json()["max_flops"] == 4e9
    over = client.post("/v1/train", json={"steps": 124, "depth": 14, "width": 0.25})
    assert over.status_code == 422 and "MAX_TRAIN_STEPS = 123" in over.json()["detail"]
