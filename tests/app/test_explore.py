"""The explorer page in Streamlit's AppTest, against a real API (uvicorn) and a real worker.

What a user relies on: the controls they set are the config the API computes (its job id is
the hash of that config), the plot shows the API's numbers, a paper preset sets every run of
its figure, a link reproduces the view (pins included), and a failure is a sentence, never a
traceback. Runs are tiny (depth 14, 32 px) except the preset's, which keeps the paper's depth.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis
from streamlit.testing.v1 import AppTest

import nfcore
from app import urlstate
from launcher.localhost import free_port
from nfcore.plots.spp import FORWARD_PANELS, GRADIENT_PANELS
from nfcore.spec.config import SPPConfig, config_hash
from nfcore.spec.presets import get_preset
from tests.app.conftest import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
APP_MAIN = ROOT / "app" / "main.py"
RUN_TIMEOUT = 30  # seconds for one script run, which reruns itself until its jobs finish
CHART_DEADLINE = 60  # seconds until the chart must be on the page
PANEL_KEYS = [key for key, _ in FORWARD_PANELS + GRADIENT_PANELS]  # in subplot (axis) order
TINY = {"depth": 14, "norm": "nf", "width": 0.125, "resolution": 32, "batch": 2}


pytestmark = pytest.mark.usefixtures("quick_polls")


@pytest.fixture
def api_url(api_server: str, worker: object, monkeypatch: pytest.MonkeyPatch) -> str:
    """The whole stack: Redis, a worker and the API, which the dashboard is pointed at."""
    monkeypatch.setenv("API_URL", api_server)
    return api_server


# --- driving the page -------------------------------------------------------------------------
def open_explorer(query: Mapping[str, str] | None = None) -> AppTest:
    """The dashboard as `streamlit run app/main.py` serves it, opened at `/?<query>`."""
    at = AppTest.from_file(str(APP_MAIN), default_timeout=RUN_TIMEOUT)
    at.query_params.update(query or {})
    return run(at)


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [error.message for error in at.exception]
    return at


def wait_for_chart(at: AppTest) -> dict[str, Any]:
    """The Plotly figure once the page shows one, rerunning the page until then."""
    deadline = time.monotonic() + CHART_DEADLINE
    while (spec := chart(at)) is None:
        assert not at.error, [error.value for error in at.error]
        assert time.monotonic() < deadline, "no chart within the deadline"
        time.sleep(0.2)
        run(at)
    return spec


def chart(at: AppTest) -> dict[str, Any] | None:
    charts = at.get("plotly_chart")
    assert len(charts) <= 1
    return json.loads(charts[0].proto.spec) if charts else None


def values(array: Any) -> list[Any]:
    """A trace's x or y: Plotly 6 writes numpy arrays as base64 typed arrays, lists as lists."""
    if isinstance(array, dict):
        data = np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"])
        return data.tolist()
    return list(array)


def legend(spec: dict[str, Any]) -> list[str]:
    """The runs named in the legend, in drawing order (one curve per run shows the legend)."""
    return [trace["name"] for trace in spec["data"] if trace.get("showlegend") is True]


def panel_traces(spec: dict[str, Any], name: str) -> dict[str, list[dict[str, Any]]]:
    """Per panel key, the traces of the run drawn under `name` (curve, stage-end dots, ...)."""
    group = next(t["legendgroup"] for t in spec["data"] if t["name"] == name)
    panels: dict[str, list[dict[str, Any]]] = {}
    for trace in spec["data"]:
        if trace["legendgroup"] == group:
            axis = int(trace.get("xaxis", "x").removeprefix("x") or 1)
            panels.setdefault(PANEL_KEYS[axis - 1], []).append(trace)
    return panels


def sidebar_values(at: AppTest, *names: str) -> dict[str, Any]:
    return {name: shown(at, name) for name in names}


def control(widgets: Any, name: str) -> Any:
    """The sidebar widget of a config field: its key is `w_<name>@<version>` (app.controls)."""
    found = [widget for widget in widgets if str(widget.key).startswith(f"w_{name}@")]
    assert len(found) == 1, f"{len(found)} widgets for {name}: {[w.key for w in widgets]}"
    return found[0]


