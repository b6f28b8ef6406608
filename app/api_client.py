"""The dashboard's only way to the service: a small httpx client over the REST API.

Every failure becomes one `ApiProblem` carrying a sentence a user can act on: the API's own
`detail` for 4xx/5xx answers, or, when it cannot be reached, how to start it (or, under
`make run`, whose launcher restarts a crashed API, that it may be restarting). Every page
shows it through `app.problems.show`, so they all say it in the same words, and a page the
API did not answer tries again by itself (`unreachable`). Read-only
calls whose answers do not change (a finished job's result, which is keyed by the hash of its
config) are wrapped in `st.cache_data` at the bottom of this module.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import httpx
import streamlit as st

from app.settings import get_settings

RESULT_TTL_SECONDS = 3600  # a job id names one config and library version: results never change
MODELS_TTL_SECONDS = 5  # the plugins of /v1/models come and go with their workers
RESULT_CACHE_ENTRIES = 256  # a few MB at most: a 600-layer result is about 100 kB of JSON
READINESS_TTL_SECONDS = 5  # workers come and go rarely; a page polling every second asks less
# No answer at all: refused, timed out, or the connection dropped mid-answer (an API killed
# while it held a wait). The API may come back (a launcher restarts it), so pages retry.
NO_ANSWER = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)


class ApiProblem(Exception):
    """A request to the API failed; the message is a sentence to show the user."""

    def __init__(self, message: str, status: int | None = None, unreachable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.unreachable = unreachable  # no answer came: asking again later may work


@dataclass(frozen=True)
class Submission:
    """What POST /v1/spp or /v1/train answered: a cached result (200) or a job to follow (202),
    and this session's claim on the job (what `replaces` gives back when it moves on)."""

    job_id: str
    result: dict[str, Any] | None = None
    job: dict[str, Any] | None = None
    claim: str | None = None

    @property
    def cached(self) -> bool:
        return self.result is not None


class ApiClient:
    """Thin methods, one per endpoint; JSON in, dicts out."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        supervised: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.supervised = supervised  # a launcher restarts the API when it exits
        self._auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = self._auth if method in ("POST", "DELETE") else {}
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except NO_ANSWER as error:
            raise ApiProblem(self._unreachable(error), unreachable=True) from None
        except httpx.HTTPError as error:
            raise ApiProblem(f"the request to {self.base_url}{path} failed: {error}") from None
        if response.status_code >= 400:
            raise ApiProblem(_detail(response), status=response.status_code)
        return response

    def _unreachable(self, error: httpx.HTTPError) -> str:
        if self.supervised:
            return f"The API at {self.base_url} is not answering; it may be restarting."
        return (
            f"The API at {self.base_url} is not reachable ({type(error).__name__}): "
            "start it with `python -m api`."
        )

    def healthy(self, timeout: float) -> bool:
        """Whether the API answers GET /healthz within `timeout` seconds (no ApiProblem)."""
        try:
            return self._http.get("/healthz", timeout=timeout).status_code == 200
        except httpx.HTTPError:
            return False

    # --- runs ---------------------------------------------------------------------------------
    def submit(
        self, config: dict[str, Any], wait: float = 0.0, replaces: str | None = None
    ) -> Submission:
        """POST a config: the cached result at once, or the job that will compute it.

        `wait`: let the API hold the answer until the job ends (its result, if within
        `wait` seconds); `replaces`: the claim of a job this session no longer wants (its
        earlier `Submission.claim`; see the API).
        """
        params: dict[str, Any] = {"wait": wait} if wait else {}
        if replaces:
            params["replaces"] = replaces
        response = self._request(
            "POST", "/v1/spp", json=config, params=params, timeout=self.timeout + wait
        )
        return self._submission(response)

    @staticmethod
    def _submission(response: httpx.Response) -> Submission:
        """200: the cached result (its job named by the Location header); 202: the job."""
        claim = response.headers.get("x-claim")
        if response.status_code == 200:
            job_id = response.headers.get("location", "").rstrip("/").rsplit("/", 1)[-1]
            return Submission(job_id=job_id, result=response.json(), claim=claim)
        job = response.json()
        return Submission(job_id=job["id"], job=job, claim=job.get("claim") or claim)

    def submit_train(self, config: dict[str, Any]) -> Submission:
        """POST a training config: its cached TrainResult at once, or the job that trains it."""
        return self._submission(self._request("POST", "/v1/train", json=config))

    def events(self, job_id: str, since: int = 0, attempt: int | None = None) -> dict[str, Any]:
        """A training job's events from index `since` on, with `next`, `state`, `progress` and
        `attempt`; `restarted` (and events from 0) when the job started again since `attempt`."""
        params: dict[str, int] = {"since": since}
        if attempt is not None:
            params["attempt"] = attempt
        return self._request("GET", f"/v1/jobs/{job_id}/events", params=params).json()

    def job(self, job_id: str, wait: float = 0.0) -> dict[str, Any]:
        """The job's view; with `wait`, once it has ended or after `wait` seconds.

        An API holding too many waiting requests answers at once with `Retry-After`: the
        pause is taken here (within `wait`), so a page following jobs does not ask again
        and again without one."""
        params = {"wait": wait} if wait else {}
        started = time.monotonic()
        response = self._request(
            "GET", f"/v1/jobs/{job_id}", params=params, timeout=self.timeout + wait
        )
        pause = _seconds(response.headers.get("retry-after"))
        if wait and pause:
            time.sleep(max(0.0, min(pause, wait - (time.monotonic() - started))))
        return response.json()

    def result(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{job_id}/result").json()

    def csv(self, job_id: str) -> str:
        return self._request("GET", f"/v1/jobs/{job_id}/result", params={"format": "csv"}).text

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._request("DELETE", f"/v1/jobs/{job_id}").json()

    # --- sweeps -------------------------------------------------------------------------------
    def submit_sweep(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST a sweep (`base` and `grid`): its view, each point's job (202 even when cached)."""
        return self._request("POST", "/v1/sweeps", json=body).json()

    def sweep(self, sweep_id: str) -> dict[str, Any]:
        """A sweep's view: `size`, `states` (points per state) and each point's params and job."""
        return self._request("GET", f"/v1/sweeps/{sweep_id}").json()

    def readiness(self) -> dict[str, Any]:
        """GET /readyz: Redis reachable, and the live workers on each queue (`workers`)."""
        return self._request("GET", "/readyz").json()

    def models(self) -> list[dict[str, Any]]:
        """GET /v1/models: the built-in networks, then the plugins a live worker has."""
        return self._request("GET", "/v1/models").json()

    def limits(self) -> dict[str, Any]:
        """The API's resource limits (GET /v1/limits): max_train_steps, max_flops, ..."""
        return self._request("GET", "/v1/limits").json()

    def jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        return self._request("GET", "/v1/jobs", params={"limit": limit}).json()["jobs"]


