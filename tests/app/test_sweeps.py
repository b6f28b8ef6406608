"""The Sweep page's pure parts: the sweep and its URL, the cells as jobs finish, the CSV, and
the heatmap figure (colour scale, words of empty cells, hover text, the selected outline)."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

import nfcore
from app import sweep_figures, sweeps, urlstate
from app.sweeps import Axis, BadSweep, Cell, Sweep
from nfcore.spec.config import SPPConfig, config_hash
from nfcore.spec.summaries import Outcome, summary

TINY = SPPConfig(norm="nf", width=0.0625, resolution=32, batch=2)
SWEEP = Sweep(TINY, Axis("alpha", (0.1, 0.5)), Axis("depth", (14, 26)))
SWEEP_KEYS = ("x", "xs", "y", "ys", "stat")  # what a sweep adds to the Explorer's query


# --- the sweep and its URL --------------------------------------------------------------------
def test_the_url_round_trips_a_sweep() -> None:
    sweep = Sweep(TINY, Axis("gamma", ("auto", 1.414214)), Axis("skipinit", (False, True)),
                  statistic="leaves_range")  # fmt: skip
    query = sweeps.encode_sweep(sweep)
    assert query["x"] == "gamma" and query["xs"] == "auto,1.414214"
    assert query["ys"] == "false,true" and query["stat"] == "leaves_range"
    assert sweeps.decode_sweep(query) == sweep


def test_the_base_is_written_as_the_explorer_writes_a_config() -> None:
    query = sweeps.encode_sweep(SWEEP)
    base = {k: v for k, v in query.items() if k not in SWEEP_KEYS}
    assert base == urlstate.encode_config(TINY)
    # So an Explorer link opened at /sweeps sweeps around its config.
    explorer = urlstate.encode_config(TINY)
    assert sweeps.decode_sweep(explorer).base == TINY
    assert not sweeps.has_sweep(explorer)
    assert sweeps.has_sweep(query)


def test_the_default_sweep_is_alpha_by_depth_on_the_explorers_defaults() -> None:
    sweep = sweeps.decode_sweep({})
    assert sweep == sweeps.DEFAULT_SWEEP
    assert sweep.base == urlstate.default_config()
    assert (sweep.x.field, sweep.y.field, sweep.size) == ("alpha", "depth", 9)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"x": "colour"}, "x: 'colour' cannot be swept here"),
        ({"x": "depth", "y": "depth"}, "both axes vary depth"),
        ({"xs": "0.1,fast"}, "alpha: 'fast' is not a number"),
        ({"ys": "14,14.5"}, "depth: '14.5' is not a whole number"),
        ({"ys": "14, 26, 14"}, "depth: 14 is given twice"),
        ({"xs": " , "}, "alpha: give at least one value"),
        ({"stat": "mean"}, "stat: no summary statistic 'mean'"),
        ({"width": "9"}, "width: Input should be less than or equal to 4"),
    ],
)
def test_a_bad_link_says_which_part_is_wrong(query: dict[str, str], message: str) -> None:
    with pytest.raises(BadSweep, match=message.replace("(", r"\(")):
        sweeps.decode_sweep(query)


def test_values_take_the_fields_json_type() -> None:
    assert sweeps.parse_values("depth", "14, 26") == (14, 26)
    assert sweeps.parse_values("alpha", "1, 0.25") == (1.0, 0.25)
    assert sweeps.parse_values("gamma", "AUTO, 2") == ("auto", 2.0)
    assert sweeps.parse_values("skipinit", "off,true") == (False, True)
    assert sweeps.parse_values("activation", "relu,silu") == ("relu", "silu")


def test_the_request_is_the_apis_sweep_body() -> None:
    body = SWEEP.request()
    assert body["grid"] == {"alpha": [0.1, 0.5], "depth": [14, 26]}
    assert SPPConfig(**body["base"]) == TINY
    point = SWEEP.point_config(0.5, 26)
    assert (point.alpha, point.depth, point.width) == (0.5, 26, 0.0625)


def test_the_explorer_link_opens_the_points_config() -> None:
    point = SWEEP.point_config(0.5, 26)
    link = urlsplit(sweeps.explorer_link(point))
    assert link.path == "/"
    assert urlstate.decode_config(dict(parse_qsl(link.query))) == point


# --- cells from the sweep's view --------------------------------------------------------------
def job(job_id: str, state: str, done: int = 0, error: str | None = None) -> dict[str, Any]:
    return {"id": job_id, "state": state, "label": f"model {job_id}",
            "progress": {"done": done, "total": 8}, "error": error}  # fmt: skip


def spp(variances: list[float | None]) -> dict[str, Any]:
    blocks = [{"index": i, "stage": 0, "avg_sq_channel_mean": 0.0, "avg_channel_var": v,
               "residual_avg_channel_var": 1.0} for i, v in enumerate(variances)]  # fmt: skip
    return {"blocks": blocks, "meta": {"model": "from the result"}}


def view(*points: tuple[float, int, dict[str, Any] | None, bool]) -> dict[str, Any]:
    return {"points": [{"params": {"alpha": a, "depth": d}, "job": j, "cached": c}
                       for a, d, j, c in points]}  # fmt: skip


def test_cells_join_the_view_and_the_fetched_results() -> None:
    cached_id = config_hash(SWEEP.point_config(0.5, 26), nfcore.__version__)
    the_view = view(
        (0.1, 14, job("a", "finished"), False),
        (0.1, 26, job("b", "running", done=3), False),
        (0.5, 14, job("c", "failed", error="boom"), False),
        (0.5, 26, None, True),  # cached, its job record expired: named by its config's hash
    )
    assert not sweeps.ended(the_view)
    assert sweeps.finished_ids(SWEEP, the_view) == ["a", cached_id]
    results = {"a": spp([1.0, 2.5]), cached_id: spp([1.0, 1.5])}
    cells = sweeps.grid_cells(SWEEP, the_view, results)
    assert [(c.x, c.y, c.state) for c in cells] == [
        (0.1, 14, "finished"), (0.1, 26, "running"), (0.5, 14, "failed"), (0.5, 26, "finished"),
    ]  # fmt: skip
    assert cells[0].outcome == Outcome(2.5) and cells[0].variance == (1.0, 2.5)
    assert (cells[1].done, cells[1].total, cells[1].outcome) == (3, 8, None)
    assert cells[2].error == "boom"
    assert cells[3].job_id == cached_id and cells[3].label == "from the result"


def test_a_sweep_has_ended_when_no_point_is_queued_or_running() -> None:
    assert sweeps.ended(view((0.1, 14, job("a", "finished"), False), (0.5, 14, None, True),
                             (0.1, 26, job("b", "canceled"), False)))  # fmt: skip
    assert not sweeps.ended(view((0.1, 14, job("a", "queued"), False)))


def test_the_csv_has_one_row_per_point() -> None:
    the_view = view((0.1, 14, job("a", "finished"), False), (0.1, 26, job("b", "finished"), False),
                    (0.5, 14, job("c", "failed", error="boom"), False),
                    (0.5, 26, job("d", "finished"), False))  # fmt: skip
    results = {"a": spp([1.0, 3.0]), "b": spp([1.0, None]), "d": spp([1.25])}
    cells = sweeps.grid_cells(SWEEP, the_view, results)
    rows = list(csv.DictReader(io.StringIO(sweeps.csv_text(SWEEP, cells))))
    assert list(rows[0]) == ["alpha", "depth", "final_var", "note", "state", "job_id", "label"]
    assert [(r["alpha"], r["depth"], r["final_var"], r["job_id"]) for r in rows] == [
        ("0.1", "14", "3.0", "a"), ("0.1", "26", "", "b"), ("0.5", "14", "", "c"),
        ("0.5", "26", "1.25", "d"),
    ]  # fmt: skip
    assert "overflowed" in rows[1]["note"] and rows[2]["note"] == "boom"
    assert rows[0]["label"] == "model a"


# --- the heatmap ------------------------------------------------------------------------------
def cell(x: Any, y: Any, value: float | None, **kwargs: Any) -> Cell:
    outcome = None if value is None else Outcome(value)
    return Cell(x, y, kwargs.pop("state", "finished"), outcome=outcome, **kwargs)


def traces(fig: Any) -> dict[str, Any]:
    return {trace.name: trace for trace in fig.data}


def test_values_within_two_decades_are_coloured_as_they_are() -> None:
    cells = [cell(0.1, 14, 1.0), cell(0.1, 26, 2.0), cell(0.5, 14, 50.0), cell(0.5, 26, 99.0)]
    fig = sweep_figures.heatmap_figure(SWEEP, cells, summary("final_var"))
    heat = traces(fig)["final_var"]
    assert heat.meta == {"log": False}
    # Rows are the y values (depth), columns the x values (alpha).
    assert [list(row) for row in heat.z] == [[1.0, 50.0], [2.0, 99.0]]
    assert [list(row) for row in heat.customdata] == [[1.0, 50.0], [2.0, 99.0]]
    assert list(heat.x) == ["0.1", "0.5"] and list(heat.y) == ["14", "26"]


def test_values_spanning_decades_are_coloured_by_log10_with_readable_ticks() -> None:
    cells = [cell(0.1, 14, 0.5), cell(0.1, 26, 2.0), cell(0.5, 14, 1e3), cell(0.5, 26, 1e8)]
    fig = sweep_figures.heatmap_figure(SWEEP, cells, summary("final_var"))
    heat = traces(fig)["final_var"]
    assert heat.meta == {"log": True}
    assert heat.z[1][1] == pytest.approx(8.0) and heat.customdata[1][1] == 1e8
    # Eight decades, 0.5 to 1e8: a tick every second one.
    assert list(heat.colorbar.ticktext) == ["1", "100", "1e4", "1e6", "1e8"]
    assert list(heat.colorbar.tickvals) == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert heat.colorbar.title.text.endswith("(log)")


def test_decade_ticks_are_few_and_written_plainly_near_one() -> None:
    assert sweep_figures.decade_ticks(-2.3, 2.1) == (
        [-2.0, -1.0, 0.0, 1.0, 2.0],
        ["0.01", "0.1", "1", "10", "100"],
    )
    values, texts = sweep_figures.decade_ticks(0.0, 40.0)
    assert len(values) <= sweep_figures.MAX_DECADE_TICKS and texts[:2] == ["1", "1e6"]
    assert sweep_figures.decade_ticks(0.1, 0.5)[1] == ["1.26", "3.16"]  # inside one decade


def test_a_block_index_or_a_non_positive_value_is_never_coloured_in_decades() -> None:
    assert not sweep_figures.in_decades([1.0, 500.0], summary("leaves_range"))
    assert not sweep_figures.in_decades([0.0, 500.0], summary("final_var"))
    assert not sweep_figures.in_decades([1000.0], summary("final_var"))
    assert sweep_figures.in_decades([1.0, 101.0], summary("final_var"))


def test_cells_without_a_value_are_grey_with_a_word() -> None:
    cells = [
        cell(0.1, 14, None, state="queued"),
        cell(0.1, 26, None, state="running", done=3, total=8),
        Cell(0.5, 14, "finished", outcome=Outcome(None, "never", "stays")),
        cell(0.5, 26, None, state="failed", error="out of memory"),
    ]
    fig = sweep_figures.heatmap_figure(SWEEP, cells, summary("leaves_range"))
    grey = traces(fig)["no value"]
    assert [list(row) for row in grey.z] == [[0.0, 1.0], [0.0, 1.0]]  # pending, ended
    assert [list(row) for row in grey.text] == [["queued", "never"], ["3/8", "failed"]]
    assert all(v is None for row in traces(fig)["leaves_range"].z for v in row)
    points = traces(fig)["points"]
    hover = {tuple(c): text for c, text in zip(points.customdata, points.hovertext, strict=True)}
    assert "failed</b>: out of memory" in hover[(1, 1)]


def test_hover_text_has_the_values_and_a_sparkline_of_the_variance() -> None:
    cells = [cell(0.1, 14, 4.0, label="NF-ResNetV2-14", variance=(1.0, 2.0, 4.0, None))]
    fig = sweep_figures.heatmap_figure(SWEEP, cells, summary("final_var"))
    points = traces(fig)["points"]
    assert [list(c) for c in points.customdata] == [[0, 0]]  # the clicked cell's indices
    [text] = points.hovertext
    assert "α (alpha) = 0.1, Depth = 14" in text
    assert "<b>Final-block variance: 4</b>" in text and "NF-ResNetV2-14" in text
    assert "▁▅█×" in text and "(1 → 4)" in text


def test_sparkline_is_on_a_log_scale() -> None:
    assert sweep_figures.sparkline([1.0, 10.0, 100.0]) == "▁▅█"
    assert sweep_figures.sparkline([2.0, 2.0]) == "▄▄"
    assert sweep_figures.sparkline([None, None]) == "××"


def test_the_selected_point_is_outlined() -> None:
    cells = [cell(x, y, 1.0) for x in (0.1, 0.5) for y in (14, 26)]
    fig = sweep_figures.heatmap_figure(SWEEP, cells, summary("final_var"), selected=(0.5, 14))
    [shape] = fig.layout.shapes
    assert (shape.x0, shape.x1, shape.y0, shape.y1) == (0.5, 1.5, -0.5, 0.5)
    unselected = sweep_figures.heatmap_figure(SWEEP, cells, summary("final_var"))
    assert not unselected.layout.shapes


def test_the_pages_pure_parts_load_no_torch() -> None:
    code = "import sys, app.sweeps, app.sweep_figures; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
