"""Timestamps of a page run's phases, for the browser benchmark's breakdown (APP_TRACE=1).

Each mark is one log line, `trace <phase> <unix time> <run id>`, on the dashboard's log; the
benchmark, on the same machine, sets them beside the browser's own clock. Off by default.
"""

from __future__ import annotations

import logging
import time
import uuid

import streamlit as st

from app.settings import get_settings

log = logging.getLogger("app.trace")
RUN_KEY = "trace_run"


def start() -> None:
    """A new page run begins."""
    if get_settings().app_trace:
        st.session_state[RUN_KEY] = uuid.uuid4().hex[:8]
        mark("run")


def mark(phase: str) -> None:
    if get_settings().app_trace:
        run = st.session_state.get(RUN_KEY, "-")
        log.warning("trace %s %.6f %s", phase, time.time(), run)
