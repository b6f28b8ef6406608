"""Sweeps: a phase diagram of one summary statistic over a grid of two config fields.

Orchestration only: the sweep, its URL and its cells live in `app.sweeps`, the heatmap in
`app.sweep_figures`, the summaries in `nfcore.spec.summaries`. The controls make a `Sweep` (the
one state; the URL is written from it, so a link reproduces it), "Run sweep" posts it to the
API (`POST /v1/sweeps`), and a fragment polls the sweep's view every second, fetching each
finished point's result, until no point is queued or running. A link that names a sweep
runs it when opened.

Hover text is drawn by the browser (Streamlit sends no hover events to Python), so a cell's
hover carries its values and a sparkline of its variance per block; a click selects the cell
(a Streamlit selection event) and shows its whole SPP below, with a link to the Explorer.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import streamlit as st
from pydantic import ValidationError

from app import layout, problems, sweep_figures, sweeps
from app.api_client import ApiProblem, cached_limits, cached_result, get_client
from app.controls import RESOLUTIONS, WIDTHS
from app.figures import dashboard_figure, themed
from app.sweeps import Axis, BadSweep, Sweep
from nfcore.spec.activation_names import BUILTIN_ACTIVATIONS
from nfcore.spec.config import SPPConfig
from nfcore.spec.families import FAMILIES, family
from nfcore.spec.fields import describe_validation_error, field_bounds
from nfcore.spec.result import SPPResult
from nfcore.spec.summaries import SUMMARIES, summary
from nfcore.spec.variants import RESNET_LAYOUTS

POLL_SECONDS = 1.0  # between reads of the sweep's view while points are queued or running
CHART_KEY = "sweep_chart"

# Session state. The sweep of the controls is the one state, widgets are made from it under
# keys carrying the version (bumped when a change must redraw other widgets); the sweep the
# heatmap shows is the one last posted, which the controls may since have left.
SWEEP_KEY = "sweep_spec"
VERSION_KEY = "sweep_version"
ERROR_KEY = "sweep_error"  # why a control's change or the link was refused
PROBLEM_KEY = "sweep_problem"  # why the API refused the last Run
SHOWN_KEY = "sweep_shown"  # (Sweep, sweep id) last posted
VIEW_KEY = "sweep_view"  # the sweep's view as last read
SELECTED_KEY = "sweep_selected"  # the clicked point's (x, y) values
AUTORUN_KEY = "sweep_autorun"  # the link named a sweep: run it once

BASE_HELP = (
    "The fields every point shares. Any Explorer link opened at /sweeps instead of / "
    "starts from that link's configuration."
)


@problems.guarded
def render() -> None:
    """The whole page; an API failure is shown as its sentence, never as a traceback."""
    _init_state()
    layout.page_title("Sweeps")
    st.caption(
        "A phase diagram: one number per Signal Propagation Plot over a grid of two config "
        "fields, e.g. alpha by depth (Section 4), gamma by activation (Section 4.2) or the S+E "
        "gain by depth (Section 4.4). Cells fill in as the jobs finish; hover a cell for its "
        "variance per block, click it for its SPP."
    )
    _base_controls()
    _axis_controls()
    sweep = _sweep()
    wanted = sweeps.encode_sweep(sweep)
    if st.query_params.to_dict() != wanted:
        st.query_params.from_dict(wanted)
    shown = st.session_state.get(SHOWN_KEY)
    if shown is not None and shown[0].request() != sweep.request():
        st.info("The controls differ from the sweep shown: **Run sweep** computes the new grid.")
    if shown is None:
        st.info("Choose two fields and their values, then **Run sweep**.")
        return
    active = not sweeps.ended(st.session_state[VIEW_KEY])
    st.fragment(problems.guarded(_live), run_every=POLL_SECONDS if active else None)()


def _sweep() -> Sweep:
    return st.session_state[SWEEP_KEY]


def _key(name: str) -> str:
    return f"sw_{name}@{st.session_state[VERSION_KEY]}"


# --- state ------------------------------------------------------------------------------------
def _init_state() -> None:
    """Once per session: the sweep from the link (run at once when it names one)."""
    if SWEEP_KEY in st.session_state:
        return
    query = st.query_params.to_dict()
    # A part of the link that is not valid is left out, with a sentence each; the others stay.
    sweep, notes = sweeps.read_sweep_link(query)
    if notes:
        st.session_state[ERROR_KEY] = "\n\n".join(notes)
    st.session_state[SWEEP_KEY] = sweep
    st.session_state[VERSION_KEY] = 0
    st.session_state[AUTORUN_KEY] = sweeps.has_sweep(query) and ERROR_KEY not in st.session_state


def _set(sweep: Sweep, *, redraw: bool) -> None:
    st.session_state[SWEEP_KEY] = sweep
    st.session_state.pop(ERROR_KEY, None)
    if redraw:
        st.session_state[VERSION_KEY] += 1


def _refuse(message: str) -> None:
    """Keep the sweep, say why, and make the widgets afresh so they show it again."""
    st.session_state[ERROR_KEY] = message
    st.session_state[VERSION_KEY] += 1


# --- the base configuration (sidebar) ---------------------------------------------------------
def _base_controls() -> None:
    base = _sweep().base
    row = family(base.family)
    with layout.controls():
        st.header("Base configuration", help=BASE_HELP)
        _base_widget(st.selectbox, "Family", "family", options=tuple(FAMILIES),
                     format_func=lambda name: FAMILIES[name].title)  # fmt: skip
        if row.sized_by == "depth":
            depths = _with(tuple(RESNET_LAYOUTS), base.depth)
            _base_widget(st.selectbox, "Depth", "depth", options=depths)
        else:
            _base_widget(st.selectbox, "Variant", "variant", options=tuple(row.variants))
        _base_widget(st.selectbox, "Normalization", "norm", options=row.norms)
        _base_widget(st.selectbox, "Activation", "activation",
                     options=_with(BUILTIN_ACTIVATIONS, base.activation))  # fmt: skip
        _base_widget(st.selectbox, "Width multiplier", "width", options=_with(WIDTHS, base.width))
        _base_widget(st.selectbox, "Resolution (px)", "resolution",
                     options=_with(RESOLUTIONS, base.resolution))  # fmt: skip
        for name, label in (("batch", "Batch"), ("seed", "Seed")):
            bounds = field_bounds(SPPConfig, name)
            _base_widget(st.number_input, label, name, min_value=bounds.low,
                         max_value=bounds.high, step=1)  # fmt: skip
        st.caption(f"Base: {base.label}, width {base.width:g}, {base.resolution} px, "
                   f"batch {base.batch}.")  # fmt: skip


def _with(options: tuple, value: Any) -> tuple:
    return options if value in options else (*options, value)


def _base_widget(kind: Any, label: str, name: str, **kwargs: Any) -> None:
    value = getattr(_sweep().base, name)
    if kind is st.selectbox:
        kwargs["index"] = list(kwargs["options"]).index(value)
    else:
        kwargs["value"] = value
    kind(label, key=_key(name), on_change=_on_base_change, args=(name,), **kwargs)


def _on_base_change(name: str) -> None:
    sweep = _sweep()
    value = st.session_state[_key(name)]
    if isinstance(value, float):
        value = round(value, 6)
    try:
        base = sweep.base.edited({name: value})
    except ValidationError as error:
        _refuse(describe_validation_error(error))
        return
    _set(replace(sweep, base=base), redraw=True)  # a family or norm brings other defaults


# --- the axes, the statistic and Run ----------------------------------------------------------
def _axis_controls() -> None:
    sweep = _sweep()
    fields = tuple(sweeps.SWEEP_FIELDS)
    columns = st.columns([2, 3, 2, 3])
    for column, name, axis in ((columns[0], "x", sweep.x), (columns[2], "y", sweep.y)):
        column.selectbox(f"{name.upper()} axis", fields, index=fields.index(axis.field),
                         format_func=lambda f: sweeps.SWEEP_FIELDS[f].label, key=_key(name),
                         on_change=_on_field_change, args=(name,))  # fmt: skip
    for column, name, axis in ((columns[1], "xs", sweep.x), (columns[3], "ys", sweep.y)):
        column.text_input(f"{axis.label} values", sweeps.format_values(axis.values),
                          key=_key(name), on_change=_on_values_change, args=(name,),
                          help="Comma-separated, e.g. 0.1, 0.2, 0.5.")  # fmt: skip
    stat, run, note = st.columns([4, 2, 4], vertical_alignment="bottom")
    keys = [row.key for row in SUMMARIES]
    stat.selectbox("Statistic", keys, index=keys.index(sweep.statistic), key=_key("stat"),
                   format_func=lambda key: summary(key).title, on_change=_on_stat_change,
                   help=" ".join(f"**{row.title}**: {row.description}" for row in SUMMARIES))  # fmt: skip
    limit = _max_points()
    clicked = run.button("Run sweep", type="primary", icon=":material/grid_on:", width="stretch",
                         help="Submit one SPP job per point; points computed before come "
                         "back at once.")  # fmt: skip
    note.caption(f"{sweep.size} points" + (f" (the API allows {limit})" if limit else ""))
    if message := st.session_state.get(ERROR_KEY):
        st.error(message)
    if clicked or st.session_state.get(AUTORUN_KEY):
        _submit(sweep, limit)
        # Only once it is submitted: the page's first run may be cut short by a rerun (the
        # width measured in the browser), and the link's sweep must still run (submitting the
        # same points twice finds the same jobs).
        st.session_state.pop(AUTORUN_KEY, None)
    if problem := st.session_state.get(PROBLEM_KEY):
        st.error(problem)


def _on_field_change(axis_name: str) -> None:
    """A new field on an axis brings that field's usual values."""
    sweep = _sweep()
    name = st.session_state[_key(axis_name)]
    axis = Axis(name, sweeps.SWEEP_FIELDS[name].defaults)
    try:
        new = replace(sweep, **{axis_name: axis})
    except BadSweep as problem:
        _refuse(str(problem))
        return
    _set(new, redraw=True)


