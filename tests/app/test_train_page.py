"""The Train page in Streamlit's AppTest, against a real API (uvicorn) and a real worker.

What a user relies on: the runs table and controls are the configs the API trains, a preset
fills the table, an invalid run is explained before anything is submitted, the runs are
followed live until they finish (curves, statuses, SPPs before and after), a link keeps the
runs, and a failure is a sentence, never a traceback. The runs are the tiny "Quick check"
preset (ResNet-14 at width 0.125, 20 steps).
"""

from __future__ import annotations

import base64
import json
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from launcher.localhost import free_port
from nfcore.plots.training import GRAD_NORM_TITLE, PANEL_TITLES
from nfcore.plots.training_spp import SCRUB_TITLE
from nfcore.spec.config import MAX_TRAIN_STEPS
from nfcore.spec.train_presets import QUICK, TABLE2, auto_labels
from tests.app.conftest import ServerProcess, clear_app_caches

APP_MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"
RUN_TIMEOUT = 30  # seconds for one script run
TRAIN_DEADLINE = 90  # seconds for both quick runs, the worker's first import of torch included


def setting(at: AppTest, kind: str, name: str) -> Any:
    """The widget of shared setting `name`; its key carries the preset version."""
    [widget] = [w for w in getattr(at, kind) if re.fullmatch(rf"t_{name}_\d+", w.key or "")]
    return widget


pytestmark = pytest.mark.usefixtures("fresh_app")


@pytest.fixture
def closed_api(monkeypatch: pytest.MonkeyPatch) -> str:
    """An API URL where nothing listens."""
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("API_URL", url)
    return url


# --- driving the page -------------------------------------------------------------------------
def open_train_page(query: Mapping[str, str] | None = None) -> AppTest:
    """The dashboard (`app/main.py`) on its Train page, opened at `/train?<query>`."""
    at = AppTest.from_file(str(APP_MAIN), default_timeout=RUN_TIMEOUT)
    at.query_params.update(query or {})
    at.switch_page("views/train.py")
    run(at)
    assert at.title[0].value == "Train"
    return at


