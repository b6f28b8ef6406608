"""The "Your network" page in Streamlit's AppTest, against a real API and a worker that has the
example plugins (examples/plugins, installed by make): the form comes from the plugin's
argument schema, the chart is the plugin network's SPP beside a paper network, and the run
can be pinned in the Explorer."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from api.localhost import free_port
from app.plugin_form import form_fields
from tests.api.conftest import WorkerProcess
from tests.conftest import RedisServer, session_redis_url

ROOT = Path(__file__).resolve().parents[2]
APP_MAIN = ROOT / "app" / "main.py"
RUN_TIMEOUT = 90


pytestmark = pytest.mark.usefixtures("quick_polls")


@pytest.fixture(scope="module")
def module_worker(
    redis_server: RedisServer | None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """This module's worker serves the example plugins (the others' serve none)."""
    process = WorkerProcess(
        session_redis_url(redis_server), tmp_path_factory.mktemp("worker"),
        WORKER_PLUGINS='["tv_resnet", "nf_tv_resnet", "mixer"]',
    )  # fmt: skip
    try:
        process.wait_ready(timeout=120)
        yield process
    finally:
        process.stop()


@pytest.fixture
def api_url(api_server: str, worker: object, monkeypatch: pytest.MonkeyPatch) -> str:
    """The stack, once the worker has advertised its plugins on this test's fresh database
    (it registers again at its next heartbeat)."""
    monkeypatch.setenv("API_URL", api_server)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        rows = httpx.get(f"{api_server}/v1/models", timeout=10).json()
        if any(row["family"] == "plugin" for row in rows):
            return api_server
        time.sleep(0.2)
    raise AssertionError("the worker never advertised the example plugins")


def open_page(query: Mapping[str, str] | None = None) -> AppTest:
    at = AppTest.from_file(str(APP_MAIN), default_timeout=RUN_TIMEOUT)
    at.query_params.update(query or {})
    at.switch_page("views/plugins.py")
    return at.run()


def test_the_form_follows_the_plugins_argument_schema() -> None:
    schema = {
        "properties": {
            "depth": {"enum": [14, 26], "default": 26, "type": "integer"},
            "width": {"type": "integer", "default": 16, "minimum": 1},
            "alpha": {"type": "number", "default": 0.2, "exclusiveMinimum": 0},
            "se": {"type": "boolean", "default": False},
            "name": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
            "layout": {"type": "array", "items": {"type": "integer"}, "default": [1, 1]},
        }
    }
    fields = {f.name: f for f in form_fields(schema)}
    assert [f.kind for f in fields.values()] == [
        "enum",
        "integer",
        "number",
        "boolean",
        "text",
        "json",
    ]
    assert fields["depth"].options == (14, 26) and fields["width"].minimum == 1
    assert fields["name"].optional and fields["layout"].default == [1, 1]


def test_a_link_with_bad_values_shows_the_page_with_defaults_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A mistyped link (a resolution that is no number, an argument over its schema's bound,
    `args` that are no JSON object) opens the page with what fits, and says why. Before, each
    was a traceback (int() of the link's text, Streamlit refusing a value over the maximum).
    The plugin is one the API lists; nothing listens for the job."""
    from app import api_client

    row = {"family": "plugin", "plugin": "tv_resnet", "version": "1.0",
           "arguments": {"properties": {"depth": {"type": "integer", "minimum": 1, "maximum": 50,
                                                  "default": 14}}},
           "defaults": {"depth": 14}, "input_shape": None, "resolution": 64}  # fmt: skip
    monkeypatch.setattr(api_client, "cached_models", lambda: [row])
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("API_URL", closed)
    at = open_page({"plugin": "tv_resnet", "args": '{"depth": 999}', "resolution": "abc",
                    "batch": "x"})  # fmt: skip
    assert not at.exception, at.exception
    depth = next(box for box in at.sidebar.number_input if box.label == "Depth")
    assert depth.value == 50  # the schema's maximum
    assert at.query_params["resolution"] == "64" and at.query_params["batch"] == "8"
    assert [e.value for e in at.error] == [
        f"The API at {closed} is not reachable (ConnectError): start it with `python -m api`. "
        "This page tries again every 2 s."
    ]
    at = open_page({"plugin": "tv_resnet", "args": "[1, 2]"})
    assert not at.exception, at.exception
    assert [w.value for w in at.warning] == [
        "The link's `args` are not a JSON object; showing the defaults."
    ]