def shown(at: AppTest, name: str) -> Any:
    """The value the sidebar widget of a config field holds."""
    version = at.session_state["controls_version"]
    return at.session_state[f"w_{name}@{version}"]


# --- the API's side ---------------------------------------------------------------------------
def job_id(config: SPPConfig) -> str:
    return config_hash(config, nfcore.__version__)


def finished_job(api_url: str, config: SPPConfig) -> dict[str, Any]:
    """The API's job for `config` (listed in GET /v1/jobs, finished) and its result's config."""
    listed = {job["id"]: job for job in httpx.get(f"{api_url}/v1/jobs").json()["jobs"]}
    assert job_id(config) in listed, f"the API never got {config.label}"
    job = listed[job_id(config)]
    assert job["state"] == "finished", job
    return job


def result(api_url: str, config: SPPConfig) -> dict[str, Any]:
    response = httpx.get(f"{api_url}/v1/jobs/{job_id(config)}/result")
    assert response.status_code == 200, response.text
    return response.json()


def compute(api_url: str, config: SPPConfig) -> str:
    """Run `config` through the API alone (no dashboard); its job id once finished."""
    response = httpx.post(f"{api_url}/v1/spp", json=config.model_dump(mode="json"))
    assert response.status_code in (200, 202), response.text
    deadline = time.monotonic() + CHART_DEADLINE
    while httpx.get(f"{api_url}/v1/jobs/{job_id(config)}").json()["state"] != "finished":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return job_id(config)


# --- (a) controls -> request ------------------------------------------------------------------
def test_controls_are_the_config_the_api_computes(api_url: str) -> None:
    at = open_explorer(urlstate.encode_config(SPPConfig(**{**TINY, "norm": "bn"})))
    control(at.selectbox, "norm").set_value("nf")
    run(at)
    assert shown(at, "alpha") == 0.2  # a new norm brings its own alpha, conv and gamma
    assert shown(at, "conv") == "ws"
    control(at.slider, "alpha").set_value(0.5)
    run(at)
    control(at.selectbox, "activation").set_value("silu")
    run(at)
    control(at.select_slider, "width").set_value(0.0625)
    run(at)
    control(at.checkbox, "maxpool").uncheck()  # first: 16 px needs a stride-16 (pool-free) net
    run(at)
    control(at.select_slider, "resolution").set_value(16)
    run(at)
    control(at.number_input, "batch").set_value(3)
    run(at)
    control(at.slider, "se_gain").set_value(0.5)
    run(at)
    control(at.checkbox, "skipinit").check()
    run(at)

    expected = SPPConfig(depth=14, norm="nf", alpha=0.5, activation="silu", width=0.0625,
                         maxpool=False, resolution=16, batch=3, se_gain=0.5, skipinit=True)  # fmt: skip
    assert not at.error, [error.value for error in at.error]
    assert at.session_state["config"] == expected
    assert urlstate.decode_config(at.query_params) == expected  # the URL reproduces it
    assert legend(wait_for_chart(at)) == [expected.label]
    job = finished_job(api_url, expected)  # the id is the hash of exactly this config
    assert job["label"] == expected.label
    assert SPPConfig.model_validate(result(api_url, expected)["config"]) == expected


# --- (b) the plot shows the API's numbers -----------------------------------------------------
def test_plot_shows_the_results_blocks(api_url: str) -> None:
    config = SPPConfig(**TINY, gradients=True)
    spec = wait_for_chart(open_explorer(urlstate.encode_config(config)))
    blocks = result(api_url, config)["blocks"]
    stage_ends = [block["index"] for block in blocks[1:] if block["transition"]]
    stage_ends = [index - 1 for index in stage_ends] + [blocks[-1]["index"]]

    panels = panel_traces(spec, config.label)
    assert list(panels) == PANEL_KEYS  # three forward panels and the gradient row
    for key, traces in panels.items():
        curve, dots, *expected = traces
        assert curve["name"] == config.label
        assert values(curve["x"]) == [block["index"] for block in blocks]
        assert values(curve["y"]) == [block[key] for block in blocks], key
        assert values(dots["x"]) == stage_ends
        assert values(dots["y"]) == [blocks[index][key] for index in stage_ends], key
        if key == "avg_channel_var":  # an NF net also draws its analytic beta^2
            assert values(expected[0]["y"]) == [block["expected_var"] for block in blocks]
        else:
            assert expected == []
    assert all(value > 0 for value in values(panels["grad_avg_channel_var"][0]["y"]))