def _seconds(retry_after: str | None) -> float:
    """A `Retry-After` header's seconds (0 when absent, or not a number of seconds)."""
    try:
        seconds = float(retry_after) if retry_after else 0.0
    except ValueError:
        return 0.0
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


def _detail(response: httpx.Response) -> str:
    """The API's `detail` sentence, or the status line when the body is not the error JSON."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if isinstance(detail, str) and detail:
        return detail
    return f"the API answered {response.status_code} {response.reason_phrase}"


@st.cache_resource
def get_client() -> ApiClient:
    """One client (one connection pool) per dashboard process."""
    settings = get_settings()
    token = settings.api_token.get_secret_value() if settings.api_token else None
    return ApiClient(
        settings.api_url,
        token=token,
        timeout=settings.api_timeout_seconds,
        supervised=settings.app_api_supervised,
    )


@st.cache_data(ttl=RESULT_TTL_SECONDS, max_entries=RESULT_CACHE_ENTRIES, show_spinner=False)
def cached_result(job_id: str) -> dict[str, Any]:
    """A finished job's result JSON; errors (not finished, expired) are not cached."""
    return get_client().result(job_id)


@st.cache_data(ttl=RESULT_TTL_SECONDS, max_entries=RESULT_CACHE_ENTRIES, show_spinner=False)
def cached_csv(job_id: str) -> str:
    return get_client().csv(job_id)


@st.cache_data(ttl=READINESS_TTL_SECONDS, show_spinner=False)
def cached_readiness() -> dict[str, Any]:
    """The API's readiness (workers per queue), read at most every few seconds."""
    return get_client().readiness()


@st.cache_data(ttl=RESULT_TTL_SECONDS, show_spinner=False)
def cached_limits() -> dict[str, Any]:
    """The API's limits; an unreachable API raises (nothing cached) and the caller falls back."""
    return get_client().limits()


@st.cache_data(ttl=MODELS_TTL_SECONDS, show_spinner=False)
def cached_models() -> list[dict[str, Any]]:
    """GET /v1/models for a few seconds: plugins come and go with their workers."""
    return get_client().models()