def run(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, [error.message for error in at.exception]
    return at


def table(at: AppTest) -> list[dict[str, Any]]:
    """The runs table as shown (the data editor)."""
    [editor] = at.dataframe
    records = editor.value.to_dict("records")
    return [{k: (None if v is None or v != v else v) for k, v in r.items()} for r in records]


def charts(at: AppTest) -> dict[str, dict[str, Any]]:
    """The page's Plotly figures by their title: 'training' for the curves, 'Before
    training' and 'After training' for the SPPs, SCRUB_TITLE for the SPPs while training."""
    found = {}
    for element in at.get("plotly_chart"):
        spec = json.loads(element.proto.spec)
        titles = [a.get("text") for a in spec["layout"].get("annotations", [])]
        name = "training" if PANEL_TITLES[0] in titles else spec["layout"]["title"]["text"]
        found[name] = spec
    return found


def legend(spec: dict[str, Any]) -> list[str]:
    return [trace["name"] for trace in spec["data"] if trace.get("showlegend") is True]


def texts(elements: Any) -> list[str]:
    return [element.value for element in elements]


def wait_until_done(at: AppTest) -> None:
    """Rerun the page (each run polls the events once) until no run is queued or running."""
    deadline = time.monotonic() + TRAIN_DEADLINE
    while any(run.state in ("queued", "running") for run in at.session_state["train_runs"]):
        assert time.monotonic() < deadline, at.session_state["train_runs"]
        time.sleep(0.3)
        run(at)


def listed_jobs(api_url: str) -> list[dict[str, Any]]:
    return httpx.get(f"{api_url}/v1/jobs").json()["jobs"]


# --- the page ---------------------------------------------------------------------------------
def test_page_renders_with_its_controls(closed_api: str) -> None:
    at = open_train_page()
    assert [button.label for button in at.button] == [
        "BN vs NF", "Table 2: small batches", "Quick check", "Start", "Clear runs",
    ]  # fmt: skip
    assert [(row["norm"], row["depth"], row["skipinit"]) for row in table(at)] == [
        ("bn", 26, False), ("nf", 26, True),
    ]  # fmt: skip
    assert setting(at, "radio", "dataset").value == "digits"
    assert setting(at, "radio", "dataset").options == ["digits (scikit-learn)", "Gaussian noise",
                                                 "CIFAR-10"]  # fmt: skip
    values = {name: setting(at, "number_input", name).value
              for name in ("batch", "steps", "lr", "warmup_steps", "ema_decay", "seed")}  # fmt: skip
    assert values == {"batch": 32, "steps": 200, "lr": 0.1, "warmup_steps": None,
                      "ema_decay": None, "seed": 0}  # fmt: skip
    assert setting(at, "slider", "stochdepth_rate").value == 0.0
    assert not at.error and not charts(at)

    setting(at, "radio", "dataset").set_value("cifar10")
    run(at)
    assert any("CIFAR10_DIR" in caption.value for caption in at.caption)


def test_steps_stop_at_the_apis_limit(
    redis_url: str, tmp_path: Path, server_logs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Steps control ends at the API's MAX_TRAIN_STEPS (GET /v1/limits), which the API
    enforces, not at the config's far larger bound; without an API, at the config's bound."""
    port = free_port()
    env = {"REDIS_URL": redis_url, "API_HOST": "127.0.0.1", "API_PORT": str(port),
           "MAX_TRAIN_STEPS": "1234"}  # fmt: skip
    api = ServerProcess("api", [sys.executable, "-m", "api"], env, tmp_path)
    server_logs.append(api.log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        api.wait_ready(f"{url}/readyz", timeout=30)
        monkeypatch.setenv("API_URL", url)
        steps = setting(open_train_page(), "number_input", "steps")
        assert (steps.min, steps.max) == (1, 1234)
        assert "The API trains at most 1,234." in steps.help
    finally:
        api.stop()

    clear_app_caches()
    monkeypatch.setenv("API_URL", f"http://127.0.0.1:{free_port()}")  # nothing listens
    assert setting(open_train_page(), "number_input", "steps").max == MAX_TRAIN_STEPS


def test_preset_fills_the_runs(closed_api: str) -> None:
    at = open_train_page()
    at.button(key="t_preset_table2").click()
    run(at)
    rows = table(at)
    assert [(row["norm"], row["batch"], row["lr"]) for row in rows] == [
        ("bn", 64, 0.05), ("nf", 64, 0.05), ("bn", 8, 0.025), ("nf", 8, 0.025),
        ("bn", 4, 0.01), ("nf", 4, 0.01),
    ]  # fmt: skip
    assert {(row["depth"], row["width"], row["skipinit"]) for row in rows} == {(26, 0.25, False)}
    assert setting(at, "number_input", "steps").value == 200
    [info] = at.info
    assert TABLE2.title in info.value and "BN-ResNet falls clearly behind" in info.value

    # Leaving the preset's settings takes its caption away; the other preset brings its own.
    setting(at, "number_input", "steps").set_value(100)
    run(at)
    assert not at.info
    at.button(key="t_preset_quick").click()
    run(at)
    assert [row["depth"] for row in table(at)] == [14, 14]
    assert setting(at, "number_input", "steps").value == 20


def test_invalid_run_is_explained_and_nothing_is_submitted(api_server: str, monkeypatch) -> None:
    monkeypatch.setenv("API_URL", api_server)
    at = open_train_page()
    setting(at, "number_input", "batch").set_value(1)  # the BN run cannot train at batch 1
    run(at)
    at.button(key="t_start").click()
    run(at)
    assert texts(at.error) == [
        "Run 1 (BN-ResNet-26): batch: BatchNorm cannot train at batch size 1 (its statistics "
        "would be those of a single example, and at test time they no longer match); use a "
        "batch of at least 2, or a normalizer-free model (norm 'nf'), which trains at any "
        "batch size"
    ]
    assert listed_jobs(api_server) == []
    assert "train_runs" not in at.session_state
    assert "jobs" not in at.query_params


def test_two_tiny_runs_train_to_the_end(api_server: str, worker: object, monkeypatch) -> None:
    monkeypatch.setenv("API_URL", api_server)
    at = open_train_page({"preset": "quick"})
    labels = auto_labels(QUICK.configs())
    assert [row["depth"] for row in table(at)] == [14, 14]
    at.button(key="t_start").click()
    run(at)
    job_ids = [run.job_id for run in at.session_state["train_runs"]]
    assert at.query_params["jobs"] == ",".join(job_ids)
    assert at.button(key="t_start").disabled  # while the runs are active
    wait_until_done(at)

    successes = texts(at.success)
    assert len(successes) == 2, successes
    for label, text in zip(labels, successes, strict=True):
        assert text.startswith(f"{label}: finished, held-out accuracy ")
        assert text.endswith("after 20 steps")
    assert not at.error and not at.warning
    found = charts(at)
    assert set(found) == {"training", "Before training", "After training", SCRUB_TITLE}
    assert legend(found["training"]) == labels
    loss = next(t for t in found["training"]["data"] if t["name"] == labels[0])
    assert len(loss["x"]["bdata"] if isinstance(loss["x"], dict) else loss["x"]) > 0
    assert legend(found["After training"]) == [f"{label} (step 20)" for label in labels]
    assert not at.button(key="t_start").disabled
    jobs = {job["id"]: job for job in listed_jobs(api_server)}
    assert all(jobs[job_id]["state"] == "finished" for job_id in job_ids)

    # The loss is smoothed by default, its raw curve faint behind it; the gradient norm is a
    # fourth panel on request.
    raw = next(t for t in found["training"]["data"] if t["name"] == f"{labels[0]} (raw)")
    assert raw["showlegend"] is False and raw["opacity"] < 1
    at.toggle(key="t_grad_norm").set_value(True)
    run(at)
    titles = [a["text"] for a in charts(at)["training"]["layout"]["annotations"]]
    assert titles[:4] == [*PANEL_TITLES, GRAD_NORM_TITLE]

    # The scrubber has a frame per recorded SPP (every 4 steps), and the frame of a step shows
    # the SPP the run recorded at that step.
    results = [httpx.get(f"{api_server}/v1/jobs/{job_id}/result").json() for job_id in job_ids]
    scrubber = found[SCRUB_TITLE]
    assert [frame["name"] for frame in scrubber["frames"]] == ["0", "4", "8", "12", "16", "20"]
    assert [step["label"] for step in scrubber["layout"]["sliders"][0]["steps"]] == [
        "0", "4", "8", "12", "16", "20",
    ]  # fmt: skip
    for step in (0, 8, 20):
        shown = scrubbed(scrubber, step)
        for label, result in zip(labels, results, strict=True):
            [snapshot] = [s for s in result["spp"] if s["step"] == step]
            blocks = snapshot["result"]["blocks"]
            assert shown[label] == pytest.approx([b["avg_channel_var"] for b in blocks])

    # A reload (a new session at the same URL) follows the same runs, from their results, with
    # the labels they had and the table and settings that made them.
    again = open_train_page({"jobs": ",".join(job_ids)})
    assert [text.split(": finished")[0] for text in texts(again.success)] == labels
    assert "training" in charts(again)
    assert table(again) == table(open_train_page({"preset": "quick"}))
    assert setting(again, "number_input", "steps").value == 20
    assert setting(again, "number_input", "spp_every").value == 4


def scrubbed(spec: dict[str, Any], step: int) -> dict[str, list[float]]:
    """What the scrubber's frame for `step` shows in its variance panel: y by run label."""
    [frame] = [frame for frame in spec["frames"] if frame["name"] == str(step)]
    by_label = {}
    for index, data in zip(frame["traces"], frame["data"], strict=True):
        base = spec["data"][index]
        if base.get("xaxis") == "x3":  # the loss, the squared mean, then the variance
            by_label[base["name"]] = plotly_values(data["y"])
    return by_label


def plotly_values(values: Any) -> list[float]:
    """A Plotly JSON array: a list, or typed-array JSON ({"dtype", "bdata"})."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).tolist()
    return list(values)


def test_cancel_stops_a_run(api_server: str, worker: object, monkeypatch) -> None:
    monkeypatch.setenv("API_URL", api_server)
    at = open_train_page({"preset": "quick"})
    setting(at, "number_input", "steps").set_value(5000)  # far longer than the test waits
    run(at)
    at.button(key="t_start").click()
    run(at)
    deadline = time.monotonic() + TRAIN_DEADLINE
    while at.session_state["train_runs"][0].done == 0:  # until the first run trains
        assert time.monotonic() < deadline, at.session_state["train_runs"]
        time.sleep(0.3)
        run(at)
    for button in [button for button in at.button if button.label == "Cancel"]:
        button.click()  # the BN run stops after its current step, the queued NF run at once
    run(at)
    wait_until_done(at)
    warnings = texts(at.warning)
    assert [text.split(": canceled at step ")[0] for text in warnings] == auto_labels(
        QUICK.configs()
    )
    assert all(text.endswith("/5000") for text in warnings)
    assert not at.error and not at.success


def test_api_down_is_a_sentence(closed_api: str) -> None:
    at = open_train_page()
    at.button(key="t_start").click()
    run(at)
    assert texts(at.error) == [
        f"The API at {closed_api} is not reachable (ConnectError): start it with `python -m api`."
    ]
    assert "jobs" not in at.query_params
    assert not charts(at)
    # A link to runs is explained the same way.
    at = open_train_page({"jobs": "0" * 32})
    assert texts(at.error) == [
        f"The API at {closed_api} is not reachable (ConnectError): start it with `python -m api`. "
        "This page tries again every 2 s."
    ]


def test_a_link_naming_an_spp_job_is_explained_beside_its_training_runs(
    api_server: str, worker: object, monkeypatch
) -> None:
    """`?jobs=` naming an SPP's job (the Jobs page opens those in the Explorer): a sentence,
    the link's training run followed, and no traceback."""
    monkeypatch.setenv("API_URL", api_server)
    spp = {"depth": 14, "norm": "nf", "width": 0.125, "resolution": 32, "batch": 2}
    spp_id = httpx.post(f"{api_server}/v1/spp", json=spp).json()["id"]
    [config] = QUICK.configs()[:1]
    train_id = httpx.post(f"{api_server}/v1/train", json=config.model_dump(mode="json")).json()[
        "id"
    ]
    deadline = time.monotonic() + TRAIN_DEADLINE
    while httpx.get(f"{api_server}/v1/jobs/{spp_id}").json()["state"] != "finished":
        assert time.monotonic() < deadline
        time.sleep(0.1)

    at = open_train_page({"jobs": f"{spp_id},{train_id}"})
    wait_until_done(at)
    assert texts(at.error) == [
        f"The link's job(s) {spp_id[:12]} are not training runs (the Jobs page opens each "
        "where it belongs)."
    ]
    assert [run.job_id for run in at.session_state["train_runs"]] == [train_id]
    assert len(at.success) == 1 and "training" in charts(at)
