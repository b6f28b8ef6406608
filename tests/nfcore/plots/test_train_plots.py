"""The training-curve builders, on hand-made runs and events (no model is trained)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from nfcore.plots.spp import FORWARD_PANELS
from nfcore.plots.training import (
    EMA_TITLE,
    GRAD_NORM_TITLE,
    NORM_HUES,
    PANEL_TITLES,
    run_colors,
    runs_from_events,
    smoothed,
    spp_snapshot_figures,
    spp_snapshots,
    training_figure,
)
from tests.nfcore.plots.test_plots import make_result


def make_events(steps: int = 6, *, ema: bool = False, collapse_at: int | None = None) -> list:
    """Events as a worker streams them: an SPP at init, steps, evals every 2 steps, the end."""
    spp = make_result("nf").to_json_dict()
    events: list[dict[str, Any]] = [{"kind": "spp", "step": 0, "result": spp}]
    for step in range(1, steps + 1):
        loss = 2.3 / step
        if step == collapse_at:
            loss = math.inf
        events.append({"kind": "step", "step": step, "loss": None if math.isinf(loss) else loss,
                       "accuracy": 0.1 * step, "lr": 0.1 * min(step, 2) / 2, "grad_norm": 1.0,
                       "seconds": 0.01})  # fmt: skip
        if step == collapse_at:
            events.append({"kind": "collapse", "step": step, "reason": "the loss is inf",
                           "loss": None})  # fmt: skip
            return events
        if step % 2 == 0:
            events.append({"kind": "eval", "step": step, "loss": 1.0, "accuracy": 0.1 * step,
                           "ema_loss": 1.1 if ema else None,
                           "ema_accuracy": 0.05 * step if ema else None})  # fmt: skip
    events.append({"kind": "spp", "step": steps, "result": spp})
    return events


def traces_of(fig: Any, label: str) -> dict[str, Any]:
    """The run's traces by name (the loss curve is named after the run itself)."""
    return {trace.name: trace for trace in fig.data if trace.name.startswith(label)}


def test_runs_from_events_gathers_the_records() -> None:
    events = [*make_events(6, ema=True), {"kind": "something-new", "step": 6}]
    run = runs_from_events(events)
    assert [record["step"] for record in run["steps"]] == [1, 2, 3, 4, 5, 6]
    assert "kind" not in run["steps"][0]
    assert run["steps"][1] == {"step": 2, "loss": 2.3 / 2, "accuracy": 0.2, "lr": 0.1,
                               "grad_norm": 1.0, "seconds": 0.01}  # fmt: skip
    assert [record["step"] for record in run["evals"]] == [2, 4, 6]
    assert [snapshot["step"] for snapshot in run["spp"]] == [0, 6]
    assert run["spp"][0]["result"]["config"]["norm"] == "nf"
    assert run["collapse"] is None
    assert runs_from_events([]) == {"steps": [], "evals": [], "spp": [], "collapse": None}


def test_training_figure_has_three_panels_and_traces_per_run() -> None:
    runs = [("BN", runs_from_events(make_events(6))), ("NF", runs_from_events(make_events(4)))]
    fig = training_figure(runs)
    titles = [annotation.text for annotation in fig.layout.annotations]
    assert titles == list(PANEL_TITLES)
    assert fig.layout.yaxis.type == "log"  # the loss
    assert [trace.name for trace in fig.data if trace.showlegend] == ["BN", "NF"]
    for label, steps in (("BN", 6), ("NF", 4)):
        traces = traces_of(fig, label)
        assert set(traces) == {label, f"{label}: held-out", f"{label}: lr"}
        loss, accuracy, lr = traces[label], traces[f"{label}: held-out"], traces[f"{label}: lr"]
        assert (loss.xaxis, accuracy.xaxis, lr.xaxis) == ("x", "x2", "x3")
        assert list(loss.x) == list(range(1, steps + 1))
        assert list(loss.y) == pytest.approx([2.3 / step for step in range(1, steps + 1)])
        assert list(accuracy.x) == list(range(2, steps + 1, 2))
        assert list(lr.y)[:2] == [0.05, 0.1]
    colors = {trace.line.color for trace in traces_of(fig, "BN").values()}
    assert len(colors) == 1 and colors != {
        trace.line.color for trace in traces_of(fig, "NF").values()
    }


