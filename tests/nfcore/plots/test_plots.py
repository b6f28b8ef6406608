"""The SPP figure builders and writer, on hand-made results (no model is run)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from nfcore.plots.spp import FORWARD_PANELS, GRADIENT_PANELS, spp_figure, write_figure
from nfcore.spec.config import SPPConfig
from nfcore.spec.foreign_config import ForeignConfig
from nfcore.spec.result import BlockStats, SPPMeta, SPPResult

PANEL_TITLES = [
    "Average Channel Squared Mean",
    "Average Channel Variance",
    "Residual Average Channel Variance",
]


def make_result(
    norm: str = "nf",
    *,
    gradients: bool = False,
    extra_stats: bool = False,
    overflow_from: int | None = None,
) -> SPPResult:
    """A tiny run with paper-shaped statistics: NF variance grows by alpha^2, resets per stage."""
    config = SPPConfig(depth=26, norm=norm, width=0.25, resolution=32, batch=4,
                       gradients=gradients, extra_stats=extra_stats)  # fmt: skip
    alpha = config.alpha or 0.2
    blocks, stage_ends, index = [], [], 0
    for stage, count in enumerate(config.stage_layout):
        expected = 1.0
        for position in range(count):
            expected = 1.0 + alpha**2 if position == 0 else expected + alpha**2
            overflowed = overflow_from is not None and index >= overflow_from
            blocks.append(
                BlockStats(
                    index=index,
                    stage=stage,
                    transition=position == 0,
                    avg_sq_channel_mean=None if overflowed else 0.01 * (index + 1),
                    avg_channel_var=None if overflowed else expected * 1.01,
                    residual_avg_channel_var=None if overflowed else 0.9 + 0.01 * index,
                    expected_var=expected if norm == "nf" else None,
                    grad_avg_sq_channel_mean=1e-9 * (index + 1) if gradients else None,
                    grad_avg_channel_var=1e-6 / (index + 1) if gradients else None,
                    grad_residual_avg_channel_var=4e-8 / (index + 1) if gradients else None,
                    activation_mean=0.002 * index if extra_stats else None,
                    avg_pixel_norm=5.0 + 0.1 * index if extra_stats else None,
                )
            )
            index += 1
        stage_ends.append(index - 1)
    meta = SPPMeta(
        version="0.1.0",
        torch_version="2.13.0",
        device="cpu",
        seconds=0.1,
        parameter_count=1000,
        gamma=1.71,
        model=config.label,
        num_blocks=index,
        stage_ends=stage_ends,
        nonfinite_from_block=overflow_from,
    )
    return SPPResult(config=config, blocks=blocks, meta=meta)


def traces_on(fig, axis: str) -> list:
    """Traces drawn on one panel, named by its x axis ('x', 'x2', ...)."""
    return [trace for trace in fig.data if trace.xaxis == axis]


def curves(fig, axis: str) -> list:
    return [t for t in traces_on(fig, axis) if t.mode == "lines" and "expected" not in t.name]


def stage_dots(fig, axis: str) -> list:
    return [t for t in traces_on(fig, axis) if t.mode == "markers"]


def test_three_panels_with_paper_titles():
    fig = spp_figure(make_result())
    titles = [annotation.text for annotation in fig.layout.annotations]
    assert titles == PANEL_TITLES
    assert [title for _, title in FORWARD_PANELS] == PANEL_TITLES
    for axis in ("xaxis", "xaxis2", "xaxis3"):
        assert fig.layout[axis].title.text == "Residual block"


def test_one_curve_per_panel_labelled_with_the_run():
    result = make_result()
    fig = spp_figure(result)
    for axis, (key, _) in zip(("x", "x2", "x3"), FORWARD_PANELS, strict=True):
        (curve,) = curves(fig, axis)
        assert curve.name == result.config.label
        assert list(curve.x) == [block.index for block in result.blocks]
        assert list(curve.y) == [getattr(block, key) for block in result.blocks]


def test_custom_labels_replace_the_model_name():
    fig = spp_figure(make_result(), labels=["mine"], title="Custom")
    assert {curve.name for curve in curves(fig, "x")} == {"mine"}
    assert fig.layout.title.text == "Custom"
    with pytest.raises(ValueError, match="2 labels for 1 results"):
        spp_figure(make_result(), labels=["a", "b"])


def test_overlaid_runs_get_one_legend_entry_each():
    nf, bn = make_result("nf"), make_result("bn")
    fig = spp_figure([nf, bn])
    runs = [t for t in fig.data if t.showlegend is not False and "expected" not in t.name]
    assert [t.name for t in runs] == [nf.config.label, bn.config.label]
    for axis in ("x", "x2", "x3"):
        panel = curves(fig, axis)
        assert [t.name for t in panel] == [nf.config.label, bn.config.label]
        assert panel[0].line.color != panel[1].line.color
        assert len({t.legendgroup for t in panel}) == 2
        for curve, dots in zip(panel, stage_dots(fig, axis), strict=True):
            assert dots.legendgroup == curve.legendgroup


def test_stage_ends_are_dots_on_each_curve():
    result = make_result()
    fig = spp_figure(result)
    for axis, (key, _) in zip(("x", "x2", "x3"), FORWARD_PANELS, strict=True):
        (dots,) = stage_dots(fig, axis)
        assert list(dots.x) == result.meta.stage_ends == [1, 3, 5, 7]
        assert list(dots.y) == [getattr(result.blocks[i], key) for i in result.meta.stage_ends]


def test_expected_variance_only_for_nf_runs():
    nf, bn = make_result("nf"), make_result("bn")
    fig = spp_figure([nf, bn])
    expected = [t for t in fig.data if "expected" in t.name]
    (trace,) = expected
    assert trace.xaxis == "x2"  # the Average Channel Variance panel
    assert trace.line.dash == "dash"
    assert list(trace.y) == [block.expected_var for block in nf.blocks]
    # alpha = 0.2: 1.04 at each transition, then +0.04 per block within the stage.
    assert list(trace.y)[:3] == pytest.approx([1.04, 1.08, 1.04])
    assert trace.line.color == curves(fig, "x2")[0].line.color


def test_log_y_sets_every_panel_to_log():
    linear = spp_figure(make_result())
    assert {linear.layout[f"yaxis{s}"].type for s in ("", "2", "3")} == {"linear"}
    log = spp_figure(make_result(), log_y=True)
    assert {log.layout[f"yaxis{s}"].type for s in ("", "2", "3")} == {"log"}


def test_gradient_row_only_when_gradients_were_measured():
    assert "yaxis4" not in spp_figure(make_result()).layout
    result = make_result(gradients=True)
    fig = spp_figure(result)
    titles = [annotation.text for annotation in fig.layout.annotations]
    assert titles == PANEL_TITLES + [title for _, title in GRADIENT_PANELS]
    assert fig.layout.yaxis4.type == fig.layout.yaxis5.type == fig.layout.yaxis6.type == "log"
    (curve,) = curves(fig, "x5")
    assert list(curve.y) == [block.grad_avg_channel_var for block in result.blocks]
    (curve,) = curves(fig, "x6")
    assert list(curve.y) == [block.grad_residual_avg_channel_var for block in result.blocks]


def test_overflowed_values_are_gaps():
    fig = spp_figure(make_result("none", overflow_from=5), log_y=True)
    for axis in ("x", "x2", "x3"):
        (curve,) = curves(fig, axis)
        assert list(curve.y)[5:] == [None, None, None]
        assert all(value is not None for value in list(curve.y)[:5])
        assert curve.connectgaps is False
    (dots,) = stage_dots(fig, "x2")
    assert list(dots.y)[-1] is None


def test_write_html_opens_offline(tmp_path: Path):
    path = write_figure(spp_figure(make_result()), tmp_path / "nested" / "spp.html")
    text = path.read_text(encoding="utf-8")
    assert path.stat().st_size > 1_000_000  # plotly.js is embedded, not linked
    assert "plotly" in text
    assert re.search(r"<script[^>]*\ssrc=", text) is None  # no CDN or other external script


def test_write_png_renders_an_image(tmp_path: Path):
    path = write_figure(spp_figure([make_result("nf"), make_result("bn")]), tmp_path / "spp.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_write_json_round_trips(tmp_path: Path):
    import plotly.io as pio

    fig = spp_figure(make_result())
    path = write_figure(fig, tmp_path / "spp.json")
    assert len(pio.read_json(path).data) == len(fig.data)


def test_unsupported_format_is_rejected(tmp_path: Path):
    message = "unsupported plot format '.bmp'; use .html, .png, .svg, .pdf or .json"
    with pytest.raises(ValueError) as error:
        write_figure(spp_figure(make_result()), tmp_path / "spp.bmp")
    assert str(error.value) == message
    assert not (tmp_path / "spp.bmp").exists()


# --- chosen panels ----------------------------------------------------------------------------


def test_a_chosen_appendix_g_statistic_gets_its_panel():
    result = make_result(extra_stats=True)
    fig = spp_figure(result, panels=["avg_pixel_norm", "avg_channel_var", "activation_mean"])
    titles = [annotation.text for annotation in fig.layout.annotations]
    # In the table's order, whatever order they were asked in.
    assert titles == ["Average Channel Variance", "Activation Mean", "Average Pixel Norm"]
    for axis, key in (("x", "avg_channel_var"), ("x2", "activation_mean"),
                      ("x3", "avg_pixel_norm")):  # fmt: skip
        (curve,) = curves(fig, axis)
        assert list(curve.y) == [getattr(block, key) for block in result.blocks]
    assert "xaxis4" not in fig.layout
    # Without panels the Appendix G statistics stay off the figure, as before.
    assert [a.text for a in spp_figure(result).layout.annotations] == PANEL_TITLES


def test_gradient_panels_form_the_second_row_or_the_only_one():
    result = make_result(gradients=True)
    both = spp_figure(result, panels=["grad_avg_channel_var", "avg_sq_channel_mean"])
    assert [a.text for a in both.layout.annotations] == [
        "Average Channel Squared Mean", "Gradient Average Channel Variance"
    ]  # fmt: skip
    assert both.layout.yaxis2.type == "log"  # the gradient row, below the forward one
    assert both.layout.yaxis.domain[0] > both.layout.yaxis2.domain[1]
    alone = spp_figure(result, panels=["grad_avg_channel_var"])
    assert [a.text for a in alone.layout.annotations] == ["Gradient Average Channel Variance"]
    assert alone.layout.height == 500  # one row, not an empty one above it
    (curve,) = curves(alone, "x")
    assert curve.showlegend  # the legend names the run on whichever panel comes first


def test_a_panel_no_run_measured_is_named_with_what_was_measured():
    with pytest.raises(ValueError, match=r"no run measured activation_mean \(they measured "
                       r"avg_sq_channel_mean, avg_channel_var, residual_avg_channel_var;"):  # fmt: skip
        spp_figure(make_result(), panels=["avg_channel_var", "activation_mean"])
    with pytest.raises(ValueError, match="unknown statistic 'bogus'; choose from avg_sq_"):
        spp_figure(make_result(), panels=["bogus"])
    with pytest.raises(ValueError, match="at least one"):
        spp_figure(make_result(), panels=[])
    # One run of several measuring it is enough; the others leave that panel empty.
    plain, extra = make_result(), make_result(extra_stats=True)
    fig = spp_figure([plain, extra], panels=["activation_mean"])
    label = f"{extra.config.label} (extra_stats=true)"  # one label twice: what differs is said
    assert [curve.name for curve in curves(fig, "x")] == [label]
    runs = [t.name for t in fig.data if t.showlegend is not False]
    assert runs == [label]


def test_a_narrow_figure_stacks_the_panels_under_short_titles_that_do_not_overlap() -> None:
    # A phone (about 400 px): three panels side by side overlap their titles and labels.
    runs = [make_result("nf", gradients=True), make_result("bn", gradients=True)]
    fig = spp_figure(runs, narrow=True)
    titles = [a.text for a in fig.layout.annotations if a.text in
              ("Squared mean", "Variance", "Residual variance", "Gradient variance",
               "Gradient squared mean", "Gradient residual variance")]  # fmt: skip
    assert titles == ["Squared mean", "Variance", "Residual variance", "Gradient squared mean",
                      "Gradient variance", "Gradient residual variance"]  # fmt: skip
    axes = [fig.layout[name] for name in fig.layout if name.startswith("yaxis")]
    assert len(axes) == 6
    domains = sorted(tuple(axis.domain) for axis in axes)
    for (_, top), (bottom, _) in itertools.pairwise(domains):
        assert top < bottom  # each panel its own band of the height, none shared
    x_domains = {tuple(fig.layout[n].domain) for n in fig.layout if n.startswith("xaxis")}
    assert x_domains == {(0.0, 1.0)}  # the whole width each
    ys = [a.y for a in fig.layout.annotations if a.text in titles]
    assert len(set(ys)) == len(ys)
    assert len(fig.layout.title.text) <= 40


def test_runs_keep_the_colours_they_are_given() -> None:
    first, second = make_result("nf"), make_result("bn")
    fig = spp_figure([second, first], colors=["#111111", "#222222"])
    colours = {t.name: t.line.color for t in fig.data if t.line.color and t.mode == "lines"}
    assert colours[second.config.label] == "#111111" and colours[first.config.label] == "#222222"
    with pytest.raises(ValueError, match="got 1 colors for 2 results"):
        spp_figure([first, second], colors=["#111111"])


def foreign_result(model: str = "ResNet", resolution: int = 64) -> SPPResult:
    """A network of one's own as `measure` returns it: its blocks carry their module names."""
    config = ForeignConfig(model=model, resolution=resolution)
    names = ["layer1.0", "layer1.1", "layer2.0", "layer2.1"]
    blocks = [
        BlockStats(index=i, stage=i // 2, transition=i % 2 == 0, name=name,
                   avg_sq_channel_mean=0.1 * (i + 1), avg_channel_var=1.0 + i,
                   residual_avg_channel_var=None, expected_var=None)
        for i, name in enumerate(names)
    ]  # fmt: skip
    meta = SPPMeta(version="0.1.0", torch_version="2.13.0", device="cpu", seconds=0.1,
                   parameter_count=1000, gamma=None, model=config.label, num_blocks=4,
                   stage_ends=[1, 3], reduced_over="N,H,W")  # fmt: skip
    return SPPResult(config=config, blocks=blocks, meta=meta)


