"""The training-curve builders, on hand-made runs and events (no model is trained)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from nfcore.plots import FORWARD_PANELS
from nfcore.train_plots import (
    EMA_TITLE,
    PANEL_TITLES,
    runs_from_events,
    spp_snapshot_figures,
    spp_snapshots,
    training_figure,
)
from tests.nfcore.test_plots import make_result


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