def _on_values_change(values_name: str) -> None:
    sweep = _sweep()
    axis_name = values_name[0]
    axis: Axis = getattr(sweep, axis_name)
    try:
        values = sweeps.parse_values(axis.field, st.session_state[_key(values_name)])
    except BadSweep as problem:
        _refuse(str(problem))
        return
    _set(replace(sweep, **{axis_name: Axis(axis.field, values)}), redraw=False)


def _on_stat_change() -> None:
    _set(replace(_sweep(), statistic=st.session_state[_key("stat")]), redraw=False)


def _max_points() -> int | None:
    try:
        return int(cached_limits()["max_sweep_points"])
    except (ApiProblem, KeyError, TypeError, ValueError):
        return None  # an older or unreachable API: its answer to the POST says


def _submit(sweep: Sweep, limit: int | None) -> None:
    """Post the sweep; a refusal (the grid limit, a bad point, a point too costly) is kept
    next to the controls, and nothing of the sweep is queued."""
    st.session_state.pop(PROBLEM_KEY, None)
    if limit is not None and sweep.size > limit:
        st.session_state[PROBLEM_KEY] = (
            f"{sweep.size} points is over the API's limit of {limit} (MAX_SWEEP_POINTS): "
            "give fewer values."
        )
        return
    try:
        view = get_client().submit_sweep(sweep.request())
    except ApiProblem as problem:
        refused = problem.status == 422
        text = f"The API refused the sweep: {problem.message}" if refused else problem.message
        st.session_state[PROBLEM_KEY] = text
        return
    st.session_state[SHOWN_KEY] = (sweep, view["id"])
    st.session_state[VIEW_KEY] = view
    st.session_state.pop(SELECTED_KEY, None)


