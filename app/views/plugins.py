"""Your network: the SPP of an installed model plugin, beside the paper's networks.

The plugins are those a live worker advertises (GET /v1/models, family "plugin"). The form
is generated from the plugin's argument schema (`app.plugin_form`); the job is the plugin's
name, its arguments and how to measure it (POST /v1/spp `{"plugin": ...}`), validated by the
API and run by a worker that has the plugin. Its SPP is drawn over built-in networks of the
same input, and can be pinned in the Explorer like any other run (`/?pins=<job id>`). The
choice is kept in the URL (`plugin`, `args`, `resolution`, `batch`, `gradients`).
"""

from __future__ import annotations

import json
import time
from typing import Any

import streamlit as st

from app import figures, plugin_form, problems, runs
from app import layout as screen
from app.api_client import ApiProblem, cached_models
from app.settings import get_settings
from nfcore.spec.config import SPPConfig

RESOLUTIONS = (16, 32, 48, 64, 96, 128)
BATCHES = (2, 4, 8, 16, 32)
REFERENCES = {  # built-in networks to draw beside the plugin's, at its input size
    "NF-ResNetV2-50": {"depth": 50, "norm": "nf", "width": 0.25},
    "BN-ResNetV2-50": {"depth": 50, "norm": "bn", "width": 0.25},
}
FOLLOW_SECONDS = 60.0  # how long one page run follows a job before offering to look again
# nfcore's exceptions that mean "this network cannot be measured as asked" (`nfcore.foreign.discovery`):
# an answer about the network, not a fault of the service.
REFUSALS = ("SelectionError",)
PLUGIN_SETTINGS = (
    "A model plugin says how its network is measured in its `@model_plugin(...)` (blocks, "
    'residual, channels, input_shape); the README\'s "Your own network" shows how.'
)


@problems.guarded
def render() -> None:
    screen.page_title("Your own network")
    st.caption(
        "The Signal Propagation Plot of a network written outside nfcore, installed as a model "
        "plugin (a Python package with an `nfcore.models` entry point), beside the paper's "
        'networks. The README\'s "Your own network" says how to write and install one.'
    )
    try:
        plugins = {row["plugin"]: row for row in cached_models()
                   if row.get("family") == "plugin" and isinstance(row.get("plugin"), str)}  # fmt: skip
    except ApiProblem as problem:
        problems.show(problem)
        return
    if not plugins:
        st.info(
            "No model plugin is available: no live worker has one installed. Install a plugin "
            "package beside the workers (`pip install -e examples/plugins` for the examples; "
            "`make run` does) and restart them."
        )
        return
    config, references = _controls(plugins)
    if config is None:
        return
    try:
        _body(config, references)
    except ApiProblem as problem:
        problems.show(problem)


def _query() -> dict[str, str]:
    return st.query_params.to_dict()


def _controls(plugins: dict[str, dict[str, Any]]) -> tuple[dict[str, Any] | None, list[str]]:
    """The sidebar: the plugin, its form, the input and the references; the config to run."""
    query = _query()
    names = sorted(plugins)
    asked = query.get("plugin")
    if asked and asked not in plugins:
        st.warning(f"The link asks for the plugin {asked!r}, which no live worker has; "
                   f"showing {names[0]!r}. Available: {', '.join(names)}.")  # fmt: skip
    with screen.controls():
        st.header("Network")
        name = st.selectbox("Model plugin", names, index=names.index(asked) if asked in plugins else 0,
                            format_func=lambda n: f"{n} ({plugins[n].get('version')})")  # fmt: skip
        info = plugins[name]
        if info.get("description"):
            st.caption(info["description"])
        given = _link_args(query.get("args", "{}")) if asked == name else {}
        defaults = info.get("defaults") if isinstance(info.get("defaults"), dict) else {}
        try:
            fields = plugin_form.form_fields(info.get("arguments") or {})
        except problems.UNREADABLE as error:  # the schema a worker advertised is not one
            st.error(f"The plugin {name!r} describes its arguments in a way this page cannot "
                     f"draw as a form ({type(error).__name__}: {error}).")  # fmt: skip
            return None, []
        try:
            args = plugin_form.render(fields, {**defaults, **given}, key=f"plugin:{name}")
        except ValueError as error:
            st.error(str(error))
            return None, []
        st.header("Input and measurement")
        image = info.get("input_shape") is None
        resolution = None
        if image:
            wanted = _whole(query.get("resolution")) or _whole(info.get("resolution")) or 64
            resolution = st.select_slider("Resolution (px)", RESOLUTIONS,
                                          value=wanted if wanted in RESOLUTIONS else 64)  # fmt: skip
        else:
            channels = info.get("channels")
            where = "found from its layers" if channels == "auto" else channels
            st.caption(f"Input: {info['input_shape']} per example (channels {where}).")
        wanted_batch = _whole(query.get("batch")) or 8
        batch = st.select_slider(
            "Batch", BATCHES, value=wanted_batch if wanted_batch in BATCHES else 8
        )
        gradients = st.toggle("Gradients (backward pass)", value=query.get("gradients") == "true")
        references = st.multiselect("Beside it", list(REFERENCES), default=["NF-ResNetV2-50"],
                                    disabled=not image,
                                    help="Built-in networks at the same input, for comparison.")  # fmt: skip
    config: dict[str, Any] = {"plugin": name, "model_args": args, "batch": batch,
                              "gradients": gradients, "device": "auto"}  # fmt: skip
    if resolution is not None:
        config["resolution"] = resolution
    wanted_query = plugin_form.plugin_query(config)
    if query != wanted_query:
        st.query_params.from_dict(wanted_query)
    return config, (references if image else [])


