"""A pin the API refuses to compute, in Streamlit's AppTest against a real API and worker: the
link's pin carries a config within the config's bounds but far over the API's FLOPs limit (a
malicious or careless link). The page says so in a sentence, unpins it, and still draws the
current run; the API validated it again and queued nothing for it.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from app import urlstate
from nfcore.spec.config import SPPConfig

APP_MAIN = Path(__file__).resolve().parents[2] / "app" / "main.py"
TINY = {"depth": 14, "norm": "nf", "width": 0.125, "resolution": 32, "batch": 2}
DEADLINE = 60  # seconds for the tiny current run (the worker imports torch first)

pytestmark = pytest.mark.usefixtures("quick_polls")


def test_a_pin_over_the_apis_limit_is_a_sentence_and_is_unpinned(
    api_server: str, worker: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_URL", api_server)
    huge = SPPConfig(norm="nf", depth=600, width=2.0, resolution=1024, batch=4096)
    current = SPPConfig(**TINY)
    pins = [urlstate.Pin.of(huge)]
    at = AppTest.from_file(str(APP_MAIN), default_timeout=DEADLINE)
    at.query_params.update(urlstate.encode_view(current, preset=None, pins=pins, log_y=False))
    at.run()
    deadline = time.monotonic() + DEADLINE
    while not at.get("plotly_chart"):
        assert not at.exception, [error.message for error in at.exception]
        assert time.monotonic() < deadline, "no chart"
        time.sleep(0.2)
        at.run()
    [warning] = [w.value for w in at.warning if w.value.startswith("Pinned run")]
    assert warning.startswith(f"Pinned run {huge.label} was refused by the API (")
    assert "MAX_FLOPS" in warning and warning.endswith("; it was unpinned.")
    assert "pins" not in at.query_params and not at.exception
    jobs = httpx.get(f"{api_server}/v1/jobs").json()["jobs"]
    assert [job["id"] for job in jobs if job["id"] == pins[0]] == []
