"""The SPPs recorded while runs train, as one figure to scrub through: a pure builder, no torch.

A training run measures its SPP at initialization, every `spp_every` steps and at its end
(`nfcore.training.train`). `spp_over_training_figure` draws the training loss of every run beside the
SPP panels, with one animation frame per recorded step: the slider under the figure picks a
step and Play walks through them. Both are Plotly's own controls, so scrubbing runs in the
browser without a page rerun, and the same figure works in an HTML file from the CLI. The
loss panel marks the step shown. In each frame a run shows its latest snapshot at or before
that step, so a run that collapsed early keeps its last SPP. Colours are `run_colors`'.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nfcore.plots.training import Run, run_colors, smoothed, sorted_snapshots, two_lines
from nfcore.spec.statistics import STATISTICS

SCRUB_TITLE = "Signal propagation during training"
LOSS_TITLE = "Training loss<br>(line: the step shown)"
FRAME_MS = 700  # each frame's time on screen while playing
TRANSITION_MS = 300  # the curves glide from one frame to the next
FIGURE_HEIGHT = 600
STAGE_END_SIZE = 7  # the paper's dots at the end of each stage
LOG_PAD = 0.1  # decades of room above and below the curves on a log axis
LINEAR_HEADROOM = 1.08
# A long run with frequent SPPs is shown through this many frames, evenly spread (the first and
# the last among them): the figure stays a few hundred kB, the slider readable.
MAX_FRAMES = 60


def snapshot_steps(runs: Sequence[tuple[str, Run]]) -> list[int]:
    """Every step at which one of the runs recorded an SPP: the frames."""
    return sorted({int(s.get("step", 0)) for _, run in runs for s in sorted_snapshots(run)})


def snapshot_at(run: Run, step: int) -> Mapping[str, Any] | None:
    """The run's latest snapshot at or before `step` (None before its first)."""
    found = None
    for snapshot in sorted_snapshots(run):
        if int(snapshot.get("step", 0)) > step:
            break
        found = snapshot
    return found


def spp_over_training_figure(
    runs: Sequence[tuple[str, Run]],
    *,
    log_y: bool = False,
    smoothing: float = 0.0,
    step: int | None = None,
) -> go.Figure | None:
    """The loss of every run beside its SPP panels, a frame per recorded step.

    None while no run has a snapshot. `step` is the frame shown first (default the last, the
    newest while the runs train); `log_y` puts the SPP panels on a log scale, `smoothing` is
    the loss curve's, as in `training_figure`.
    """
    steps = _thinned(snapshot_steps(runs))
    if not steps:
        return None
    shown = step if step in steps else steps[-1]
    panels = _panels(runs)
    colors = run_colors(runs)
    losses = [_loss_curve(run, smoothing) for _, run in runs]
    fig = make_subplots(
        rows=1, cols=1 + len(panels), column_widths=[1.25] + [1.0] * len(panels),
        subplot_titles=[LOSS_TITLE, *(two_lines(title) for _, title, _ in panels)],
        horizontal_spacing=0.055,
    )  # fmt: skip
    for number, ((label, _), color, (x, y)) in enumerate(zip(runs, colors, losses, strict=True)):
        fig.add_trace(go.Scatter(
            x=x, y=y, name=label, legendgroup=f"run-{number}", mode="lines",
            line={"color": color}, hovertemplate=f"step %{{x}}<br>loss %{{y:.4g}}<extra>{label}</extra>",
        ), row=1, col=1)  # fmt: skip
    loss_range = _log_range([v for _, y in losses for v in y])
    animated = _frame_traces(runs, colors, losses, panels, loss_range, shown)
    first_animated = len(fig.data)
    for trace, col in animated:
        fig.add_trace(trace, row=1, col=col)
    indices = list(range(first_animated, first_animated + len(animated)))
    fig.frames = [
        go.Frame(
            name=str(s),
            data=[trace for trace, _ in _frame_traces(runs, colors, losses, panels, loss_range, s)],
            traces=indices,
        )
        for s in steps
    ]
    _axes(fig, runs, panels, loss_range, log_y)
    _controls(fig, steps, steps.index(shown))
    return fig


# --- helpers ----------------------------------------------------------------------------------
def _thinned(steps: list[int]) -> list[int]:
    if len(steps) <= MAX_FRAMES:
        return steps
    last = len(steps) - 1
    return [steps[round(i * last / (MAX_FRAMES - 1))] for i in range(MAX_FRAMES)]


def _panels(runs: Sequence[tuple[str, Run]]) -> list[tuple[str, str, bool]]:
    """(block key, title, log axis) of the drawn forward statistics the snapshots carry."""
    present: set[str] = set()
    for _, run in runs:
        for snapshot in sorted_snapshots(run):
            for block in snapshot["result"].get("blocks") or ():
                present.update(block)
    return [
        (row.key, row.title, row.log_axis)
        for row in STATISTICS
        if row.drawn and row.when != "gradients" and row.key in present
    ]


def _loss_curve(run: Run, smoothing: float) -> tuple[list[int], list[float | None]]:
    steps = list(run.get("steps") or ())
    values = [_finite(record.get("loss")) for record in steps]
    return [int(record["step"]) for record in steps], smoothed(values, smoothing)


