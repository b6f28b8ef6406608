"""A kind of job as a row: what the API queues, which task a worker runs, how it is counted.

Everything that differs between an SPP, a training run and a plugin network's SPP is here,
and the rest is derived from the rows: the allow-list of tasks (`contract.jobs`), the queues
a worker serves by default, each job's timeout, what its progress counts to and in which
unit, the kind a job view shows, the queues the API lists and `/readyz` counts, and how a
result is told apart once its job record has expired. Adding a kind is one row
(`register_kind`) and its task function (`worker.template.kind_task`), plus an admission
policy in `api/admission.py` when its jobs must be checked before they are queued.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from pydantic import BaseModel

from nfcore.spec.config import SPPConfig, TrainConfig
from nfcore.spec.foreign_config import ForeignConfig
from nfcore.spec.result import SPPResult
from nfcore.spec.train_result import TrainResult, csv_of_json

if TYPE_CHECKING:
    from contract.queue import JobQueue

PLUGIN_QUEUE_PREFIX: Final = "plugin."


@dataclass(frozen=True)
class JobKind:
    """One kind of job. `name` is unique; `shown_as` is what a user reads (a plugin network's
    SPP is an SPP: its result and CSV are an SPP's)."""

    name: str
    queue: str  # its queue, or with `queue_per` the prefix of its queues
    task: str  # the dotted path of the one function its jobs may run (`worker/`)
    config: type[BaseModel]  # what a job is submitted with (its one argument, as JSON)
    result: type[BaseModel]  # the JSON a finished job caches
    unit: str  # what its progress counts: "blocks", "steps"
    timeout: str  # the `ServiceSettings` field of the seconds a job may run
    total: Callable[[Any], int]  # what a config's progress counts to
    admission: str | None = None  # the API's check before queueing (`api.admission.POLICIES`)
    # The config field whose value names the job's queue (after the prefix `queue`): a
    # plugin's jobs run only on the workers that have the plugin.
    queue_per: str | None = None
    shown_as: str = ""  # the job view's `kind` and the API's `result_kind`; default: `name`
    # Top-level keys that tell its result JSON from an SPP's once the job record has expired.
    result_keys: frozenset[str] = frozenset()
    csv: Callable[[bytes], str] | None = None  # `?format=csv` of its result JSON

    def __post_init__(self) -> None:
        if not self.shown_as:
            object.__setattr__(self, "shown_as", self.name)

    def queue_of(self, config: BaseModel) -> str:
        """The queue a job of `config` goes to."""
        if self.queue_per is None:
            return self.queue
        return f"{self.queue}{getattr(config, self.queue_per)}"

    def serves(self, queue: str) -> bool:
        return queue.startswith(self.queue) if self.queue_per else queue == self.queue


def _spp_blocks(config: SPPConfig) -> int:
    """An SPP's blocks, forward, and again backward with gradients."""
    return config.num_blocks * (2 if config.gradients else 1)


def _spp_csv(data: bytes) -> str:
    return SPPResult.model_validate_json(data).to_csv()


SPP: Final = JobKind(
    name="spp",
    queue="spp",
    task="worker.tasks.run_spp_job",
    config=SPPConfig,
    result=SPPResult,
    unit="blocks",
    timeout="spp_job_timeout",
    total=_spp_blocks,
    admission="cost",
    csv=_spp_csv,
)
TRAIN: Final = JobKind(
    name="train",
    queue="train",  # short training runs
    task="worker.tasks.run_train_job",
    config=TrainConfig,
    result=TrainResult,
    unit="steps",  # optimizer steps
    timeout="train_job_timeout",
    total=lambda config: config.steps,
    admission="training",
    result_keys=frozenset({"steps", "evals"}),
    csv=csv_of_json,  # its steps and evaluations only, not its SPP frames
)
PLUGIN: Final = JobKind(
    name="plugin",
    queue=PLUGIN_QUEUE_PREFIX,
    task="worker.tasks.run_plugin_job",
    config=ForeignConfig,
    result=SPPResult,
    unit="blocks",
    timeout="spp_job_timeout",
    total=lambda config: 0,  # its blocks are known once its worker has built it
    admission="plugin",
    queue_per="plugin",
    shown_as="spp",
    csv=_spp_csv,
)

# The built-in kinds' queues by name, as operators write them (WORKER_QUEUES, /readyz).
SPP_QUEUE: Final = SPP.queue
TRAIN_QUEUE: Final = TRAIN.queue

# Every kind by name: `register_kind` adds one (a test may `monkeypatch.setitem` one).
KINDS: dict[str, JobKind] = {kind.name: kind for kind in (SPP, TRAIN, PLUGIN)}


def register_kind(kind: JobKind) -> JobKind:
    """Add a kind (a name and a queue not taken): the API queues it, workers run its task."""
    if kind.name in KINDS:
        raise ValueError(f"a job kind {kind.name!r} exists already")
    if kind_of_queue(kind.queue) is not None:
        raise ValueError(f"the queue {kind.queue!r} is taken already")
    KINDS[kind.name] = kind
    return kind


def kind_of_queue(queue: str) -> JobKind | None:
    """The kind whose jobs go to `queue`, or None: no job on it is ours."""
    return next((kind for kind in KINDS.values() if kind.serves(queue)), None)


def kind_of_config(config: BaseModel) -> JobKind:
    """The kind a config is submitted as (its class's: a `TrainConfig` is no `SPPConfig`)."""
    for kind in KINDS.values():
        if type(config) is kind.config:
            return kind
    raise ValueError(f"no kind of job takes a {type(config).__name__}")


def shown(name: str) -> JobKind | None:
    """The first kind a user sees as `name` (a job's META_KIND)."""
    return next((kind for kind in KINDS.values() if kind.shown_as == name), None)


def kind_of_result(result: Any) -> str:
    """The kind a result JSON (parsed) was made by, by its keys; an SPP when none says."""
    if isinstance(result, dict):
        for kind in KINDS.values():
            if kind.result_keys and kind.result_keys <= result.keys():
                return kind.shown_as
    return SPP.shown_as


def fixed_queues() -> list[str]:
    """The queues of the kinds with one queue: those a worker serves by default, and those
    `/readyz` counts workers on."""
    return [kind.queue for kind in KINDS.values() if kind.queue_per is None]


def queues_in_use(queue: JobQueue) -> list[str]:
    """Every queue a job of ours may be on: the fixed ones, and every queue Redis knows of a
    kind with one queue per value (a plugin's, live or not)."""
    per_value = [kind.queue for kind in KINDS.values() if kind.queue_per is not None]
    return [*fixed_queues(), *(name for p in per_value for name in queue.known_queues(p))]


class TaskPaths(Mapping[str, str]):
    """Queue -> the one task its jobs may run, for the kinds with one queue: a live view of
    `KINDS`, so a kind registered later is allowed too."""

    def __getitem__(self, queue: str) -> str:
        for kind in KINDS.values():
            if kind.queue_per is None and kind.queue == queue:
                return kind.task
        raise KeyError(queue)

    def __iter__(self) -> Iterator[str]:
        return iter(fixed_queues())

    def __len__(self) -> int:
        return len(fixed_queues())
