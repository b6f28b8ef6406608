"""Training curves as Plotly figures: pure builders (runs -> go.Figure), no torch, no Streamlit.

A run is a `TrainResult`-like dict (`nfcore.spec.train_result`): "steps", "evals", optional "spp",
"collapse" and "config". A finished run's result JSON is one; so is `runs_from_events(events)`,
the same records gathered from the events a running job has streamed so far (a caller adds the
"config" it submitted), which is how the dashboard draws live curves with the same builder.

`training_figure` draws three panels side by side, runs overlaid: the training loss (log
scale, optionally smoothed), the held-out accuracy (raw weights solid, their EMA dashed when
the run keeps one) and the learning rate, and a fourth with the gradient norm when asked. A
collapsed run ends in an X on the loss panel, annotated "collapsed at step N".
`spp_snapshot_figures` reuses `nfcore.plots.spp.spp_figure` for the Signal Propagation Plots
measured at initialization and after training; `spp_over_training_figure` (in
`nfcore.plots.training_spp`) scrubs through every SPP recorded while the runs trained.

Colours pair the runs (`run_colors`): a hue per normalization (BN blues, NF oranges), a shade
per batch size, the same in every figure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.colors import find_intermediate_color, unlabel_rgb
from plotly.subplots import make_subplots

from nfcore.plots.spp import FORWARD_PANELS, GRADIENT_PANELS, RUN_COLORS, spp_figure
from nfcore.spec.result import SPPResult

PANEL_TITLES: tuple[str, str, str] = ("Training loss", "Held-out accuracy", "Learning rate")
GRAD_NORM_TITLE = "Gradient norm (before clipping)"
EMA_TITLE = "Held-out accuracy (dashed: EMA of the weights)"
COLLAPSE_MARKER: dict[str, Any] = {"symbol": "x", "size": 14, "line": {"width": 2}}
# The "collapsed at step N" labels, in a column at the top of the loss panel: the first this
# far below the highest loss (a fraction of the losses' span, log scale), each next one lower.
COLLAPSE_LABEL_TOP = 0.05
COLLAPSE_LABEL_GAP = 0.1
RAW_OPACITY = 0.25  # the unsmoothed curve behind a smoothed one
FIGURE_HEIGHT = 440
# (darkest, lightest) shade of each normalization's hue: BN blue, NF orange (distinguishable
# with the common colour-vision deficiencies), the others green and purple. Mid-saturation at
# both ends, so every shade shows on the white and on the dark dashboard template.
NORM_HUES: dict[str, tuple[str, str]] = {
    "bn": ("rgb(8,69,148)", "rgb(107,174,214)"),
    "nf": ("rgb(166,54,3)", "rgb(253,141,60)"),
    "none": ("rgb(0,109,44)", "rgb(116,196,118)"),
    "fixup": ("rgb(84,39,143)", "rgb(158,154,200)"),
}
SINGLE_SHADE = 0.4  # where between darkest and lightest a hue's only run sits

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


def run_colors(runs: Sequence[tuple[str, Run]]) -> list[str]:
    """A colour per run: the hue of its normalization, a shade per batch size within it.

    Runs of one norm are shaded from dark (the largest batch) to light, so 'BN, batch 4' and
    'NF, batch 4' read as a pair; runs of one norm and batch that differ otherwise get shades
    of their own. A run without a "config" (or of another norm) takes RUN_COLORS by position.
    """
    colors = [RUN_COLORS[number % len(RUN_COLORS)] for number in range(len(runs))]
    by_norm: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
    for number, (_, run) in enumerate(runs):
        config = run.get("config")
        if isinstance(config, Mapping) and config.get("norm") in NORM_HUES:
            by_norm.setdefault(str(config["norm"]), []).append((number, config))
    for norm, members in by_norm.items():
        keys: dict[str, int] = {}  # a distinct config -> its batch
        for _, config in members:
            keys.setdefault(_config_key(config), int(config.get("batch") or 0))
        order = sorted(keys, key=lambda key: -keys[key])  # stable: ties keep their order
        dark, light = NORM_HUES[norm]
        for number, config in members:
            rank = order.index(_config_key(config))
            fraction = rank / (len(order) - 1) if len(order) > 1 else SINGLE_SHADE
            colors[number] = _blend(dark, light, fraction)
    return colors


def smoothed(values: Sequence[float | None], weight: float) -> list[float | None]:
    """An exponential moving average of a curve, debiased as TensorBoard does: s_t = w s_(t-1) +
    (1 - w) x_t, divided by 1 - w^t so the first points are not pulled toward zero. A gap
    (None) stays a gap and leaves the average as it was; weight 0 returns the values."""
    if weight <= 0:
        return list(values)
    average, count, out = 0.0, 0, []
    for value in values:
        if value is None:
            out.append(None)
            continue
        average = weight * average + (1 - weight) * value
        count += 1
        out.append(average / (1 - weight**count))
    return out


def first_eval_step(runs: Sequence[tuple[str, Run]]) -> int | None:
    """The earliest step at which one of the runs is evaluated, from their configs."""
    steps = [
        min(int(config["eval_every"]), int(config["steps"]))
        for _, run in runs
        if isinstance(config := run.get("config"), Mapping)
        and config.get("eval_every")
        and config.get("steps")
    ]
    return min(steps) if steps else None


def training_figure(
    runs: Sequence[tuple[str, Run]],
    *,
    title: str | None = None,
    smoothing: float = 0.0,
    grad_norm: bool = False,
) -> go.Figure:
    """Loss, held-out accuracy and learning rate (and the gradient norm with `grad_norm`)
    against the step, a colour per run (`run_colors`).

    `smoothing` (0 to <1) draws the loss and gradient norm as their debiased EMA over the
    faint raw curve. Runs without records yet are left out of the panels but keep their
    colour, so a run's colour does not change while the others start.
    """
    has_ema = any(_has_ema(run) for _, run in runs)
    titles = [PANEL_TITLES[0], EMA_TITLE if has_ema else PANEL_TITLES[1], PANEL_TITLES[2]]
    if grad_norm:
        titles.append(GRAD_NORM_TITLE)
    fig = make_subplots(
        rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.07 if
        len(titles) == 3 else 0.055,
    )  # fmt: skip
    collapses = 0
    for number, ((label, run), color) in enumerate(zip(runs, run_colors(runs), strict=True)):
        group = f"run-{number}"
        for trace, col in _run_traces(label, run, color, group, smoothing, grad_norm):
            fig.add_trace(trace, row=1, col=col)
        collapses += _mark_collapse(fig, runs, number, color, collapses)
    for col in range(1, len(titles) + 1):
        fig.update_xaxes(title_text="Step", rangemode="tozero", row=1, col=col)
    fig.update_yaxes(type="log", exponentformat="power", row=1, col=1)
    fig.update_yaxes(range=[0, 1.02], tickformat=".0%", row=1, col=2)
    fig.update_yaxes(rangemode="tozero", exponentformat="power", row=1, col=3)
    if grad_norm:
        fig.update_yaxes(type="log", exponentformat="power", row=1, col=4)
    if not any(run.get("evals") for _, run in runs):
        _note_no_evaluation(fig, first_eval_step(runs))
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
    snapshots = sorted_snapshots(run)
    if not snapshots:
        return None, None
    first, last = snapshots[0], snapshots[-1]
    return first, (last if last.get("step", 0) > first.get("step", 0) else None)


def sorted_snapshots(run: Run) -> list[Mapping[str, Any]]:
    """The run's SPP snapshots that carry a result, by step."""
    return sorted(
        (s for s in run.get("spp") or () if s.get("result") is not None),
        key=lambda s: s.get("step", 0),
    )


