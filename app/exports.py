"""What the Explorer's downloads hold, and what they are called (pure: no Streamlit).

The CSV of an overlay holds every run shown, one row per block, with the run's legend
label, its job id and its canonical config beside the block's statistics, so a spreadsheet
can tell the runs apart. File names say what is in them: `spp-nf-resnetv2-50-ws-relu.csv`,
or, for an overlay, `spp-fig2-3-runs.png`.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence

from nfcore.spec.result import SPPResult

RUN_COLUMNS = ("run", "label", "job_id")
CONFIG_COLUMN = "config"
MAX_NAME = 60  # characters of a file name's stem


def overlay_csv(results: Sequence[SPPResult], labels: Sequence[str], job_ids: Sequence[str]) -> str:
    """Every run's blocks, in the order drawn; a statistic a run did not measure is empty."""
    keys: list[str] = []
    for result in results:
        keys += [key for key in result.block_keys() if key not in keys]
    out = io.StringIO()
    writer = csv.DictWriter(
        out, fieldnames=[*RUN_COLUMNS, *keys, CONFIG_COLUMN], lineterminator="\n"
    )
    writer.writeheader()
    for number, (result, label, job_id) in enumerate(zip(results, labels, job_ids, strict=True)):
        config = json.dumps(
            result.config.model_dump(mode="json"), sort_keys=True, separators=(",", ":")
        )
        for block in result.blocks:
            values = {key: getattr(block, key, None) for key in keys}
            row = {"run": number, "label": label, "job_id": job_id, CONFIG_COLUMN: config}
            writer.writerow(row | {k: "" if v is None else v for k, v in values.items()})
    return out.getvalue()


def slug(text: str) -> str:
    """'NF-ResNetV2-50 (ws, relu, alpha=0.2)' -> 'nf-resnetv2-50-ws-relu-alpha-0.2'."""
    words = re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")
    return words[:MAX_NAME].rstrip("-.") or "run"


def file_stem(labels: Sequence[str], preset: str | None = None) -> str:
    """The name of a download of these runs, without its suffix."""
    if len(labels) == 1:
        return f"spp-{slug(labels[0])}"
    what = slug(preset) if preset else slug(labels[0])
    return f"spp-{what}-{len(labels)}-runs"
