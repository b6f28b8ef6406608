"""A chart laid out again for the width the page has (`app.layout`): pure, figure in, figure out.

nfcore's builders draw for a wide screen, panels side by side, as the CLI's HTML and PNG files
show them. In a narrow column the dashboard lays the same figure out again rather than asking
every builder for a second layout: `stacked` puts every panel on a row of its own (its title
above it, its x axis under it) and the legend, a step slider and its Play / Pause buttons under
the last one; `with_short_titles` names each panel by its short title where the full ones would
run into each other; `panel_columns` says how many panels stand side by side.
"""

from __future__ import annotations

import re
from typing import Any

import plotly.graph_objects as go

from nfcore.plots.training import EMA_TITLE, GRAD_NORM_TITLE
from nfcore.plots.training_spp import LOSS_TITLE
from nfcore.spec.statistics import STATISTICS

STACKED_ROW_PX = 250  # one panel's plot area in a stacked figure: a phone shows two at once
STACKED_GAP_PX = 95  # between two stacked panels: x ticks and title, then the next title
STACKED_MARGIN = {"t": 70, "l": 50, "r": 12}  # the figure title above, y tick labels left
BOTTOM_PX = 45  # under the last panel: its x ticks and axis title, before the legend
SLIDER_PX = 85  # a step slider with its current value and tick labels
LEGEND_ROW_PX = 22  # one line of a horizontal legend
LEGEND_PER_LINE = 2  # legend entries on one line of a phone's width
# The short title of every panel title the builders write (the statistics' own, and the
# training figures' longer ones), by the title's text with line breaks as spaces.
SHORT_TITLES: dict[str, str] = {
    **{row.title: row.short for row in STATISTICS},
    EMA_TITLE: "Held-out accuracy (EMA dashed)",
    GRAD_NORM_TITLE: "Gradient norm",
    LOSS_TITLE.replace("<br>", " "): "Training loss (line: step shown)",
}
TOOLBAR_PX = 30  # Plotly's toolbar, over the top of the figure
TITLE_LINE_PX = 22  # one line of the figure's title
TITLE_GAP_PX = 14  # between the title and the first panel's title
TITLE_CHAR_PX = 9  # the title's characters, on average, in px
PLOTLY_MARGIN_TOP = 100  # Plotly's defaults, where a figure sets none
PLOTLY_HEIGHT = 450
_AXIS = re.compile(r"xaxis\d*")


def panel_columns(fig: go.Figure) -> int:
    """How many panels stand side by side in the figure's widest row."""
    rows: dict[float, int] = {}
    for _, _, y_domain in panels(fig):
        rows[y_domain[1]] = rows.get(y_domain[1], 0) + 1
    return max(rows.values(), default=1)


def with_short_titles(fig: go.Figure) -> go.Figure:
    """The figure with each panel titled by its short title (Variance, not Average Channel
    Variance), on one line."""
    for note in fig.layout.annotations:
        text = re.sub(r"\s*<br>\s*", " ", str(note.text or ""))
        if text in SHORT_TITLES:
            note.text = SHORT_TITLES[text]
    return fig


