"""Training curves as Plotly figures: pure builders (runs -> go.Figure), no torch, no Streamlit.

A run is a `TrainResult`-like dict (`nfcore.train_result`): "steps", "evals", optional "spp"
and "collapse". A finished run's result JSON is one; so is `runs_from_events(events)`, the
same records gathered from the events a running job has streamed so far, which is how the
dashboard draws live curves with the same builder.

`training_figure` draws three panels side by side, runs overlaid: the training loss (log
scale), the held-out accuracy (raw weights solid, their EMA dashed when the run keeps one)
and the learning rate. A collapsed run ends in an X on the loss panel, annotated "collapsed
at step N". `spp_snapshot_figures` reuses `nfcore.plots.spp_figure` for the Signal
Propagation Plots measured at initialization and after training.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from nfcore.plots import FORWARD_PANELS, GRADIENT_PANELS, RUN_COLORS, spp_figure
from nfcore.result import SPPResult

PANEL_TITLES: tuple[str, str, str] = ("Training loss", "Held-out accuracy", "Learning rate")
EMA_TITLE = "Held-out accuracy (dashed: EMA of the weights)"
COLLAPSE_MARKER: dict[str, Any] = {"symbol": "x", "size": 14, "line": {"width": 2}}
FIGURE_HEIGHT = 440

Run = Mapping[str, Any]


def runs_from_events(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """The records of a run so far, gathered from its events, in `TrainResult`'s shape.

    step/eval events become "steps"/"evals" records (without their "kind"), spp events
    become {"step", "result"} snapshots, and a collapse event becomes "collapse". Events of
    an unknown kind are skipped, so a newer worker does not break an older dashboard.
    """
    run: dict[str, Any] = {"steps": [], "evals": [], "spp": [], "collapse": None}
    for event in events:
        kind = event.get("kind")
        record = {key: value for key, value in event.items() if key != "kind"}
        if kind == "step":
            run["steps"].append(record)
        elif kind == "eval":
            run["evals"].append(record)
        elif kind == "spp":
            run["spp"].append({"step": event.get("step", 0), "result": event.get("result")})
        elif kind == "collapse":
            run["collapse"] = record
    return run


def training_figure(runs: Sequence[tuple[str, Run]], *, title: str | None = None) -> go.Figure:
    """Loss, held-out accuracy and learning rate against the step, one color per run.

    Runs without records yet are left out of the panels but keep their color, so a run's
    color does not change while the others start.
    """
    has_ema = any(_has_ema(run) for _, run in runs)
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=(
            PANEL_TITLES[0],
            EMA_TITLE if has_ema else PANEL_TITLES[1],
            PANEL_TITLES[2],
        ),
        horizontal_spacing=0.07,
    )
    for number, (label, run) in enumerate(runs):
        color = RUN_COLORS[number % len(RUN_COLORS)]
        group = f"run-{number}"
        for trace, col in _run_traces(label, run, color, group):
            fig.add_trace(trace, row=1, col=col)
        _mark_collapse(fig, label, run, color, group)
    for col in (1, 2, 3):
        fig.update_xaxes(title_text="Step", rangemode="tozero", row=1, col=col)
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    fig.update_yaxes(rangemode="tozero", exponentformat="power", row=1, col=3)
    fig.update_layout(
        template="plotly_white",
        height=FIGURE_HEIGHT,
        hovermode="closest",
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.22},
        margin={"t": 70 if title else 50, "b": 90},
        title={"text": title} if title else None,
    )
    return fig


def spp_snapshots(run: Run) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """The run's first SPP snapshot (at initialization) and its last, when measured later."""
    snapshots = sorted(
        (s for s in run.get("spp") or () if s.get("result") is not None),
        key=lambda s: s.get("step", 0),
    )
    if not snapshots:
        return None, None
    first, last = snapshots[0], snapshots[-1]
    return first, (last if last.get("step", 0) > first.get("step", 0) else None)


def spp_snapshot_figures(
    runs: Sequence[tuple[str, Run]], *, log_y: bool = False
) -> tuple[go.Figure | None, go.Figure | None]:
    """Two SPP figures, runs overlaid: at the first snapshot and at the last (after training).

    Either is None while no run has that snapshot yet. Legend labels carry each snapshot's
    step, e.g. 'NF-ResNet-26 (step 200)'.
    """
    before: list[tuple[str, Mapping[str, Any]]] = []
    after: list[tuple[str, Mapping[str, Any]]] = []
    for label, run in runs:
        first, last = spp_snapshots(run)
        if first is not None:
            before.append((label, first))
        if last is not None:
            after.append((label, last))
    return (
        _snapshot_figure(before, "Before training", log_y),
        _snapshot_figure(after, "After training", log_y),
    )


