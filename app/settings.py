"""Dashboard settings from environment variables, read once per process."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class AppSettings(BaseSettings):
    """Where the API is and how the dashboard talks to it (API_URL, API_TOKEN, APP_POLL_SECONDS)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", env_file=".env")

    api_url: str = Field(
        "http://127.0.0.1:8000", description="Base URL of the SPP API (`python -m api`)."
    )
    api_token: SecretStr | None = Field(
        None, description="Sent as 'Authorization: Bearer <token>' on POST and DELETE."
    )
    app_poll_seconds: float = Field(
        0.5, gt=0, le=60, description="Seconds between polls of a running job."
    )
    api_timeout_seconds: float = Field(
        10.0, gt=0, le=300, description="Timeout of one API request."
    )


@lru_cache(maxsize=1)
def get_settings() -> AppSettings:
    return AppSettings()
