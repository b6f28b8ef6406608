"""Recent and running jobs, with links to open each one in the explorer or the Train page.

Times are shown in the browser's time zone (Streamlit reports it, `st.context.timezone`),
or in this server's when the browser has not said, the zone named in the column's header.
A training run that collapsed reads "collapsed at step N", not "finished".
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st

from app import urlstate
from app.api_client import ApiProblem, cached_result, get_client
from app.settings import get_settings
from nfcore.config import SPPConfig

JOB_LIMIT = 50
TIME_FORMAT = "MMM D, HH:mm:ss"


def render() -> None:
    """The table of jobs; an API failure is shown as its sentence, never as a traceback."""
    st.title("Jobs")
    st.caption("The most recent jobs on the API (SPPs and training runs), newest first.")
    limit = st.number_input("Show", min_value=1, max_value=500, value=JOB_LIMIT, step=10)
    st.button(
        "Refresh", icon=":material/refresh:"
    )  # a click reruns the page, which asks the API again
    try:
        jobs = get_client().jobs(int(limit))
    except ApiProblem as problem:
        st.error(problem.message)
        return
    if not jobs:
        st.info("No jobs yet: open the explorer to run one.")
        return
    zone, zone_name = display_zone()
    st.dataframe(
        [_row(job, zone) for job in jobs],
        hide_index=True,
        width="stretch",
        placeholder="",
        # Widths that fit 1440 px beside the sidebar, the links before the error (rare, long).
        column_config={
            "id": st.column_config.TextColumn("id", width=100),
            "kind": st.column_config.TextColumn("kind", width=45, help="spp or train"),
            "label": st.column_config.TextColumn("label", width=270),
            "state": st.column_config.TextColumn("state", width=140),
            "progress": st.column_config.ProgressColumn(
                "progress", min_value=0, max_value=1, width=85
            ),
            "enqueued": st.column_config.DatetimeColumn(
                f"enqueued ({zone_name})", format=TIME_FORMAT, width=125
            ),
            "run seconds": st.column_config.NumberColumn("run s", format="%.1f", width=55),
            "open": st.column_config.LinkColumn("open", display_text="open", width=45),
            "api": st.column_config.LinkColumn("api", display_text="JSON", width=45),
            "error": st.column_config.TextColumn("error"),
        },
    )


def display_zone() -> tuple[tzinfo, str]:
    """The browser's time zone and its name; the server's local zone where it is unknown."""
    name = st.context.timezone
    if name:
        try:
            return ZoneInfo(name), name
        except (ZoneInfoNotFoundError, ValueError):
            pass
    local = datetime.now().astimezone().tzinfo or UTC
    return local, f"server time, {datetime.now(local).strftime('%Z')}"


def _row(job: dict[str, Any], zone: tzinfo) -> dict[str, Any]:
    done, total = job["progress"]["done"], job["progress"]["total"]
    return {
        "id": job["id"][:12],
        "kind": job.get("kind"),
        "label": job["label"],
        "state": job_state(job),
        "progress": done / total if total else 0.0,
        "enqueued": local_time(job.get("enqueued_at"), zone),
        "run seconds": job["run_seconds"],
        "open": explorer_link(job),
        "api": get_settings().api_url.rstrip("/") + job["url"],
        "error": job["error"],
    }


def job_state(job: dict[str, Any]) -> str:
    """The job's state; for a training run that stopped early, "collapsed at step N"."""
    state = job["state"]
    progress = job["progress"]
    if job.get("kind") != "train" or state != "finished" or progress["done"] >= progress["total"]:
        return state
    try:  # a finished run that took fewer steps than asked for collapsed: its result says where
        collapse = cached_result(job["id"]).get("collapse")
    except ApiProblem:
        collapse = None
    if collapse:
        return f"collapsed at step {collapse['step']}"
    return f"stopped at step {progress['done']}"


def local_time(iso: str | None, zone: tzinfo) -> datetime | None:
    """An ISO time from the API (UTC) in `zone`; None when absent or unreadable."""
    if not iso:
        return None
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone)


def explorer_link(job: dict[str, Any]) -> str:
    """The Train page following a training job; the explorer showing a finished SPP job's
    config; else the job's API URL."""
    if job.get("kind") == "train":
        return "/train?" + urlencode({"jobs": job["id"]})
    if job["state"] == "finished":
        try:
            config = SPPConfig.model_validate(cached_result(job["id"])["config"])
        except ApiProblem:
            config = None
        if config is not None:
            return "/?" + urlencode(urlstate.encode_config(config))
    return get_settings().api_url.rstrip("/") + job["url"]


if __name__ == "__main__":
    render()
