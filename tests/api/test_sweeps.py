"""/v1/sweeps: a grid of configs as one request, each point a job, all or nothing."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from rq import Queue

import nfcore
from contract import SPP_QUEUE, key_for
from contract.rq_queue import SERIALIZER
from nfcore.spec.config import SPPConfig, config_hash
from nfcore.spec.cost import estimate
from tests.api.conftest import TINY

GRID = {"alpha": [0.1, 0.2], "depth": [14, 26]}
NO_JOBS = {"queued": 0, "running": 0, "finished": 0, "failed": 0, "canceled": 0}


def job_id_of(config: dict[str, Any]) -> str:
    return config_hash(SPPConfig(**config), nfcore.__version__)


def queued_ids(store: redis.Redis) -> list[str]:
    return Queue(SPP_QUEUE, connection=store, serializer=SERIALIZER).get_job_ids()


def assert_refused(response: Any, *phrases: str) -> None:
    """A 422 whose sentence contains every phrase."""
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    for phrase in phrases:
        assert phrase in detail, (phrase, detail)


def test_a_sweep_is_one_job_per_grid_point(client: TestClient, store: redis.Redis):
    response = client.post("/v1/sweeps", json={"base": TINY, "grid": GRID})

    assert response.status_code == 202
    sweep = response.json()
    expected = {
        (alpha, depth): job_id_of({**TINY, "alpha": alpha, "depth": depth})
        for alpha, depth in itertools.product(GRID["alpha"], GRID["depth"])
    }
    assert sweep["size"] == 4
    assert {
        (point["params"]["alpha"], point["params"]["depth"]): point["job"]["id"]
        for point in sweep["points"]
    } == expected
    assert [point["job"]["progress"]["total"] for point in sweep["points"]] == [4, 8, 4, 8]
    assert not any(point["cached"] for point in sweep["points"])
    assert sweep["states"] == {**NO_JOBS, "queued": 4}
    assert sorted(queued_ids(store)) == sorted(expected.values())
    assert sweep["url"] == f"/v1/sweeps/{sweep['id']}"

    again = client.get(sweep["url"])
    assert again.status_code == 200
    assert again.json() == sweep


def test_a_sweep_follows_its_jobs_to_the_end(client: TestClient, start_worker: Callable):
    start_worker()
    sweep = client.post("/v1/sweeps", json={"base": TINY, "grid": GRID}).json()

    deadline = time.monotonic() + 60
    view = sweep
    while view["states"]["finished"] < 4 and time.monotonic() < deadline:
        assert view["states"]["failed"] == view["states"]["canceled"] == 0, view
        time.sleep(0.1)
        view = client.get(sweep["url"]).json()
    assert view["states"] == {**NO_JOBS, "finished": 4}
    assert all(point["job"]["result_url"] for point in view["points"])

    again = client.post("/v1/sweeps", json={"base": TINY, "grid": GRID})
    assert again.status_code == 202
    assert again.json()["id"] == sweep["id"]
    assert all(point["cached"] for point in again.json()["points"])
    assert again.json()["states"] == {**NO_JOBS, "finished": 4}


def test_a_grid_over_max_sweep_points_is_refused_naming_the_limit(
    make_client: Callable[..., TestClient], store: redis.Redis
):
    client = make_client(max_sweep_points=3)

    response = client.post("/v1/sweeps", json={"base": TINY, "grid": GRID})

    assert_refused(response, "MAX_SWEEP_POINTS = 3", "4 points")
    assert queued_ids(store) == []


def test_an_unknown_grid_field_is_refused_by_name(client: TestClient, store: redis.Redis):
    response = client.post(
        "/v1/sweeps", json={"base": TINY, "grid": {"alpha": [0.1], "colour": [1]}}
    )

    assert_refused(response, "colour")
    assert "alpha" not in response.json()["detail"]
    assert queued_ids(store) == []


def test_an_invalid_point_refuses_the_whole_sweep(client: TestClient, store: redis.Redis):
    bad_alpha = client.post("/v1/sweeps", json={"base": TINY, "grid": {"alpha": [0.1, -1]}})
    assert_refused(bad_alpha, 'point {"alpha": -1}', "0 < alpha <= 10")

    bad_depth = client.post(
        "/v1/sweeps", json={"base": TINY, "grid": {"alpha": [0.1], "depth": [14, 51]}}
    )
    assert_refused(bad_depth, '"depth": 51', "depth: 51")

    bad_base = client.post("/v1/sweeps", json={"base": {**TINY, "colour": 1}, "grid": GRID})
    assert_refused(bad_base, "colour")

    # Nothing was queued, not even the valid points before the invalid one.
    assert queued_ids(store) == []
    assert client.get("/v1/jobs").json()["jobs"] == []


def test_a_point_over_the_cost_limit_refuses_the_whole_sweep(
    make_client: Callable[..., TestClient], store: redis.Redis
):
    limit = estimate(SPPConfig(**TINY)).flops  # the first point is just within it
    client = make_client(max_flops=limit)
    over = estimate(SPPConfig(**{**TINY, "resolution": 64})).flops / limit

    response = client.post("/v1/sweeps", json={"base": TINY, "grid": {"resolution": [32, 64]}})

    assert_refused(response, 'point {"resolution": 64}', "MAX_FLOPS", f"by {over:.1f}x")
    assert queued_ids(store) == []


def test_a_grid_without_values_is_refused(client: TestClient):
    assert_refused(client.post("/v1/sweeps", json={"base": TINY, "grid": {"alpha": []}}), "alpha")
    assert_refused(client.post("/v1/sweeps", json={"base": TINY, "grid": {}}), "grid")
    assert_refused(client.post("/v1/sweeps", json={"base": TINY}), "grid")
    assert_refused(client.post("/v1/sweeps", json={"grid": GRID, "points": 4}), "points")


def test_a_saved_canonical_config_can_be_swept(client: TestClient):
    # The `config` of a result: every field filled in, layout included.
    canonical = SPPConfig(**TINY).model_dump(mode="json")
    assert canonical["layout"] == [1, 1, 1, 1]

    by_depth = client.post("/v1/sweeps", json={"base": canonical, "grid": {"depth": [14, 26]}})
    assert by_depth.status_code == 202, by_depth.text
    jobs = [point["job"] for point in by_depth.json()["points"]]
    assert [job["id"] for job in jobs] == [job_id_of(TINY), job_id_of({**TINY, "depth": 26})]
    assert [job["progress"]["total"] for job in jobs] == [4, 8]  # layout 1,1,1,1 then 2,2,2,2

    # A BN point drops what the NF base derived from its norm (alpha, Scaled WS).
    by_norm = client.post("/v1/sweeps", json={"base": canonical, "grid": {"norm": ["nf", "bn"]}})
    assert by_norm.status_code == 202, by_norm.text
    assert [point["job"]["id"] for point in by_norm.json()["points"]] == [
        job_id_of(TINY),
        job_id_of({**TINY, "norm": "bn"}),
    ]


def test_an_unknown_sweep_is_404(client: TestClient):
    response = client.get("/v1/sweeps/no-such-sweep")

    assert response.status_code == 404
    assert "no-such-sweep" in response.json()["detail"]


def test_a_sweep_over_max_sweep_flops_is_refused_saying_by_how_much(
    make_client: Callable[..., TestClient], store: redis.Redis
):
    """Issue 19 item 9: 64 points of 4.14e12 FLOPs each (53 times MAX_FLOPS) were accepted."""
    points = [{**TINY, "alpha": alpha, "depth": depth} for alpha, depth in itertools.product(
        GRID["alpha"], GRID["depth"])]  # fmt: skip
    total = sum(estimate(SPPConfig(**point)).flops for point in points)
    client = make_client(max_sweep_flops=total / 2)

    response = client.post("/v1/sweeps", json={"base": TINY, "grid": GRID})

    assert_refused(response, f"({total:.3g})", "MAX_SWEEP_FLOPS", "by 2.0x", "fewer points")
    assert queued_ids(store) == []
    assert client.get("/v1/limits").json()["max_sweep_flops"] == total / 2


def test_the_issues_sweep_is_refused_with_the_default_limit(client: TestClient, store: redis.Redis):
    base = {"depth": 152, "norm": "bn", "resolution": 224, "batch": 180}  # 4.15e12 FLOPs
    per_point = estimate(SPPConfig(**base)).flops
    assert client.post("/v1/spp", json=base).status_code == 202  # each point alone fits
    grid = {"seed": list(range(1, 65))}
    response = client.post("/v1/sweeps", json={"base": base, "grid": grid})

    assert_refused(response, "MAX_SWEEP_FLOPS = 6e+13")
    factor = float(response.json()["detail"].split(" by ")[1].split("x")[0])
    assert factor == pytest.approx(64 * per_point / 6e13, abs=0.1)
    assert queued_ids(store) == [job_id_of(base)]


def test_points_already_cached_cost_a_sweep_nothing(
    make_client: Callable[..., TestClient], store: redis.Redis
):
    costs = [estimate(SPPConfig(**TINY, alpha=alpha)).flops for alpha in (0.1, 0.2, 0.3)]
    client = make_client(max_sweep_flops=costs[2] * 1.5)
    grid = {"alpha": [0.1, 0.2, 0.3]}
    assert_refused(client.post("/v1/sweeps", json={"base": TINY, "grid": grid}), "MAX_SWEEP_FLOPS")

    for alpha in (0.1, 0.2):  # as a worker leaves them
        store.set(key_for("result", job_id_of({**TINY, "alpha": alpha})), b"{}")
    response = client.post("/v1/sweeps", json={"base": TINY, "grid": grid})
    assert response.status_code == 202, response.text
    assert [point["cached"] for point in response.json()["points"]] == [True, True, False]
    assert queued_ids(store) == [job_id_of({**TINY, "alpha": 0.3})]


def test_equal_points_of_a_grid_are_one_job_counted_once(client: TestClient, store: redis.Redis):
    grid = {"alpha": [0.2, 0.2, 0.3], "depth": [14]}
    response = client.post("/v1/sweeps", json={"base": TINY, "grid": grid})

    assert response.status_code == 202, response.text
    sweep = response.json()
    assert sweep["size"] == 3
    assert [point["params"]["alpha"] for point in sweep["points"]] == [0.2, 0.2, 0.3]
    ids = [point["job"]["id"] for point in sweep["points"]]
    assert ids[0] == ids[1] != ids[2]
    assert sweep["states"] == {**NO_JOBS, "queued": 2}
    assert sorted(queued_ids(store)) == sorted({ids[0], ids[2]})
    assert client.get(sweep["url"]).json()["states"] == {**NO_JOBS, "queued": 2}
