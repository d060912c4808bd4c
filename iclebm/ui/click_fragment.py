"""A clickable canvas as a Streamlit fragment: a click redraws the canvas first, then the page.

A click used to rerun the whole page before the new picture could go out; the panels after the
canvas (points table, film strip, charts, the share link) then competed with the browser's drawing
for the two cores. In a fragment the click reruns only the canvas. Its callback (`on_click`) marks
the rest of the page stale; once the browser has drawn the answer to that click it says so (the
canvas's "drawn" trigger, `on_drawn`), and that fragment run asks for the full run straight away,
without drawing. So the page's other panels are computed after the picture is on screen, not
while the browser draws it. That run finds the picture cached and its figure unchanged, which the
browser skips.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from iclebm.ui.guard import guarded

_STALE = "_iclebm_page_stale_after_click"  # "drawing": a click was applied; "drawn": on screen
DRAWING, DRAWN = "drawing", "drawn"


def page_run_started() -> None:
    """Call in the full page run before the fragment: this run draws everything, so no second one."""
    st.session_state.pop(_STALE, None)


def on_click(apply: Callable[[], None]) -> Callable[[], None]:
    """The canvas callback: apply the click, and mark the rest of the page stale."""

    def callback() -> None:
        apply()
        st.session_state[_STALE] = DRAWING

    return callback


def on_drawn() -> None:
    """The canvas's "drawn" callback: the browser has drawn its answer to the click(s)."""
    if st.session_state.get(_STALE) == DRAWING:
        st.session_state[_STALE] = DRAWN


@st.fragment
def canvas_fragment(draw: Callable[[], None], what: str, publish: Callable[[], None] | None = None) -> None:
    """Run `draw` (which renders the canvas with `on_click(...)` and `on_drawn`) as a fragment; once
    the browser has drawn the answer to a click, the full page run follows. `publish` (the page's
    share link) runs first, so the address bar holds the clicked context with the new picture, not
    only after the full run."""
    if st.session_state.get(_STALE) == DRAWN:
        st.session_state.pop(_STALE)
        st.rerun(scope="app")  # the full run draws this canvas too (unchanged: the browser skips it)
    if publish is not None:
        with guarded("Share link"):
            publish()
    with guarded(what):
        draw()
