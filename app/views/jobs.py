"""Recent and running jobs, with links to open each one in the explorer."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import streamlit as st

from app import urlstate
from app.api_client import ApiProblem, cached_result, get_client
from app.settings import get_settings
from nfcore.config import SPPConfig

JOB_LIMIT = 50


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
    st.dataframe(
        [_row(job) for job in jobs],
        hide_index=True,
        width="stretch",
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0, max_value=1),
            "open": st.column_config.LinkColumn("open", display_text="open"),
            "api": st.column_config.LinkColumn("api", display_text="JSON"),
        },
    )


def _row(job: dict[str, Any]) -> dict[str, Any]:
    done, total = job["progress"]["done"], job["progress"]["total"]
    return {
        "id": job["id"][:12],
        "label": job["label"],
        "state": job["state"],
        "progress": done / total if total else 0.0,
        "enqueued": job["enqueued_at"],
        "run seconds": job["run_seconds"],
        "error": job["error"],
        "open": explorer_link(job),
        "api": get_settings().api_url.rstrip("/") + job["url"],
    }


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