# --- helpers ----------------------------------------------------------------------------------
def _has_ema(run: Run) -> bool:
    return any(e.get("ema_accuracy") is not None for e in run.get("evals") or ())


def _finite(value: Any) -> float | None:
    """A plottable number, or None (a gap) for null, NaN and Inf."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _run_traces(label: str, run: Run, color: str, group: str) -> list[tuple[go.Scatter, int]]:
    """(trace, panel column) for one run: loss, accuracy (and EMA), learning rate."""
    steps = list(run.get("steps") or ())
    evals = list(run.get("evals") or ())

    def curve(
        records: list[Mapping[str, Any]], key: str, name: str, hover: str, **style: Any
    ) -> go.Scatter:
        return go.Scatter(
            x=[r["step"] for r in records],
            y=[_finite(r.get(key)) for r in records],
            name=name,
            legendgroup=group,
            showlegend=name == label,
            hovertemplate=f"step %{{x}}<br>{hover}<extra>{label}</extra>",
            **{"mode": "lines", "line": {"color": color}, **style},
        )

    traces = [(curve(steps, "loss", label, "loss %{y:.4g}"), 1)]
    if evals:
        traces.append((curve(evals, "accuracy", f"{label}: held-out", "accuracy %{y:.1%}",
                             mode="lines+markers", marker={"color": color, "size": 6}), 2))  # fmt: skip
    if _has_ema(run):
        traces.append((curve(evals, "ema_accuracy", f"{label}: EMA", "EMA accuracy %{y:.1%}",
                             line={"color": color, "dash": "dash"}), 2))  # fmt: skip
    traces.append((curve(steps, "lr", f"{label}: lr", "lr %{y:.4g}"), 3))
    return traces


def _mark_collapse(fig: go.Figure, label: str, run: Run, color: str, group: str) -> None:
    """An X on the loss panel where the run collapsed, and the text 'collapsed at step N'."""
    collapse = run.get("collapse")
    if not collapse:
        return
    step = int(collapse["step"])
    y = _finite(collapse.get("loss"))
    if y is None or y <= 0:  # NaN/Inf: mark the last finite loss instead
        finite = [_finite(s.get("loss")) for s in run.get("steps") or ()]
        y = next((v for v in reversed(finite) if v is not None and v > 0), 1.0)
    text = f"collapsed at step {step}"
    fig.add_trace(
        go.Scatter(
            x=[step],
            y=[y],
            mode="markers",
            name=f"{label}: {text}",
            showlegend=False,
            legendgroup=group,
            marker={**COLLAPSE_MARKER, "color": color},
            hovertemplate=f"{text}<br>{collapse.get('reason') or ''}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    # Annotations on a log axis are placed in log10 units.
    fig.add_annotation(
        x=step,
        y=math.log10(y),
        xref="x",
        yref="y",
        text=text,
        showarrow=True,
        arrowhead=2,
        arrowcolor=color,
        font={"color": color},
        ax=0,
        ay=-30,
    )


def _snapshot_figure(
    snapshots: list[tuple[str, Mapping[str, Any]]], title: str, log_y: bool
) -> go.Figure | None:
    if not snapshots:
        return None
    results = [_spp_result(s["result"]) for _, s in snapshots]
    labels = [f"{label} (step {s.get('step', 0)})" for label, s in snapshots]
    fig = spp_figure(results, log_y=log_y, labels=labels, title=title)
    # Two of these stand side by side: panel titles on two lines, so they do not overlap.
    panel_titles = {text for _, text in FORWARD_PANELS + GRADIENT_PANELS}
    fig.for_each_annotation(
        lambda note: note.update(text=_two_lines(note.text)) if note.text in panel_titles else None
    )
    fig.update_layout(margin={"t": 130})
    return fig


def _two_lines(text: str) -> str:
    """'Average Channel Squared Mean' -> 'Average Channel<br>Squared Mean'."""
    words = text.split()
    half = (len(words) + 1) // 2
    return " ".join(words[:half]) + "<br>" + " ".join(words[half:])


def _spp_result(result: Any) -> SPPResult:
    return result if isinstance(result, SPPResult) else SPPResult.model_validate(result)
