"""Response and request bodies of the API (the configs themselves are `nfcore.spec.config.SPPConfig`
and `nfcore.spec.config.TrainConfig`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contract import JobState
from nfcore.spec.config import SPPConfig, TrainConfig


class Progress(BaseModel):
    done: int = Field(
        description="Blocks measured so far (forward, then backward), or training steps taken."
    )
    total: int


class Heartbeat(BaseModel):
    """How recently the worker running a job said it is alive (it renews the job every third
    of HEARTBEAT_TTL while it works)."""

    age: float = Field(description="Seconds since the worker last renewed the job.")
    late: bool = Field(
        description="No renewal for over two thirds of the heartbeat TTL: the worker may have "
        "stopped (killed, out of memory, frozen) while the job still counts as running."
    )
    abandoned_in: float | None = Field(
        description="Seconds until the job counts as abandoned if no renewal comes: within "
        "MAINTENANCE_INTERVAL after that it is run again from the start, or fails once its "
        "retries are spent. Null where RQ's record gives no expiry."
    )


class JobView(BaseModel):
    id: str = Field(description="Hash of the canonical config and the nfcore version.")
    kind: str
    label: str | None = Field(description="Human-readable model name.")
    state: JobState
    progress: Progress
    attempt: int = Field(
        description="1 for a job's first run, 2 when a worker runs it again (its worker died "
        "or was shut down); progress describes this attempt. 0 until it first starts."
    )
    url: str
    result_url: str | None
    enqueued_at: str | None
    started_at: str | None
    ended_at: str | None
    run_seconds: float | None
    device: str | None
    error: str | None = Field(description="Why the job failed (the exception's message).")
    config: dict[str, Any] | None = Field(
        None,
        description="The config the job computes (an SPPConfig's or a TrainConfig's JSON), so "
        "a client following a job by its id alone can say what it is.",
    )
    heartbeat: Heartbeat | None = Field(
        None, description="Null unless the job is running: how recently its worker reported."
    )
    claim: str | None = Field(
        None,
        description="Only in the answer to the POST that submitted it (also its `X-Claim` "
        "header): this request's claim on the job, a secret to give back with "
        "`?replaces=<claim>` when the client no longer wants the job. Null elsewhere.",
    )


class JobList(BaseModel):
    jobs: list[JobView]


class EventsPage(BaseModel):
    """A training job's events from `since` on, with its state and progress when read."""

    events: list[dict[str, Any]] = Field(
        description="Events in order, each with 'kind' (step, eval, spp or collapse) and "
        "'step' (see nfcore.spec.train_result); empty for an SPP job."
    )
    next: int = Field(description="The `since` of the next read: events seen so far.")
    state: JobState = Field(
        description="Read before the events: once final, no events are added; read on from "
        "`next` until a page comes back empty (a page holds at most about 1 MiB of events)."
    )
    progress: Progress
    attempt: int = Field(
        description="The run these events belong to (see the job's `attempt`); pass it back "
        "as `attempt` with the next read."
    )
    restarted: bool = Field(
        description="The job started again since the `attempt` the client gave: these events "
        "are from index 0 of the new attempt, and the client should drop what it had."
    )


class ErrorBody(BaseModel):
    detail: str


class SweepRequest(BaseModel):
    """A base config and, for any fields, lists of values: the grid is their product."""

    model_config = ConfigDict(extra="forbid")

    base: dict[str, Any] = Field(
        default_factory=dict, description="Config fields shared by every point (partial is fine)."
    )
    grid: dict[str, list[Any]] = Field(
        description='Field -> values, e.g. {"alpha": [0.1, 0.2], "depth": [50, 101]}.',
        min_length=1,
    )


class SweepPoint(BaseModel):
    params: dict[str, Any] = Field(description="The grid values of this point.")
    job: JobView | None = Field(description="The job (null once it expired).")
    cached: bool = Field(description="The result was already cached when the sweep was posted.")


class SweepView(BaseModel):
    id: str
    url: str
    size: int
    states: dict[str, int] = Field(
        description="How many of the sweep's jobs are in each state; points that are the same "
        "config (equal values in the grid) are one job, counted once."
    )
    points: list[SweepPoint]


class ModelRow(BaseModel):
    family: str = Field(description="A built-in family, or 'plugin' for an installed plugin.")
    norm: str | None
    depth: int | None
    variant: str | None
    layout: list[int] | None
    parameters: int | None = Field(description="At width 1 (a plugin: at its defaults).")
    plugin: str | None = Field(None, description="The plugin's name: POST /v1/spp {'plugin': ...}.")
    version: str | None = Field(None, description="The plugin package's version.")
    description: str | None = None
    arguments: dict[str, Any] | None = Field(
        None, description="JSON schema of the plugin factory's keyword arguments (model_args)."
    )
    defaults: dict[str, Any] | None = None
    input_shape: list[int] | None = Field(
        None, description="One example's input of a non-image plugin network."
    )
    channels: str | None = None
    blocks: str | list[str] | None = Field(None, description="The default block selection.")
    residual: list[str] | None = None


class ActivationRow(BaseModel):
    name: str
    quadrature: float = Field(description="gamma = 1/sqrt(Var g(x)) by quadrature (used).")
    sampled: float = Field(description="gamma by the paper's Appendix D.1 sampling recipe.")
    analytic: float | None
    he_gain: float = Field(description="1/sqrt(E[g(x)^2]), the He-init gain (Fig. 8).")


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    redis: str
    workers: dict[str, int] = Field(description="Workers listening on each queue.")


__all__ = ["SPPConfig", "TrainConfig"]


class Limits(BaseModel):
    """The resource limits this API applies to a job (its settings: MAX_FLOPS, ...)."""

    max_flops: float = Field(description="Largest accepted SPP job, in forward FLOPs.")
    max_activation_bytes: float
    max_memory_bytes: float
    max_train_steps: int = Field(description="Most optimizer steps a training job may take.")
    max_train_flops: float
    max_train_result_bytes: int = Field(
        description="Most bytes a training job may write (its result; again its events)."
    )
    max_sweep_points: int
    max_sweep_flops: float = Field(description="Largest sweep, in FLOPs of its uncached points.")
    max_body_bytes: int