# --- (c) presets ------------------------------------------------------------------------------
def test_preset_button_shows_every_run_of_the_figure(api_url: str) -> None:
    preset = get_preset("fig2")
    at = open_explorer(urlstate.encode_config(SPPConfig(**TINY)))
    at.button(key="preset_fig2").click()
    run(at)

    first = preset.runs[0].config  # BN, ReLU-BN-Conv at the paper's depth
    assert at.session_state["config"] == first
    assert sidebar_values(at, "depth", "norm", "order", "width", "resolution", "batch") == {
        "depth": 600, "norm": "bn", "order": "relu-bn-conv", "width": 0.25, "resolution": 128,
        "batch": 8,
    }  # fmt: skip
    assert at.query_params["preset"] == "fig2"
    assert urlstate.decode_config(at.query_params) == first
    assert at.button(key="preset_fig2").proto.type == "primary"

    spec = wait_for_chart(at)
    assert legend(spec) == [run.label for run in preset.runs]
    assert spec["layout"]["title"]["text"] == preset.title
    assert any(preset.caption in text.value for text in at.markdown)
    assert f"Fig. {preset.figure}" in [header.value for header in at.subheader]
    for preset_run in preset.runs:
        finished_job(api_url, preset_run.config)

    # Moving a control away from the figure's runs leaves the preset: one run again.
    control(at.number_input, "batch").set_value(2)
    run(at)
    assert "preset" not in at.query_params
    assert legend(wait_for_chart(at)) == [first.label]
    assert not any(preset.caption in text.value for text in at.markdown)


# --- (d) failures are sentences ---------------------------------------------------------------
def test_unreachable_api_is_a_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("API_URL", closed)
    at = open_explorer(urlstate.encode_config(SPPConfig(**TINY)))
    assert [error.value for error in at.error] == [
        f"The API at {closed} is not reachable (ConnectError): start it with `python -m api`. "
        "This page tries again every 2 s."
    ]
    assert chart(at) is None
    assert control(at.selectbox, "norm").value == "nf"  # the controls stay usable


def test_invalid_link_and_invalid_change_are_explained(api_url: str) -> None:
    at = open_explorer({"depth": "14", "resolution": "8"})
    # At the top of the page, where the user looks, not at the bottom of the sidebar.
    # Only the bad field is dropped, in one sentence; the link's depth is kept.
    assert [notice.value for notice in at.main.warning] == [
        "The link's resolution=8 was left out: 8 is too small: this network downsamples by 32, "
        "so the resolution must be at least 32."
    ]
    assert at.session_state["config"] == urlstate.default_config().edited({"depth": 14})
    assert at.query_params == {"depth": "14"}  # the URL now says what is shown
    wait_for_chart(at)

    # A widget change that makes the config invalid is undone and explained.
    control(at.select_slider, "resolution").set_value(16)
    run(at)
    assert [error.value for error in at.sidebar.error] == [
        "resolution: 16 is too small: this network downsamples by 32, so the resolution must "
        "be at least 32"
    ]  # under the resolution control, which is back at the value that stays
    assert not at.main.warning  # the link's notice is done with once the user acts
    assert control(at.select_slider, "resolution").value == 64
    assert at.session_state["config"] == urlstate.default_config().edited({"depth": 14})


