"""Following runs through the API: submit once, then poll, per dashboard session.

A config is POSTed once per session; its job id (the hash of the config) is remembered, and
later reruns ask for that job's result or progress instead of posting again. Posting again
would re-enqueue a failed or canceled job, which the user did not ask for.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import streamlit as st

from app.api_client import ApiProblem, cached_result, get_client
from nfcore.spec.config import SPPConfig, canonical_json
from nfcore.spec.result import SPPResult

ACTIVE_STATES = ("queued", "running")
SUBMITTED_KEY = "submitted"  # canonical config JSON -> job id
SUPERSEDED_KEY = "superseded"  # job ids this session gave up (`replaces`): asked again if wanted
CLAIMS_KEY = "claims"  # job id -> this session's claim on it, given back once by `replaces`


@dataclass(frozen=True)
class Run:
    """One curve to draw: its result when finished, else the job's view and any error."""

    label: str
    job_id: str | None
    result: SPPResult | None = None
    job: dict[str, Any] | None = None
    problem: str | None = None

    @property
    def pending(self) -> bool:
        return self.result is None and self.job is not None and self.job["state"] in ACTIVE_STATES

    @property
    def progress(self) -> tuple[int, int]:
        progress = (self.job or {}).get("progress") or {}
        return int(progress.get("done", 0)), int(progress.get("total", 0))


def track(label: str, config: SPPConfig, *, wait: float = 0.0, replaces: str | None = None) -> Run:
    """The run of `config`: submitted on first sight, then followed by its job id.

    `wait`: how long the API may hold the first answer for the result. `replaces`: the job
    this session showed before and no longer wants; the session gives back its claim on it,
    and the API cancels it unless someone else waits for it. A job this session gave up that
    is wanted again is asked for again.
    """
    return _track(label, canonical_json(config), config.model_dump(mode="json"), wait, replaces)


def track_body(label: str, body: dict[str, Any], *, wait: float = 0.0) -> Run:
    """`track` for a request body the API completes (a model plugin's job, whose defaults and
    version only the API knows): keyed by the body as sent."""
    return _track(label, json.dumps(body, sort_keys=True), body, wait, None)


def _track(label: str, key: str, body: dict[str, Any], wait: float, replaces: str | None) -> Run:
    submitted: dict[str, str] = st.session_state.setdefault(SUBMITTED_KEY, {})
    superseded: set[str] = st.session_state.setdefault(SUPERSEDED_KEY, set())
    claims: dict[str, str] = st.session_state.setdefault(CLAIMS_KEY, {})
    if key in submitted:
        run = follow(label, submitted[key])
        if run is not None and not (run.problem and run.job_id in superseded):
            return run
    given_back = None
    if replaces is not None and replaces != submitted.get(key):
        superseded.add(replaces)
        given_back = claims.get(replaces)  # none when its answer never came
    submission = get_client().submit(body, wait=wait, replaces=given_back)
    if given_back is not None:
        claims.pop(replaces, None)  # given back: the API counts it once
    submitted[key] = submission.job_id
    superseded.discard(submission.job_id)
    if submission.claim is not None:
        claims[submission.job_id] = submission.claim
    if submission.result is not None:
        return Run(label, submission.job_id, result=SPPResult.model_validate(submission.result))
    return Run(label, submission.job_id, job=submission.job)


def await_run(run: Run, wait: float) -> Run:
    """The run again after waiting up to `wait` seconds for its job to end (no polling: the
    API answers as soon as it ends)."""
    if not run.pending or run.job_id is None:
        return run
    job = get_client().job(run.job_id, wait=wait)
    if job["state"] == "finished":
        return Run(
            run.label, run.job_id, result=SPPResult.model_validate(cached_result(run.job_id))
        )
    if job["state"] in ACTIVE_STATES:
        return Run(run.label, run.job_id, job=job)
    reason = job.get("error") or f"the job was {job['state']}"
    return Run(run.label, run.job_id, job=job, problem=reason)


def follow(label: str, job_id: str) -> Run | None:
    """A known job's result or progress; None when the API has forgotten it (resubmit)."""
    try:
        return Run(label, job_id, result=SPPResult.model_validate(cached_result(job_id)))
    except ApiProblem as problem:
        if problem.status in (404, 410):
            return None
        if problem.status != 409:
            raise
    job = get_client().job(job_id)
    if job["state"] in ACTIVE_STATES:
        return Run(label, job_id, job=job)
    if job["state"] == "finished":  # finished between the two requests
        return Run(label, job_id, result=SPPResult.model_validate(cached_result(job_id)))
    reason = job.get("error") or f"the job was {job['state']}"
    return Run(label, job_id, job=job, problem=reason)


def progress_words(job: dict[str, Any] | None) -> str:
    """What a pending job's progress bar adds to its state and count: that it runs again
    from the start, and what a late heartbeat means (see `silence_words`); "" when neither."""
    job = job or {}
    words = []
    attempt = job.get("attempt")
    if isinstance(attempt, int) and attempt > 1:
        words.append(f"again from the start (attempt {attempt})")
    if job.get("state") == "running" and (silence := silence_words(job.get("heartbeat"))):
        words.append(silence)
    return "".join(f"; {word}" for word in words)


def silence_words(heartbeat: Any) -> str | None:
    """What a running job's heartbeat (its view's `heartbeat`) means once it is late, in
    words; None while the worker reports on time (or the API does not say)."""
    if not isinstance(heartbeat, dict) or heartbeat.get("late") is not True:
        return None
    age = heartbeat.get("age")
    if not isinstance(age, int | float) or not math.isfinite(age):
        return None
    text = (
        f"the worker has not reported for {age:.0f} s; if it stopped, the job will be run "
        "again from the start (or fail)"
    )
    left = heartbeat.get("abandoned_in")
    if isinstance(left, int | float) and math.isfinite(left) and left >= 1:
        return f"{text} within about {math.ceil(left)} s"
    return f"{text} in a few seconds"  # the API's next look for abandoned jobs


def forget(config: SPPConfig) -> None:
    """Submit this config again on the next run (after a failure or a cancel)."""
    st.session_state.setdefault(SUBMITTED_KEY, {}).pop(canonical_json(config), None)


def cancel(job_id: str) -> None:
    """Cancel a queued job or stop a running one (it stops after its current block)."""
    get_client().cancel(job_id)
