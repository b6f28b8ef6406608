"""Recent and running jobs, each with a link that opens it where it belongs.

Times are shown in the browser's time zone (Streamlit reports it, `st.context.timezone`),
or in this server's when the browser has not said, the zone named in the column's header.
A training run that collapsed reads "collapsed at step N", not "finished". Every kind of job
the API lists has a row: an SPP opens in the Explorer, a model plugin's SPP (its config is a
`ForeignConfig`) on the Your network page, a training run on the Train page. A row is read
from the job's view with defaults where a field is missing or odd, so one strange job does
not hide the others.
"""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st

from app import layout, plugin_form, problems, urlstate
from app.api_client import ApiProblem, cached_result, get_client
from app.runs import silence_words
from app.settings import get_settings
from nfcore.spec.config import SPPConfig

JOB_LIMIT = 50
TIME_FORMAT = "MMM D, HH:mm:ss"


@problems.guarded
def render() -> None:
    """The table of jobs; an API failure is shown as its sentence, never as a traceback."""
    layout.page_title("Jobs")
    st.caption(
        "The most recent jobs on the API (SPPs, model plugins' SPPs and training runs), "
        "newest first."
    )
    limit = st.number_input("Show", min_value=1, max_value=500, value=JOB_LIMIT, step=10)
    st.button(
        "Refresh", icon=":material/refresh:"
    )  # a click reruns the page, which asks the API again
    try:
        jobs = get_client().jobs(int(limit))
    except ApiProblem as problem:
        problems.show(problem)
        return
    if not isinstance(jobs, list):
        raise TypeError(f"GET /v1/jobs answered {type(jobs).__name__} 'jobs', not a list")
    if not jobs:
        st.info("No jobs yet: open the explorer to run one.")
        return
    zone, zone_name = display_zone()
    st.dataframe(
        [_row(job, zone) for job in jobs if isinstance(job, dict)],
        hide_index=True,
        width="stretch",
        placeholder="",
        # Widths that fit 1440 px beside the sidebar, the links before the error (rare, long).
        column_config={
            "id": st.column_config.TextColumn("id", width=100),
            "kind": st.column_config.TextColumn(
                "kind", width=45, help="spp (a model plugin's too) or train"
            ),
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
    done, total = _progress(job)
    seconds = job.get("run_seconds")
    return {
        "id": _text(job.get("id"))[:12],
        "kind": _text(job.get("kind")) or None,
        "label": _text(job.get("label")) or None,
        "state": job_state(job),
        "progress": min(done / total, 1.0) if total else 0.0,
        "enqueued": local_time(_text(job.get("enqueued_at")), zone),
        "run seconds": seconds if isinstance(seconds, int | float) else None,
        "open": open_link(job),
        "api": _api_url(job),
        "error": _text(job.get("error")) or None,
    }


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _progress(job: dict[str, Any]) -> tuple[int, int]:
    """Done and total of the job's progress; (0, 0) where the view does not say."""
    progress = job.get("progress")
    if not isinstance(progress, dict):
        return 0, 0
    done, total = progress.get("done"), progress.get("total")
    if not isinstance(done, int) or not isinstance(total, int) or done < 0 or total < 0:
        return 0, 0
    return done, total


def _api_url(job: dict[str, Any]) -> str:
    path = _text(job.get("url")) or f"/v1/jobs/{_text(job.get('id'))}"
    return get_settings().api_url.rstrip("/") + path


def job_state(job: dict[str, Any]) -> str:
    """The job's state; for a training run that stopped early, "collapsed at step N"; for a
    running job whose worker is late to report, how long it has been silent."""
    state = _text(job.get("state")) or "unknown"
    if state == "running" and (silence := silence_words(job.get("heartbeat"))):
        return f"running; {silence}"
    done, total = _progress(job)
    if job.get("kind") != "train" or state != "finished" or done >= total:
        return state
    try:  # a finished run that took fewer steps than asked for collapsed: its result says where
        collapse = cached_result(_text(job.get("id"))).get("collapse")
    except (ApiProblem, AttributeError):
        collapse = None
    if isinstance(collapse, dict) and isinstance(collapse.get("step"), int):
        return f"collapsed at step {collapse['step']}"
    return f"stopped at step {done}"


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


def open_link(job: dict[str, Any]) -> str:
    """Where a job opens: the Train page following a training job; for a finished SPP, the
    Explorer showing its config, or the Your network page showing a model plugin's (its
    `ForeignConfig`, `kind: "foreign"`); else the job's API URL. The config is the one the
    job's view carries (its result's is the same)."""
    if job.get("kind") == "train" and _text(job.get("id")):
        return "/train?" + urlencode({"jobs": job["id"]})
    config = job.get("config")
    if job.get("state") == "finished" and isinstance(config, dict):
        if config.get("kind") == "foreign":
            query = plugin_form.plugin_query(config)
            if query is not None:
                return "/plugins?" + urlencode(query)
        else:
            try:
                return "/?" + urlencode(urlstate.encode_config(SPPConfig.model_validate(config)))
            except ValueError:  # not an SPPConfig of this version: its JSON on the API
                pass
    return _api_url(job)


if __name__ == "__main__":
    render()
