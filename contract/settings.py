"""Settings the API and the workers share, and their Redis clients."""

from __future__ import annotations

from urllib.parse import urlsplit

import redis
import redis.asyncio
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contract.kinds import kind_of_queue


class ServiceSettings(BaseSettings):
    """Settings the API and the workers share; read from environment variables."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    redis_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Redis holding the queue, job state and result cache (rediss:// for TLS).",
    )
    redis_timeout: float = Field(
        0.5, gt=0, le=30, description="Seconds before a Redis call gives up (answers 503)."
    )
    result_ttl: int = Field(
        7 * 24 * 3600, ge=60, description="Seconds a computed result stays in the cache."
    )
    spp_job_timeout: int = Field(600, ge=10, description="Seconds an SPP job may run.")
    train_job_timeout: int = Field(3600, ge=10, description="Seconds a training job may run.")
    job_retries: int = Field(
        1, ge=0, le=10, description="Times a job whose worker died is run again."
    )
    heartbeat_ttl: int = Field(
        30,
        ge=5,
        le=600,
        description="Seconds without a heartbeat after which a running job counts as abandoned.",
    )

    # About 40 s of an SPP on a 2-core laptop CPU (BN-ResNet-50 at 224 px, batch 16, is 0.13e12).
    max_flops: float = Field(5e12, gt=0, description="Largest accepted job, in forward FLOPs.")
    max_activation_bytes: float = Field(
        4 * 2**30, gt=0, description="Largest accepted estimated peak activation memory, bytes."
    )
    # The workers check plugin networks, which the API cannot count, against the same limits.
    # A 24 GB machine runs a worker beside the rest of the stack: 8 GiB each job at most.
    max_memory_bytes: float = Field(
        8 * 2**30,
        gt=0,
        description="Largest accepted estimated peak memory of a job, bytes: its weights (with "
        "their standardized copies, and for training their gradients, momentum and EMA) and its "
        "activations.",
    )
    # What a training job writes: its events (a Redis list the API pages through) and its
    # result (which the API serves whole, and a dashboard holds parsed, about 10 times its
    # JSON). The SPP frames dominate (`nfcore.spec.train_result.written_bytes`). 16 MiB holds every
    # preset 200 times over (84 kB at most), or 5000 steps of ResNet-200 with an SPP every 10
    # (11 MiB), not issue 19's NF-ResNet-600 with one every step (300 MiB). The API checks it
    # before queueing, the worker before it starts and again while it writes.
    max_train_result_bytes: int = Field(
        16 * 2**20,
        ge=2**16,
        description="Most bytes a training job may write: its result JSON, and again its events "
        "(mostly the SPPs it records: fewer with a larger spp_every).",
    )

    def job_timeout(self, queue: str) -> int:
        """The seconds a job on `queue` may run: its kind's timeout (an SPP's on a queue that
        is no kind's: a worker never runs a job of it)."""
        kind = kind_of_queue(queue)
        return int(getattr(self, kind.timeout if kind is not None else "spp_job_timeout"))


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, for logs and the console."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def connect_async(settings: ServiceSettings) -> redis.asyncio.Redis:
    """`connect`'s asyncio twin, for requests that wait on a pub/sub channel."""
    return redis.asyncio.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_timeout,
        socket_timeout=settings.redis_timeout,
        retry_on_timeout=False,
    )


def connect(settings: ServiceSettings, *, blocking: bool = False) -> redis.Redis:
    """A Redis client that fails fast: an unreachable server costs `redis_timeout`, not minutes.

    `blocking` clients (a worker waiting on its queue, its pub/sub thread) have no read timeout.
    """
    return redis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=settings.redis_timeout,
        socket_timeout=None if blocking else settings.redis_timeout,
        health_check_interval=10 if blocking else 0,
        retry_on_timeout=False,
    )
