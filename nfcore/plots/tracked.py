"""A tracked training run (`nfcore.track`'s JSON lines) as the Train page's scrubbing figure.

The measurements of a run of one's own become a run of `spp_over_training_figure`: an
animation frame per measured step, the slider to scrub through them, and the loss panel
drawn from the losses the loop handed to `tracker.step` (empty where it gave none).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from nfcore.plots.training_spp import spp_over_training_figure
from nfcore.spec.tracked import TrackedSPP


def tracked_run(records: Sequence[TrackedSPP]) -> dict[str, Any]:
    """The run dict the training figures read (`nfcore.plots.training`): "spp" snapshots and
    the "steps" with a loss."""
    return {
        "steps": [{"step": r.step, "loss": r.loss} for r in records if r.loss is not None],
        "spp": [{"step": r.step, "result": r.result.to_json_dict()} for r in records],
    }


def tracked_figure(
    *runs: Sequence[TrackedSPP], labels: Sequence[str] | None = None, log_y: bool = False
) -> go.Figure:
    """The SPPs of one or several tracked runs, overlaid, one frame per measured step.

    Labels default to each run's model name, numbered where runs share one ("Net", "Net (2)").
    A ValueError when a run holds no measurement, or the labels do not match the runs."""
    if not runs:
        raise ValueError("tracked_figure needs at least one run")
    if any(not records for records in runs):
        raise ValueError("no SPP was tracked: a run holds no measurement")
    if labels is not None and len(labels) != len(runs):
        raise ValueError(f"got {len(labels)} labels for {len(runs)} runs")
    names = list(labels) if labels is not None else [r[-1].result.meta.model for r in runs]
    figure = spp_over_training_figure(
        list(zip(_numbered(names), (tracked_run(records) for records in runs), strict=True)),
        log_y=log_y,
    )
    if figure is None:  # for the type checker: every record carries a result
        raise ValueError("no SPP was tracked: a run holds no measurement")
    return figure


def _numbered(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out
