"""Train: short training runs side by side, with live curves and before/after SPPs.

The runs table holds one model per row (BN or NF ResNet, depth, width, activation, SkipInit,
and optionally its own batch size and learning rate); the controls below it hold what the
runs share (data set, steps, the recipe). "Start" validates every row as a `TrainConfig`,
then submits one job per run (POST /v1/train). While any run is active a fragment polls each
job's events every second (GET /v1/jobs/{id}/events?since=N), keeps them per job in the
session, and redraws the curves with `nfcore.train_plots`; a finished run is drawn from its
result. The job ids are also kept in the URL (`jobs=`), so a reload follows the same runs.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st
from pydantic import ValidationError

from app.api_client import ApiProblem, cached_result, get_client
from app.figures import themed
from nfcore.config import MAX_TRAIN_STEPS, TrainConfig, canonical_json, describe_validation_error
from nfcore.registry import BUILTIN_ACTIVATIONS
from nfcore.train_plots import runs_from_events, spp_snapshot_figures, training_figure
from nfcore.train_presets import (
    DEFAULT_PRESET,
    NORM_PREFIX,
    RUN_COLUMNS,
    TRAIN_PRESETS,
    TrainPreset,
    auto_labels,
    get_train_preset,
    run_config,
)

SIDE_BY_SIDE_RUNS = 2  # before/after SPPs side by side up to this many runs, else stacked
POLL_SECONDS = 1.0  # between polls of the events while a run is active
MAX_PAGES_PER_POLL = 20  # pages of events read for one run in one poll
ACTIVE_STATES = ("queued", "running")
DEPTHS = (14, 26, 50)
NORMS = ("bn", "nf")
DATASETS = {
    "digits": "digits (scikit-learn)",
    "gaussian": "Gaussian noise",
    "cifar10": "CIFAR-10",
}
RESOLUTIONS = (8, 16, 32, 64, 96, 128)
# Nullable column types, so a blank cell of a number column stays a number column.
COLUMN_TYPES = {"label": "string", "norm": "string", "depth": "Int64", "width": "Float64",
                "activation": "string", "skipinit": "boolean", "batch": "Int64", "lr": "Float64"}  # fmt: skip

# Session state: the runs table, the shared settings, the runs being followed.
TABLE_KEY = "train_table"  # rows the editor starts from
EDITED_KEY = "train_table_edited"  # rows as last edited (the editor's state is lost off-page)
VERSION_KEY = "train_table_version"  # a new editor (key) whenever a preset replaces the rows
SETTINGS_KEY = "train_settings"  # the shared settings, kept when the widgets are not shown
RUNS_KEY = "train_runs"  # one dict per followed run (see `_new_run`)
NOTICE_KEY = "train_notice"  # why Start did not submit everything, shown until the next Start
RESTORE_KEY = "train_restore"  # job ids from the URL, followed on the first run

HELP = {
    "dataset": "digits: scikit-learn's 8x8 digits upsampled; gaussian: noise with random "
    "labels (fast, nothing to learn); cifar10: read from the worker's CIFAR10_DIR.",
    "resolution": "Image side in pixels; ResNets downsample by 32, so at least 32.",
    "batch": "Batch size of every run whose 'batch' cell is blank. BatchNorm needs at least 2.",
    "steps": "Optimizer steps of every run.",
    "lr": "Peak learning rate (after warm-up, then cosine decay) of runs with a blank 'lr'.",
    "warmup_steps": "Linear warm-up from 0; blank: 5% of the steps.",
    "weight_decay": "L2 decay on the weights (not on gains or biases).",
    "label_smoothing": "Label smoothing of the training loss.",
    "ema_decay": "Also evaluate an EMA of the weights (the paper: 0.99999); blank: no EMA.",
    "clip_grad_norm": "Clip the global gradient norm to this value; blank: no clipping.",
    "eval_every": "Evaluate on the held-out split every this many steps (and at the end).",
    "eval_examples": "Held-out examples per evaluation.",
    "stochdepth_rate": "Stochastic depth: the last block drops its branch with this rate.",
    "drop_rate": "Dropout before the classifier.",
    "seed": "Seeds the weights, the data order and dropout.",
}


def render() -> None:
    """The whole page; an API failure is shown as its sentence, never as a traceback."""
    _init_state()
    st.title("Train")
    st.caption(
        "Short training runs of BN- and NF-ResNets with the paper's recipe scaled down (SGD "
        "with Nesterov momentum, warm-up and cosine decay, label smoothing). The curves update "
        "while the runs train; the Signal Propagation Plots before and after training appear "
        "once measured."
    )
    try:
        _restore()
    except ApiProblem as problem:
        st.error(problem.message)
    _preset_buttons()
    rows = _runs_table()
    settings = _settings_controls()
    planned = _plan(rows, settings)
    _preset_caption(planned)
    _actions(planned)
    runs = st.session_state.get(RUNS_KEY) or []
    job_ids = ",".join(run["job_id"] for run in runs if run["job_id"])
    if job_ids and st.query_params.get("jobs") != job_ids:
        st.query_params["jobs"] = job_ids  # back from another page, which set its own URL
    active = any(run["state"] in ACTIVE_STATES for run in runs)
    st.fragment(_live, run_every=POLL_SECONDS if active else None)()


# --- state ------------------------------------------------------------------------------------
def _init_state() -> None:
    """Once per session: the default runs (or `?preset=`) and the runs named by `?jobs=`."""
    if SETTINGS_KEY in st.session_state:
        return
    query = st.query_params.to_dict()
    preset = DEFAULT_PRESET
    if preset_id := query.get("preset"):
        try:
            preset = get_train_preset(preset_id)
        except KeyError as error:
            st.session_state[NOTICE_KEY] = [("error", f"{error.args[0]}; showing the default runs")]
    st.session_state[VERSION_KEY] = 0
    _apply_preset(preset.id)
    if job_ids := [job for job in query.get("jobs", "").split(",") if job]:
        st.session_state[RESTORE_KEY] = job_ids


def _apply_preset(preset_id: str) -> None:
    """Fill the runs table and the shared settings from a preset (a button's callback)."""
    preset = get_train_preset(preset_id)
    st.session_state[TABLE_KEY] = preset.rows()
    st.session_state.pop(EDITED_KEY, None)
    st.session_state[VERSION_KEY] = st.session_state.get(VERSION_KEY, 0) + 1
    # New widget keys (the version) make the setting widgets start from the preset's values.
    st.session_state[SETTINGS_KEY] = preset.all_settings()


# --- inputs -----------------------------------------------------------------------------------
def _preset_buttons() -> None:
    columns = st.columns(len(TRAIN_PRESETS))
    for column, preset in zip(columns, TRAIN_PRESETS, strict=True):
        column.button(
            preset.button,
            key=f"t_preset_{preset.id}",
            help=preset.help,
            on_click=_apply_preset,
            args=(preset.id,),
            width="stretch",
        )


def _runs_table() -> list[dict[str, Any]]:
    """The runs to train, one row each, as edited by the user."""
    st.subheader("Runs")
    key = f"t_runs_{st.session_state[VERSION_KEY]}"
    if key not in st.session_state and EDITED_KEY in st.session_state:
        st.session_state[TABLE_KEY] = st.session_state[EDITED_KEY]  # back from another page
    table = pd.DataFrame(st.session_state[TABLE_KEY], columns=list(RUN_COLUMNS)).astype(
        COLUMN_TYPES
    )
    edited = st.data_editor(
        table,
        key=key,
        num_rows="dynamic",
        hide_index=True,
        width="stretch",
        column_config={
            "label": st.column_config.TextColumn(
                "label", help="Legend text; blank: named after the model."
            ),
            "norm": st.column_config.SelectboxColumn(
                "norm", options=NORMS, default="nf", required=True,
                help="bn: BatchNorm; nf: Normalizer-Free (Scaled WS, α = 0.2).",
            ),
            "depth": st.column_config.SelectboxColumn(
                "depth", options=DEPTHS, default=26, required=True, help="ResNet depth."
            ),
            "width": st.column_config.NumberColumn(
                "width", min_value=0.0625, max_value=4.0, step=0.0625, default=0.25,
                format="%.4g", help="Channel-width multiplier.",
            ),
            "activation": st.column_config.SelectboxColumn(
                "activation", options=BUILTIN_ACTIVATIONS, default="relu", required=True
            ),
            "skipinit": st.column_config.CheckboxColumn(
                "SkipInit", default=True,
                help="A residual gain initialized at 0 (the paper trains NF-ResNets with it).",
            ),
            "batch": st.column_config.NumberColumn(
                "batch", min_value=1, max_value=4096, step=1,
                help="This run's batch size; blank: the batch size below.",
            ),
            "lr": st.column_config.NumberColumn(
                "lr", min_value=0.0, max_value=100.0, format="%.4g",
                help="This run's learning rate; blank: the learning rate below.",
            ),
        },
    )  # fmt: skip
    rows = [_clean_row(record) for record in edited.to_dict("records")]
    st.session_state[EDITED_KEY] = rows
    return rows


def _clean_row(record: dict[str, Any]) -> dict[str, Any]:
    """A table row as config input: blanks (NaN, '') as None, numbers as Python numbers."""
    row: dict[str, Any] = {}
    for column in RUN_COLUMNS:
        value = record.get(column)
        if value is None or value == "" or bool(pd.isna(value)):
            row[column] = None
        elif column in ("depth", "batch"):
            row[column] = int(value)
        elif column in ("width", "lr"):
            row[column] = float(value)
        elif column == "skipinit":
            row[column] = bool(value)
        else:
            row[column] = str(value)
    return row


def _settings_controls() -> dict[str, Any]:
    """What every run shares; returned as TrainConfig fields (None: the config's default)."""
    settings: dict[str, Any] = st.session_state[SETTINGS_KEY]
    st.subheader("Data and recipe")
    data, batch, steps, lr = st.columns([2, 1, 1, 1])
    _setting(data.radio, "Data set", "dataset", options=tuple(DATASETS),
             format_func=DATASETS.__getitem__, horizontal=True)  # fmt: skip
    _setting(batch.number_input, "Batch size", "batch", min_value=1, max_value=4096, step=1)
    _setting(steps.number_input, "Steps", "steps", min_value=1, max_value=MAX_TRAIN_STEPS, step=10)
    _setting(lr.number_input, "Learning rate", "lr", min_value=0.0001, max_value=100.0,
             step=0.005, format="%.4g")  # fmt: skip
    if settings.get("dataset") == "cifar10":
        st.caption(
            "CIFAR-10 is read by the worker from the folder in its CIFAR10_DIR environment "
            "variable (the python version of the data set); without it the runs fail."
        )
    with st.expander("More settings"):
        left, middle, right = st.columns(3)
        _setting(left.select_slider, "Resolution (px)", "resolution", options=RESOLUTIONS)
        _setting(left.number_input, "Warm-up steps", "warmup_steps", min_value=0, step=1,
                 value=None, placeholder="auto (5% of the steps)")  # fmt: skip
        _setting(left.number_input, "Weight decay", "weight_decay", min_value=0.0,
                 max_value=1.0, step=1e-5, format="%.1e")  # fmt: skip
        _setting(left.number_input, "Label smoothing", "label_smoothing", min_value=0.0,
                 max_value=0.99, step=0.05)  # fmt: skip
        _setting(middle.number_input, "EMA decay", "ema_decay", min_value=0.5,
                 max_value=0.999999, step=0.001, format="%.6g", value=None, placeholder="off")  # fmt: skip
        _setting(middle.number_input, "Clip gradient norm", "clip_grad_norm", min_value=0.001,
                 max_value=1e6, step=0.1, format="%.4g", value=None, placeholder="off")  # fmt: skip
        _setting(middle.number_input, "Evaluate every (steps)", "eval_every", min_value=1, step=5)
        _setting(middle.number_input, "Held-out examples", "eval_examples", min_value=1,
                 max_value=100_000, step=100)  # fmt: skip
        _setting(right.slider, "Stochastic depth rate", "stochdepth_rate", min_value=0.0,
                 max_value=0.5, step=0.05)  # fmt: skip
        _setting(right.slider, "Dropout", "drop_rate", min_value=0.0, max_value=0.5, step=0.05)
        _setting(right.number_input, "Seed", "seed", min_value=0, max_value=2**31 - 1, step=1)
    return dict(settings)


def setting_key(name: str) -> str:
    """The widget key of a shared setting: `t_<name>_<version>`, new with every preset."""
    return f"t_{name}_{st.session_state[VERSION_KEY]}"


def _setting(widget: Any, label: str, name: str, **kwargs: Any) -> None:
    """One shared setting: its widget starts from the value kept in the settings (never from
    Session State written before it exists: a click racing the page's first run would then
    rebuild it from its bare default), and writes what the user sets back there."""
    current = st.session_state[SETTINGS_KEY].get(name)
    kwargs.pop("value", None)
    if "options" in kwargs and widget.__name__ == "radio":
        kwargs["index"] = list(kwargs["options"]).index(current)
    else:
        kwargs["value"] = current
    value = widget(label, key=setting_key(name), help=HELP.get(name), **kwargs)
    if isinstance(value, float):
        value = round(value, 10)  # slider steps are binary fractions: 0.30000000000000004
    st.session_state[SETTINGS_KEY][name] = value


# --- planning and starting --------------------------------------------------------------------
def _plan(rows: list[dict[str, Any]], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Per row: its label and its validated config, or the sentence saying what is wrong."""
    planned: list[dict[str, Any]] = []
    for row in rows:
        try:
            planned.append({"row": row, "config": run_config(settings, row), "error": None})
        except ValidationError as error:
            problem = describe_validation_error(error)
            planned.append({"row": row, "config": None, "error": problem})
    valid = [plan["config"] for plan in planned if plan["config"] is not None]
    labels = iter(auto_labels(valid))
    for number, plan in enumerate(planned, start=1):
        auto = next(labels) if plan["config"] is not None else _row_name(plan["row"])
        plan["label"] = plan["row"].get("label") or auto
        plan["number"] = number
    return planned


def _row_name(row: dict[str, Any]) -> str:
    prefix = NORM_PREFIX.get(str(row.get("norm")), str(row.get("norm") or "?"))
    return f"{prefix}-ResNet-{row.get('depth') or '?'}"


def _preset_caption(planned: list[dict[str, Any]]) -> None:
    """What the chosen preset shows, while the table and settings still are its runs."""
    preset = _matching_preset(planned)
    if preset is not None and preset is not DEFAULT_PRESET:
        st.info(f"**{preset.title}.** {preset.caption}")


def _matching_preset(planned: list[dict[str, Any]]) -> TrainPreset | None:
    if any(plan["config"] is None for plan in planned):
        return None
    current = [canonical_json(plan["config"]) for plan in planned]
    for preset in TRAIN_PRESETS:
        if current == [canonical_json(config) for config in preset.configs()]:
            return preset
    return None


def _actions(planned: list[dict[str, Any]]) -> None:
    runs = st.session_state.get(RUNS_KEY) or []
    active = any(run["state"] in ACTIVE_STATES for run in runs)
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
        st.rerun()
    note.caption(
        f"{len(planned)} run(s) planned. Runs with the same configuration share one job, and a "
        "configuration trained before comes back at once from the API's cache."
    )
    for kind, message in st.session_state.get(NOTICE_KEY) or []:
        (st.info if kind == "info" else st.error)(message)


def _start(planned: list[dict[str, Any]]) -> None:
    """Validate every run, then submit one job each; nothing is submitted if any is invalid."""
    st.session_state.pop(NOTICE_KEY, None)
    problems = [
        f"Run {plan['number']} ({plan['label']}): {plan['error']}"
        for plan in planned
        if plan["error"] is not None
    ]
    if not planned:
        problems = ["Add at least one run to the table."]
    if problems:
        for problem in problems:
            st.error(problem)
        return
    runs: list[dict[str, Any]] = []
    notices: list[tuple[str, str]] = []
    seen: set[str] = set()
    client = get_client()
    for plan in planned:
        config: TrainConfig = plan["config"]
        key = canonical_json(config)
        if key in seen:
            notices.append(("info", f"Run {plan['number']} ({plan['label']}) repeats an earlier "
                            "run; it is trained once."))  # fmt: skip
            continue
        seen.add(key)
        try:
            submission = client.submit_train(config.model_dump(mode="json"))
        except ApiProblem as problem:
            if problem.status is None or problem.status >= 500:
                notices.append(("error", problem.message))  # the API is down: stop here
                break
            runs.append(_new_run(plan["label"], config.steps, state="rejected",
                                 error=problem.message))  # fmt: skip
            continue
        run = _new_run(plan["label"], config.steps, job_id=submission.job_id)
        if submission.result is not None:
            run.update(state="finished", result=submission.result, done=config.steps)
        elif submission.job is not None:
            _update_from_job(run, submission.job)
        runs.append(run)
    if notices:
        st.session_state[NOTICE_KEY] = notices
    if not runs:
        return
    st.session_state[RUNS_KEY] = runs
    st.rerun()  # the page then keeps the job ids in the URL and disables Start


def _new_run(label: str, total: int, *, job_id: str | None = None, state: str = "queued",
             error: str | None = None) -> dict[str, Any]:  # fmt: skip
    """One followed run: the job, its state and progress, its events so far, its result."""
    return {"job_id": job_id, "label": label, "state": state, "done": 0, "total": total,
            "events": [], "next": 0, "result": None, "error": error}  # fmt: skip


def _update_from_job(run: dict[str, Any], job: dict[str, Any]) -> None:
    progress = job.get("progress") or {}
    run["state"] = job.get("state", run["state"])
    run["done"] = int(progress.get("done", run["done"]) or 0)
    run["total"] = int(progress.get("total", run["total"]) or run["total"])
    run["error"] = job.get("error") or run["error"]


def _restore() -> None:
    """Follow the jobs a link named (`?jobs=`), once per session."""
    job_ids = st.session_state.pop(RESTORE_KEY, None)
    if not job_ids:
        return
    runs, gone = [], []
    for job_id in job_ids:
        try:
            job = get_client().job(job_id)
        except ApiProblem as problem:
            if problem.status in (404, 410):
                gone.append(job_id[:12])
                continue
            st.session_state[RESTORE_KEY] = job_ids  # try again on the next run
            raise
        run = _new_run(job.get("label") or job_id[:12], 0, job_id=job_id)
        _update_from_job(run, job)
        runs.append(run)
    if gone:
        message = f"The API no longer knows the run(s) {', '.join(gone)} from the link."
        st.session_state[NOTICE_KEY] = [("error", message)]
    st.session_state[RUNS_KEY] = runs


# --- following the runs -----------------------------------------------------------------------
def _live() -> None:
    """Poll the active runs, then show their status, curves and SPPs (reruns every second)."""
    runs: list[dict[str, Any]] = st.session_state.get(RUNS_KEY) or []
    if not runs:
        return
    polling = any(run["state"] in ACTIVE_STATES for run in runs)
    try:
        for run in runs:
            _refresh(run)
    except ApiProblem as problem:
        st.error(problem.message)
    st.subheader("Progress")
    for number, run in enumerate(runs):
        _status(number, run)
    shown = [(run["label"], _data(run)) for run in runs if run["job_id"]]
    _curves(shown)
    _spps(shown, active=any(run["state"] in ACTIVE_STATES for run in runs))
    if polling and not any(run["state"] in ACTIVE_STATES for run in runs):
        st.rerun()  # all done: rerun the page, which stops polling and enables Start


def _refresh(run: dict[str, Any]) -> None:
    """New events of an active run; the result of a finished one; the error of a failed one."""
    job_id = run["job_id"]
    if job_id is None:
        return
    if run["state"] in ACTIVE_STATES:
        for _ in range(MAX_PAGES_PER_POLL):
            try:
                answer = get_client().events(job_id, since=run["next"], attempt=run.get("attempt"))
            except ApiProblem as problem:
                if problem.status not in (404, 410):
                    raise
                run.update(state="failed", error="the API no longer knows this job (it expired)")
                return
            events = answer.get("events") or []
            if answer.get("restarted"):  # its worker died: the curves start over
                run["events"] = []
            run["attempt"] = answer.get("attempt")
            run["events"].extend(events)
            run["next"] = int(answer.get("next", run["next"] + len(events)))
            _update_from_job(run, answer)
            # A final state is read before its page: read on until a page comes back empty.
            if not events or run["state"] in ACTIVE_STATES:
                break
        if run["state"] == "failed" and not run["error"]:
            run["error"] = get_client().job(job_id).get("error")
    if run["state"] == "finished" and run["result"] is None and not run.get("no_result"):
        try:
            run["result"] = cached_result(job_id)
        except ApiProblem:
            run["no_result"] = True  # expired: the events still draw the curves
            if not run["events"]:
                answer = get_client().events(job_id, since=0)
                run["events"] = answer.get("events") or []


def _data(run: dict[str, Any]) -> dict[str, Any]:
    """The run's records: its result when finished, else what its events said so far."""
    return run["result"] if run["result"] is not None else runs_from_events(run["events"])


def _status(number: int, run: dict[str, Any]) -> None:
    """One line per run: progress and Cancel, the result, or why it did not finish."""
    label, state = run["label"], run["state"]
    data = _data(run)
    collapse = data.get("collapse")
    if collapse:
        reason = f": {collapse['reason']}" if collapse.get("reason") else ""
        st.error(f"**{label}: collapsed at step {collapse['step']}**{reason}",
                 icon=":material/trending_up:")  # fmt: skip
    elif state in ACTIVE_STATES:
        bar, button = st.columns([5, 1])
        done, total = run["done"], run["total"]
        text = (
            f"{label}: {state}, step {done}/{total}" if state == "running" else f"{label}: queued"
        )
        bar.progress(min(done / total, 1.0) if total else 0.0, text=text)
        if button.button("Cancel", key=f"t_cancel_{number}", width="stretch"):
            try:
                _update_from_job(run, get_client().cancel(run["job_id"]))
            except ApiProblem as problem:
                st.error(f"{label}: {problem.message}")
    elif state == "finished":
        st.success(f"{label}: finished, {_accuracy_text(data)}")
    elif state == "canceled":
        st.warning(f"{label}: canceled at step {run['done']}/{run['total']}")
    elif state == "rejected":
        st.error(f"{label}: {run['error']}")
    else:  # failed
        st.error(f"{label}: failed: {run['error'] or 'the API gave no reason'}")


def _accuracy_text(data: dict[str, Any]) -> str:
    evals = data.get("evals") or []
    if not evals:
        return "not evaluated"
    last = evals[-1]
    text = f"held-out accuracy {last['accuracy']:.1%}"
    if last.get("ema_accuracy") is not None:
        text += f" (EMA {last['ema_accuracy']:.1%})"
    return f"{text} after {last['step']} steps"


def _curves(shown: list[tuple[str, dict[str, Any]]]) -> None:
    if not any(data.get("steps") for _, data in shown):
        st.info("The curves appear after the first training steps.")
        return
    fig = themed(training_figure(shown), dark=st.context.theme.type == "dark")
    st.plotly_chart(fig, theme=None, key="train_chart")


def _spps(shown: list[tuple[str, dict[str, Any]]], *, active: bool) -> None:
    """The Signal Propagation Plots at initialization and after training, side by side."""
    log_y = st.toggle("Log-scale SPPs", key="t_spp_log",
                      help="Semilog SPP panels, for signals that grew during training.")  # fmt: skip
    before, after = spp_snapshot_figures(shown, log_y=log_y)
    if before is None:
        return
    dark = st.context.theme.type == "dark"
    # Two runs fit side by side; more need the full width, one above the other, or their
    # legends would crowd out the panels.
    wide = len(shown) > SIDE_BY_SIDE_RUNS
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
        column.plotly_chart(themed(fig, dark=dark), theme=None, key=key)


if __name__ == "__main__":
    render()
