"""The page's layout for the width it has, measured in the browser, not guessed from the
User-Agent.

Streamlit tells a script the browser's User-Agent, not how wide its window is, and a phone in
desktop mode, an iPad, a split screen or a narrow window beside slides all say "desktop". So a
tiny component (`st.components.v2`, no iframe) measures the width of the page's main column in
the browser, where the charts go, and sends it in steps of WIDTH_STEP_PX whenever it changes
(a resize, a rotated phone, the sidebar opened or closed): the page then runs again and lays
itself out for that width. Until the first measurement arrives, a User-Agent that says
"Mobi" is taken for a phone and anything else for a wide screen.

Under NARROW_PX the charts' panels are stacked one per row under short titles, rows of buttons
become menus, and the controls that live in the sidebar on a wide screen (which a phone shows
over the whole page, hiding the chart they change) sit in a sheet at the bottom of the screen
instead, the chart above them. Wider, a panel narrower than SHORT_TITLE_PX still gets its short
title, so five panels side by side do not print their titles over each other.
"""

from __future__ import annotations

import functools
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from app import figure_layout

NARROW_PX = 700  # a main column narrower than this: one panel per row (a phone, 800 px + sidebar)
SHORT_TITLE_PX = 300  # a panel narrower than this: its short title ("Average channel..." > 250)
WIDTH_STEP_PX = 50  # the width is sent rounded down to this: a resize reruns once per step
PHONE_PX = 360  # a column's width taken for a phone's before it is measured
NARROW_TOP_PADDING = "3.5rem"  # over a narrow page's title: under Streamlit's header, not 6rem
SHEET_HEIGHT = "45vh"  # the controls' sheet at most: the chart keeps the top half of a phone
SIDEBAR_OVER_PX = 768  # Streamlit's sidebar covers the page in a window this wide or less
SIZE_KEY = "layout_size"  # session key: {"main": column px, "window": px}, once measured
SIZES = ("main", "window")
COMPONENT_KEY = "layout_measure"  # the measuring component's key (hidden by its CSS class)
SHEET_KEY = "controls_sheet"  # the bottom sheet's container key (its CSS class)
DARK_BACKGROUND = "#0e1117"  # Streamlit's dark theme, behind the sheet's controls

# The main column's inner width (its padding left out), sent when it has changed; observed for
# as long as the page is open. Only a change of the window or of the sidebar beside the column
# changes it (not the page's content), and the value sent is kept (`data.known`), so a measured
# width reruns the page once and not again.
_MEASURE_JS = """
export default function(component) {
  const { data, setStateValue } = component;
  const column = () => document.querySelector('[data-testid="stMainBlockContainer"]');
  const step = (px) => Math.floor(px / data.step) * data.step;
  const measure = () => {
    const main = column();
    let inner = window.innerWidth;
    if (main) {
      // The column's box, its scroll bar included: a page made taller by stacking its
      // panels does not measure narrower, so a width never flips the layout back and forth.
      const box = (main.parentElement || main).getBoundingClientRect().width;
      const style = getComputedStyle(main);
      inner = Math.min(box, window.innerWidth) - parseFloat(style.paddingLeft)
        - parseFloat(style.paddingRight);
    }
    return { main: step(inner), window: step(window.innerWidth) };
  };
  let known = JSON.stringify(data.known);
  let timer = null;
  const report = () => {
    const size = measure();
    if (size.main > 0 && JSON.stringify(size) !== known) {
      known = JSON.stringify(size);
      setStateValue("size", size);
    }
  };
  report();
  const observer = new ResizeObserver(() => {
    clearTimeout(timer);
    timer = setTimeout(report, 200);
  });
  observer.observe(column() || document.body);
  window.addEventListener("resize", report);
  return () => {
    observer.disconnect();
    window.removeEventListener("resize", report);
    clearTimeout(timer);
  };
}
"""


@functools.cache
def _component() -> Any:
    """The measuring component, registered once per process (not at import)."""
    return st.components.v2.component("nf_layout_width", js=_MEASURE_JS)


