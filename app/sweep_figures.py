"""The Sweep page's phase diagram: cells in, `go.Figure` out, no Streamlit.

A heatmap of the summary statistic over the grid, on a log10 colour scale when the values
span more than LOG_SPAN (two decades). Cells without a value (queued, running, failed, or a
summary that has none, e.g. a signal that never leaves the range) are drawn grey with a word.
An invisible marker on every cell carries the hover text (the point's values, its statistic
and a sparkline of its variance per block) and makes the cell clickable: Streamlit reports
clicks on scatter points, not on heatmap cells.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from app.sweeps import Cell, Sweep, format_value
from nfcore.spec.summaries import Summary

LOG_SPAN = 100.0  # max / min above this: colour by decades, or most cells look alike
COLOURSCALE = "Viridis"
PENDING_GREY, EMPTY_GREY = "#e4e4e4", "#a8a8a8"  # queued or running / ended without a value
SPARK_LEVELS = "▁▂▃▄▅▆▇█"
SPARK_MISSING = "×"  # a block whose variance overflowed float32
MAX_DECADE_TICKS = 8
CELL_HEIGHT = 64  # pixels per row of the grid


def in_decades(values: Sequence[float], summary: Summary) -> bool:
    """Colour on a log scale: all values positive and the largest over LOG_SPAN times the
    smallest (a block index is never coloured so)."""
    if not summary.decades or len(values) < 2 or min(values) <= 0:
        return False
    return max(values) / min(values) > LOG_SPAN


def decade_ticks(low: float, high: float) -> tuple[list[float], list[str]]:
    """Colour-bar ticks at powers of ten between log10 values `low` and `high`, written as
    numbers (0.01, 100) near 1 and as powers (1e-6, 1e12) beyond; at most MAX_DECADE_TICKS,
    at multiples of a common step."""
    first, last = math.ceil(low - 1e-9), math.floor(high + 1e-9)
    step = max(1, math.ceil((last - first + 1) / MAX_DECADE_TICKS))
    exponents = [k for k in range(first, last + 1) if k % step == 0]
    if not exponents:  # a span inside one decade: its ends
        return [low, high], [f"{10**low:.3g}", f"{10**high:.3g}"]
    return [float(k) for k in exponents], [_decade(k) for k in exponents]


def _decade(exponent: int) -> str:
    if -3 <= exponent <= 3:
        return f"{10.0**exponent:g}"
    return f"1e{exponent}"


def sparkline(values: Sequence[float | None]) -> str:
    """A row of block characters, one per block, for values on a log scale (variances grow
    and vanish exponentially); an overflowed block is a cross."""
    logs = [math.log10(v) if v is not None and v > 0 else None for v in values]
    known = [v for v in logs if v is not None]
    if not known:
        return SPARK_MISSING * len(values)
    low, high = min(known), max(known)
    top = len(SPARK_LEVELS) - 1
    chars = []
    for value in logs:
        if value is None:
            chars.append(SPARK_MISSING)
        elif high - low < 1e-12:
            chars.append(SPARK_LEVELS[top // 2])
        else:
            chars.append(SPARK_LEVELS[round((value - low) / (high - low) * top)])
    return "".join(chars)


def value_text(value: float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return f"{value:.3g}"


def cell_word(cell: Cell) -> str:
    """What a cell without a value shows."""
    if cell.outcome is not None:
        return cell.outcome.tag
    if cell.state == "running" and cell.total:
        return f"{cell.done}/{cell.total}"
    if cell.state == "finished":
        return "…"  # finished, its result being fetched
    return cell.state


def hover_text(cell: Cell, sweep: Sweep, summary: Summary) -> str:
    lines = [f"{sweep.x.label} = {format_value(cell.x)}, {sweep.y.label} = {format_value(cell.y)}"]
    outcome = cell.outcome
    if outcome is not None:
        shown = value_text(outcome.value) if outcome.value is not None else outcome.tag
        lines.append(f"<b>{summary.title}: {shown}</b>")
        if outcome.note:
            lines.append(outcome.note)
    else:
        lines.append(f"<b>{cell_word(cell)}</b>" + (f": {cell.error}" if cell.error else ""))
    if cell.label:
        lines.append(cell.label)
    known = [v for v in cell.variance if v is not None]
    if known:
        lines.append(f"variance per block {sparkline(cell.variance)} "
                     f"({known[0]:.3g} → {known[-1]:.3g})")  # fmt: skip
        lines.append("<i>click: its SPP below, and a link to the Explorer</i>")
    return "<br>".join(lines)


def heatmap_figure(
    sweep: Sweep,
    cells: Sequence[Cell],
    summary: Summary,
    *,
    selected: tuple[Any, Any] | None = None,
) -> go.Figure:
    """The phase diagram of `cells` (grid order: x outer, y inner), `selected` outlined."""
    xs = [format_value(v) for v in sweep.x.values]
    ys = [format_value(v) for v in sweep.y.values]
    by_point = {(format_value(c.x), format_value(c.y)): c for c in cells}
    grid = [[by_point.get((x, y)) for x in xs] for y in ys]  # rows are y, as a heatmap's z

    def raw(cell: Cell | None) -> float | None:
        return None if cell is None or cell.outcome is None else cell.outcome.value

    values = [v for row in grid for v in map(raw, row) if v is not None]
    log = in_decades(values, summary)
    colour = [[_colour(raw(c), log) for c in row] for row in grid]
    fig = go.Figure()
    colorbar: dict[str, Any] = {"title": {"text": summary.title + (" (log)" if log else ""),
                                          "side": "right"}}  # fmt: skip
    if log and values:
        low, high = math.log10(min(values)), math.log10(max(values))
        colorbar["tickvals"], colorbar["ticktext"] = decade_ticks(low, high)
    fig.add_trace(go.Heatmap(
        x=xs, y=ys, z=colour, customdata=[[raw(c) for c in row] for row in grid],
        text=[[value_text(raw(c)) for c in row] for row in grid], texttemplate="%{text}",
        colorscale=COLOURSCALE, colorbar=colorbar, hoverinfo="skip", name=summary.key,
        meta={"log": log},
    ))  # fmt: skip
    fig.add_trace(go.Heatmap(
        x=xs, y=ys, z=[[_grey(c) for c in row] for row in grid],
        text=[[cell_word(c) if c is not None and raw(c) is None else "" for c in row]
              for row in grid],
        texttemplate="%{text}", colorscale=[[0, PENDING_GREY], [0.5, PENDING_GREY],
                                            [0.5, EMPTY_GREY], [1, EMPTY_GREY]],
        zmin=0, zmax=1, showscale=False, hoverinfo="skip", name="no value",
    ))  # fmt: skip
    points = [(ix, iy) for ix in range(len(xs)) for iy in range(len(ys)) if grid[iy][ix]]
    fig.add_trace(go.Scatter(
        x=[xs[ix] for ix, _ in points], y=[ys[iy] for _, iy in points], mode="markers",
        marker={"size": 24, "opacity": 0}, customdata=[[ix, iy] for ix, iy in points],
        hovertext=[hover_text(grid[iy][ix], sweep, summary) for ix, iy in points],
        hovertemplate="%{hovertext}<extra></extra>", showlegend=False, name="points",
    ))  # fmt: skip
    if selected is not None:
        _outline(fig, xs, ys, selected)
    fig.update_layout(
        xaxis={"title": {"text": sweep.x.label}, "type": "category"},
        yaxis={"title": {"text": sweep.y.label}, "type": "category"},
        height=140 + CELL_HEIGHT * max(len(ys), 3), hoverdistance=-1,
        margin={"t": 40, "b": 60}, title={"text": summary.title},
        hoverlabel={"align": "left", "bgcolor": "white", "bordercolor": "#888",
                    "font": {"color": "black"}},
    )  # fmt: skip
    return fig


def _colour(value: float | None, log: bool) -> float | None:
    if value is None:
        return None
    return math.log10(value) if log else float(value)


def _grey(cell: Cell | None) -> float | None:
    """0: pending, 1: ended without a value, None: the cell has a value (coloured beneath)."""
    if cell is None:
        return None
    if cell.outcome is not None:
        return None if cell.outcome.value is not None else 1.0
    return 0.0 if cell.active or cell.state == "finished" else 1.0


def _outline(fig: go.Figure, xs: list[str], ys: list[str], selected: tuple[Any, Any]) -> None:
    x, y = (format_value(v) for v in selected)
    if x in xs and y in ys:
        ix, iy = xs.index(x), ys.index(y)
        fig.add_shape(type="rect", x0=ix - 0.5, x1=ix + 0.5, y0=iy - 0.5, y1=iy + 0.5,
                      line={"color": "#ff2b2b", "width": 3}, xref="x", yref="y")  # fmt: skip
