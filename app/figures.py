"""Pure figure builders for the dashboard: results in, `go.Figure` out, no Streamlit.

The panels themselves come from `nfcore.plots.spp.spp_figure`, the builder the CLI's `--plot`
uses, so the dashboard shows exactly what the CLI draws; here only the dashboard's theme and
the image export are added.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import plotly.graph_objects as go

from nfcore.plots.spp import spp_figure, write_figure
from nfcore.spec.result import SPPResult

LIGHT_TEMPLATE = "plotly_white"
DARK_TEMPLATE = "plotly_dark"
DARK_BACKGROUND = "rgba(0,0,0,0)"  # let the dashboard's own dark background show through


def dashboard_figure(
    results: Sequence[SPPResult],
    labels: Sequence[str],
    *,
    log_y: bool,
    dark: bool,
    title: str | None = None,
    panels: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
    narrow: bool = False,
) -> go.Figure:
    """The chosen statistics' panels, runs overlaid; by default the paper's three (and the
    gradient row when measured). `colors`: one per run; `narrow`: stacked for a phone."""
    fig = spp_figure(list(results), log_y=log_y, labels=list(labels), title=title, panels=panels,
                     colors=colors, narrow=narrow)  # fmt: skip
    return themed(fig, dark=dark)


def themed(fig: go.Figure, *, dark: bool) -> go.Figure:
    """The figure in the dashboard's light or dark theme, with readable axis labels."""
    if dark or fig.layout.template.layout.paper_bgcolor != "white":  # plotly_white is set
        fig.update_layout(template=DARK_TEMPLATE if dark else LIGHT_TEMPLATE)
    fig.update_layout(font={"size": 13})
    if dark:
        fig.update_layout(paper_bgcolor=DARK_BACKGROUND, plot_bgcolor=DARK_BACKGROUND)
    fig.update_annotations(font_size=14)  # the panel titles
    return fig


STALE_OPACITY = 0.3
STALE_NOTE = "computing the new configuration..."


def stale(fig: go.Figure) -> go.Figure:
    """The last chart, dimmed and marked, to keep on screen while the next one computes."""
    dimmed = go.Figure(fig)
    dimmed.update_traces(opacity=STALE_OPACITY)
    dimmed.add_annotation(
        text=STALE_NOTE, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
        font={"size": 18}, bgcolor="rgba(128,128,128,0.25)",
    )  # fmt: skip
    return dimmed


def image_bytes(fig: go.Figure, suffix: str = ".png") -> bytes:
    """The figure rendered as an image, in the light theme (images go into papers and slides)."""
    light = themed(go.Figure(fig), dark=False)
    light.update_layout(paper_bgcolor="white", plot_bgcolor="white")
    with tempfile.TemporaryDirectory() as folder:
        path = write_figure(light, Path(folder) / f"spp{suffix}")
        return path.read_bytes()


def html_bytes(fig: go.Figure) -> bytes:
    """A standalone interactive HTML page (plotly.js embedded: it opens offline)."""
    with tempfile.TemporaryDirectory() as folder:
        path = write_figure(themed(go.Figure(fig), dark=False), Path(folder) / "spp.html")
        return path.read_bytes()