def spp_snapshot_figures(
    runs: Sequence[tuple[str, Run]], *, log_y: bool = False
) -> tuple[go.Figure | None, go.Figure | None]:
    """Two SPP figures, runs overlaid: at the first snapshot and at the last (after training).

    Either is None while no run has that snapshot yet. Legend labels carry each snapshot's
    step, e.g. 'NF-ResNet-26 (step 200)'; colours are those of `run_colors`.
    """
    before: list[tuple[str, Mapping[str, Any], str]] = []
    after: list[tuple[str, Mapping[str, Any], str]] = []
    for (label, run), color in zip(runs, run_colors(runs), strict=True):
        first, last = spp_snapshots(run)
        if first is not None:
            before.append((label, first, color))
        if last is not None:
            after.append((label, last, color))
    return (
        _snapshot_figure(before, "Before training", log_y),
        _snapshot_figure(after, "After training", log_y),
    )


# --- helpers ----------------------------------------------------------------------------------
def _blend(dark: str, light: str, fraction: float) -> str:
    """The colour `fraction` of the way from `dark` to `light`, as 'rgb(r,g,b)'."""
    low, high = unlabel_rgb(dark), unlabel_rgb(light)
    mixed = find_intermediate_color(low, high, fraction)
    return "rgb({},{},{})".format(*(round(v) for v in mixed))


def _config_key(config: Mapping[str, Any]) -> str:
    return json.dumps(dict(config), sort_keys=True, default=str)


def _has_ema(run: Run) -> bool:
    return any(e.get("ema_accuracy") is not None for e in run.get("evals") or ())


