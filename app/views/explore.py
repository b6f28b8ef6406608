"""The explorer: controls -> config -> API -> Signal Propagation Plot, with presets and pins.

Orchestration only: the widgets live in `app.controls`, the API calls in `app.api_client`
and `app.runs`, the figures in `app.figures` (over `nfcore.plots.spp`).
"""

from __future__ import annotations

import json
import time
from typing import Any

import streamlit as st

import nfcore
from app import controls, exports, figures, layout, problems, runs, trace, urlstate
from app.api_client import ApiProblem, cached_csv
from app.settings import get_settings
from nfcore.plots.spp import RUN_COLORS
from nfcore.spec.config import SPPConfig, config_hash
from nfcore.spec.presets import PRESETS, Preset, get_preset
from nfcore.spec.result import SPPResult

PIN_NOTICE = "pin_notice"  # session key: why a pin from the link was dropped
FIGURE_KEY = "figure"  # session key: the last chart drawn (kept on screen, dimmed, meanwhile)
FIGURES_KEY = "figures"  # session key: recently drawn charts, by what they show
FIGURES_KEPT = 16  # a few hundred kB: a chart is about 15 kB of JSON
CURRENT_KEY = "current_job"  # session key: the id of the job of the config asked for last


@problems.guarded
def render() -> None:
    """The whole page; an API failure is shown as its sentence, never as a traceback."""
    trace.start()
    controls.init_state()
    controls.sidebar_controls()
    active_preset()  # forget a preset the controls moved away from, before writing the URL
    controls.sync_query()
    layout.page_title("Signal propagation explorer")
    st.caption(
        "Signal Propagation Plots (Brock, De & Smith 2021, Section 3): per residual block, the "
        "squared channel mean, the channel variance and the residual branch's variance at "
        "initialization, for a random input batch."
    )
    controls.page_messages()
    _preset_buttons()
    try:
        _body()
    except ApiProblem as problem:
        problems.show(problem)
    trace.mark("end")


def active_preset() -> Preset | None:
    """The chosen paper figure, while the controls still show one of its runs."""
    preset_id = st.session_state.get("preset")
    if not preset_id:
        return None
    try:
        preset = get_preset(preset_id)
    except KeyError:
        return None
    config = controls.current_config()
    if any(run.config == config for run in preset.runs_with(config.padding)):
        return preset  # the figure, or its border-free view
    st.session_state["preset"] = None  # the controls moved away from the figure
    return None


def _preset_buttons() -> None:
    chosen = active_preset()
    if layout.narrow():  # eight buttons would fill a phone's first screen
        ids = [None, *(preset.id for preset in PRESETS)]
        st.selectbox(
            "Paper figure", ids, index=ids.index(chosen.id if chosen else None),
            format_func=lambda i: "none" if i is None else f"Fig. {get_preset(i).figure}: {get_preset(i).title}",
            key=f"preset_menu@{st.session_state.get(controls.VERSION_KEY, 0)}",
            on_change=_on_preset_menu,
        )  # fmt: skip
        return
    columns = st.columns(len(PRESETS))
    for column, preset in zip(columns, PRESETS, strict=True):
        column.button(
            f"Fig. {preset.figure}",
            key=f"preset_{preset.id}",
            help=preset.title,
            type="primary" if chosen is preset else "secondary",
            on_click=_apply_preset,
            args=(preset.id,),
            width="stretch",
        )


def _on_preset_menu() -> None:
    chosen = st.session_state[f"preset_menu@{st.session_state.get(controls.VERSION_KEY, 0)}"]
    if chosen is not None:
        _apply_preset(chosen)


def _apply_preset(preset_id: str) -> None:
    preset = get_preset(preset_id)
    controls.set_config(preset.runs[0].config, preset=preset.id, log_y=preset.log_y)
    controls.clear_messages()


def _body() -> None:
    preset = active_preset()
    config = controls.current_config()
    if preset is not None:
        wanted = [(r.label, r.config) for r in preset.runs_with(config.padding)]
    else:
        wanted = [(config.label, config)]
    shown = _submit(wanted, config)
    trace.mark("answered")
    pinned = _pinned_runs({run.job_id for run in shown})
    if preset is not None:
        _preset_text(preset)  # above the chart, which keeps the column's whole width
    shown = _follow(shown, wanted, pinned, preset)
    current = next(run for run, (_, c) in zip(shown, wanted, strict=True) if c == config)
    finished = current.result is not None
    if finished:
        _exports(current, shown + pinned)
    _compare(current if finished else None)


