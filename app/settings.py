"""Dashboard settings from environment variables, read once per process."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class AppSettings(BaseSettings):
    """Where the API is and how the dashboard talks to it (API_URL, API_TOKEN, APP_POLL_SECONDS,
    APP_SUBMIT_WAIT_SECONDS, APP_FOLLOW_SECONDS, API_TIMEOUT_SECONDS, APP_API_SUPERVISED)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", env_file=".env")

    api_url: str = Field(
        "http://127.0.0.1:8000", description="Base URL of the SPP API (`python -m api`)."
    )
    api_token: SecretStr | None = Field(
        None, description="Sent as 'Authorization: Bearer <token>' on POST and DELETE."
    )
    app_poll_seconds: float = Field(
        0.25,
        gt=0,
        le=30,
        description="Seconds one wait for a running job lasts before its progress bar is "
        "updated (the API answers at once when the job ends).",
    )
    app_follow_seconds: float = Field(
        10.0,
        ge=0,
        le=600,
        description="Seconds one page run follows running jobs before it starts over (a new "
        "widget change interrupts it at once either way); 0: show their progress and do not "
        "follow them (the next interaction looks again).",
    )
    app_submit_wait_seconds: float = Field(
        0.3,
        ge=0,
        le=30,
        description="Seconds a submission may wait for its result before the page shows "
        "progress: a run that computes faster is drawn at once.",
    )
    app_trace: bool = Field(
        False, description="Log when each phase of a page run happens (the browser benchmark)."
    )
    api_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="Timeout of one API request."
    )
    app_api_supervised: bool = Field(
        False,
        description="The API is restarted when it exits (`make run` sets it): an API that does "
        "not answer is then said to be restarting, not to need starting.",
    )


@lru_cache(maxsize=1)
def get_settings() -> AppSettings:
    return AppSettings()
