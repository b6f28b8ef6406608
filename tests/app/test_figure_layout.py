"""`app.figure_layout`: a figure laid out again for a narrow column, pure figure in, figure out."""

from __future__ import annotations

import itertools

import plotly.graph_objects as go
import pytest
from plotly.subplots import make_subplots

from app import figure_layout
from nfcore.plots.training import EMA_TITLE
from nfcore.spec.statistics import STATISTICS

TITLES = [row.title for row in STATISTICS[:5]]  # "Average Channel Squared Mean", ...
SHORT = [row.short for row in STATISTICS[:5]]


def side_by_side(columns: int, rows: int = 1) -> go.Figure:
    titles = (TITLES * 2)[: columns * rows]
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=titles)
    for row, col in itertools.product(range(1, rows + 1), range(1, columns + 1)):
        fig.add_trace(go.Scatter(x=[0, 1, 2], y=[row, col, 3], name=f"run {row}.{col}"), row, col)
    fig.update_layout(
        height=400, title={"text": "A figure title that is much too long for a phone"}
    )
    return fig


def y_domains(fig: go.Figure) -> list[tuple[float, float]]:
    return [tuple(fig.layout[y].domain) for _, y, _ in figure_layout.panels(fig)]


def test_panel_columns_counts_the_widest_row() -> None:
    assert figure_layout.panel_columns(side_by_side(3)) == 3
    assert figure_layout.panel_columns(side_by_side(2, rows=2)) == 2
    assert figure_layout.panel_columns(make_subplots(rows=3, cols=1)) == 1
    assert figure_layout.panel_columns(go.Figure(go.Scatter(x=[0], y=[0]))) == 1


@pytest.mark.parametrize(("columns", "rows"), [(3, 1), (5, 1), (2, 2)])
def test_stacked_puts_each_panel_on_a_row_of_its_own_in_reading_order(
    columns: int, rows: int
) -> None:
    fig = side_by_side(columns, rows)
    order = [x for x, _, _ in figure_layout.panels(fig)]  # reading order before stacking
    stacked = figure_layout.stacked(fig)
    found = figure_layout.panels(stacked)
    assert [x for x, _, _ in found] == order  # the same order, now top to bottom
    assert all(tuple(stacked.layout[x].domain) == (0, 1) for x, _, _ in found)
    domains = y_domains(stacked)
    for (_, upper_bottom), (lower_top, _) in itertools.pairwise(
        [(top, bottom) for bottom, top in domains]
    ):
        assert lower_top < upper_bottom, f"panels share a band of the height: {domains}"
    # Each title sits at the top of its own panel, short, centred over the full width.
    notes = {note.text: note for note in stacked.layout.annotations}
    for (_, top), short in zip(domains, (SHORT * 2)[: columns * rows], strict=True):
        assert notes[short].y == pytest.approx(top) and notes[short].x == 0.5
    assert not set(TITLES) & set(notes)
    assert stacked.layout.height > columns * rows * figure_layout.STACKED_ROW_PX
    assert stacked.layout.legend.orientation == "h" and stacked.layout.legend.y < 0


def test_stacked_moves_a_slider_and_its_buttons_clear_of_the_panels() -> None:
    fig = side_by_side(3)
    fig.update_layout(
        sliders=[{"steps": [{"label": "0"}, {"label": "4"}], "y": 0, "x": 0.2, "len": 0.6}],
        updatemenus=[{"type": "buttons", "x": 0.9, "y": 1.2, "buttons": [{"label": "Play"}]}],
    )
    stacked = figure_layout.stacked(fig)
    assert stacked.layout.sliders[0].y < 0 and stacked.layout.sliders[0].len == 1.0
    menu = stacked.layout.updatemenus[0]
    assert menu.x == 0.0 and menu.xanchor == "left" and menu.y > 1  # above the first panel
    # The slider's room is added under the panels, above the legend.
    assert stacked.layout.legend.y < stacked.layout.sliders[0].y


def test_with_short_titles_names_panels_by_their_short_titles_and_leaves_others() -> None:
    fig = side_by_side(3)
    fig.layout.annotations[1].text = "Average Channel<br>Variance"  # a title broken in two
    fig.add_annotation(text="a note of the figure's own", x=1, y=1, showarrow=False)
    texts = [note.text for note in figure_layout.with_short_titles(fig).layout.annotations]
    assert texts == [*SHORT[:3], "a note of the figure's own"]
    assert figure_layout.SHORT_TITLES[EMA_TITLE] != EMA_TITLE


def test_title_under_toolbar_wraps_the_title_and_makes_room_for_it() -> None:
    fig = side_by_side(3)
    fig.update_layout(margin={"t": 40})
    fitted = figure_layout.title_under_toolbar(fig, 200)  # 22 characters a line
    lines = fitted.layout.title.text.split("<br>")
    assert len(lines) > 1 and all(len(line) <= 22 for line in lines)
    assert " ".join(lines) == "A figure title that is much too long for a phone"
    assert fitted.layout.title.x == 0 and fitted.layout.title.xanchor == "left"
    grown = fitted.layout.margin.t - 40
    assert grown > 0 and fitted.layout.height == 400 + grown  # the panels keep their height
    assert fitted.layout.margin.t >= figure_layout.TOOLBAR_PX + 22 * len(lines)


def test_title_under_toolbar_leaves_a_figure_without_title_alone() -> None:
    fig = side_by_side(2)
    fig.update_layout(title=None)
    before = fig.to_plotly_json()
    assert figure_layout.title_under_toolbar(fig, 300).to_plotly_json() == before
