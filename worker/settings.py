"""Worker settings, from environment variables (on top of those the API shares)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field

from contract import ServiceSettings, fixed_queues


class WorkerSettings(ServiceSettings):
    worker_device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Device for configs that say 'auto': cuda when available, else cpu."
    )
    worker_queues: list[str] = Field(
        fixed_queues(),  # the queue of every kind that has one: ["spp", "train"]
        description='Queues this worker serves, e.g. ["spp"] for SPPs only (JSON list).',
    )
    worker_plugins: list[str] | None = Field(
        None,
        description="Model plugins this worker serves (entry points of group nfcore.models), "
        'e.g. ["tv_resnet"] (JSON list); unset: every installed plugin; []: none.',
    )
    cifar10_dir: str | None = Field(
        None,
        description="Folder of CIFAR-10's python version (cifar-10-batches-py, or its parent) "
        "for training jobs on dataset cifar10; unset = those jobs fail saying so.",
    )
    worker_name: str | None = Field(None, description="Name in RQ's worker list (default: random).")
    worker_max_rss_bytes: float | None = Field(
        None,
        ge=0,
        description="Resident memory of the worker (bytes) over which it stops the running job "
        "and fails it, without a retry. Unset: its memory when the job starts plus "
        "1.5 x MAX_MEMORY_BYTES (the largest estimated peak a job is accepted with, and room "
        "for what the estimate leaves out: allocator caches, temporaries); 0: no limit. Linux "
        "only (read from /proc); GPU memory is not counted.",
    )
    worker_model_cache_bytes: int = Field(
        2**30,
        ge=0,
        description="Bytes of recently built networks a worker keeps to measure again when only "
        "alpha, gamma or the S+E gain changed (0: build every network anew).",
    )


@lru_cache(maxsize=1)
def get_settings() -> WorkerSettings:
    return WorkerSettings()