def test_the_hover_names_each_block_of_a_foreign_network() -> None:
    """Issue 20 item 7: the hover showed the block index and stage, not which module it is."""
    fig = spp_figure(foreign_result())
    (curve,) = curves(fig, "x")
    assert [list(row) for row in curve.customdata] == [
        [0, "layer1.0"], [0, "layer1.1"], [1, "layer2.0"], [1, "layer2.1"]
    ]  # fmt: skip
    assert "block %{x}: %{customdata[1]}" in curve.hovertemplate
    assert "stage %{customdata[0]}" in curve.hovertemplate
    (dots,) = stage_dots(fig, "x")
    assert [list(row) for row in dots.customdata] == [[0, "layer1.1"], [1, "layer2.1"]]
    assert "%{customdata[1]}" in dots.hovertemplate
    assert "end of stage %{customdata[0]}" in dots.hovertemplate
    # A network of nfcore's has no module names: its hover stays index and stage.
    (built_in,) = curves(spp_figure(make_result()), "x")
    assert "customdata[1]" not in built_in.hovertemplate
    assert "block %{x}, stage %{customdata[0]}" in built_in.hovertemplate


def test_runs_that_share_a_label_are_told_apart_by_what_differs() -> None:
    """Issue 20 item 7: torchvision's and timm's resnet50, measured from Python, are both
    "ResNet" (the class name); overlaid, the legend had two entries of one name."""
    torchvision, timm = foreign_result("ResNet"), foreign_result("ResNet")
    fig = spp_figure([torchvision, timm])
    assert [curve.name for curve in curves(fig, "x")] == ["ResNet", "ResNet (2)"]
    assert "<b>ResNet (2)</b>" in curves(fig, "x")[1].hovertemplate
    # One network at two input sizes: the legend says which is which.
    small, large = foreign_result(resolution=32), foreign_result(resolution=64)
    names = [curve.name for curve in curves(spp_figure([small, large]), "x")]
    assert names == ["ResNet (resolution=32)", "ResNet (resolution=64)"]
    # Labels given by the caller are told apart too; a label of its own stays as it is.
    fig = spp_figure([torchvision, timm, make_result()], labels=["mine", "mine", "paper"])
    assert [curve.name for curve in curves(fig, "x")] == ["mine", "mine (2)", "paper"]