def _submit(wanted: list[tuple[str, SPPConfig]], config: SPPConfig) -> list[runs.Run]:
    """The runs to draw, submitted (or followed). The current run replaces the one shown
    before, so a slider dragged across many values leaves no backlog of stale jobs.

    The current job is noted, by its id (the hash of the config), before anything is asked
    of the API: a newer widget change starts the next run while this one may still wait for
    its answer, and that run must know which job it replaces. What is given back is this
    session's claim on that job (`runs` keeps the claim each answer brought), so a slider
    never cancels a job for anyone else."""
    settings = get_settings()
    previous = st.session_state.get(CURRENT_KEY)
    st.session_state[CURRENT_KEY] = config_hash(config, nfcore.__version__)
    shown = []
    for label, run_config in wanted:
        replaces = previous if run_config == config else None
        shown.append(
            runs.track(label, run_config, wait=settings.app_submit_wait_seconds, replaces=replaces)
        )
    return shown


def _follow(
    shown: list[runs.Run],
    wanted: list[tuple[str, SPPConfig]],
    pinned: list[runs.Run],
    preset: Preset | None,
) -> list[runs.Run]:
    """Progress while jobs run, then the chart: in this one script run, without sleeping.

    Until the results are in, the last chart stays on screen, dimmed; the API answers each
    wait as soon as a job ends. A newer widget change interrupts this run at its next update.
    """
    # One container for the progress rows, present in every run, so that the chart keeps its
    # place on the page: the browser then updates the chart instead of drawing a new one.
    with st.container():
        status = _status(shown + pinned, wanted)  # pins computed again have a row too
    # The chart's place holds a chart from the start (the last one, dimmed, while jobs run):
    # an `st.empty()` there would first blank it, and the browser draw it again from scratch.
    chart: Any = None
    if any(run.pending for run in shown + pinned):
        previous = st.session_state.get(FIGURE_KEY)
        if previous is not None:
            chart = st.plotly_chart(figures.stale(previous), theme=None)
        else:
            chart = st.empty()
            chart.info("The plot appears when the first run has finished.")
    settings = get_settings()
    deadline = time.monotonic() + settings.app_follow_seconds
    while settings.app_follow_seconds > 0 and any(run.pending for run in shown + pinned):
        if time.monotonic() >= deadline:
            st.rerun()  # a long job: follow it in a fresh run, so no run lasts forever
        followed = [runs.await_run(run, settings.app_poll_seconds) for run in shown + pinned]
        shown, pinned[:] = followed[: len(shown)], followed[len(shown) :]
        for run, rows in zip(shown + pinned, status, strict=True):
            if rows is None:
                continue
            row, bar = rows
            if run.pending:
                done, total = run.progress
                bar.progress(done / total if total else 0.0, text=_progress_text(run))
            else:
                row.empty()
    trace.mark("results")
    _plot(chart if chart is not None else st, shown + pinned, preset)
    _problems(shown, wanted)
    return shown


def _preset_text(preset: Preset) -> None:
    """The figure's finding beside what the paper and this page compute, over the chart."""
    finding, setting = (st.container(), st.container()) if layout.narrow() else st.columns([3, 2])
    finding.subheader(f"Fig. {preset.figure}")
    finding.markdown(f"**{preset.title}**")
    finding.write(preset.caption)
    setting.info(f"**Paper:** {preset.paper_setting}\n\n**Here:** {preset.scaled_setting}")
    setting.caption(f"**The border:** {preset.border}")
    with setting:
        _border_button(preset)


def _border_button(preset: Preset) -> None:
    border_free = controls.current_config().padding == "circular"
    st.button(
        "Show the zero border (the paper's)" if border_free else "Remove the border effect",
        key="preset_border",
        help="Every run of the figure with circular padding or, again, zeros: the sidebar's "
        "'Remove the border effect' toggle.",
        on_click=_set_border,
        args=(preset.id, "zeros" if border_free else "circular"),
        width="stretch",
    )


def _set_border(preset_id: str, padding: str) -> None:
    """The figure with this border: the same state the sidebar toggle edits."""
    config = controls.current_config()
    bordered = config.edited({"padding": padding})
    controls.set_config(bordered, preset=preset_id)


def _progress_text(run: runs.Run) -> str:
    done, total = run.progress
    state = run.job["state"] if run.job else "queued"
    return f"{run.label}: {state}, {done}/{total} blocks{runs.progress_words(run.job)}"


