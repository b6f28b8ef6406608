"""The Sweep page in Streamlit's AppTest: its controls and URL are one sweep, and every refusal
(a bad link, a bad value, the grid limit, the API's 422 for a bad or too costly point, an API
that is down) is a sentence next to the controls, with nothing queued. Filling the heatmap
from real jobs is tests/app/test_sweeps_e2e.py's."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from app import sweeps
from launcher.localhost import free_port

APP_MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"
RUN_TIMEOUT = 30  # seconds for one script run
TINY = {"width": "0.0625", "resolution": "32", "batch": "2"}


pytestmark = pytest.mark.usefixtures("fresh_app")


@pytest.fixture
def closed_api(monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("API_URL", url)
    return url


def open_sweeps_page(query: Mapping[str, str] | None = None) -> AppTest:
    """The dashboard on its Sweeps page, opened at `/sweeps?<query>`."""
    at = AppTest.from_file(str(APP_MAIN), default_timeout=RUN_TIMEOUT)
    at.query_params.update(query or {})
    at.switch_page("views/sweeps.py")
    return run(at)


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [error.message for error in at.exception]
    assert at.title[0].value == "Sweeps"
    return at


def widget(elements: Any, name: str) -> Any:
    """The page's widget `name`; its key carries the controls' version."""
    [found] = [w for w in elements if re.fullmatch(rf"sw_{name}@\d+", w.key or "")]
    return found


def run_button(at: AppTest) -> Any:
    [button] = [b for b in at.button if b.label == "Run sweep"]
    return button


def query(at: AppTest) -> dict[str, str]:
    return {key: str(at.query_params[key]) for key in at.query_params}


def errors(at: AppTest) -> list[str]:
    return [error.value for error in at.error]


def listed_jobs(api_url: str) -> list[dict[str, Any]]:
    return httpx.get(f"{api_url}/v1/jobs").json()["jobs"]


def test_page_opens_on_the_default_sweep_without_running_it(closed_api: str) -> None:
    at = open_sweeps_page()
    assert widget(at.selectbox, "x").value == "alpha"
    assert widget(at.text_input, "xs").value == "0.1, 0.3, 0.5"
    assert widget(at.selectbox, "y").value == "depth"
    assert widget(at.text_input, "ys").value == "14, 26, 50"
    assert widget(at.selectbox, "stat").value == "final_var"
    assert (widget(at.selectbox, "width").value, widget(at.selectbox, "resolution").value,
            widget(at.number_input, "batch").value) == (0.25, 64, 8)  # fmt: skip
    assert [info.value for info in at.info] == [
        "Choose two fields and their values, then **Run sweep**."
    ]
    assert not errors(at) and not at.get("plotly_chart")
    # The URL is the sweep, so a copied link reproduces it.
    assert sweeps.decode_sweep(query(at)) == sweeps.DEFAULT_SWEEP


def test_controls_edit_the_sweep_and_the_url(closed_api: str) -> None:
    at = open_sweeps_page()
    widget(at.selectbox, "y").set_value("activation")
    run(at)
    # A new field brings its usual values.
    assert widget(at.text_input, "ys").value == "relu, silu, gelu, tanh"
    widget(at.text_input, "xs").set_value("0.2, 1")
    run(at)
    widget(at.selectbox, "norm").set_value("bn")
    run(at)
    sweep = sweeps.decode_sweep(query(at))
    assert (sweep.x.values, sweep.y.field, sweep.base.norm) == ((0.2, 1.0), "activation", "bn")
    assert any(c.value.startswith("8 points") for c in at.caption)


def test_a_bad_value_is_refused_and_the_sweep_kept(closed_api: str) -> None:
    at = open_sweeps_page()
    widget(at.text_input, "ys").set_value("14, deep")
    run(at)
    assert errors(at) == ["depth: 'deep' is not a whole number"]
    assert widget(at.text_input, "ys").value == "14, 26, 50"  # the widget shows the sweep kept
    assert query(at)["ys"] == "14,26,50"
    widget(at.selectbox, "x").set_value("depth")
    run(at)
    assert errors(at) == ["both axes vary depth: choose two different fields"]
    assert widget(at.selectbox, "x").value == "alpha"


def test_a_bad_link_is_explained_and_the_default_shown(closed_api: str) -> None:
    at = open_sweeps_page({"x": "colour", **TINY})
    [message] = errors(at)
    assert message.startswith("The link's x=colour was left out: it cannot be swept here")
    assert not at.get("plotly_chart")  # nothing ran
    assert widget(at.selectbox, "x").value == "alpha"


def test_api_down_is_a_sentence(closed_api: str) -> None:
    at = open_sweeps_page({"x": "alpha", "xs": "0.1", "y": "depth", "ys": "14", **TINY})
    assert errors(at) == [
        f"The API at {closed_api} is not reachable (ConnectError): start it with `python -m api`."
    ]


def test_a_grid_over_the_apis_limit_is_refused_before_posting(api_server: str, monkeypatch) -> None:
    monkeypatch.setenv("API_URL", api_server)
    limit = httpx.get(f"{api_server}/v1/limits").json()["max_sweep_points"]
    alphas = ",".join(str(round(0.05 * (i + 1), 2)) for i in range(limit // 2 + 1))
    at = open_sweeps_page({"x": "alpha", "xs": alphas, "y": "seed", "ys": "0,1", **TINY})
    size = 2 * (limit // 2 + 1)
    assert errors(at) == [
        f"{size} points is over the API's limit of {limit} (MAX_SWEEP_POINTS): give fewer values."
    ]
    assert any(c.value == f"{size} points (the API allows {limit})" for c in at.caption)
    assert listed_jobs(api_server) == []


def test_the_apis_refusals_are_shown_next_to_the_controls(api_server: str, monkeypatch) -> None:
    monkeypatch.setenv("API_URL", api_server)
    at = open_sweeps_page({"x": "width", "xs": "0.0625,9", "y": "depth", "ys": "14", **TINY})
    [message] = errors(at)
    assert message.startswith('The API refused the sweep: point {"width": 9.0, "depth": 14}: '
                              "width: Input should be less than or equal to 4")  # fmt: skip
    # The cost check: a point too large for MAX_FLOPS, and nothing of the sweep queued.
    widget(at.selectbox, "resolution").set_value(512)
    run(at)
    widget(at.text_input, "xs").set_value("0.0625, 4")
    run(at)
    widget(at.number_input, "batch").set_value(256)
    run(at)
    run_button(at).click()
    run(at)
    [message] = errors(at)
    assert message.startswith('The API refused the sweep: point {"width": 4.0, "depth": 14}: '
                              "this job is too large")  # fmt: skip
    assert listed_jobs(api_server) == []
    assert not at.get("plotly_chart")


def test_a_link_with_a_sweep_runs_it(api_server: str, monkeypatch) -> None:
    """Opened with a sweep in the URL, the page posts it and shows its (pending) grid."""
    monkeypatch.setenv("API_URL", api_server)
    at = open_sweeps_page({"x": "alpha", "xs": "0.1,0.5", "y": "depth", "ys": "14", **TINY})
    assert not errors(at)
    [chart] = at.get("plotly_chart")
    spec = json.loads(chart.proto.spec)
    heat = next(trace for trace in spec["data"] if trace.get("name") == "final_var")
    assert heat["x"] == ["0.1", "0.5"] and heat["y"] == ["14"]
    labels = sorted(job["label"] for job in listed_jobs(api_server))
    assert labels == [
        "NF-ResNetV2-14 (ws, relu, alpha=0.1)",
        "NF-ResNetV2-14 (ws, relu, alpha=0.5)",
    ]