def _link_args(text: str) -> dict[str, Any]:
    """The plugin arguments a link gives (`args`, a JSON object); {} with a warning when they
    are not one."""
    try:
        given = json.loads(text)
    except ValueError:
        given = None
    if not isinstance(given, dict):
        st.warning("The link's `args` are not a JSON object; showing the defaults.")
        return {}
    return given


def _whole(value: Any) -> int | None:
    """A whole number from the link (or a plugin's description); None when it is not one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _body(config: dict[str, Any], references: list[str]) -> None:
    settings = get_settings()
    run = runs.track_body(config["plugin"], config, wait=settings.app_submit_wait_seconds)
    others = [
        runs.track(label, SPPConfig(**REFERENCES[label], resolution=config.get("resolution", 64),
                                    batch=config["batch"], gradients=config["gradients"]))
        for label in references
    ]  # fmt: skip
    progress = st.empty()
    deadline = time.monotonic() + FOLLOW_SECONDS
    while any(r.pending for r in (run, *others)) and time.monotonic() < deadline:
        done, total = run.progress
        text = f"measuring: block {done} of {total or '?'}{runs.progress_words(run.job)}"
        progress.progress(min(done / total, 1.0) if total else 0.0, text=text)
        run = runs.await_run(run, settings.app_poll_seconds)
        others = [runs.await_run(r, settings.app_poll_seconds) for r in others]
    progress.empty()
    if run.problem:
        st.error(failure_words(run.problem))
        return
    if run.pending:
        st.info("Still computing (a worker may be busy with other jobs).")
        st.button("Look again")
        return
    shown = [r for r in (run, *others) if r.result is not None]
    assert run.result is not None
    labels = [run.result.config.label, *[r.label for r in others if r.result is not None]]
    dark, narrow = screen.dark(), screen.narrow()
    figure = figures.dashboard_figure([r.result for r in shown], labels, log_y=False, dark=dark,
                                      narrow=narrow)  # fmt: skip
    figure = figure if narrow else screen.fit(figure)  # short titles where panels crowd
    meta = run.result.meta
    for note in meta.notes or ():  # how the network was read: its layout, its blocks, a doubt
        st.info(note)
    st.plotly_chart(figure, key="plugin_chart")
    layout = f" (block tensors {meta.layout})" if meta.layout else ""
    st.caption(
        f"{meta.num_blocks} blocks in {len(meta.stage_ends)} stages, {meta.parameter_count:,} "
        f"parameters; statistics per channel over {meta.reduced_over}{layout}; "
        f"{meta.seconds:.2f} s on {meta.device}. " + ("" if run.result.config.residual else
                             "The plugin names no residual branch: that panel stays empty.")
    )  # fmt: skip
    st.link_button("Pin it in the Explorer", f"/?pins={run.job_id}",
                   help="Overlay this network's SPP on any of the paper's in the Explorer.")  # fmt: skip


def failure_words(problem: str) -> str:
    """Why the plugin's job gave no SPP, in words: a refusal of nfcore's as a sentence about
    the network (without the exception's module path), what the plugin can change, and any
    other failure as the API said it."""
    kind, sep, message = problem.partition(": ")
    if sep and kind.rpartition(".")[2] in REFUSALS:
        return f"nfcore did not measure this network: {message.rstrip('. ')}. {PLUGIN_SETTINGS}"
    return f"The plugin's job failed: {problem}"


if __name__ == "__main__":
    render()