def _frame_traces(
    runs: Sequence[tuple[str, Run]],
    colors: Sequence[str],
    losses: Sequence[tuple[list[int], list[float | None]]],
    panels: Sequence[tuple[str, str, bool]],
    loss_range: tuple[float, float] | None,
    step: int,
) -> list[tuple[go.Scatter, int]]:
    """(trace, panel column) of what changes from frame to frame, the same traces in the same
    order for every step: the step marker and each run's loss there, then each run's SPP."""
    marker_y = [10 ** loss_range[0], 10 ** loss_range[1]] if loss_range else []
    traces = [(go.Scatter(
        x=[step] * len(marker_y), y=marker_y, mode="lines", showlegend=False,
        line={"color": "gray", "dash": "dot", "width": 1.5}, hoverinfo="skip",
        name="the step shown",
    ), 1)]  # fmt: skip
    at_step = [
        (y[x.index(step)] if step in x else None, color)
        for (x, y), color in zip(losses, colors, strict=True)
    ]
    traces.append((go.Scatter(
        x=[step] * len(at_step), y=[value for value, _ in at_step], mode="markers",
        marker={"color": [color for _, color in at_step], "size": 10,
                "line": {"color": "white", "width": 1}},
        showlegend=False, name=f"step {step}", hovertemplate="step %{x}<br>loss %{y:.4g}<extra></extra>",
    ), 1))  # fmt: skip
    for number, ((label, run), color) in enumerate(zip(runs, colors, strict=True)):
        snapshot = snapshot_at(run, step)
        blocks = list(snapshot["result"].get("blocks") or ()) if snapshot else []
        ends = (
            set((snapshot["result"].get("meta") or {}).get("stage_ends") or ())
            if snapshot
            else set()
        )
        for col, (key, _, _) in enumerate(panels, start=2):
            traces.append((go.Scatter(
                x=[block["index"] for block in blocks],
                y=[_finite(block.get(key)) for block in blocks],
                mode="lines+markers", name=label, legendgroup=f"run-{number}", showlegend=False,
                line={"color": color, "width": 2}, connectgaps=False,
                marker={"color": color, "size": [STAGE_END_SIZE if block["index"] in ends else 0
                                                 for block in blocks]},
                hovertemplate=f"<b>{label}</b><br>block %{{x}}<br>%{{y:.6g}}<extra></extra>",
            ), col))  # fmt: skip
    return traces


def _axes(
    fig: go.Figure,
    runs: Sequence[tuple[str, Run]],
    panels: Sequence[tuple[str, str, bool]],
    loss_range: tuple[float, float] | None,
    log_y: bool,
) -> None:
    """Fixed ranges over all frames, so a growing signal is seen growing, not rescaled."""
    fig.update_xaxes(title_text="Step", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=1)
    if loss_range:
        fig.update_yaxes(range=list(loss_range), row=1, col=1)
    for col, (key, _, log_axis) in enumerate(panels, start=2):
        values = [
            value
            for _, run in runs
            for snapshot in sorted_snapshots(run)
            for block in snapshot["result"].get("blocks") or ()
            if (value := _finite(block.get(key))) is not None
        ]
        log = log_y or log_axis
        fig.update_xaxes(title_text="Residual block", rangemode="tozero", row=1, col=col)
        fig.update_yaxes(type="log" if log else "linear", exponentformat="power", row=1, col=col)
        span = _log_range(values) if log else _linear_range(values)
        if span:
            fig.update_yaxes(range=list(span), row=1, col=col)


def _controls(fig: go.Figure, steps: Sequence[int], active: int) -> None:
    """The step slider under the panels (the legend below it), Play / Pause at the top right,
    beside the title, where they cover no tick of the slider."""
    still = {"mode": "immediate", "frame": {"duration": 0, "redraw": False},
             "transition": {"duration": 0}}  # fmt: skip
    playing = {"mode": "immediate", "fromcurrent": False,
               "frame": {"duration": FRAME_MS, "redraw": False},
               "transition": {"duration": TRANSITION_MS, "easing": "cubic-in-out"}}  # fmt: skip
    fig.update_layout(
        template="plotly_white",
        height=FIGURE_HEIGHT,
        hovermode="closest",
        title={"text": SCRUB_TITLE},
        margin={"t": 110, "b": 230},
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.62, "yanchor": "top"},
        sliders=[{
            "active": active, "x": 0, "len": 1, "y": -0.2, "yanchor": "top",
            "currentvalue": {"prefix": "SPP at step ", "xanchor": "left"},
            "pad": {"t": 10},
            "steps": [{"label": str(s), "method": "animate", "args": [[str(s)], still]}
                      for s in steps],
        }],
        updatemenus=[{
            "type": "buttons", "direction": "left", "x": 1, "xanchor": "right", "y": 1.3,
            "yanchor": "bottom", "showactive": False,
            "buttons": [
                {"label": "▶ Play", "method": "animate",
                 "args": [[str(s) for s in steps], playing]},
                {"label": "❚❚ Pause", "method": "animate", "args": [[None], still]},
            ],
        }],
    )  # fmt: skip


def _log_range(values: Sequence[float | None]) -> tuple[float, float] | None:
    positive = [v for v in values if v is not None and v > 0]
    if not positive:
        return None
    return math.log10(min(positive)) - LOG_PAD, math.log10(max(positive)) + LOG_PAD


def _linear_range(values: Sequence[float]) -> tuple[float, float] | None:
    if not values:
        return None
    low, high = min(0.0, min(values)), max(values)
    return low * LINEAR_HEADROOM, (high * LINEAR_HEADROOM if high > 0 else 1.0)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