def test_a_plugins_spp_is_drawn_beside_a_paper_network_and_can_be_pinned(api_url: str) -> None:
    at = open_page({"plugin": "tv_resnet", "args": '{"depth": 14, "width": 4}', "resolution": "32",
                    "batch": "4"})  # fmt: skip
    assert not at.exception, at.exception
    assert at.sidebar.selectbox[0].value == "tv_resnet"
    depth = next(box for box in at.sidebar.selectbox if box.label == "Depth")
    assert depth.value == 14 and list(depth.options) == ["14", "26", "50", "101"]
    assert not at.error, [e.value for e in at.error]
    (chart,) = at.get("plotly_chart")
    figure = json.loads(chart.proto.spec)
    names = {trace.get("name") for trace in figure["data"]}
    assert any(name and name.startswith("tv_resnet(depth=14") for name in names), names
    assert any(name and name.startswith("NF-ResNetV2-50") for name in names), names
    (button,) = at.get("link_button")
    assert button.proto.url.startswith("/?pins=")
    # Pinned in the Explorer, it is overlaid on the paper network there like any other run.
    explorer = AppTest.from_file(str(APP_MAIN), default_timeout=RUN_TIMEOUT)
    explorer.query_params.update({"depth": "14", "width": "0.125", "resolution": "32", "batch": "2",
                                  "pins": button.proto.url.removeprefix("/?pins=")})  # fmt: skip
    explorer.run()
    assert not explorer.exception, explorer.exception
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        charts = explorer.get("plotly_chart")
        pinned = [t.get("name") for c in charts for t in json.loads(c.proto.spec)["data"]]
        if any(n and n.startswith("pinned: tv_resnet(depth=14") for n in pinned):
            break
        explorer.run()
    else:
        raise AssertionError(f"the pinned plugin run is not in the Explorer's chart: {pinned}")
    assert at.query_params["plugin"] in ("tv_resnet", ["tv_resnet"])


def test_a_link_to_a_plugin_no_worker_has_says_so(api_url: str) -> None:
    at = open_page({"plugin": "resnet9000"})
    assert not at.exception
    assert any("resnet9000" in w.value for w in at.warning), [w.value for w in at.warning]


def test_the_explorers_family_menu_lists_the_plugins_and_opens_their_page(api_url: str) -> None:
    at = AppTest.from_file(str(APP_MAIN), default_timeout=RUN_TIMEOUT)
    at.query_params.update({"depth": "14", "width": "0.125", "resolution": "32", "batch": "2"})
    at.run()
    family = next(box for box in at.sidebar.selectbox if box.label == "Family")
    assert (
        "plugin:tv_resnet" in family.options or "Your network: tv_resnet (plugin)" in family.options
    )
    family.set_value("plugin:tv_resnet").run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Your own network"
    assert at.sidebar.selectbox[0].value == "tv_resnet"


def test_the_page_in_a_browser_draws_the_plugins_spp(
    api_url: str,
    streamlit_server: str,
    browser_page: object,
    output_path: Callable[[str], list[Path]],
) -> None:
    """What a visitor sees at /plugins: the chart with the plugin's and the paper net's curves."""
    page = browser_page
    query = "plugin=nf_tv_resnet&args=%7B%22depth%22%3A+50%7D&resolution=64&batch=8"
    page.goto(f"{streamlit_server}/plugins?{query}", wait_until="domcontentloaded")
    read = "() => Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(p => (p.data || []).map(t => t.name))"
    deadline = time.monotonic() + 120
    names: list[str] = []
    while time.monotonic() < deadline:
        names = page.evaluate(read)
        if any(n and n.startswith("nf_tv_resnet(") for n in names) and any(
            n and n.startswith("NF-ResNetV2-50") for n in names
        ):
            break
        page.wait_for_timeout(300)
    else:
        raise AssertionError(f"the chart never showed both networks: {names}")
    page.wait_for_timeout(500)
    for path in output_path("plugins.png"):
        page.screenshot(path=path, full_page=True)
