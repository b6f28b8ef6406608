"""SPPs tracked over a training run: the JSON-lines file `nfcore.track` writes, and reading it.

Torch-free, so the CLI's `nfcore plot runs/spp.jsonl` and a notebook can read a run without
loading torch. One line per measurement, appended as it is made (a run stopped halfway keeps
every line written so far):

    {"step": 50, "wall_time": 1733620000.5, "result": {<the SPP result JSON of measure()>}}

`wall_time` is seconds since the epoch (`time.time()`), `loss` is there where the training loop
handed one to `tracker.step`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nfcore.spec.result import SPPResult


@dataclass(frozen=True)
class TrackedSPP:
    """One line of a tracked run: the SPP measured after training step `step`."""

    step: int
    wall_time: float
    result: SPPResult
    loss: float | None = None

    def to_json_line(self) -> str:
        record: dict[str, Any] = {"step": self.step, "wall_time": self.wall_time}
        if self.loss is not None:
            record["loss"] = self.loss
        record["result"] = self.result.to_json_dict()
        return json.dumps(record, allow_nan=False)


def read_tracked(path: str | Path) -> list[TrackedSPP]:
    """The measurements of a file `nfcore.track` wrote, in file order.

    A line that is not such a record is a ValueError naming the file and the line number;
    blank lines are skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ValueError(f"{path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file (expected JSON lines)") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            records.append(_parsed(line, f"{path}, line {number}"))
    return records


def _parsed(line: str, where: str) -> TrackedSPP:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ValueError(f"{where}: not valid JSON ({error.msg})") from None
    if not isinstance(record, dict) or "step" not in record or "result" not in record:
        raise ValueError(f'{where}: expected an object with "step" and "result"')
    step, wall_time, loss = record["step"], record.get("wall_time", 0.0), record.get("loss")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise ValueError(f"{where}: step must be a whole number >= 0, got {step!r}")
    for key, value in (("wall_time", wall_time), ("loss", loss)):
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise ValueError(f"{where}: {key} must be a number, got {value!r}")
    try:
        result = SPPResult.model_validate(record["result"])
    except ValidationError as error:
        first = error.errors()[0]
        place = ".".join(str(part) for part in first["loc"])
        raise ValueError(f"{where}: not an SPP result ({place}: {first['msg']})") from None
    return TrackedSPP(step, float(wall_time), result, None if loss is None else float(loss))