def _status(shown: list[runs.Run], wanted: list[tuple[str, SPPConfig]]) -> list[Any]:
    """A progress bar (with Cancel) per pending run, to update while it computes."""
    bars: list[Any] = []
    for run in shown:
        if not run.pending:
            bars.append(None)
            continue
        done, total = run.progress
        row = st.empty()  # the whole row goes once the run is done
        with row.container():
            bar, button = st.columns([5, 1])
            slot = bar.empty()
            slot.progress(done / total if total else 0.0, text=_progress_text(run))
            if button.button("Cancel", key=f"cancel_{run.job_id}") and run.job_id:
                runs.cancel(run.job_id)
                st.rerun()
        bars.append((row, slot))
    return bars


def _problems(shown: list[runs.Run], wanted: list[tuple[str, SPPConfig]]) -> None:
    """Failed or canceled runs, each with Run again."""
    for run, (_, config) in zip(shown, wanted, strict=True):
        if run.problem:
            message, button = st.columns([5, 1])
            message.warning(f"{run.label}: {run.problem}")
            if button.button("Run again", key=f"again_{run.job_id}"):
                runs.forget(config)
                st.rerun()


def _plot(chart: Any, all_runs: list[runs.Run], preset: Preset | None) -> None:
    """The chart of the finished runs, drawn with `chart` (a placeholder, or `st` itself)."""
    finished = [run for run in all_runs if run.result is not None]
    if not finished:
        chart.info("The plot appears when the first run has finished.")
        return
    labels = _unique([run.label for run in finished])
    colors = [_color(run, all_runs) for run in finished]
    narrow = layout.narrow()
    dark = layout.dark()
    title = preset.title if preset else None
    results = [run.result for run in finished if run.result is not None]
    panels = _drawable(controls.panels(), results)
    key = (tuple(run.job_id for run in finished), tuple(labels), controls.log_y(), dark, title,
           panels, tuple(colors), narrow, layout.width())  # fmt: skip
    built: dict = st.session_state.setdefault(FIGURES_KEY, {})
    fig = built.pop(key, None)  # a config shown a moment ago: its chart is not built again
    if fig is None:
        fig = figures.dashboard_figure(results, labels, log_y=key[2], dark=dark, title=title,
                                       panels=panels, colors=colors, narrow=narrow)  # fmt: skip
        if not narrow:  # stacked by its builder when narrow; short titles if panels crowd
            fig = layout.fit(fig)
    built[key] = fig
    while len(built) > FIGURES_KEPT:
        built.pop(next(iter(built)))  # the least recently shown
    st.session_state[FIGURE_KEY] = fig
    trace.mark("figure")
    chart.plotly_chart(fig, theme=None)
    trace.mark("sent")


def _color(run: runs.Run, all_runs: list[runs.Run]) -> str:
    """A run's colour, whichever others are drawn: the current (or a figure's) runs take the
    palette from its start, in their order; a pin takes it from the end, by its place among
    the pins, so it keeps its colour while the current run changes or computes."""
    pins = st.session_state.get("pins", [])
    if run.label.startswith("pinned: ") and run.job_id in pins:
        return RUN_COLORS[-(1 + pins.index(run.job_id)) % len(RUN_COLORS)]
    return RUN_COLORS[all_runs.index(run) % len(RUN_COLORS)]


def _drawable(panels: tuple[str, ...] | None, results: list[SPPResult]) -> tuple[str, ...] | None:
    """The chosen panels that a finished run measured (the current run, which measures them
    all, may still be computing while pins are drawn); None: the default panels."""
    if panels is None:
        return None
    keys = {key for result in results for key in result.block_keys()}
    return tuple(key for key in panels if key in keys) or None