def measure() -> None:
    """Measure the main column and the window in the browser (every page run, before the page
    draws: `app.main` calls it), and set the page's CSS for them."""
    result = _component()(
        key=COMPONENT_KEY,
        data={"known": st.session_state.get(SIZE_KEY), "step": WIDTH_STEP_PX},
        on_size_change=lambda: None,
    )
    size = getattr(result, "size", None)
    if isinstance(size, dict) and all(isinstance(size.get(k), int | float) for k in SIZES):
        st.session_state[SIZE_KEY] = {k: int(size[k]) for k in SIZES}
    st.html(f"<style>{_css()}</style>")


def width() -> int | None:
    """The main column's width in px, as last measured; None before the first measurement."""
    size = st.session_state.get(SIZE_KEY)
    return size["main"] if size else None


def sidebar_over_page() -> bool:
    """Whether the sidebar, when opened, covers the page (a window of at most SIDEBAR_OVER_PX,
    or a phone before it is measured) rather than standing beside it."""
    size = st.session_state.get(SIZE_KEY)
    return size["window"] <= SIDEBAR_OVER_PX if size else narrow()


def narrow() -> bool:
    """A main column under NARROW_PX: panels stacked, menus for rows of buttons, the controls
    in a sheet at the bottom. Before it is measured: whether the User-Agent says "Mobi"."""
    measured = width()
    if measured is not None:
        return measured < NARROW_PX
    try:
        agent = st.context.headers.get("User-Agent") or ""
    except Exception:  # no browser behind this run (a script test)
        return False
    return "Mobi" in agent


def short_titles(panels: int, share: float = 1.0) -> bool:
    """Whether `panels` side by side, in `share` of the main column, are too narrow for their
    full titles."""
    measured = width()
    if narrow():
        return True
    if measured is None or panels < 1:
        return False
    return measured * share / panels < SHORT_TITLE_PX


def fit(fig: go.Figure, share: float = 1.0) -> go.Figure:
    """The figure laid out for the width it gets (`share` of the main column): its panels
    stacked when narrow, under short titles when side by side they would touch."""
    if narrow():
        if len(figure_layout.panels(fig)) > 1:
            figure_layout.stacked(fig)
        return figure_layout.title_under_toolbar(figure_layout.with_short_titles(fig),
                                                 width() or PHONE_PX)  # fmt: skip
    if short_titles(figure_layout.panel_columns(fig), share):
        return figure_layout.with_short_titles(fig)
    return fig


def page_title(text: str) -> None:
    """The page's title, a size smaller where it would take three lines of a phone."""
    (st.subheader if narrow() else st.title)(text)


def dark() -> bool:
    return st.context.theme.type == "dark"


def controls() -> Any:
    """Where a page's controls go: the sidebar while it stands beside the page; where it would
    cover the page (a phone), a sheet at the bottom of the screen (collapsible), with the
    chart they change above it."""
    if not sidebar_over_page():
        return st.sidebar
    sheet = st.container(key=SHEET_KEY)
    return sheet.expander("Controls", icon=":material/tune:")


def _css() -> str:
    """The measuring component hidden; in a narrow column, less empty space over the title;
    under a sidebar that covers the page, the controls' sheet fixed at the bottom, and room
    under the page's end to scroll its last element above the sheet."""
    hidden = f".st-key-{COMPONENT_KEY} {{ display: none; }}"
    if narrow():
        hidden += f"""
[data-testid="stMainBlockContainer"] {{ padding-top: {NARROW_TOP_PADDING}; }}"""
    if not sidebar_over_page():
        return hidden
    background = DARK_BACKGROUND if dark() else "#ffffff"
    return (
        hidden
        + f"""
.st-key-{SHEET_KEY} {{
  position: fixed; left: 0; right: 0; bottom: 0; z-index: 99; max-height: {SHEET_HEIGHT};
  overflow-y: auto; padding: 0.25rem 0.75rem; background: {background};
  box-shadow: 0 -2px 10px rgba(0, 0, 0, 0.25);
}}
.st-key-{SHEET_KEY} h2 {{ font-size: 1.15rem; padding: 0.5rem 0 0; }}
[data-testid="stMainBlockContainer"] {{ padding-bottom: calc({SHEET_HEIGHT} + 4rem); }}
"""
    )
