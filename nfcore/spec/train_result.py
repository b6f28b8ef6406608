"""What a training run returns, and the events it streams while it runs.

Torch-free: the worker stores it, the API serves it, the dashboard and the CLI plot it.
The same records travel twice: as events while the run goes (`on_event` in `nfcore.training.train`;
the worker appends them to a Redis list the dashboard polls) and gathered in `TrainResult`.

Events (plain JSON dicts, each with "kind" and "step"):
- step:     loss, accuracy, lr, grad_norm, seconds (of that step), after each optimizer step;
- eval:     loss and accuracy on the held-out split (and ema_loss, ema_accuracy with EMA);
- spp:      result (an `SPPResult` JSON dict) at step 0, every `spp_every` steps and the last;
- collapse: reason and loss, when the loss went NaN/Inf or exploded (the run stops there).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from nfcore.spec.config import TrainConfig
from nfcore.spec.result import SPPMeta, SPPResult, block_keys

TrainStatus = Literal["finished", "collapsed"]

STEP_KEYS: tuple[str, ...] = ("step", "loss", "accuracy", "lr", "grad_norm", "seconds")
EVAL_KEYS: tuple[str, ...] = ("step", "loss", "accuracy", "ema_loss", "ema_accuracy")
# The longest JSON of a number in these records: Python writes a float in at most 24
# characters ("-2.2250738585072014e-308"); steps, indices, true, false and null are shorter.
NUMBER_CHARS = 24
# Room for a record's words: the model's name, versions and device (under 100 bytes in all),
# a collapse's reason (a sentence).
TEXT_BYTES = 256


class StepRecord(BaseModel):
    """One optimizer step, on its training batch (loss with label smoothing, as optimized)."""

    model_config = ConfigDict(extra="forbid")

    step: int = Field(description="1-based optimizer step.")
    loss: float | None = Field(description="Training loss of the batch; null when not finite.")
    accuracy: float = Field(description="Top-1 accuracy on the training batch.")
    lr: float = Field(description="Learning rate used for this step.")
    grad_norm: float | None = Field(description="Global gradient norm (before clipping).")
    seconds: float = Field(description="Wall time of the step.")


class EvalRecord(BaseModel):
    """Held-out loss (no label smoothing) and accuracy after `step` steps."""

    model_config = ConfigDict(extra="forbid")

    step: int
    loss: float | None
    accuracy: float
    ema_loss: float | None = None
    ema_accuracy: float | None = None


class SPPSnapshot(BaseModel):
    step: int = Field(description="Optimizer steps taken when the SPP was measured (0 = init).")
    result: SPPResult


class Collapse(BaseModel):
    step: int = Field(description="The step whose loss was NaN/Inf or exploded.")
    reason: str
    loss: float | None


class TrainMeta(BaseModel):
    version: str
    torch_version: str
    device: str
    model: str = Field(description="Human-readable model name.")
    parameter_count: int
    train_examples: int
    eval_examples: int
    seconds: float = Field(description="Wall time of the whole run, SPPs and evaluation included.")
    steps_per_second: float | None = Field(description="Optimizer steps per second of training.")


class TrainResult(BaseModel):
    config: TrainConfig
    status: TrainStatus
    collapse: Collapse | None = None
    steps: list[StepRecord]
    evals: list[EvalRecord]
    spp: list[SPPSnapshot]
    meta: TrainMeta

    @property
    def final_eval(self) -> EvalRecord | None:
        return self.evals[-1] if self.evals else None

    def to_json_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", exclude={"spp"})
        data["spp"] = [{"step": s.step, "result": s.result.to_json_dict()} for s in self.spp]
        return data

    def to_csv(self) -> str:
        """One row per step; held-out columns filled on the steps that were evaluated."""
        return _csv(self.steps, self.evals)


class _Curves(BaseModel):
    """A result's steps and evaluations alone, all its CSV needs: its SPP frames, most of its
    bytes, are skipped unread (`csv_of_json`)."""

    steps: list[StepRecord]
    evals: list[EvalRecord]


def csv_of_json(data: bytes | str) -> str:
    """`TrainResult.to_csv` of a result's JSON, without building its SPP frames: for a 16 MB
    result, 43 MB of memory at the peak rather than 151 MB."""
    curves = _Curves.model_validate_json(data)
    return _csv(curves.steps, curves.evals)


def _csv(steps: list[StepRecord], evals: list[EvalRecord]) -> str:
    evaluated = {e.step: e for e in evals}
    keys = list(STEP_KEYS) + [f"eval_{k}" for k in EVAL_KEYS[1:]]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for record in steps:
        row: dict[str, Any] = record.model_dump()
        held_out = evaluated.get(record.step)
        for key in EVAL_KEYS[1:]:
            row[f"eval_{key}"] = getattr(held_out, key) if held_out else None
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def written_bytes(config: TrainConfig) -> int:
    """At most the bytes a run of `config` writes, as the worker writes JSON (`json.dumps`):
    its result, and the list of its events (the same records, each with its "kind").

    SPP frames dominate: one per `spp_steps`, each with a record of numbers per residual
    block, so a deep network measured every step writes hundreds of megabytes."""
    spp = config.spp_config()
    kind = len('"kind": "collapse", ')
    block = _record_bytes(block_keys(spp.extra_stats, spp.gradients))
    stage_ends = config.num_blocks * (len(str(config.num_blocks)) + 2)
    meta = _record_bytes(SPPMeta.model_fields) + TEXT_BYTES + stage_ends
    frame = kind + _json_bytes(spp) + config.num_blocks * block + meta + 64  # keys, brackets
    records = (
        config.steps * (kind + _record_bytes(STEP_KEYS))
        + len(config.eval_steps) * (kind + _record_bytes(EVAL_KEYS))
        + len(config.spp_steps) * frame
    )
    # The config, the run's meta and a collapse (in the result, and as an event).
    fixed = _json_bytes(config) + _record_bytes(TrainMeta.model_fields) + 4 * TEXT_BYTES
    return records + fixed


def _record_bytes(keys: Iterable[str]) -> int:
    """Most bytes of a JSON object of numbers under `keys`: '{"key": value, ...}'."""
    return 2 + sum(len(key) + 6 + NUMBER_CHARS for key in keys)


def _json_bytes(config: BaseModel) -> int:
    return len(json.dumps(config.model_dump(mode="json")))