def test_ema_is_dashed_and_named_in_the_panel_title() -> None:
    fig = training_figure([("NF", runs_from_events(make_events(6, ema=True)))])
    ema = traces_of(fig, "NF")["NF: EMA"]
    assert ema.line.dash == "dash"
    assert ema.xaxis == "x2"
    assert list(ema.y) == pytest.approx([0.1, 0.2, 0.3])
    assert fig.layout.annotations[1].text == EMA_TITLE


def test_collapse_is_marked_with_an_x_and_annotated() -> None:
    run = runs_from_events(make_events(6, collapse_at=5))
    assert run["collapse"] == {"step": 5, "reason": "the loss is inf", "loss": None}
    fig = training_figure([("BN", run)])
    marker = traces_of(fig, "BN")["BN: collapsed at step 5"]
    assert marker.marker.symbol == "x"
    assert list(marker.x) == [5]
    assert list(marker.y) == pytest.approx(
        [2.3 / 4]
    )  # the last finite loss (the collapse's is inf)
    notes = [a for a in fig.layout.annotations if a.text == "collapsed at step 5"]
    assert len(notes) == 1
    assert notes[0].x == 5 and notes[0].y == pytest.approx(math.log10(2.3 / 4))  # log axis
    assert traces_of(fig, "BN")["BN"].y[4] is None  # the infinite loss is a gap


def test_finished_result_and_empty_runs_draw() -> None:
    result = {**runs_from_events(make_events(4)), "status": "finished", "config": {}}
    fig = training_figure([("done", result), ("queued", runs_from_events([]))])
    assert [trace.name for trace in fig.data if trace.showlegend] == ["done", "queued"]
    assert list(traces_of(fig, "queued")["queued"].x) == []


def test_spp_snapshots_before_and_after() -> None:
    finished = runs_from_events(make_events(6))
    started = runs_from_events(make_events(6)[:3])  # only the SPP at initialization so far
    first, last = spp_snapshots(finished)
    assert first is not None and last is not None
    assert (first["step"], last["step"]) == (0, 6)
    assert spp_snapshots(started)[1] is None
    assert spp_snapshots(runs_from_events([])) == (None, None)

    before, after = spp_snapshot_figures([("BN", finished), ("NF", started)])
    assert before is not None and after is not None
    assert before.layout.title.text == "Before training"
    assert after.layout.title.text == "After training"
    panel_titles = [
        annotation.text.replace("<br>", " ") for annotation in before.layout.annotations
    ]
    assert panel_titles[:3] == [title for _, title in FORWARD_PANELS]  # on two lines each
    assert before.layout.annotations[0].text == "Average Channel<br>Squared Mean"
    assert [t.name for t in before.data if t.showlegend] == ["BN (step 0)", "NF (step 0)"]
    assert [t.name for t in after.data if t.showlegend] == ["BN (step 6)"]
    assert spp_snapshot_figures([("NF", started)])[1] is None
    assert spp_snapshot_figures([("queued", runs_from_events([]))]) == (None, None)


def with_config(run: dict[str, Any], **config: Any) -> dict[str, Any]:
    return {**run, "config": {"steps": 6, "eval_every": 2, **config}}