def _finite(value: Any) -> float | None:
    """A plottable number, or None (a gap) for null, NaN and Inf."""
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _run_traces(
    label: str, run: Run, color: str, group: str, smoothing: float, grad_norm: bool
) -> list[tuple[go.Scatter, int]]:
    """(trace, panel column) for one run: loss, accuracy (and EMA), learning rate, and the
    gradient norm when asked; smoothed curves keep their raw curve, faint, behind them."""
    steps = list(run.get("steps") or ())
    evals = list(run.get("evals") or ())

    def curve(
        records: list[Mapping[str, Any]], key: str, name: str, hover: str, *,
        smooth: bool = False, **style: Any,
    ) -> list[go.Scatter]:  # fmt: skip
        y = [_finite(r.get(key)) for r in records]
        shown = smoothed(y, smoothing) if smooth else y
        traces = [go.Scatter(
            x=[r["step"] for r in records], y=shown, name=name, legendgroup=group,
            showlegend=name == label, hovertemplate=f"step %{{x}}<br>{hover}<extra>{label}</extra>",
            **{"mode": "lines", "line": {"color": color}, **style},
        )]  # fmt: skip
        if smooth and smoothing > 0:
            traces.insert(0, go.Scatter(
                x=traces[0].x, y=y, name=f"{name} (raw)", legendgroup=group, showlegend=False,
                mode="lines", line={"color": color, "width": 1}, opacity=RAW_OPACITY,
                hoverinfo="skip",
            ))  # fmt: skip
        return traces

    traces = [(t, 1) for t in curve(steps, "loss", label, "loss %{y:.4g}", smooth=True)]
    if evals:
        traces += [(t, 2) for t in curve(evals, "accuracy", f"{label}: held-out",
                   "accuracy %{y:.1%}", mode="lines+markers", marker={"color": color, "size": 6})]  # fmt: skip
    if _has_ema(run):
        traces += [(t, 2) for t in curve(evals, "ema_accuracy", f"{label}: EMA",
                   "EMA accuracy %{y:.1%}", line={"color": color, "dash": "dash"})]  # fmt: skip
    traces += [(t, 3) for t in curve(steps, "lr", f"{label}: lr", "lr %{y:.4g}")]
    if grad_norm:
        traces += [(t, 4) for t in curve(steps, "grad_norm", f"{label}: gradient norm",
                                         "gradient norm %{y:.4g}", smooth=True)]  # fmt: skip
    return traces


def _mark_collapse(
    fig: go.Figure, runs: Sequence[tuple[str, Run]], number: int, color: str, earlier: int
) -> int:
    """An X on the loss panel where the run collapsed, and the text 'collapsed at step N',
    below the labels of the `earlier` collapsed runs; 1 when marked, else 0."""
    label, run = runs[number]
    group = f"run-{number}"
    collapse = run.get("collapse")
    if not collapse:
        return 0
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
            hovertemplate=f"{label}: {text}<br>{collapse.get('reason') or ''}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    # Annotations on a log axis are placed in log10 units. The labels stand in a column at the
    # top of the panel, a row each, an arrow down to their X: two runs that collapse at nearby
    # steps do not print over each other.
    top, span = _log_span(runs)
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
        bgcolor="rgba(255,255,255,0.6)",
        axref="x",
        ax=step,
        ayref="y",
        ay=top - span * (COLLAPSE_LABEL_TOP + COLLAPSE_LABEL_GAP * earlier),
    )
    return 1


def _log_span(runs: Sequence[tuple[str, Run]]) -> tuple[float, float]:
    """log10 of the highest finite loss of the runs, and the decades down to the lowest."""
    losses = [
        value for _, run in runs for record in run.get("steps") or ()
        if (value := _finite(record.get("loss"))) is not None and value > 0
    ]  # fmt: skip
    if not losses:
        return 0.0, 1.0
    top, bottom = math.log10(max(losses)), math.log10(min(losses))
    return top, max(top - bottom, 0.3)


def _note_no_evaluation(fig: go.Figure, first: int | None) -> None:
    """Say in the empty accuracy panel why it is empty."""
    text = "no evaluation yet" + (f": first at step {first}" if first else "")
    fig.add_annotation(
        text=text, xref="x2 domain", yref="y2 domain", x=0.5, y=0.5, showarrow=False,
        font={"size": 13, "color": "gray"},
    )  # fmt: skip


def _snapshot_figure(
    snapshots: list[tuple[str, Mapping[str, Any], str]], title: str, log_y: bool
) -> go.Figure | None:
    if not snapshots:
        return None
    results = [spp_result(s["result"]) for _, s, _ in snapshots]
    labels = [f"{label} (step {s.get('step', 0)})" for label, s, _ in snapshots]
    fig = spp_figure(results, log_y=log_y, labels=labels, title=title)
    _recolor(fig, [color for _, _, color in snapshots])
    # Two of these stand side by side: panel titles on two lines, so they do not overlap.
    panel_titles = {text for _, text in FORWARD_PANELS + GRADIENT_PANELS}
    fig.for_each_annotation(
        lambda note: note.update(text=two_lines(note.text)) if note.text in panel_titles else None
    )
    fig.update_layout(margin={"t": 130})
    return fig


def _recolor(fig: go.Figure, colors: Sequence[str]) -> None:
    """The lines of run i of an `spp_figure` (legend group 'run-i') in colors[i]; the black
    stage-end dots stay black."""
    for trace in fig.data:
        group = trace.legendgroup or ""
        if group.startswith("run-") and trace.mode == "lines":
            trace.line.color = colors[int(group.removeprefix("run-"))]


def two_lines(text: str) -> str:
    """'Average Channel Squared Mean' -> 'Average Channel<br>Squared Mean'."""
    words = text.split()
    half = (len(words) + 1) // 2
    return " ".join(words[:half]) + "<br>" + " ".join(words[half:])


def spp_result(result: Any) -> SPPResult:
    return result if isinstance(result, SPPResult) else SPPResult.model_validate(result)