def _unique(labels: list[str]) -> list[str]:
    """Legend labels, numbered where two runs would otherwise share a name."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label} ({seen[label]})")
    return out


def _exports(current: runs.Run, overlaid: list[runs.Run]) -> None:
    """Downloads of what is shown: the results' JSON and CSV (every run of an overlay, with
    its label and config), and the figure as PNG and HTML, named after what they hold."""
    assert current.result is not None and current.job_id is not None
    finished = [run for run in overlaid if run.result is not None and run.job_id is not None]
    labels = [run.label for run in finished]
    preset = active_preset()
    name = exports.file_stem(labels, preset.id if preset else None)
    fig = st.session_state[FIGURE_KEY]
    results = [run.result.to_json_dict() for run in finished if run.result is not None]
    payload = results[0] if len(results) == 1 else results
    if len(finished) > 1:
        table = exports.overlay_csv([r.result for r in finished if r.result is not None], labels,
                                    [str(r.job_id) for r in finished])  # fmt: skip
    else:
        table = cached_csv(current.job_id)
    columns = st.columns(4)
    columns[0].download_button("JSON", json.dumps(payload, indent=1), f"{name}.json",
                               "application/json", help="The result(s) of the plot, as the API "
                               "returns them.", on_click="ignore", width="stretch")  # fmt: skip
    columns[1].download_button("CSV", table, f"{name}.csv", "text/csv",
                               help="One row per block of every run shown (with its label, job "
                               "id and config when there are several), with every statistic it "
                               "measured (the panels choose what is drawn).",
                               on_click="ignore",
                               width="stretch")  # fmt: skip
    columns[2].download_button("PNG", lambda: figures.image_bytes(fig), f"{name}.png",
                               "image/png", help="The figure, rendered at 2x.",
                               on_click="ignore", width="stretch")  # fmt: skip
    columns[3].download_button("HTML", lambda: figures.html_bytes(fig), f"{name}.html",
                               "text/html", help="The interactive figure, opens offline.",
                               on_click="ignore", width="stretch")  # fmt: skip


def _pinned_runs(exclude: set[str | None]) -> list[runs.Run]:
    """The pinned runs not already drawn. A pin carries its run's config (`urlstate.Pin`): a
    result the API no longer has is computed again (the same config is the same job, so the
    same numbers), and followed while it computes. An old link's pin names only a job id:
    once its result expired it is reported and dropped, as is a pin the link garbled."""
    notices = []
    pinned = []
    for pin in list(st.session_state.get("pins", [])):
        if pin in exclude:
            continue
        run, why = _pinned_run(pin)
        if run is None:
            notices.append(why)
            st.session_state["pins"].remove(pin)
            continue
        pinned.append(run)
    if notices:
        # Kept in the session so the notice outlives the reruns that poll running jobs.
        st.session_state[PIN_NOTICE] = " ".join(notices)
        controls.sync_query()  # the URL must not keep offering the dropped pins
    return pinned


def _pinned_run(pin: str) -> tuple[runs.Run | None, str]:
    """A pin's run (finished, or computing again), or None and the sentence saying why not."""
    if problem := getattr(pin, "problem", None):
        return None, problem
    config = getattr(pin, "config", None)
    if config is not None:
        try:
            run = runs.track(f"pinned: {config.label}", config)  # submitted once per session
        except ApiProblem as problem:
            if problem.status is None or problem.status >= 500:
                raise  # the API is down: the page says so
            why = f"was refused by the API ({problem.message})"
            return None, f"Pinned run {config.label} {why}; it was unpinned."
        if run.problem:
            why = f"could not be computed again ({run.problem})"
            return None, f"Pinned run {config.label} {why}; it was unpinned."
        return run, ""
    try:
        run = runs.follow(f"pin {pin[:8]}", pin)
        why = "is no longer available"
    except ValueError:  # its result is no SPP's (a link naming a training run's job)
        run, why = None, "is not an SPP (a training run?)"
    if run is None or run.result is None:
        return None, f"Pinned run {pin[:12]} {why}; it was unpinned."
    return runs.Run(f"pinned: {run.result.config.label}", pin, result=run.result), ""


def _compare(current: runs.Run | None) -> None:
    """Pin the current run to overlay it on later ones; pins live in the URL (`pins=`)."""
    pins: list[str] = st.session_state.setdefault("pins", [])
    if notice := st.session_state.get(PIN_NOTICE):
        st.warning(notice)
    left, right, info = st.columns([1, 1, 3])
    can_pin = current is not None and current.job_id not in pins
    if left.button("Pin this run", icon=":material/push_pin:", disabled=not can_pin, width="stretch",
                   help="Keep this run in the plot while you change the controls."):  # fmt: skip
        assert current is not None and current.job_id is not None and current.result is not None
        config = current.result.config
        pin = urlstate.Pin.of(config, current.job_id) if isinstance(config, SPPConfig) else None
        pins.append(pin or current.job_id)  # the config travels in the URL, so the link lasts
        st.session_state.pop(PIN_NOTICE, None)
        st.rerun()
    if right.button("Clear pins", disabled=not pins, width="stretch"):
        pins.clear()
        st.session_state.pop(PIN_NOTICE, None)
        st.rerun()
    info.caption(f"{len(pins)} pinned run(s); the URL carries their configurations, so a shared "
                 "link shows them, computed again if the results have expired.")  # fmt: skip


if __name__ == "__main__":
    render()