def test_colours_pair_norms_by_hue_and_batches_by_shade() -> None:
    runs = [
        (f"{norm} {batch}", with_config(runs_from_events(make_events(4)), norm=norm, batch=batch))
        for batch in (64, 8, 4)
        for norm in ("bn", "nf")
    ]
    colors = run_colors(runs)
    assert len(set(colors)) == 6
    bn = [colors[i] for i in (0, 2, 4)]  # batch 64, 8, 4
    nf = [colors[i] for i in (1, 3, 5)]
    assert bn[0] == NORM_HUES["bn"][0] and bn[-1] == NORM_HUES["bn"][1]  # dark to light
    assert nf[0] == NORM_HUES["nf"][0] and nf[-1] == NORM_HUES["nf"][1]

    def rgb(color: str) -> tuple[int, ...]:
        return tuple(int(float(v)) for v in color.removeprefix("rgb(").rstrip(")").split(","))

    assert all(rgb(c)[2] > rgb(c)[0] for c in bn)  # blues
    assert all(rgb(c)[0] > rgb(c)[2] for c in nf)  # oranges
    # Every figure uses them: the curves, and the before/after SPPs.
    fig = training_figure(runs)
    assert [traces_of(fig, label)[label].line.color for label, _ in runs] == colors
    before, _ = spp_snapshot_figures(runs)
    curves = [t for t in before.data if t.showlegend]
    assert [t.line.color for t in curves] == colors
    # Without configs (an older result): the qualitative colours, still one per run.
    plain = [("a", runs_from_events(make_events(4))), ("b", runs_from_events(make_events(4)))]
    assert len(set(run_colors(plain))) == 2


def test_smoothing_is_a_debiased_ema_over_the_faint_raw_curve() -> None:
    assert smoothed([1.0, None, 3.0], 0.0) == [1.0, None, 3.0]
    assert smoothed([2.0, 2.0, 2.0], 0.9) == pytest.approx([2.0, 2.0, 2.0])  # no pull to 0
    values = smoothed([1.0, None, 3.0], 0.5)
    assert values[1] is None
    assert values[2] == pytest.approx((0.5 * 0.5 * 1.0 + 0.5 * 3.0) / (1 - 0.25))
    run = runs_from_events(make_events(6))
    fig = training_figure([("BN", run)], smoothing=0.8)
    traces = traces_of(fig, "BN")
    raw, loss = traces["BN (raw)"], traces["BN"]
    assert list(raw.y) == pytest.approx([2.3 / s for s in range(1, 7)])
    assert list(loss.y) == pytest.approx(smoothed(list(raw.y), 0.8))
    assert raw.opacity < 1 and not raw.showlegend


def test_gradient_norm_panel_when_asked() -> None:
    run = runs_from_events(make_events(6))
    fig = training_figure([("NF", run)], grad_norm=True)
    assert [a.text for a in fig.layout.annotations] == [*PANEL_TITLES, GRAD_NORM_TITLE]
    grad = traces_of(fig, "NF")["NF: gradient norm"]
    assert grad.xaxis == "x4" and list(grad.y) == [1.0] * 6
    assert fig.layout.yaxis4.type == "log"


def test_two_collapse_labels_do_not_overlap() -> None:
    first = runs_from_events(make_events(6, collapse_at=5))
    second = runs_from_events(make_events(6, collapse_at=4))
    fig = training_figure([("BN", first), ("NF", second)])
    notes = [a for a in fig.layout.annotations if a.text.startswith("collapsed at step")]
    assert [a.text for a in notes] == ["collapsed at step 5", "collapsed at step 4"]
    assert all(a.ayref == "y" for a in notes)  # their tails in the axis' log10 units
    assert notes[0].ay - notes[1].ay > 0.05  # one row apart


def test_an_empty_accuracy_panel_says_when_the_first_evaluation_comes() -> None:
    run = with_config(runs_from_events(make_events(6)[:4]), norm="nf", batch=8, eval_every=50)
    run["evals"] = []
    fig = training_figure([("NF", run)])
    notes = [a.text for a in fig.layout.annotations]
    assert "no evaluation yet: first at step 6" in notes  # min(eval_every, steps)
    fig = training_figure([("NF", runs_from_events(make_events(1)))])
    assert "no evaluation yet" in [a.text for a in fig.layout.annotations]
    fig = training_figure([("NF", runs_from_events(make_events(4)))])
    assert not [a for a in fig.layout.annotations if a.text.startswith("no evaluation")]