def stacked(fig: go.Figure, *, row_px: int = STACKED_ROW_PX) -> go.Figure:
    """Every panel on a row of its own, in reading order (row by row, left to right), each
    under its title, with short titles; the legend, and a step slider with its Play / Pause,
    under the last panel. Annotations placed in a panel's own coordinates move with it."""
    found = panels(fig)
    count = len(found)
    plot_px = count * row_px + (count - 1) * STACKED_GAP_PX
    titles = _panel_titles(fig)
    for number, (x_name, y_name, y_domain) in enumerate(found):
        top = 1 - number * (row_px + STACKED_GAP_PX) / plot_px
        bottom = max(0.0, top - row_px / plot_px)
        x_domain = tuple(fig.layout[x_name].domain or (0, 1))
        title = titles.get((round((x_domain[0] + x_domain[1]) / 2, 3), round(y_domain[1], 3)))
        fig.layout[x_name].domain = (0, 1)
        fig.layout[y_name].domain = (bottom, top)
        if title is not None:
            title.update(x=0.5, y=top)
    below = BOTTOM_PX
    if fig.layout.sliders:
        fig.layout.sliders[0].update(x=0.0, len=1.0, y=-below / plot_px, yanchor="top")
        below += SLIDER_PX
        if fig.layout.updatemenus:  # Play / Pause, left of the title, clear of the toolbar
            fig.layout.updatemenus[0].update(
                x=0.0, xanchor="left", y=1 + 8 / plot_px, yanchor="bottom", direction="left"
            )
    entries = sum(1 for trace in fig.data if trace.showlegend is not False and trace.name)
    legend_px = LEGEND_ROW_PX * -(-entries // LEGEND_PER_LINE)
    fig.update_layout(
        height=plot_px + STACKED_MARGIN["t"] + below + legend_px + 20,
        margin={**STACKED_MARGIN, "b": below + legend_px + 20},
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -below / plot_px,
                "yanchor": "top"},
    )  # fmt: skip
    return with_short_titles(fig)


def title_under_toolbar(fig: go.Figure, width_px: int) -> go.Figure:
    """The figure's title wrapped to lines that fit `width_px`, left-aligned under the row
    of Plotly's toolbar (which sits in the top right corner over a wide title)."""
    text = str(fig.layout.title.text or "")
    if not text:
        return fig
    per_line = max(12, int(width_px / TITLE_CHAR_PX))
    lines = _wrap(re.sub(r"\s*<br>\s*", " ", text), per_line)
    old_top = fig.layout.margin.t if fig.layout.margin.t is not None else PLOTLY_MARGIN_TOP
    margin_top = max(int(old_top), TOOLBAR_PX + TITLE_LINE_PX * len(lines) + TITLE_GAP_PX)
    height = (fig.layout.height or PLOTLY_HEIGHT) + margin_top - int(old_top)
    fig.update_layout(
        height=height,
        title={"text": "<br>".join(lines), "x": 0, "xanchor": "left", "xref": "paper",
               "y": 1 - TOOLBAR_PX / height, "yref": "container", "yanchor": "top"},
        margin={"t": margin_top},
    )  # fmt: skip
    return fig


def _wrap(text: str, per_line: int) -> list[str]:
    """`text` in lines of at most `per_line` characters, broken between words."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= per_line:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _x_axes(fig: go.Figure) -> dict[str, Any]:
    spec = fig.layout.to_plotly_json()
    return {name: spec[name] for name in spec if _AXIS.fullmatch(name)}


def panels(fig: go.Figure) -> list[tuple[str, str, tuple[float, float]]]:
    """(x axis, y axis, y domain) of each panel, in reading order: the top row first, each
    row from left to right."""
    spec = fig.layout.to_plotly_json()
    found = []
    for x_name, axis in _x_axes(fig).items():
        anchor = str(axis.get("anchor") or "y")
        y_name = "yaxis" + anchor.removeprefix("y")
        y_domain = tuple(spec.get(y_name, {}).get("domain") or (0, 1))
        x_start = (axis.get("domain") or (0, 1))[0]
        found.append((-y_domain[1], x_start, x_name, y_name, y_domain))
    return [(x, y, domain) for _, _, x, y, domain in sorted(found)]


def _panel_titles(fig: go.Figure) -> dict[tuple[float, float], Any]:
    """The subplot titles (as `make_subplots` writes them: centred over their panel, at its
    top) by (x centre, top) of their panel, rounded."""
    return {
        (round(float(note.x), 3), round(float(note.y), 3)): note
        for note in fig.layout.annotations
        if note.xref == "paper" and note.yref == "paper" and note.xanchor == "center"
        and note.yanchor == "bottom" and note.showarrow is False
    }  # fmt: skip
