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

from app.plugin_form import form_fields
from launcher.localhost import free_port
from nfcore.spec.foreign_config import ForeignConfig
from nfcore.spec.result import BlockStats, SPPMeta, SPPResult
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


TOKEN_PLUGIN = {"family": "plugin", "plugin": "vit_like", "version": "1.0",
                "arguments": {"properties": {"depth": {"type": "integer", "minimum": 1,
                                                   "maximum": 12, "default": 2}}},
                "defaults": {"depth": 2}, "input_shape": [16, 32], "channels": "auto"}  # fmt: skip
NOTES = [
    "layout NLC (tokens): the LayerNorm after each block normalizes its last axis (32), so the "
    "channels are last and the statistics are taken over N,L.",
    "blocks.1 is called twice (a tied block): rows blocks.1#0 and blocks.1#1.",
]


def token_result() -> SPPResult:
    """What a worker returns for a ViT-like plugin: its meta says how the network was read."""
    config = ForeignConfig(plugin="vit_like", plugin_version="1.0", model_args={"depth": 2},
                           input_shape=(16, 32))  # fmt: skip
    blocks = [BlockStats(index=i, stage=0, transition=False, name=f"blocks.{i}",
                         avg_sq_channel_mean=0.01, avg_channel_var=1.0 + i,
                         residual_avg_channel_var=None, expected_var=None) for i in range(2)]  # fmt: skip
    meta = SPPMeta(version="0.1.0", torch_version="2.13.0", device="cpu", seconds=0.1,
                   parameter_count=1000, gamma=None, model=config.label, num_blocks=2,
                   stage_ends=[1], reduced_over="N,L", layout="NLC", notes=NOTES)  # fmt: skip
    return SPPResult(config=config, blocks=blocks, meta=meta)


def test_the_page_says_in_words_how_the_network_was_read_and_why_it_was_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 20: a choice made on a foreign network (its layout, its blocks) is a sentence the
    user sees above the chart, and a refusal is a sentence about the network, not an exception's
    module path. The worker's answers are given here, so no worker runs."""
    from app import api_client, runs

    monkeypatch.setattr(api_client, "cached_models", lambda: [TOKEN_PLUGIN])
    monkeypatch.setenv("API_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setattr(runs, "track", lambda label, config, **_: runs.Run(label, None))
    finished = runs.Run("vit_like", "job-1", result=token_result())
    monkeypatch.setattr(runs, "track_body", lambda label, body, **_: finished)
    at = open_page({"plugin": "vit_like"})
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert [info.value for info in at.info] == NOTES
    kinds = [element.type for element in at.main]
    assert kinds.index("info") < kinds.index("plotly_chart"), kinds  # the notes come first
    (caption,) = [c.value for c in at.caption if "statistics per channel" in c.value]
    assert "statistics per channel over N,L (block tensors NLC)" in caption
    inputs = [c.value for c in at.sidebar.caption if c.value.startswith("Input:")]
    assert inputs == ["Input: [16, 32] per example (channels found from its layers)."]
    refusal = ("nfcore.foreign.discovery.SelectionError: blocks: auto found no residual blocks (no module "
               "adds its input to its output); give patterns")  # fmt: skip
    failed = runs.Run("vit_like", "job-2", job={"state": "failed"}, problem=refusal)
    monkeypatch.setattr(runs, "track_body", lambda label, body, **_: failed)
    at = open_page({"plugin": "vit_like"})
    assert not at.exception, at.exception
    assert [e.value for e in at.error] == [
        "nfcore did not measure this network: blocks: auto found no residual blocks (no module "
        "adds its input to its output); give patterns. A model plugin says how its network is "
        "measured in its `@model_plugin(...)` (blocks, residual, channels, input_shape); the "
        'README\'s "Your own network" shows how.'
    ]
    assert not at.get("plotly_chart")


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
    # The worker's result carries the engine's notes; the page shows them above the chart.
    notes = [info.value for info in at.info]
    assert any("NCHW" in note for note in notes), notes
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