# --- the heatmap, filling in ------------------------------------------------------------------
def _live() -> None:
    """Read the sweep's view and the finished results, then draw (reruns every second while
    points are queued or running)."""
    posted, sweep_id = st.session_state[SHOWN_KEY]
    view = st.session_state[VIEW_KEY]
    polling = not sweeps.ended(view)
    try:
        if polling:
            view = st.session_state[VIEW_KEY] = get_client().sweep(sweep_id)
        results = _results(posted, view)
    except ApiProblem as problem:
        if problem.status == 404:
            st.session_state.pop(SHOWN_KEY, None)  # expired: the next Run posts it anew
        problems.show(problem)
        return
    sweep = replace(posted, statistic=_sweep().statistic)
    cells = sweeps.grid_cells(sweep, view, results)
    _progress(view)
    row = summary(sweep.statistic)
    selected = st.session_state.get(SELECTED_KEY)
    fig = sweep_figures.heatmap_figure(sweep, cells, row, selected=selected)
    st.plotly_chart(themed(layout.fit(fig), dark=_dark()), theme=None, key=CHART_KEY, on_select=_on_select,
                    selection_mode="points")  # fmt: skip
    if sweeps.ended(view):
        st.download_button("CSV", sweeps.csv_text(sweep, cells), f"sweep-{sweep_id[:12]}.csv",
                           "text/csv", on_click="ignore", icon=":material/download:",
                           help="One row per point: the two fields, the statistic, the job.")  # fmt: skip
    _selected_point(cells, results, selected)
    if polling and sweeps.ended(view):
        st.rerun()  # all ended: rerun the page, which stops polling


