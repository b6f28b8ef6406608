"""The SPP scrubber's builder on hand-made runs: a frame per recorded step, each carrying the
snapshot recorded at that step (or a collapsed run's last), the loss marked at that step."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nfcore.plots.spp import FORWARD_PANELS
from nfcore.plots.training import run_colors, runs_from_events
from nfcore.plots.training_spp import (
    LOSS_TITLE,
    SCRUB_TITLE,
    snapshot_at,
    snapshot_steps,
    spp_over_training_figure,
)
from tests.nfcore.plots.test_plots import make_result
from tests.nfcore.plots.test_train_plots import make_events


def growing_run(norm: str, batch: int, spp_steps: list[int], steps: int = 8) -> dict[str, Any]:
    """A run whose SPP variance at step s is the initial one times (1 + s): each snapshot
    differs from the others, so a frame showing the wrong one is caught."""
    run = runs_from_events(e for e in make_events(steps) if e["kind"] != "spp")
    base = make_result(norm).to_json_dict()
    for step in spp_steps:
        result = copy.deepcopy(base)
        for block in result["blocks"]:
            block["avg_channel_var"] *= 1 + step
        run["spp"].append({"step": step, "result": result})
    run["config"] = {"norm": norm, "batch": batch, "steps": steps, "eval_every": 2}
    return run


def frame_traces(fig: Any, step: int) -> dict[tuple[str, str], Any]:
    """The SPP traces of the frame for `step`, by (run label, panel x-axis)."""
    [frame] = [frame for frame in fig.frames if frame.name == str(step)]
    animated = [fig.data[i] for i in frame.traces]
    return {
        (base.name, base.xaxis): shown
        for base, shown in zip(animated, frame.data, strict=True)
        if base.xaxis != "x"
    }


def test_a_frame_per_step_carries_that_steps_snapshot() -> None:
    bn = growing_run("bn", 64, [0, 2, 4, 6, 8])
    nf = growing_run("nf", 64, [0, 2, 4, 6, 8])
    runs = [("BN", bn), ("NF", nf)]
    fig = spp_over_training_figure(runs)
    assert fig is not None
    assert fig.layout.title.text == SCRUB_TITLE
    assert [frame.name for frame in fig.frames] == ["0", "2", "4", "6", "8"]
    titles = [a.text.replace("<br>", " ") for a in fig.layout.annotations]
    assert titles == [LOSS_TITLE.replace("<br>", " ")] + [title for _, title in FORWARD_PANELS]
    variance_axis = "x3"  # the loss, the squared mean, then the variance
    for step in (0, 4, 8):
        traces = frame_traces(fig, step)
        for label, run in runs:
            [snapshot] = [s for s in run["spp"] if s["step"] == step]
            expected = [b["avg_channel_var"] for b in snapshot["result"]["blocks"]]
            assert list(traces[(label, variance_axis)].y) == pytest.approx(expected)
            assert list(traces[(label, "x2")].y) == pytest.approx(
                [b["avg_sq_channel_mean"] for b in snapshot["result"]["blocks"]]
            )
    # The slider picks each frame by name, starting at the last (the newest while training).
    [slider] = fig.layout.sliders
    assert [list(s.args[0]) for s in slider.steps] == [["0"], ["2"], ["4"], ["6"], ["8"]]
    assert slider.active == 4
    buttons = [button.label for button in fig.layout.updatemenus[0].buttons]
    assert buttons == ["▶ Play", "❚❚ Pause"]
    # The same colours as the curves and the before/after SPPs.
    colors = run_colors(runs)
    assert [trace.line.color for trace in fig.data[:2]] == colors


def test_the_loss_panel_marks_the_step_shown() -> None:
    fig = spp_over_training_figure([("BN", growing_run("bn", 8, [0, 4, 8]))], step=4)
    assert fig is not None
    assert fig.layout.sliders[0].active == 1
    [frame] = [frame for frame in fig.frames if frame.name == "4"]
    line, dots = frame.data[0], frame.data[1]
    assert set(line.x) == {4} and len(line.x) == 2  # a vertical line at step 4
    assert list(dots.x) == [4] and list(dots.y) == pytest.approx([2.3 / 4])  # the loss there
    low, high = fig.layout.yaxis.range  # fixed over all frames: the line spans it
    assert list(line.y) == pytest.approx([10**low, 10**high])


def test_a_collapsed_run_keeps_its_last_snapshot_and_ranges_are_fixed() -> None:
    done = growing_run("nf", 4, [0, 3, 6, 8])
    collapsed = growing_run("bn", 4, [0, 3, 5], steps=5)
    runs = [("NF", done), ("BN", collapsed)]
    assert snapshot_steps(runs) == [0, 3, 5, 6, 8]
    assert snapshot_at(collapsed, 8)["step"] == 5
    assert snapshot_at(collapsed, 4)["step"] == 3
    fig = spp_over_training_figure(runs, log_y=True)
    assert fig is not None
    late = frame_traces(fig, 8)[("BN", "x3")]
    expected = [b["avg_channel_var"] for b in snapshot_at(collapsed, 5)["result"]["blocks"]]
    assert list(late.y) == pytest.approx(expected)
    assert fig.layout.yaxis3.type == "log"
    values = [v for _, run in runs for s in run["spp"] for b in s["result"]["blocks"]
              for v in [b["avg_channel_var"]]]  # fmt: skip
    low, high = fig.layout.yaxis3.range
    assert 10**low < min(values) and 10**high > max(values)


def test_no_snapshot_no_figure() -> None:
    assert spp_over_training_figure([("queued", runs_from_events([]))]) is None


def test_many_snapshots_are_thinned_to_the_most_frames() -> None:
    from nfcore.plots.training_spp import MAX_FRAMES

    run = growing_run("nf", 8, list(range(0, 401)), steps=8)
    fig = spp_over_training_figure([("NF", run)])
    assert fig is not None
    names = [frame.name for frame in fig.frames]
    assert len(names) <= MAX_FRAMES and names[0] == "0" and names[-1] == "400"
