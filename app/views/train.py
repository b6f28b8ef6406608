"""Train: short training runs side by side, with live curves and the SPPs while they learn.

Orchestration only: the runs table and the shared settings live in `app.train_controls`,
planning, submitting and polling the runs in `app.train_runs`, the figures in
`nfcore.plots.training` and `nfcore.plots.training_spp`. "Start" validates every row as a
`TrainConfig`, then submits one job per run. While any run is active a fragment polls each
job's events every second and redraws the curves; a finished run is drawn from its result.
The runs are also kept in the URL, as job ids (`jobs=`) and as configs (`runs=`,
`app.urlstate.encode_train_runs`), so a reload follows the same runs, the table and settings
come back from their configs, and a link opened after the results expired trains them again
(the same configs and seeds: the same curves).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import streamlit as st

from app import layout, problems, train_controls, train_runs, urlstate
from app.api_client import ApiProblem, cached_readiness
from app.figures import themed
from app.runs import silence_words
from app.train_runs import PlannedRun, TrainRun
from nfcore.plots.training import spp_snapshot_figures, training_figure
from nfcore.plots.training_spp import spp_over_training_figure
from nfcore.spec.train_presets import DEFAULT_PRESET, TRAIN_PRESETS, get_train_preset

SIDE_BY_SIDE_RUNS = 2  # before/after SPPs side by side up to this many runs, else stacked
POLL_SECONDS = 1.0  # between polls of the events while a run is active
TRAIN_QUEUE = "train"  # /readyz's name of the training queue (contract/ is not in the app image)
MAX_SMOOTHING = 0.99  # of the loss curve's EMA: 0.99 averages over about 100 steps
# Small-batch losses jump from step to step; TensorBoard's default weight shows their trend,
# the raw curve faint behind it.
DEFAULT_SMOOTHING = 0.6
# The paper's Table 2 (ResNet-50 on ImageNet, 15 epochs, median of 5 seeds), beside this
# machine's numbers.
PAPER_TABLE2 = (
    "The paper's Table 2 (ResNet-50 on ImageNet, 15 epochs, median of 5 seeds): NF-ResNet "
    "69.9%, 69.6% and 69.9%, BN-ResNet 70.9%, 65.7% and 55.7% at batch 1024, 8 and 4."
)
# The preset buttons: their label and help, by preset id.
PRESET_BUTTONS = {
    "bn-vs-nf": ("BN vs NF", "The default runs: BN-ResNet-26 and NF-ResNet-26 at batch 32."),
    "table2": ("Table 2: small batches",
               "BN- and NF-ResNet-26 at batch 64, 8 and 4 (lr 0.05, 0.025, 0.01), 200 steps each."),
    "quick": ("Quick check",
              "BN- and NF-ResNet-14, tiny, 20 steps: a smoke test of the whole stack."),
}  # fmt: skip

# Session state (the table and settings: see app.train_controls).
RUNS_KEY = "train_runs"  # the followed runs, a list of TrainRun
NOTICE_KEY = "train_notice"  # why Start did not submit everything, shown until the next Start
RESTORE_KEY = "train_restore"  # job ids from the URL, followed on the first run


@problems.guarded
def render() -> None:
    """The whole page; an API failure is shown as its sentence, never as a traceback."""
    _init_state()
    layout.page_title("Train")
    st.caption(
        "Short training runs of BN- and NF-ResNets with the paper's recipe scaled down (SGD "
        "with Nesterov momentum, warm-up and cosine decay, label smoothing). The curves update "
        "while the runs train, and the Signal Propagation Plots measured along the way can be "
        "scrubbed through step by step, so you can watch each network's signal change as it "
        "learns."
    )
    try:
        _restore()
    except ApiProblem as problem:
        problems.show(problem)
    _preset_buttons()
    rows = train_controls.runs_table()
    settings = train_controls.settings_controls()
    planned = train_runs.plan(rows, settings)
    _preset_caption(planned)
    _actions(planned)
    runs = _runs()
    _link(runs)
    active = any(run.active for run in runs)
    st.fragment(problems.guarded(_live), run_every=POLL_SECONDS if active else None)()


def _runs() -> list[TrainRun]:
    return st.session_state.get(RUNS_KEY) or []


# --- state ------------------------------------------------------------------------------------
def _link(runs: Sequence[TrainRun]) -> None:
    """Keep the runs in the URL: their job ids (`jobs=`) and their configs (`runs=`, with any
    label of the user's), so a link opened after the results expired trains them again."""
    job_ids = ",".join(run.job_id for run in runs if run.job_id)
    if not job_ids:
        return
    wanted = {"jobs": job_ids}
    if (carried := train_runs.link_labels(runs)) is not None:
        wanted["runs"] = urlstate.encode_train_runs(*carried)
    for key, value in wanted.items():
        if st.query_params.get(key) != value:
            st.query_params[key] = value  # back from another page, which set its own URL


def _init_state() -> None:
    """Once per session: the default runs (or `?preset=`) and the runs of the link: its
    configs (`?runs=`), else the jobs it names (`?jobs=`, an older link)."""
    if train_controls.initialized():
        return
    query = st.query_params.to_dict()
    preset = DEFAULT_PRESET
    if preset_id := query.get("preset"):
        try:
            preset = get_train_preset(preset_id)
        except KeyError as error:
            st.session_state[NOTICE_KEY] = [("error", f"{error.args[0]}; showing the default runs")]
    train_controls.apply_preset(preset.id)
    if token := query.get("runs"):
        try:
            decoded = urlstate.decode_train_runs(token)
        except urlstate.BadQuery as problem:
            notices = st.session_state.setdefault(NOTICE_KEY, [])
            notices.append(("error", _runs_problem(str(problem))))
        else:
            notices = [("error", problem) for _, _, problem in decoded if problem]
            if notices:
                st.session_state.setdefault(NOTICE_KEY, []).extend(notices)
            kept = [(config, label) for config, label, _ in decoded if config is not None]
            if kept:
                st.session_state[RESTORE_KEY] = kept
                return
    if job_ids := [job for job in query.get("jobs", "").split(",") if job]:
        st.session_state[RESTORE_KEY] = job_ids


def _runs_problem(words: str) -> str:
    """The sentence for a `runs=` token that cannot be read (`urlstate.unpack`'s words)."""
    if words.startswith("The link"):
        return f"{words}; showing the default runs."
    return f"The link's runs= value {words}; showing the default runs."


def _restore() -> None:
    """Follow the runs of the link, once per session: its configs (`?runs=`; trained again
    when the API no longer has them), or the jobs an older link named (`?jobs=`)."""
    # Read, and dropped only once followed: an API problem, or this run cut short by a rerun
    # (the width measured in the browser), tries again on the next run (posting the same
    # configs again finds the same jobs).
    job_ids = st.session_state.get(RESTORE_KEY)
    if not job_ids:
        return
    if isinstance(job_ids[0], tuple):  # (config, label) pairs from `?runs=`
        configs, labels = zip(*job_ids, strict=True)
        runs, notices = train_runs.revive(configs, labels)
    else:
        runs, notices = train_runs.restore(job_ids)
    st.session_state.pop(RESTORE_KEY, None)
    configs = train_runs.run_configs(runs)
    if configs is not None and not train_controls.apply_configs(configs):
        notices.append(("info", "The linked runs differ in settings the runs table cannot "
                        "hold, so the table keeps its own runs; the runs below are the link's."))  # fmt: skip
    if notices:
        st.session_state[NOTICE_KEY] = [*(st.session_state.get(NOTICE_KEY) or []), *notices]
    st.session_state[RUNS_KEY] = runs


# --- presets and starting ---------------------------------------------------------------------
def _preset_buttons() -> None:
    columns = st.columns(len(TRAIN_PRESETS))
    for column, preset in zip(columns, TRAIN_PRESETS, strict=True):
        label, help_text = PRESET_BUTTONS[preset.id]
        column.button(
            label,
            key=f"t_preset_{preset.id}",
            help=help_text,
            on_click=train_controls.apply_preset,
            args=(preset.id,),
            width="stretch",
        )


def _preset_caption(planned: Sequence[PlannedRun]) -> None:
    """What the chosen preset shows, while the table and settings still are its runs."""
    preset = train_runs.matching_preset(planned)
    if preset is not None and preset is not DEFAULT_PRESET:
        st.info(f"**{preset.title}.** {preset.caption}")


def _actions(planned: Sequence[PlannedRun]) -> None:
    runs = _runs()
    active = any(run.active for run in runs)
    start, clear, note = st.columns([1, 1, 4])
    if start.button("Start", key="t_start", type="primary", icon=":material/play_arrow:",
                    disabled=active, width="stretch",
                    help="Submit one training job per run. Cancel or wait for the active runs "
                    "first."):  # fmt: skip
        _start(planned)
    if clear.button("Clear runs", key="t_clear", disabled=not runs or active, width="stretch",
                    help="Forget the runs shown below (the API keeps their results)."):  # fmt: skip
        st.session_state.pop(RUNS_KEY, None)
        st.session_state.pop(NOTICE_KEY, None)
        st.query_params.pop("jobs", None)
        st.query_params.pop("runs", None)
        st.rerun()
    note.caption(
        f"{len(planned)} run(s) planned. Runs with the same configuration share one job, and a "
        "configuration trained before comes back at once from the API's cache."
    )
    for kind, message in st.session_state.get(NOTICE_KEY) or []:
        (st.info if kind == "info" else st.error)(message)


def _start(planned: Sequence[PlannedRun]) -> None:
    """Validate every run, then submit one job each; nothing is submitted if any is invalid."""
    st.session_state.pop(NOTICE_KEY, None)
    if problems := train_runs.problems(planned):
        for problem in problems:
            st.error(problem)
        return
    runs, notices = train_runs.submit(planned)
    if notices:
        st.session_state[NOTICE_KEY] = notices
    if not runs:
        return
    st.session_state[RUNS_KEY] = runs
    st.rerun()  # the page then keeps the job ids in the URL and disables Start


# --- following the runs -----------------------------------------------------------------------
def _live() -> None:
    """Poll the active runs, then show their status, curves and SPPs (reruns every second)."""
    runs = _runs()
    if not runs:
        return
    polling = any(run.active for run in runs)
    try:
        for run in runs:
            run.refresh()
    except ApiProblem as problem:
        problems.show(problem)
    st.subheader("Progress")
    workers = _train_workers() if any(run.state == "queued" for run in runs) else None
    for number, run in enumerate(runs):
        _status(number, run, runs, workers)
    shown = [(run.label, run.data) for run in runs if run.job_id]
    active = any(run.active for run in runs)
    if any(data.get("steps") or data.get("spp") for _, data in shown):
        smoothing, grad_norm, log_y = _view_controls()
    else:
        smoothing, grad_norm, log_y = DEFAULT_SMOOTHING, False, False
    _curves(shown, smoothing=smoothing, grad_norm=grad_norm)
    _summary(runs)
    _scrubber(shown, smoothing=smoothing, log_y=log_y)
    _spps(shown, active=active, log_y=log_y)
    if polling and not active:
        st.rerun()  # all done: rerun the page, which stops polling and enables Start


def _train_workers() -> int | None:
    """Live workers on the training queue (GET /readyz), None when the API cannot say."""
    try:
        return int(cached_readiness()["workers"][TRAIN_QUEUE])
    except (ApiProblem, KeyError, TypeError, ValueError):
        return None


def _view_controls() -> tuple[float, bool, bool]:
    """How the curves and SPPs are drawn: loss smoothing, gradient norm, log-scale SPPs."""
    smooth, grad, log = st.columns([2, 1, 1], vertical_alignment="bottom")
    smoothing = smooth.slider(
        "Smooth the loss", min_value=0.0, max_value=MAX_SMOOTHING, value=DEFAULT_SMOOTHING,
        step=0.01,
        key="t_smoothing",
        help="An exponential moving average of the loss (and gradient norm) curve, debiased "
        "at the start; the raw curve stays faint behind it. 0: no smoothing.",
    )  # fmt: skip
    grad_norm = grad.toggle("Gradient norm", key="t_grad_norm",
                            help="A fourth panel: the global gradient norm of each step, "
                            "before clipping.")  # fmt: skip
    log_y = log.toggle("Log-scale SPPs", key="t_spp_log",
                       help="Semilog SPP panels, for signals that grew during training.")  # fmt: skip
    return smoothing, grad_norm, log_y


def _status(
    number: int, run: TrainRun, runs: Sequence[TrainRun], train_workers: int | None
) -> None:
    """One line per run: progress and Cancel (why it waits, when queued), the result, or why
    it did not finish."""
    label, state = run.label, run.state
    data = run.data
    collapse = data.get("collapse")
    if collapse:
        reason = f": {collapse['reason']}" if collapse.get("reason") else ""
        st.error(f"**{label}: collapsed at step {collapse['step']}**{reason}",
                 icon=":material/trending_up:")  # fmt: skip
    elif run.active:
        bar, button = st.columns([5, 1])
        done, total = run.done, run.total
        text = (
            f"{label}: {state}, step {done}/{total}"
            if state == "running"
            else f"{label}: {train_runs.queue_note(number, runs, train_workers)}"
        )
        if state == "running" and (silence := silence_words(run.heartbeat)):
            text += f"; {silence}"
        bar.progress(min(done / total, 1.0) if total else 0.0, text=text)
        if button.button("Cancel", key=f"t_cancel_{number}", width="stretch"):
            try:
                run.cancel()
            except ApiProblem as problem:
                st.error(f"{label}: {problem.message}")
    elif state == "finished":
        st.success(f"{label}: finished, {_accuracy_text(data)}")
    elif state == "canceled":
        st.warning(f"{label}: canceled at step {run.done}/{run.total}")
    elif state == "rejected":
        st.error(f"{label}: {run.error}")
    else:  # failed
        st.error(f"{label}: failed: {run.error or 'the API gave no reason'}")


def _accuracy_text(data: dict[str, Any]) -> str:
    words = train_runs.accuracy_words(data)
    if words is None:
        return "not evaluated"
    return f"held-out accuracy {words} after {data['evals'][-1]['step']} steps"


def _curves(shown: list[tuple[str, dict[str, Any]]], *, smoothing: float, grad_norm: bool) -> None:
    if not any(data.get("steps") for _, data in shown):
        st.info("The curves appear after the first training steps.")
        return
    fig = training_figure(shown, smoothing=smoothing, grad_norm=grad_norm)
    st.plotly_chart(themed(layout.fit(fig), dark=layout.dark()), theme=None,
                    key="train_chart")  # fmt: skip


def _summary(runs: Sequence[TrainRun]) -> None:
    """Held-out accuracy against batch size (the Table 2 preset), once runs span two."""
    rows = train_runs.accuracy_by_batch(runs)
    if rows is None:
        return
    st.markdown("**Held-out accuracy by batch size** (the last evaluation of each run)")
    st.dataframe(rows, hide_index=True, placeholder="", key="train_batch_summary")
    st.caption(PAPER_TABLE2)


def _scrubber(shown: list[tuple[str, dict[str, Any]]], *, smoothing: float, log_y: bool) -> None:
    """Every SPP the runs recorded, a frame per step: the slider and Play run in the browser."""
    fig = spp_over_training_figure(shown, log_y=log_y, smoothing=smoothing)
    if fig is None:
        return
    st.plotly_chart(themed(layout.fit(fig), dark=layout.dark()), theme=None,
                    key="train_spp_scrubber")  # fmt: skip
    st.caption(
        "Drag the slider (or press Play) to watch every run's signal change while it learns; "
        "the dotted line on the loss marks the step shown. The SPPs are measured on a batch of "
        "Gaussian noise, every 'SPP every' steps (More settings)."
    )


def _spps(shown: list[tuple[str, dict[str, Any]]], *, active: bool, log_y: bool) -> None:
    """The Signal Propagation Plots at initialization and after training, side by side."""
    before, after = spp_snapshot_figures(shown, log_y=log_y)
    if before is None:
        return
    dark = layout.dark()
    # Two runs fit side by side; more need the full width, one above the other, or their
    # legends would crowd out the panels; so does a narrow column.
    wide = len(shown) > SIDE_BY_SIDE_RUNS or layout.narrow()
    left, right = (st.container(), st.container()) if wide else st.columns(2)
    for column, fig, key in ((left, before, "train_spp_before"), (right, after, "train_spp_after")):
        if fig is None:
            column.info("The SPP after training appears when the runs finish." if active else
                        "No run trained to its end, so there is no SPP after training.")  # fmt: skip
            continue
        if wide:
            fig.update_layout(
                height=420,
                legend={"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"},
                margin={"r": 40, "b": 60},
            )
        else:
            fig.update_layout(height=480, legend={"y": -0.3}, margin={"b": 120})
        fig = layout.fit(fig, 1.0 if wide else 0.5)
        column.plotly_chart(themed(fig, dark=dark), theme=None, key=key)


if __name__ == "__main__":
    render()
