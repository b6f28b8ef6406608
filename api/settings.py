"""API settings from environment variables (REDIS_URL and the job settings are shared)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr

from contract import ServiceSettings
from nfcore.spec.config import MAX_TRAIN_STEPS


class ApiSettings(ServiceSettings):
    api_host: str = Field("127.0.0.1", description="Interface the API listens on.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port the API listens on.")
    api_workers: int = Field(
        1,
        ge=1,
        le=64,
        description="API processes serving the port (uvicorn workers): a classroom of browsers "
        "on cached results wants one per core.",
    )
    api_token: SecretStr | None = Field(
        None, description="When set, POST and DELETE need 'Authorization: Bearer <token>'."
    )
    cors_origins: list[str] = Field(
        [], description='Origins allowed by CORS, e.g. ["http://localhost:8501"] (JSON list).'
    )
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="Largest request body accepted.")
    max_train_steps: int = Field(
        5000, ge=1, le=MAX_TRAIN_STEPS, description="Most optimizer steps a training job may take."
    )
    # Each step must also pass MAX_FLOPS and MAX_ACTIVATION_BYTES. 6e13 is about 10 minutes of
    # CPU: a training step of BN-ResNet-50 at 32 px, batch 32 (1.6e10 FLOPs, forward and both
    # gradients) runs at about 1e11 FLOP/s on 2 laptop cores, as SPPs do (MAX_FLOPS' 5e12 take
    # about 40 s). It allows e.g. 3500 such steps, or MAX_TRAIN_STEPS of NF-ResNet-26 at width
    # 0.25 (4e12).
    max_train_flops: float = Field(
        6e13,
        gt=0,
        description="Largest accepted training job, in FLOPs of all its steps, evaluations and "
        "SPPs (6e13 is about 10 minutes on a 2-core laptop CPU).",
    )
    max_sweep_points: int = Field(64, ge=1, le=10_000, description="Largest sweep grid.")
    # A sweep's points run one after another on the SPP workers, so their sum is what a
    # sweep holds them for: 6e13 is MAX_TRAIN_FLOPS' ten minutes, 12 points at MAX_FLOPS.
    max_sweep_flops: float = Field(
        6e13,
        gt=0,
        description="Largest accepted sweep, in forward FLOPs of all its points that are not "
        "cached yet (6e13 is about 10 minutes of a worker on a 2-core laptop CPU).",
    )
    # Each waiting request holds a socket and a few kB; the API raises its open-file limit to
    # fit (api.main). Past this, a `wait` is answered at once (api.waiting.TooManyWaiters).
    max_waiters: int = Field(
        4096,
        ge=1,
        le=1_000_000,
        description="Requests one API process lets wait (`?wait=`) at once; more are answered "
        "at once with the job's state and Retry-After.",
    )
    maintenance_interval: float = Field(
        5.0, gt=0, le=600, description="Seconds between sweeps for jobs whose worker died."
    )


@lru_cache(maxsize=1)
def get_settings() -> ApiSettings:
    return ApiSettings()