def _results(sweep: Sweep, view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The finished points' results (cached: each is fetched once); an expired one is left out."""
    results = {}
    for job_id in sweeps.finished_ids(sweep, view):
        try:
            results[job_id] = cached_result(job_id)
        except ApiProblem as problem:
            if problem.status not in (404, 409, 410):
                raise
    return results


def _progress(view: dict[str, Any]) -> None:
    states = view.get("states", {})
    size = view.get("size") or 1
    ended = sum(states.get(s, 0) for s in ("finished", "failed", "canceled"))
    parts = [f"{count} {state}" for state, count in states.items() if count]
    text = f"{ended} of {size} points ended: " + ", ".join(parts)
    if ended < size:
        st.progress(ended / size, text=text)
    else:
        st.caption(text)


def _on_select() -> None:
    """A click on a cell: remember its point (the figure is rebuilt as cells fill in, which
    resets the chart's own selection)."""
    event = st.session_state.get(CHART_KEY)
    points = (event or {}).get("selection", {}).get("points", [])
    sweep = st.session_state[SHOWN_KEY][0]
    if not points:
        st.session_state.pop(SELECTED_KEY, None)
        return
    ix, iy = points[0]["customdata"]
    st.session_state[SELECTED_KEY] = (sweep.x.values[int(ix)], sweep.y.values[int(iy)])


def _selected_point(
    cells: list[sweeps.Cell], results: dict[str, dict[str, Any]], selected: Any
) -> None:
    cell = next((c for c in cells if selected is not None and (c.x, c.y) == tuple(selected)), None)
    if cell is None:
        st.caption("Click a cell to see its Signal Propagation Plot here.")
        return
    result = results.get(cell.job_id or "")
    if result is None:
        st.info(f"{cell.label or 'This point'}: {sweep_figures.cell_word(cell)}; its SPP "
                "appears once it has finished.")  # fmt: skip
        return
    spp = SPPResult.model_validate(result)
    left, right = st.columns([4, 1], vertical_alignment="center")
    left.subheader(spp.config.label)
    right.link_button("Open in the Explorer", sweeps.explorer_link(spp.config),
                      icon=":material/open_in_new:", width="stretch")  # fmt: skip
    variances = [b.avg_channel_var for b in spp.blocks if b.avg_channel_var]
    log_y = bool(variances) and max(variances) / min(variances) > sweep_figures.LOG_SPAN
    fig = dashboard_figure([spp], [spp.config.label], log_y=log_y, dark=_dark(),
                           narrow=layout.narrow())  # fmt: skip
    fig = fig if layout.narrow() else layout.fit(fig)
    st.plotly_chart(fig, theme=None, key="sweep_point_spp")


def _dark() -> bool:
    return layout.dark()


if __name__ == "__main__":
    render()