@pytest.fixture
def small_api(
    redis_url: str, tmp_path: Path, server_logs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """`python -m api` that refuses any job over a million FLOPs (no worker: none is queued)."""
    port = free_port()
    env = {"REDIS_URL": redis_url, "API_PORT": str(port), "MAX_FLOPS": "1e6"}
    server = ServerProcess("api-small", [sys.executable, "-m", "api"], env, tmp_path)
    server_logs.append(server.log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_ready(f"{url}/readyz", timeout=30)
        monkeypatch.setenv("API_URL", url)
        yield url
    finally:
        server.stop()


def test_over_limit_config_shows_the_apis_sentence(small_api: str) -> None:
    at = open_explorer(urlstate.encode_config(SPPConfig(**TINY)))
    [error] = at.error
    assert error.value.startswith("this job is too large: its FLOPs (")
    assert "over the limit MAX_FLOPS = 1e+06" in error.value
    assert "reduce the width, depth, resolution or batch" in error.value
    assert chart(at) is None


# --- (e) the URL reproduces the view ----------------------------------------------------------
def test_link_sets_every_control_and_the_request(api_url: str) -> None:
    config = SPPConfig(norm="nf", layout=(1, 2, 1), activation="gelu", alpha=0.3, gamma=1.5,
                       se_gain=0.25, skipinit=True, width=0.125, resolution=32, batch=2, seed=3,
                       input="digits", gradients=True)  # fmt: skip
    query = urlstate.encode_config(config)
    at = open_explorer(query)
    assert sidebar_values(
        at, "family", "depth", "layout", "norm", "conv", "activation", "alpha", "gamma_mode",
        "gamma", "se_gain", "skipinit", "maxpool", "width", "resolution", "batch", "seed",
        "input", "gradients",
    ) == {
        "family": "resnetv2", "depth": "custom", "layout": "1,2,1", "norm": "nf", "conv": "ws",
        "activation": "gelu", "alpha": 0.3, "gamma_mode": "manual", "gamma": 1.5,
        "se_gain": 0.25, "skipinit": True, "maxpool": True, "width": 0.125, "resolution": 32,
        "batch": 2, "seed": 3, "input": "digits", "gradients": True,
    }  # fmt: skip
    assert control(at.text_input, "layout").value == "1,2,1"  # shown for a custom layout
    assert control(at.number_input, "gamma").value == 1.5  # shown for a manual gamma
    assert at.session_state["config"] == config
    assert at.query_params == query  # the page keeps the link as it was
    assert legend(wait_for_chart(at)) == [config.label]
    finished_job(api_url, config)


def test_pins_in_the_link_are_overlaid(api_url: str) -> None:
    pinned = SPPConfig(**TINY, alpha=0.6)
    pin = compute(api_url, pinned)
    config = SPPConfig(**TINY)
    at = open_explorer(urlstate.encode_view(config, preset=None, pins=[pin], log_y=False))

    spec = wait_for_chart(at)
    assert legend(spec) == [config.label, f"pinned: {pinned.label}"]
    pinned_curve = panel_traces(spec, f"pinned: {pinned.label}")["avg_channel_var"][0]
    blocks = result(api_url, pinned)["blocks"]
    assert values(pinned_curve["y"]) == [block["avg_channel_var"] for block in blocks]
    assert at.query_params["pins"] == pin

    # Pinning the current run keeps it in the plot while the controls move on.
    [pin_button] = [button for button in at.button if button.label == "Pin this run"]
    pin_button.click()
    run(at)
    assert urlstate.decode_pins(at.query_params) == [pin, job_id(config)]
    control(at.number_input, "seed").set_value(1)
    run(at)
    moved = SPPConfig(**TINY, seed=1)
    assert legend(wait_for_chart(at)) == [
        moved.label, f"pinned: {pinned.label}", f"pinned: {config.label}",
    ]  # fmt: skip


@pytest.mark.parametrize("current_cached", [True, False])
def test_expired_pin_is_reported_and_leaves_the_url(api_url: str, current_cached: bool) -> None:
    gone = "0" * 32  # a job the API does not know (its result expired)
    config = SPPConfig(**TINY)
    if current_cached:
        compute(api_url, config)  # the page then draws in one run, without polling
    at = open_explorer(urlstate.encode_view(config, preset=None, pins=[gone], log_y=False))
    assert legend(wait_for_chart(at)) == [config.label]
    assert [warning.value for warning in at.warning] == [
        f"Pinned run {gone[:12]} is no longer available; it was unpinned."
    ]
    assert "pins" not in at.query_params


def test_a_pin_naming_a_training_run_is_explained_and_dropped(api_url: str) -> None:
    """A link whose pin is a training run's job (its result is no SPP): a warning, not a
    traceback (it was a pydantic ValidationError), and the current run is still drawn."""
    train = {**TINY, "dataset": "gaussian", "steps": 2, "batch": 8, "eval_examples": 16}
    train_id = httpx.post(f"{api_url}/v1/train", json=train).json()["id"]
    deadline = time.monotonic() + CHART_DEADLINE
    while httpx.get(f"{api_url}/v1/jobs/{train_id}").json()["state"] != "finished":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    config = SPPConfig(**TINY)
    at = open_explorer(urlstate.encode_view(config, preset=None, pins=[train_id], log_y=False))
    assert legend(wait_for_chart(at)) == [config.label]
    assert [warning.value for warning in at.warning] == [
        f"Pinned run {train_id[:12]} is not an SPP (a training run?); it was unpinned."
    ]
    assert not at.error and "pins" not in at.query_params


# --- (f) every statistic on screen ------------------------------------------------------------
def test_choosing_an_appendix_g_panel_draws_it(api_url: str) -> None:
    at = open_explorer(urlstate.encode_config(SPPConfig(**TINY)))
    control(at.toggle, "extra_stats").set_value(True)
    run(at)
    panels = control(at.multiselect, "panels")
    assert panels.value == [key for key, _ in FORWARD_PANELS]  # the paper's three by default
    # The statistics measured now, by their panel titles.
    assert panels.options == [title for _, title in FORWARD_PANELS] + [
        "Activation Mean", "Average Pixel Norm"
    ]  # fmt: skip
    panels.select("activation_mean")
    run(at)
    config = SPPConfig(**TINY, extra_stats=True)
    assert at.session_state["config"] == config
    chosen = [key for key, _ in FORWARD_PANELS] + ["activation_mean"]
    assert at.query_params["panels"] == ",".join(chosen)  # the view is in the URL

    spec = wait_for_chart(at)
    titles = [note["text"] for note in spec["layout"]["annotations"]]
    assert titles == [title for _, title in FORWARD_PANELS] + ["Activation Mean"]
    blocks = result(api_url, config)["blocks"]
    [curve] = [t for t in spec["data"] if t.get("xaxis") == "x4" and t["mode"] == "lines"]
    assert values(curve["y"]) == [block["activation_mean"] for block in blocks]
    # The CSV download (the API's CSV of the current job) holds the chosen statistic.
    csv = httpx.get(f"{api_url}/v1/jobs/{job_id(config)}/result", params={"format": "csv"})
    assert "activation_mean" in csv.text.splitlines()[0].split(",")

    # A link with the panels reproduces the view, switching on Appendix G itself.
    again = open_explorer(
        {**urlstate.encode_config(SPPConfig(**TINY)), "panels": "activation_mean"}
    )
    assert again.session_state["config"] == config
    assert control(again.multiselect, "panels").value == ["activation_mean"]
    spec = wait_for_chart(again)
    assert [note["text"] for note in spec["layout"]["annotations"]] == ["Activation Mean"]


def test_a_bad_panel_in_a_link_is_explained(api_url: str) -> None:
    at = open_explorer({**urlstate.encode_config(SPPConfig(**TINY)), "panels": "activation_man"})
    [error] = at.main.warning
    assert error.value.startswith(
        "the link's panels are invalid: unknown statistic 'activation_man'; choose from "
    )
    assert error.value.endswith("; showing the default panels instead")
    assert at.session_state["config"] == SPPConfig(**TINY)
    assert "panels" not in at.query_params
    spec = wait_for_chart(at)
    assert [note["text"] for note in spec["layout"]["annotations"]] == [
        title for _, title in FORWARD_PANELS
    ]


def test_a_link_says_what_it_asked_for_that_is_not_shown(api_url: str) -> None:
    query = {
        **urlstate.encode_config(SPPConfig(**TINY)),
        "order": "relu-bn-conv",
        "preset": "fig99",
    }
    at = open_explorer(query)
    notices = [notice.value for notice in at.main.warning]
    assert any(
        n.startswith("The link's preset 'fig99' is not one of the paper's figures") for n in notices
    )
    assert any(
        n.startswith("The link's order=relu-bn-conv does not apply to NF-ResNetV2-14")
        for n in notices
    )
    wait_for_chart(at)


def test_a_refused_layout_is_explained_under_its_control(api_url: str) -> None:
    at = open_explorer(
        urlstate.encode_config(SPPConfig(**{**TINY, "depth": None, "layout": (2, 1, 1, 1)}))
    )
    layout = control(at.text_input, "layout")
    layout.set_value("1,x").run()
    assert not at.exception
    errors = [error.value for error in at.sidebar.error]
    assert len(errors) == 1 and errors[0].startswith("layout: "), errors


def test_a_pinned_run_keeps_its_colour_when_the_current_run_changes(api_url: str) -> None:
    pinned = SPPConfig(**TINY, alpha=0.6)
    pin = compute(api_url, pinned)
    at = open_explorer(
        urlstate.encode_view(SPPConfig(**TINY), preset=None, pins=[pin], log_y=False)
    )

    def pin_colour(spec: dict[str, Any]) -> str:
        curve = panel_traces(spec, f"pinned: {pinned.label}")["avg_channel_var"][0]
        return curve["line"]["color"]

    before = pin_colour(wait_for_chart(at))
    control(at.number_input, "seed").set_value(3)
    run(at)
    spec = wait_for_chart(at)
    while legend(spec)[0] != SPPConfig(**TINY, seed=3).label:
        run(at)
        spec = wait_for_chart(at)
    assert pin_colour(spec) == before
    current = panel_traces(spec, SPPConfig(**TINY, seed=3).label)["avg_channel_var"][0]
    assert current["line"]["color"] != before


# --- (g) a control that moves on gives back its own job, nobody else's -----------------------
@pytest.fixture
def idle_api(
    redis_url: str, tmp_path: Path, server_logs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """`python -m api` on a Redis database no worker serves: every job stays queued."""
    idle_db = redis_url.rsplit("/", 1)[0] + "/9"
    store = redis.Redis.from_url(idle_db)
    store.flushdb()
    port = free_port()
    env = {"REDIS_URL": idle_db, "API_PORT": str(port)}
    server = ServerProcess("api-idle", [sys.executable, "-m", "api"], env, tmp_path)
    server_logs.append(server.log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        server.wait_ready(f"{url}/healthz", timeout=30)
        monkeypatch.setenv("API_URL", url)
        monkeypatch.setenv("APP_FOLLOW_SECONDS", "0")  # show progress, do not follow
        yield url
    finally:
        server.stop()
        store.flushdb()
        store.close()


def test_moving_a_control_cancels_the_last_job_unless_someone_else_asked_for_it(
    idle_api: str,
) -> None:
    """A slider dragged on leaves no backlog of jobs, but never cancels another user's."""
    configs = [SPPConfig(**TINY, seed=seed) for seed in (0, 1, 2)]
    at = open_explorer(urlstate.encode_config(configs[0]))
    another_user = httpx.post(f"{idle_api}/v1/spp", json=configs[1].model_dump(mode="json"))
    assert another_user.status_code == 202

    for config in configs[1:]:
        control(at.number_input, "seed").set_value(config.seed)
        run(at)

    states = [httpx.get(f"{idle_api}/v1/jobs/{job_id(c)}").json()["state"] for c in configs]
    assert states == ["canceled", "queued", "queued"]
