"""Signal Propagation Plots as Plotly figures: pure builders (result -> go.Figure) and a writer.

The CLI's `--plot` and the dashboard draw with the same builders, so a plot looks the same
wherever it is seen. Nothing here imports torch or reads files at import time.

Layout follows the paper's Figs. 1, 2 and 6-11: three panels side by side (squared channel
mean, channel variance, residual-branch variance) against the block index, black dots at the
end of each stage, several runs overlaid in one figure (Fig. 2).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from nfcore.spec.norms import NORMS
from nfcore.spec.result import SPPResult
from nfcore.spec.statistics import STATISTICS, default_panels, measured, panel_keys, statistic

# (block key, panel title) of the drawn statistics (`nfcore.spec.statistics`), in the paper's panel
# order: the forward pass in the first row; the backward pass in a second row when a run
# measured it. Read when a figure is drawn, so a statistic registered later is drawn too.
FORWARD_PANELS: tuple[tuple[str, str], ...] = tuple(
    (row.key, row.title) for row in STATISTICS if row.drawn and row.when != "gradients"
)
GRADIENT_PANELS: tuple[tuple[str, str], ...] = tuple(
    (row.key, row.title) for row in STATISTICS if row.drawn and row.when == "gradients"
)
# Mid-saturation colors stay visible on both the white and a dark dashboard template.
RUN_COLORS: tuple[str, ...] = tuple(qualitative.Plotly)
# The paper's black stage-end dots; the white outline keeps them visible on a dark background.
STAGE_END_MARKER: dict[str, Any] = {
    "color": "#333333",
    "size": 7,
    "line": {"color": "white", "width": 1},
}
ROW_HEIGHT = 500  # pixels per row of panels, interactive and exported
NARROW_ROW_HEIGHT = 300  # a phone's row: one panel, stacked
IMAGE_WIDTH = 1500  # three panels of about 500 px each
IMAGE_SCALE = 2  # sharp on high-density screens and in slides
IMAGE_FORMATS = (".png", ".svg", ".pdf")


def spp_figure(
    results: SPPResult | Sequence[SPPResult],
    *,
    log_y: bool = False,
    labels: Sequence[str] | None = None,
    title: str | None = None,
    panels: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
    narrow: bool = False,
) -> go.Figure:
    """Draw one or several SPP runs, overlaid, like the paper's Signal Propagation Plots.

    `log_y` puts the forward panels on a log scale (Fig. 6 is semilog, for exploding
    signals). Legend labels default to each run's model name; runs that would share one are
    told apart (`unique_labels`). Runs that measured gradients add a second row; gradients
    are tiny, so that row is always on a log scale. Values that overflowed float32 (stored
    as None) are left as gaps.

    `panels`: the statistic keys to draw (`nfcore.spec.statistics`), forward ones in the first
    row and gradient ones in a second, each row in the table's order; None draws the
    `drawn` statistics that the runs measured (the paper's three, and the gradient row).
    A key no run measured is a ValueError that names it and what was measured.

    `colors`: one per run (default: the palette in order), so a run can keep its colour
    while others come and go. `narrow` (a phone, about 400 px): every panel on a row of its
    own under its short title, and a short figure title.
    """
    runs = [results] if isinstance(results, SPPResult) else list(results)
    if not runs:
        raise ValueError("spp_figure needs at least one result")
    names = list(labels) if labels is not None else [run.config.label for run in runs]
    if len(names) != len(runs):
        raise ValueError(f"got {len(names)} labels for {len(runs)} results")
    names = unique_labels(runs, names)
    if colors is not None and len(colors) != len(runs):
        raise ValueError(f"got {len(colors)} colors for {len(runs)} results")
    layout = _panels(runs, panels, narrow)
    fig = _empty_figure(layout, log_y, narrow)
    for number, (run, name) in enumerate(zip(runs, names, strict=True)):
        color = colors[number] if colors is not None else RUN_COLORS[number % len(RUN_COLORS)]
        group = f"run-{number}"
        keys = set(run.block_keys())
        drawn = [panel for panel in layout if panel[0] in keys]  # (a pin may lack some)
        for position, (key, _, row, col) in enumerate(drawn):
            traces = _stat_traces(run, key, name, color, group, show_legend=position == 0)
            if key == "avg_channel_var" and _scaled(run):
                traces.append(_expected_var_trace(run, name, color, group))
            for trace in traces:
                fig.add_trace(trace, row=row, col=col)
        _mark_overflow(fig, run, color, [(r, c) for _, _, r, c in layout if r == 1 or narrow])
    fig.update_layout(title=_title(runs, names, title, narrow))
    return fig


def _scaled(run: SPPResult) -> bool:
    """A run of an NF-like norm, whose blocks have an expected variance (Section 4.5); a
    network of one's own has no norm (None)."""
    return run.config.norm in NORMS and NORMS[run.config.norm].scaled


LABEL_FIELDS_SHOWN = 2  # config fields that tell two same-named runs apart, at most
LABEL_VALUE_CHARACTERS = 40  # a field's value in a legend, at most (a module path fits)


def unique_labels(runs: Sequence[SPPResult], names: Sequence[str]) -> list[str]:
    """The legend labels, each run told apart from the others that share its label.

    torchvision's and timm's ResNet-50 are both "ResNet" (their class name), and one network
    at two resolutions is one label twice. A researcher reads best what differs, so runs that
    share a label get the config fields whose values differ among them ("ResNet
    (resolution=32)", "ResNet (resolution=64)"; at most two fields, in the config's order);
    runs whose configs are the same (two modules of one class name measured alike) are
    numbered in the order given, "ResNet", "ResNet (2)", as a file manager does. A label no
    other run has is kept as it is."""
    out = list(names)
    for name in dict.fromkeys(names):
        group = [i for i, other in enumerate(names) if other == name]
        if len(group) < 2:
            continue
        configs = [runs[i].config.model_dump(mode="json") for i in group]
        fields = [k for k in configs[0] if any(c.get(k) != configs[0][k] for c in configs[1:])]
        for i, config in zip(group, configs, strict=True):
            shown = ", ".join(f"{k}={_short(config.get(k))}" for k in fields[:LABEL_FIELDS_SHOWN])
            out[i] = f"{name} ({shown})" if shown else name
    seen: dict[str, int] = {}
    for i, label in enumerate(out):  # what is still shared: the same config, numbered
        seen[label] = seen.get(label, 0) + 1
        out[i] = label if seen[label] == 1 else f"{label} ({seen[label]})"
    return out


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    if len(text) > LABEL_VALUE_CHARACTERS:
        return text[: LABEL_VALUE_CHARACTERS - 1] + "…"
    return text


def write_figure(fig: go.Figure, path: str | Path) -> Path:
    """Save a figure, the format chosen by the suffix; returns the path written.

    HTML embeds plotly.js so the file opens offline; PNG, SVG and PDF are rendered by
    kaleido's bundled headless browser; JSON is the Plotly figure spec.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".html", ".json", *IMAGE_FORMATS):
        raise ValueError(
            f"unsupported plot format '{suffix}'; use .html, .png, .svg, .pdf or .json"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".html":
        fig.write_html(path, include_plotlyjs=True, full_html=True)
    elif suffix == ".json":
        path.write_text(fig.to_json(), encoding="utf-8")
    else:
        path.write_bytes(_image_bytes(fig, suffix.removeprefix(".")))
    return path


def _panels(
    runs: Sequence[SPPResult], chosen: Sequence[str] | None, narrow: bool = False
) -> list[tuple[str, str, int, int]]:
    """(block key, title, row, col) of every panel: the chosen statistics, or the drawn
    statistics of `nfcore.spec.statistics` that one of the runs measured; forward ones in the
    first row, gradient ones in the next."""
    extra = any(run.config.extra_stats for run in runs)
    gradients = any(run.config.gradients for run in runs)
    if chosen is None:
        keys = default_panels(extra, gradients)
    else:
        keys = panel_keys(chosen)
        if not keys:
            raise ValueError("panels: choose at least one statistic to draw")
        available = [row.key for row in measured(extra, gradients)]
        missing = [key for key in keys if key not in available]
        if missing:
            raise ValueError(
                f"panels: no run measured {', '.join(missing)} (they measured "
                f"{', '.join(available)}; Appendix G's statistics need extra_stats, the "
                "gradient ones gradients)"
            )
    rows = [statistic(key) for key in keys]
    forward = [row for row in rows if row.when != "gradients"]
    backward = [row for row in rows if row.when == "gradients"]
    if narrow:  # one column: each panel on its own row, under its short title
        return [(row.key, row.short, number, 1) for number, row in enumerate(forward + backward, 1)]
    panels = []
    for number, row_stats in enumerate([r for r in (forward, backward) if r], start=1):
        panels += [(row.key, row.title, number, col) for col, row in enumerate(row_stats, 1)]
    return panels


def _empty_figure(
    panels: list[tuple[str, str, int, int]], log_y: bool, narrow: bool = False
) -> go.Figure:
    """The panels without traces: a copy of one built once per layout (make_subplots and its
    axis updates cost tens of milliseconds, a copy one)."""
    return go.Figure(_panel_layout(tuple(panels), log_y, narrow))


@functools.cache
def _panel_layout(
    panels: tuple[tuple[str, str, int, int], ...], log_y: bool, narrow: bool = False
) -> go.Figure:
    rows = panels[-1][2]
    cols = max(col for _, _, _, col in panels)
    specs: list[list[dict | None]] = [
        [{} if any(r == row and c == col for _, _, r, c in panels) else None
         for col in range(1, cols + 1)]
        for row in range(1, rows + 1)
    ]  # fmt: skip
    titles = [
        next((text for _, text, r, c in panels if (r, c) == (row, col)), "")
        for row in range(1, rows + 1)
        for col in range(1, cols + 1)
        if specs[row - 1][col - 1] is not None
    ]
    fig = make_subplots(
        rows=rows,
        cols=cols,
        specs=specs,
        subplot_titles=titles,
        horizontal_spacing=0.06,
        vertical_spacing=(0.3 / rows if narrow else 0.22) if rows > 1 else 0.0,
    )
    for key, _, row, col in panels:
        log = log_y or statistic(key).log_axis
        fig.update_xaxes(title_text="Residual block", rangemode="tozero", row=row, col=col)
        fig.update_yaxes(
            type="log" if log else "linear",
            rangemode="normal" if log else "tozero",  # linear panels start at 0, as in the paper
            exponentformat="power",
            row=row,
            col=col,
        )
    fig.update_layout(
        template="plotly_white",
        height=(NARROW_ROW_HEIGHT if narrow else ROW_HEIGHT) * rows,
        hovermode="closest",
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.2 / rows},
        legend_traceorder="grouped",
        margin={"t": 80, "b": 110, "l": 40, "r": 10} if narrow else {"t": 120, "b": 110},
    )
    if narrow:
        fig.update_xaxes(title_text=None)  # "Residual block" once, under the last panel
        fig.update_xaxes(title_text="Residual block", row=rows, col=1)
    return fig


def _stat_traces(
    run: SPPResult, key: str, name: str, color: str, group: str, *, show_legend: bool
) -> list[go.Scatter]:
    """One statistic of one run: the curve and black dots at the stage ends. The hover names
    the block's module where it has one (a foreign network's `layer3.2`), as `nfcore blocks`
    does."""
    x = [block.index for block in run.blocks]
    y = [getattr(block, key) for block in run.blocks]
    # customdata: [stage, module name] per block ("" where the run has no names)
    place = (
        "block %{x}: %{customdata[1]}<br>" if any(b.name for b in run.blocks) else "block %{x}, "
    )
    hover = f"<b>{name}</b><br>{place}stage %{{customdata[0]}}<br>%{{y:.8g}}<extra></extra>"
    curve = go.Scatter(
        x=x,
        y=y,
        customdata=[[block.stage, block.name or ""] for block in run.blocks],
        mode="lines",
        name=name,
        line={"color": color, "width": 2},
        legendgroup=group,
        showlegend=show_legend,
        connectgaps=False,
        hovertemplate=hover,
    )
    by_index = {block.index: block for block in run.blocks}
    ends = [index for index in run.meta.stage_ends if index in by_index]
    dots = go.Scatter(
        x=ends,
        y=[getattr(by_index[index], key) for index in ends],
        customdata=[[by_index[index].stage, by_index[index].name or ""] for index in ends],
        mode="markers",
        name=f"{name}: stage ends",
        marker=STAGE_END_MARKER,
        legendgroup=group,
        showlegend=False,
        hovertemplate=hover.replace("stage %{customdata[0]}", "end of stage %{customdata[0]}"),
    )
    return [curve, dots]


def _expected_var_trace(run: SPPResult, name: str, color: str, group: str) -> go.Scatter:
    """The analytic Var(x) of an NF model, beta^2, which the measured variance should track."""
    return go.Scatter(
        x=[block.index for block in run.blocks],
        y=[block.expected_var for block in run.blocks],
        mode="lines",
        name="expected (β²)",
        line={"color": color, "width": 1.5, "dash": "dash"},
        legendgroup=group,
        connectgaps=False,
        hovertemplate=f"<b>{name}</b><br>block %{{x}}<br>expected β² = %{{y:.8g}}<extra></extra>",
    )


def _mark_overflow(
    fig: go.Figure, run: SPPResult, color: str, cells: list[tuple[int, int]]
) -> None:
    """A dotted line where the float32 signal overflowed, so the gap after it is explained;
    in each forward panel (`cells`: row and column), the words in the first."""
    block = run.meta.nonfinite_from_block
    if block is None:
        return
    line = {"color": color, "dash": "dot", "width": 1}
    note = {"annotation_text": "float32 overflow", "annotation_position": "top left"}
    for number, (row, col) in enumerate(cells):
        fig.add_vline(x=block, line=line, row=row, col=col, **(note if number == 0 else {}))


NARROW_TITLE_CHARACTERS = 40  # about what fits a phone's width at the title's size


def _title(
    runs: Sequence[SPPResult], names: Sequence[str], title: str | None, narrow: bool = False
) -> dict[str, Any]:
    if narrow:
        text = title if title is not None else (names[0] if len(runs) == 1 else "SPP")
        if len(text) > NARROW_TITLE_CHARACTERS:
            text = text[: NARROW_TITLE_CHARACTERS - 1].rstrip() + "…"
        return {"text": text, "font": {"size": 15}}
    if title is not None:
        return {"text": title}
    if len(runs) > 1:
        return {"text": "Signal Propagation Plot"}
    config = runs[0].config
    source = "N(0,1) input" if config.input == "gaussian" else "digits input"
    return {
        "text": f"Signal Propagation Plot: {names[0]}",
        "subtitle": {"text": f"{source} at {config.resolution}px, batch {config.batch}"},
    }


def _image_bytes(fig: go.Figure, image_format: str) -> bytes:
    width = fig.layout.width or IMAGE_WIDTH
    height = fig.layout.height or ROW_HEIGHT
    try:
        scope = _kaleido_scope()
    except ImportError:  # kaleido >= 1 has no scopes; plotly drives it itself
        return fig.to_image(format=image_format, width=width, height=height, scale=IMAGE_SCALE)
    return scope.transform(fig, format=image_format, width=width, height=height, scale=IMAGE_SCALE)


@functools.cache
def _kaleido_scope() -> Any:
    """One kaleido 0.2 renderer per process (it keeps a headless browser running).

    Plotly >= 7 only talks to kaleido >= 1, which needs a separately installed Chrome, so we
    drive kaleido 0.2's own bundled browser directly, pointed at the plotly.js that ships
    with the plotly package (its default would fetch plotly.js from a CDN).
    """
    from kaleido.scopes.plotly import PlotlyScope

    plotlyjs = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    return PlotlyScope(plotlyjs=str(plotlyjs))
